"""Text encoders: the bundled MiniLM (real weights, offline), a tiny CLIP folder through the real
loading path, and every way the weights can be missing."""

import json
import time

import pytest
import torch

from pandiff.encoders.text import (
    ClipTextEncoder,
    TextEncoder,
    load_text_encoder,
    minilm_path,
    save_tiny_clip_text_encoder,
)
from pandiff.errors import ConfigError, WeightsError


@pytest.fixture(scope="module")
def minilm() -> TextEncoder:
    return load_text_encoder("minilm")


@pytest.fixture(scope="module")
def tiny_clip_dir(tmp_path_factory):
    return save_tiny_clip_text_encoder(tmp_path_factory.mktemp("tiny-clip"), hidden_size=32)


def test_minilm_shapes_and_determinism(minilm):
    assert (minilm.dim, minilm.max_length, minilm.name_or_path) == (384, 24, "minilm")
    feats = minilm.encode(["a red circle", "a blue square left of a green triangle"])
    assert feats.shape == (2, 24, 384) and feats.dtype == torch.float32
    assert not feats.requires_grad
    assert not torch.allclose(feats[0], feats[1])
    assert torch.equal(minilm.encode(["a red circle"])[0], feats[0])


def test_minilm_truncates_long_prompts(minilm):
    long_prompt = " ".join(["circle"] * 100)
    assert minilm.encode([long_prompt]).shape == (1, 24, 384)


def test_empty_prompt_cached_and_equal_to_encoding_it(minilm):
    first = minilm.empty()
    assert first.shape == (1, 24, 384)
    assert minilm.empty() is first
    assert torch.allclose(first, minilm.encode([""]), atol=1e-6)


def test_minilm_features_carry_meaning(minilm):
    """Mean token features: 'disk' is nearer to 'circle' than an unrelated sentence is."""
    feats = minilm.encode(["a red circle", "a red disk", "a blue ocean under the sky"]).mean(dim=1)
    cos = torch.nn.functional.cosine_similarity
    assert cos(feats[0], feats[1], dim=0) > cos(feats[0], feats[2], dim=0) + 0.1


def test_stays_frozen_in_eval_mode(minilm):
    minilm.train()
    assert not minilm.model.training
    assert all(not p.requires_grad for p in minilm.parameters())


def test_configured_length_and_folder_path(minilm):
    encoder = load_text_encoder(str(minilm_path()), max_length=8)
    assert type(encoder) is TextEncoder and encoder.max_length == 8
    feats = encoder.encode(["a red circle"])
    # Same weights and tokens: the first 8 positions equal the 24-token encoding's when nothing is
    # truncated (BERT masks padding, so padding length cannot change the prompt's features).
    assert torch.allclose(feats[0, :5], minilm.encode(["a red circle"])[0, :5], atol=1e-5)


def test_tiny_clip_folder_loads_through_the_real_path(tiny_clip_dir):
    encoder = load_text_encoder(str(tiny_clip_dir))
    assert isinstance(encoder, ClipTextEncoder)
    assert (encoder.dim, encoder.max_length) == (32, 77)
    feats = encoder.encode(["a red circle", "two dogs"])
    assert feats.shape == (2, 77, 32)
    assert not torch.allclose(feats[0], feats[1])
    assert encoder.empty().shape == (1, 77, 32)
    assert load_text_encoder(str(tiny_clip_dir), max_length=16).encode(["x"]).shape == (1, 16, 32)


