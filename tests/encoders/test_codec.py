"""Image codecs: identity round trip, the tiny world VAE's shapes, scaling and save/load, errors."""

import json

import pytest
import torch

from pandiff.encoders.codec import TINY_VAE_CONFIG, IdentityCodec, VaeCodec, load_codec
from pandiff.errors import DataError, WeightsError


@pytest.fixture(scope="module")
def tiny_vae() -> VaeCodec:
    codec = VaeCodec.from_config(seed=0)
    codec.vae.register_to_config(scaling_factor=0.5)
    return VaeCodec(codec.vae)


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.rand(2, 3, 64, 64, generator=g) * 2 - 1


def test_identity_round_trip_exact(images):
    codec = load_codec("identity")
    assert isinstance(codec, IdentityCodec)
    assert (codec.latent_channels, codec.downsample, codec.scaling_factor) == (3, 1, 1.0)
    latents = codec.encode(images)
    assert torch.equal(latents, images)
    assert torch.equal(codec.decode(latents), images)
    moments = codec.encode_moments(images)
    assert moments.shape == (2, 6, 64, 64)
    assert torch.equal(codec.latents_from_moments(moments), images)
    assert torch.equal(codec.encode(images, sample=True), images)


def test_identity_decode_clamps():
    assert torch.equal(
        IdentityCodec().decode(torch.tensor([-3.0, 0.5, 2.0]).view(1, 3, 1, 1)).flatten(),
        torch.tensor([-1.0, 0.5, 1.0]),
    )


def test_identity_save_load(tmp_path):
    IdentityCodec().save_pretrained(tmp_path / "pix")
    assert isinstance(load_codec(tmp_path / "pix"), IdentityCodec)


def test_tiny_vae_shapes(tiny_vae, images):
    assert (tiny_vae.latent_channels, tiny_vae.downsample) == (4, 4)
    latents = tiny_vae.encode(images)
    assert latents.shape == (2, 4, 16, 16)
    decoded = tiny_vae.decode(latents)
    assert decoded.shape == (2, 3, 64, 64)
    assert decoded.min() >= -1 and decoded.max() <= 1
    assert tiny_vae.encode_moments(images).shape == (2, 8, 16, 16)


def test_encode_applies_scaling_factor(tiny_vae, images):
    mean = tiny_vae.vae.encode(images).latent_dist.mean
    assert tiny_vae.scaling_factor == 0.5
    assert torch.allclose(tiny_vae.encode(images), mean * 0.5, atol=1e-6)
    # decode undoes the scale: decoding scaled latents equals the raw VAE decoding the mean.
    expected = tiny_vae.vae.decode(mean).sample.clamp(-1, 1)
    assert torch.allclose(tiny_vae.decode(mean * 0.5), expected, atol=1e-5)


def test_moments_to_latents_consistent(tiny_vae, images):
    moments = tiny_vae.encode_moments(images)
    mean, logvar = moments.chunk(2, dim=1)
    a = tiny_vae.latents_from_moments(moments, torch.Generator().manual_seed(1))
    b = tiny_vae.latents_from_moments(moments, torch.Generator().manual_seed(1))
    c = tiny_vae.latents_from_moments(moments, torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c)
    noise = torch.randn(mean.shape, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(a, (mean + torch.exp(0.5 * logvar) * noise) * 0.5, atol=1e-5)
    sampled = tiny_vae.encode(images, sample=True, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(sampled, a, atol=1e-5)
    # A zero-width posterior gives the mean exactly.
    exact = tiny_vae.latents_from_moments(torch.cat([mean, torch.full_like(logvar, -1e4)], dim=1))
    assert torch.allclose(exact, tiny_vae.encode(images), atol=1e-6)


def test_save_load_round_trip_exact(tiny_vae, images, tmp_path):
    tiny_vae.save_pretrained(tmp_path / "vae")
    assert (tmp_path / "vae" / "diffusion_pytorch_model.safetensors").is_file()
    loaded = load_codec(tmp_path / "vae")
    assert isinstance(loaded, VaeCodec) and loaded.scaling_factor == 0.5
    latents = tiny_vae.encode(images)
    assert torch.equal(loaded.encode(images), latents)
    assert torch.equal(loaded.decode(latents), tiny_vae.decode(latents))
    # Saving again over the folder replaces it whole.
    tiny_vae.save_pretrained(tmp_path / "vae")
    assert sorted(p.name for p in (tmp_path / "vae").iterdir()) == [
        ".pandiff-output",  # the marker that lets a later --overwrite replace the folder
        "config.json",
        "diffusion_pytorch_model.safetensors",
    ]


def test_stable_diffusion_layout_and_override(tiny_vae, tmp_path):
    """A pipeline folder keeps its VAE in vae/; U-ViT's 0.23010 overrides the config's scale."""
    tiny_vae.save_pretrained(tmp_path / "sd" / "vae")
    codec = load_codec(tmp_path / "sd", scaling_factor=0.23010)
    assert codec.scaling_factor == pytest.approx(0.23010)
    codec.save_pretrained(tmp_path / "resaved")
    assert load_codec(tmp_path / "resaved").scaling_factor == pytest.approx(0.23010)


def test_stays_frozen(tiny_vae):
    tiny_vae.train()
    assert not tiny_vae.vae.training
    assert all(not p.requires_grad for p in tiny_vae.parameters())


def test_wrong_image_size(tiny_vae):
    with pytest.raises(DataError, match="not divisible by the codec's downsample factor 4"):
        tiny_vae.encode(torch.zeros(1, 3, 30, 64))
    with pytest.raises(DataError, match="B x 3 x H x W"):
        tiny_vae.encode(torch.zeros(3, 64, 64))
    with pytest.raises(DataError, match="B x 4 x h x w"):
        tiny_vae.decode(torch.zeros(1, 3, 16, 16))


def test_missing_folder(tmp_path):
    with pytest.raises(WeightsError, match="does not exist.*train-codec"):
        load_codec(tmp_path / "nope")
    with pytest.raises(WeightsError, match="no config.json"):
        load_codec(tmp_path)


def test_corrupt_config(tiny_vae, tmp_path):
    tiny_vae.save_pretrained(tmp_path / "vae")
    (tmp_path / "vae" / "config.json").write_text("{ broken")
    with pytest.raises(WeightsError, match="unreadable"):
        load_codec(tmp_path / "vae")


def test_not_an_autoencoder(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"_class_name": "UNet2DModel"}))
    with pytest.raises(WeightsError, match="holds a UNet2DModel, not an AutoencoderKL"):
        load_codec(tmp_path)


def test_missing_weights_file(tiny_vae, tmp_path):
    tiny_vae.save_pretrained(tmp_path / "vae")
    (tmp_path / "vae" / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(WeightsError, match="cannot load codec"):
        load_codec(tmp_path / "vae")


def test_unknown_hub_id_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsError, match="nobody/no-vae.*hf download"):
        load_codec("nobody/no-vae")


def test_tiny_config_is_the_world_codec():
    assert TINY_VAE_CONFIG["sample_size"] == 64 and TINY_VAE_CONFIG["latent_channels"] == 4
