"""Size presets: every preset x variant builds and maps inputs to the right shapes."""

import pytest
import torch

from pandiff.errors import ConfigError
from pandiff.model import PRESETS, VARIANTS, PDMTwoStream, PDMUnified, UViT, pdm_from_preset


def preset_inputs(model, batch: int):
    c = model.config
    image = torch.randn(batch, c.latent_channels, c.latent_size, c.latent_size)
    text = torch.randn(batch, c.text_len, c.text_dim)
    bits = torch.randn(batch, c.map_bits, model.map_size, model.map_size) if model.with_map else None
    return image, torch.full((batch,), 500), text, bits, torch.full((batch,), 250)


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_and_variant_has_the_right_shapes(name, variant):
    # On the meta device the forward pass computes shapes only, so the COCO sizes cost nothing.
    with torch.device("meta"):
        model = pdm_from_preset(name, variant)
        image, t, text, bits, t_map = preset_inputs(model, 2)
        out = model(image, t, text, bits, t_map)
    c = model.config
    assert out.image.shape == image.shape
    if variant == "image-only":
        assert out.map is None and not model.with_map
    else:
        side = c.patch_factor * c.latent_size
        assert out.map.shape == (2, c.map_bits, side, side) == bits.shape
        # Multi-Scale Patching: as many map tokens as image tokens.
        assert (side // (c.patch_factor * c.patch_size)) ** 2 == model.num_image_tokens


@pytest.mark.parametrize("variant", ["unified", "two-stream"])
def test_world_s_runs_for_real(variant):
    torch.manual_seed(0)
    model = pdm_from_preset("world-s", variant).eval()
    assert (model.map_size, model.num_image_tokens) == (64, 64)
    with torch.no_grad():
        out = model(*preset_inputs(model, 1))
    assert out.image.shape == (1, 4, 16, 16) and out.map.shape == (1, 7, 64, 64)
    assert out.image.isfinite().all() and out.map.abs().max() <= 1


def test_coco_presets_follow_the_paper():
    s2 = PRESETS["uvit-s2"]
    assert (s2["embed_dim"], s2["depth"], s2["num_heads"], s2["text_len"], s2["text_dim"]) == (
        512,
        12,
        8,
        77,
        768,
    )
    assert PRESETS["uvit-s2-deep"]["depth"] == 16
    assert (PRESETS["uvit-m2"]["embed_dim"], PRESETS["uvit-m2"]["num_heads"]) == (768, 12)
    with torch.device("meta"):
        model = pdm_from_preset("uvit-s2")
    assert (model.num_image_tokens, model.map_size) == (256, 64)  # 32/2 squared; 64x64 map, patch 4


def test_overrides_and_classes():
    with torch.device("meta"):
        assert type(pdm_from_preset("world-s")) is PDMUnified
        assert type(pdm_from_preset("world-s", "two-stream")) is PDMTwoStream
        image_only = pdm_from_preset("world-s", with_map=False)
        custom = pdm_from_preset("uvit-s2", map_bits=8, text_dim=384, text_len=24)
    assert type(image_only) is UViT and image_only.config.embed_dim == 192
    assert (custom.config.map_bits, custom.config.text_dim, custom.config.text_len) == (8, 384, 24)
    assert custom.config.embed_dim == 512


@pytest.mark.parametrize(
    "args, kwargs, message",
    [
        (("world-xl",), {}, "unknown model preset 'world-xl'"),
        (("world-s", "three-stream"), {}, "unknown model variant"),
        (("world-s",), {"width": 3}, r"no config fields \['width'\]"),
        (("world-s", "image-only"), {"map_bits": 8}, r"UViT has no config fields \['map_bits'\]"),
        (("world-s", "two-stream"), {"with_map": False}, "no two-stream variant"),
        (("world-s",), {"patch_factor": 8}, "patch_factor must be one of"),
    ],
)
def test_preset_errors(args, kwargs, message):
    with pytest.raises(ConfigError, match=message), torch.device("meta"):
        pdm_from_preset(*args, **kwargs)