def test_full_clip_folder_gives_its_text_tower(tiny_clip_dir, tmp_path):
    """openai/clip-vit-large-patch14 is a whole CLIPModel (model_type "clip"): the text tower loads
    from it and gives exactly CLIPModel.text_model's features."""
    from transformers import CLIPConfig, CLIPModel, CLIPTextConfig

    text_config = CLIPTextConfig.from_pretrained(tiny_clip_dir).to_dict()
    vision_config = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1}
    vision_config.update(num_attention_heads=4, image_size=32, patch_size=16)
    config = CLIPConfig(text_config=text_config, vision_config=vision_config, projection_dim=16)
    clip = CLIPModel(config).eval()
    clip.save_pretrained(tmp_path)
    for name in ("vocab.json", "merges.txt", "tokenizer.json", "tokenizer_config.json"):
        (tmp_path / name).write_bytes((tiny_clip_dir / name).read_bytes())
    encoder = load_text_encoder(str(tmp_path))
    assert isinstance(encoder, ClipTextEncoder) and (encoder.dim, encoder.max_length) == (32, 77)
    ids = encoder.tokenizer(["a cat"], padding="max_length", max_length=77, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        expected = clip.text_model(input_ids=ids).last_hidden_state
    assert torch.allclose(encoder.encode(["a cat"]), expected, atol=1e-5)


def test_tiny_clip_in_stable_diffusion_layout(tmp_path):
    """A Stable Diffusion folder keeps the encoder in text_encoder/ and the tokenizer in tokenizer/."""
    save_tiny_clip_text_encoder(tmp_path / "sd" / "text_encoder")
    save_tiny_clip_text_encoder(tmp_path / "sd" / "tokenizer")
    encoder = load_text_encoder(str(tmp_path / "sd"), max_length=10)
    assert encoder.encode(["a cat"]).shape == (1, 10, 32)


def test_empty_cache_is_a_buffer_outside_the_state_dict(tiny_clip_dir):
    """``.to(device)`` moves the cached empty-prompt features; checkpoints never store them."""
    encoder = load_text_encoder(str(tiny_clip_dir))
    cached = encoder.empty()
    assert any(b is cached for b in encoder.buffers())
    assert "_empty" not in encoder.state_dict()
    assert encoder.to(torch.float64).empty().dtype == torch.float64


def test_missing_folder_names_path_and_fix(tmp_path):
    with pytest.raises(WeightsError, match="does not exist.*hf download"):
        load_text_encoder(str(tmp_path / "no-such-clip"))


def test_folder_without_config(tmp_path):
    with pytest.raises(WeightsError, match="no config.json"):
        load_text_encoder(str(tmp_path))


def _copy(src, dst, skip_suffix=None):
    """A copy of the encoder folder ``src`` at ``dst``, without files ending in ``skip_suffix``."""
    dst.mkdir()
    for f in src.iterdir():
        if f.suffix != skip_suffix:
            (dst / f.name).write_bytes(f.read_bytes())
    return dst


def test_corrupt_config(tiny_clip_dir, tmp_path):
    broken = _copy(tiny_clip_dir, tmp_path / "broken")
    (broken / "config.json").write_text("{ not json")
    with pytest.raises(WeightsError, match="cannot load text encoder"):
        load_text_encoder(str(broken))


def test_missing_weights_file(tiny_clip_dir, tmp_path):
    folder = _copy(tiny_clip_dir, tmp_path / "no-weights", skip_suffix=".safetensors")
    with pytest.raises(WeightsError, match=str(folder)):
        load_text_encoder(str(folder))


def test_mismatched_weights(tiny_clip_dir, tmp_path):
    """A config that describes more layers than the weights hold is refused, not random-filled."""
    folder = tmp_path / "mismatch"
    folder.mkdir()
    for f in tiny_clip_dir.iterdir():
        (folder / f.name).write_bytes(f.read_bytes())
    config = json.loads((folder / "config.json").read_text())
    config["num_hidden_layers"] += 1
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(WeightsError, match="lacks .* weights"):
        load_text_encoder(str(folder))


def test_unknown_hub_id_fails_fast_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.monotonic()
    with pytest.raises(WeightsError, match="nobody/no-such-encoder.*hf download"):
        load_text_encoder("nobody/no-such-encoder")
    assert time.monotonic() - start < 10


def test_max_length_beyond_positions(tiny_clip_dir):
    with pytest.raises(ConfigError, match="outside 1..77"):
        load_text_encoder(str(tiny_clip_dir), max_length=100)
