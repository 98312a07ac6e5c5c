"""Unified and two-stream PDM: shapes, Multi-Scale Patching, the two-stream identity, gradients,
separate time embeddings, and that the unified model can learn."""

import pytest
import torch
import torch.nn.functional as F

from pandiff.errors import ConfigError
from pandiff.model import PDMTwoStream, PDMUnified, UViT

TINY = {
    "latent_channels": 4,
    "latent_size": 8,
    "patch_size": 2,
    "map_bits": 3,
    "embed_dim": 32,
    "depth": 2,
    "num_heads": 2,
    "text_dim": 12,
    "text_len": 5,
}
IMAGE_FIELDS = {k: v for k, v in TINY.items() if k != "map_bits"}


def inputs(batch: int, patch_factor: int, map_bits: int = 3, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    side = 8 * patch_factor
    return {
        "image": torch.randn(batch, 4, 8, 8, generator=g),
        "timestep_image": torch.randint(0, 1000, (batch,), generator=g),
        "text": torch.randn(batch, 5, 12, generator=g),
        "map_bits": torch.randn(batch, map_bits, side, side, generator=g).sign(),
        "timestep_map": torch.randint(0, 1000, (batch,), generator=g).float(),
    }


@pytest.mark.parametrize("cls", [PDMUnified, PDMTwoStream])
@pytest.mark.parametrize("patch_factor", [1, 2, 4])
def test_output_shapes_for_every_patch_factor(cls, patch_factor):
    model = cls(**TINY, patch_factor=patch_factor)
    assert model.map_size == 8 * patch_factor and model.num_image_tokens == 16 and model.with_map
    with torch.no_grad():
        out = model(**inputs(2, patch_factor))
    assert out.image.shape == (2, 4, 8, 8)
    assert out.map.shape == (2, 3, 8 * patch_factor, 8 * patch_factor)
    assert out.map.abs().max() <= 1 and out.image.isfinite().all()
    # Multi-Scale Patching keeps the token counts equal: map patches are f times larger.
    assert (
        model.config.patch_factor * model.config.patch_size
        == ((model.map_stream if cls is PDMTwoStream else model).map_patch_embed.proj.kernel_size[0])
    )


@pytest.mark.parametrize("cls", [PDMUnified, PDMTwoStream])
def test_map_timestep_is_separate(cls):
    model = cls(**TINY, patch_factor=2).eval()
    x = inputs(2, 2)
    with torch.no_grad():
        base = model(**x)
        later = model(**{**x, "timestep_map": x["timestep_map"] + 300})
        same = model(**{**x, "timestep_map": None})
        explicit_same = model(**{**x, "timestep_map": x["timestep_image"]})
    assert not torch.allclose(base.map, later.map, atol=1e-6)
    assert torch.equal(same.map, explicit_same.map)  # None means "the image's timestep"
    if cls is PDMUnified:  # joint attention: the map's noise level also informs the image
        assert not torch.allclose(base.image, later.image, atol=1e-7)


def test_two_stream_equals_frozen_uvit_at_init():
    uvit = UViT(**IMAGE_FIELDS).eval()
    model = PDMTwoStream.from_image_stream(uvit, map_bits=3, patch_factor=4).eval()
    x = inputs(2, 4)
    with torch.no_grad():
        expected = uvit(x["image"], x["timestep_image"], x["text"]).image
        out = model(**x)
        image_only = model(x["image"], x["timestep_image"], x["text"])
    assert torch.equal(out.image, expected)
    assert torch.equal(image_only.image, expected) and image_only.map is None
    # ControlNet's trainable copy: the map stream starts from the image stream's blocks.
    assert torch.equal(model.map_stream.mid_block.attn.qkv.weight, uvit.mid_block.attn.qkv.weight)
    assert all(not p.requires_grad for p in model.image_stream.parameters())
    assert len(model.zero_projs) == TINY["depth"] + 1


def test_two_stream_gradients_reach_only_map_stream_and_projections():
    model = PDMTwoStream(**TINY, patch_factor=2)
    out = model(**inputs(2, 2))
    (out.image.square().mean() + out.map.square().mean()).backward()
    assert all(p.grad is None for p in model.image_stream.parameters())
    for name, p in model.named_parameters():
        if not name.startswith("image_stream."):
            assert p.grad is not None and p.requires_grad, name
    assert all(proj.weight.grad.abs().sum() > 0 for proj in model.zero_projs)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    expected = sum(p.numel() for p in [*model.map_stream.parameters(), *model.zero_projs.parameters()])
    assert trainable == expected


def test_two_stream_map_stream_steers_the_image_once_trained():
    model = PDMTwoStream(**TINY, patch_factor=2).eval()
    x = inputs(1, 2)
    with torch.no_grad():
        before = model(**x).image
        for proj in model.zero_projs:
            proj.bias.fill_(0.1)
        after = model(**x).image
    assert not torch.allclose(before, after)


def test_unified_without_map_runs_the_image_tokens_alone():
    model = PDMUnified(**TINY, patch_factor=2).eval()
    x = inputs(2, 2)
    with torch.no_grad():
        out = model(x["image"], x["timestep_image"], x["text"])
        uvit = UViT(**IMAGE_FIELDS).eval()
        missing = uvit.load_state_dict(model.state_dict(), strict=False).missing_keys
        plain = uvit(x["image"], x["timestep_image"], x["text"])
    assert out.map is None and missing == []
    assert torch.equal(out.image, plain.image)


def test_unified_overfits_one_batch():
    torch.manual_seed(0)
    model = PDMUnified(**TINY, patch_factor=2)
    x = inputs(2, 2)
    eps = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(200):
        out = model(**x)
        loss = F.mse_loss(out.image, eps) + F.mse_loss(out.map, x["map_bits"])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] / 10, (losses[0], losses[-1])


def test_bad_map_input_and_config():
    model = PDMUnified(**TINY, patch_factor=2)
    x = inputs(1, 2)
    with pytest.raises(ConfigError, match=r"map_bits must have shape \(1, 3, 16, 16\)"):
        model(**{**x, "map_bits": torch.zeros(1, 3, 8, 8)})
    with pytest.raises(ConfigError, match="timestep_map"):
        model(**{**x, "timestep_map": torch.zeros(3)})
    with pytest.raises(ConfigError, match="patch_factor"):
        PDMUnified(**TINY, patch_factor=3)
    with pytest.raises(ConfigError, match="map_bits"):
        PDMTwoStream(**{**TINY, "map_bits": 0})
