"""The pixel refiner (``refine_channels``): a warm start from a model without it predicts exactly
what that model did, it reads the noisy input and neighbouring patches, and it is saved and loaded
with the model's config."""

import pytest
import torch
import torch.nn.functional as F

from pandiff.errors import ConfigError
from pandiff.model import PDMTwoStream, PDMUnified, UViT, load_pdm
from pandiff.training.setup import warm_start

TINY = {
    "latent_channels": 3,
    "latent_size": 16,
    "patch_size": 4,
    "map_bits": 3,
    "patch_factor": 1,
    "embed_dim": 32,
    "depth": 2,
    "num_heads": 2,
    "text_dim": 12,
    "text_len": 5,
}


def inputs(batch: int = 2, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return {
        "image": torch.randn(batch, 3, 16, 16, generator=g),
        "timestep_image": torch.randint(0, 1000, (batch,), generator=g),
        "text": torch.randn(batch, 5, 12, generator=g),
        "map_bits": torch.randn(batch, 3, 16, 16, generator=g).sign(),
    }


def test_warm_start_keeps_the_predictions_exactly(tmp_path):
    torch.manual_seed(0)
    plain = PDMUnified(**TINY)
    plain.save_pretrained(tmp_path / "plain")
    refined = PDMUnified(**TINY, refine_channels=8)
    fresh = warm_start(refined, tmp_path / "plain")
    assert fresh and all(name.startswith("refiner.") for name in fresh)
    with torch.no_grad():
        a, b = plain(**inputs()), refined(**inputs())
    torch.testing.assert_close(b.image, a.image, rtol=0, atol=0)
    torch.testing.assert_close(b.map, a.map, rtol=0, atol=0)
    # the patch head alone (refine_channels=0) has no refiner weights at all
    assert not any(k.startswith("refiner") for k in plain.state_dict())


def test_refiner_reads_the_noisy_input_and_crosses_patch_borders():
    """The refiner alone, tokens and patch-head prediction fixed: one noisy-input pixel moves the
    refined pixels within its 7x7 receptive field (three 3x3 convolutions), across the patch border
    at column 4, and nothing farther away. Through the whole model attention would move every pixel,
    so the refiner is called directly."""
    torch.manual_seed(0)
    model = PDMUnified(**TINY, refine_channels=8)
    torch.nn.init.normal_(model.refiner.conv_out.weight, std=0.1)  # as after some training
    tokens = torch.randn(1, 16, 32)
    base = torch.randn(1, 3, 16, 16)
    noisy = torch.randn(1, 3, 16, 16)
    moved_noisy = noisy.clone()
    moved_noisy[:, :, 5, 4] += 1.0
    with torch.no_grad():
        moved = (model.refiner(tokens, base, moved_noisy) - model.refiner(tokens, base, noisy)).abs()
    changed = moved.amax(dim=(0, 1)) > 0  # 16 x 16
    rows, cols = torch.nonzero(changed, as_tuple=True)
    assert changed[5, 3] and changed[5, 1]  # the neighbouring patch (columns 0-3), 3 pixels away
    assert rows.min() == 2 and rows.max() == 8 and cols.min() == 1 and cols.max() == 7  # no farther


def test_refined_model_learns_a_detail_the_patch_head_misses():
    """A 1-pixel outline at every patch border: the refined model fits it to a lower loss in the
    same number of steps than the patch head alone."""
    target = torch.zeros(2, 3, 16, 16)
    target[:, :, ::4, :] = 1.0
    target[:, :, :, ::4] = 1.0
    x = inputs()
    losses = {}
    for channels in (0, 8):
        torch.manual_seed(0)
        model = PDMUnified(**TINY, refine_channels=channels)
        opt = torch.optim.Adam(model.parameters(), lr=3e-3)
        for _ in range(150):
            loss = F.mse_loss(model(**x).image, target)
            opt.zero_grad()
            loss.backward()
            opt.step()
        losses[channels] = loss.item()
    assert losses[8] < losses[0], losses


@pytest.mark.parametrize("cls", [PDMUnified, PDMTwoStream])
def test_config_round_trip(tmp_path, cls):
    torch.manual_seed(0)
    model = cls(**TINY, refine_channels=4)
    torch.nn.init.normal_(
        model.state_dict()[
            "image_stream.refiner.conv_out.weight" if cls is PDMTwoStream else "refiner.conv_out.weight"
        ],
        std=0.1,
    )
    model.save_pretrained(tmp_path / "m")
    back = load_pdm(tmp_path / "m")
    assert back.config.refine_channels == 4
    with torch.no_grad():
        torch.testing.assert_close(back(**inputs()).image, model(**inputs()).image)


def test_bad_refine_channels():
    fields = {k: v for k, v in TINY.items() if k not in ("map_bits", "patch_factor")}
    for bad in (-1, 2.5, True):
        with pytest.raises(ConfigError, match="refine_channels"):
            UViT(**fields, refine_channels=bad)
    model = UViT(**fields, refine_channels=4)
    with pytest.raises(ConfigError, match="noisy image"):
        model.decode_image(torch.zeros(1, 16, 32))
