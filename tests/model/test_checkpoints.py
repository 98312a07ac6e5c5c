"""Model folders: save_pretrained / from_pretrained / load_pdm round trips and every load error."""

import json

import pytest
import torch
from safetensors.torch import save_file

from pandiff.errors import WeightsError
from pandiff.model import PDMTwoStream, PDMUnified, UViT, load_pdm

TINY = {
    "latent_channels": 4,
    "latent_size": 8,
    "patch_size": 2,
    "embed_dim": 32,
    "depth": 2,
    "num_heads": 2,
    "text_dim": 12,
    "text_len": 5,
}
WEIGHTS = "diffusion_pytorch_model.safetensors"


def build(cls):
    torch.manual_seed(0)
    return cls(**TINY) if cls is UViT else cls(**TINY, map_bits=3, patch_factor=2)


def run(model):
    g = torch.Generator().manual_seed(0)
    image, text = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 5, 12, generator=g)
    bits = None if isinstance(model, UViT) else torch.randn(2, 3, 16, 16, generator=g).sign()
    with torch.no_grad():
        return model(image, torch.tensor([10, 700]), text, bits, torch.tensor([999, 0]))


def public(config) -> dict:
    """The config fields, without diffusers' bookkeeping entries (``_diffusers_version`` ...)."""
    return {k: v for k, v in config.items() if not k.startswith("_")}


@pytest.mark.parametrize("cls", [UViT, PDMUnified, PDMTwoStream])
def test_round_trip_is_exact(tmp_path, cls):
    model = build(cls).eval()
    if cls is PDMTwoStream:  # make the map stream matter for the image so the test sees it
        torch.nn.init.normal_(model.zero_projs[0].weight, std=0.1)
    model.save_pretrained(tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["config.json", WEIGHTS]
    expected = run(model)
    for loaded in (load_pdm(tmp_path / "m"), cls.from_pretrained(tmp_path / "m", use_safetensors=True)):
        assert type(loaded) is cls and public(loaded.config) == public(model.config)
        out = run(loaded)
        assert torch.equal(out.image, expected.image)
        assert (out.map is None and expected.map is None) or torch.equal(out.map, expected.map)
    if cls is PDMTwoStream:
        assert not any(p.requires_grad for p in load_pdm(tmp_path / "m").image_stream.parameters())


@pytest.fixture
def saved(tmp_path):
    folder = tmp_path / "model"
    build(PDMUnified).save_pretrained(folder)
    return folder


def test_missing_folder(tmp_path):
    with pytest.raises(WeightsError, match="does not exist"):
        load_pdm(tmp_path / "nowhere")


def test_missing_config(saved):
    (saved / "config.json").unlink()
    with pytest.raises(WeightsError, match="no config.json"):
        load_pdm(saved)


def test_missing_weights_even_with_a_pickle_beside_them(saved):
    (saved / WEIGHTS).unlink()
    torch.save(build(PDMUnified).state_dict(), saved / "diffusion_pytorch_model.bin")
    with pytest.raises(WeightsError, match="only safetensors"):
        load_pdm(saved)


def test_corrupt_config_json(saved):
    (saved / "config.json").write_text('{"_class_name": "PDMUnified", "embed_dim": ')
    with pytest.raises(WeightsError, match="not valid JSON"):
        load_pdm(saved)


def test_config_of_another_class(saved):
    config = json.loads((saved / "config.json").read_text())
    (saved / "config.json").write_text(json.dumps({**config, "_class_name": "UNet2DConditionModel"}))
    with pytest.raises(WeightsError, match="'UNet2DConditionModel', not one of the pandiff models"):
        load_pdm(saved)


def test_expected_class_is_enforced(saved):
    with pytest.raises(WeightsError, match="holds a PDMUnified, but a PDMTwoStream is needed"):
        load_pdm(saved, expected=PDMTwoStream)
    assert isinstance(load_pdm(saved, expected=PDMUnified), PDMUnified)


def test_invalid_config_values(saved):
    config = json.loads((saved / "config.json").read_text())
    (saved / "config.json").write_text(json.dumps({**config, "patch_factor": 3}))
    with pytest.raises(WeightsError, match="invalid PDMUnified configuration: patch_factor"):
        load_pdm(saved)


def test_weights_with_other_shapes_than_the_config(saved):
    config = json.loads((saved / "config.json").read_text())
    (saved / "config.json").write_text(json.dumps({**config, "map_bits": 5}))
    with pytest.raises(
        WeightsError, match=r"shape mismatches: map_decoder_pred.bias \(48,\) vs model \(80,\)"
    ):
        load_pdm(saved)


def test_weights_with_missing_and_unexpected_keys(saved):
    state = build(PDMUnified).state_dict()
    state["extra.weight"] = state.pop("norm.weight")
    save_file(state, saved / WEIGHTS)
    with pytest.raises(WeightsError, match="unexpected keys: extra.weight; missing keys: norm.weight"):
        load_pdm(saved)


def test_truncated_weights_file(saved):
    data = (saved / WEIGHTS).read_bytes()
    (saved / WEIGHTS).write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsError, match="not a readable safetensors file"):
        load_pdm(saved)
