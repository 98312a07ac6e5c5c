"""Image codecs: images in ``[-1, 1]`` <-> the space the diffusion model works in, with a scale.

One interface, :class:`ImageCodec`, two implementations:

- :class:`VaeCodec` wraps a diffusers ``AutoencoderKL``: Stable Diffusion's VAE for COCO
  (256 px -> 4 x 32 x 32) or the tiny one ``pandiff train-codec`` trains for the built-in world
  (64 px -> 4 x 16 x 16, :data:`TINY_VAE_CONFIG`). Latents are ``(mean - shift) * scaling_factor``
  so they have roughly unit variance, as Stable Diffusion and U-ViT feed them to the model.
- :class:`IdentityCodec` passes pixels through unchanged, for pixel-space experiments.

Feature shards store the posterior *moments* (``encode_moments``) rather than one latent, so
training can draw a fresh latent from the posterior each epoch (``latents_from_moments``), as
U-ViT does. Folders follow diffusers' layout (``config.json`` + ``*.safetensors``);
:func:`load_codec` reads them, or ``"identity"``, or a hub id.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from pathlib import Path

import torch
from torch import nn

from pandiff.checks import describe_names, nonfinite
from pandiff.errors import DataError, WeightsError, brief
from pandiff.io import atomic_dir

IDENTITY = "identity"
SD_VAE = "stabilityai/sd-vae-ft-mse"
# Stable Diffusion's posterior clamps log-variances to this range before sampling.
LOGVAR_RANGE = (-30.0, 20.0)

# The built-in world's codec: 64 px RGB -> 4 x 16 x 16. Three levels give the factor 4; narrow
# levels keep a training step and a CPU decode cheap. Few norm groups (4-16 channels each) because
# GroupNorm normalises every image on its own: on a flat-coloured region, a group of one or two
# channels keeps little more than the sign of each channel. No attention: the world's structure is
# local, and dropping it makes the codec purely convolutional and cheaper.
TINY_VAE_CONFIG: dict = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ["DownEncoderBlock2D"] * 3,
    "up_block_types": ["UpDecoderBlock2D"] * 3,
    "block_out_channels": [16, 32, 64],
    "layers_per_block": 1,
    "latent_channels": 4,
    "norm_num_groups": 4,
    "sample_size": 64,
    "scaling_factor": 1.0,
    "mid_block_add_attention": False,
}


class ImageCodec(nn.Module, ABC):
    """Frozen map between images ``B 3 H W`` in ``[-1, 1]`` and model latents ``B C H/d W/d``.

    Attributes:
        latent_channels: ``C``.
        downsample: the spatial factor ``d``.
        scaling_factor: latents are the posterior mean (minus ``shift_factor``) times this.
    """

    latent_channels: int
    downsample: int
    scaling_factor: float

    def train(self, mode: bool = True) -> ImageCodec:
        """Stay in eval mode whatever a parent module asks: the codec is frozen."""
        return super().train(False)

    def check_images(self, images: torch.Tensor) -> None:
        """Raise :class:`DataError` unless ``images`` is ``B 3 H W`` with ``H, W`` divisible by ``d``."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise DataError(f"images must be B x 3 x H x W in [-1, 1], got shape {tuple(images.shape)}")
        h, w = images.shape[-2:]
        if h % self.downsample or w % self.downsample:
            raise DataError(
                f"image size {h}x{w} is not divisible by the codec's downsample factor {self.downsample}; "
                f"resize or crop the images to a multiple of {self.downsample}"
            )

    def check_latents(self, latents: torch.Tensor, channels: int) -> None:
        """Raise :class:`DataError` unless ``latents`` is ``B channels h w``."""
        if latents.ndim != 4 or latents.shape[1] != channels:
            raise DataError(f"expected B x {channels} x h x w latents, got shape {tuple(latents.shape)}")

    def encode(
        self, images: torch.Tensor, sample: bool = False, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Scaled latents ``B C H/d W/d`` of ``images`` (``B 3 H W`` in ``[-1, 1]``): the posterior
        mean, or a draw from the posterior when ``sample``."""
        moments = self.encode_moments(images)
        if sample:
            return self.latents_from_moments(moments, generator)
        mean, _ = moments.chunk(2, dim=1)
        return self.scale(mean)

    def scale(self, mean: torch.Tensor) -> torch.Tensor:
        """Raw codec latents -> the scaled latents the diffusion model sees."""
        return mean * self.scaling_factor

    @abstractmethod
    def encode_moments(self, images: torch.Tensor) -> torch.Tensor:
        """Posterior mean and log-variance, ``B 2C H/d W/d`` (mean first), unscaled."""

    @abstractmethod
    def latents_from_moments(
        self, moments: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """A scaled latent ``B C h w`` drawn from the posterior stored as ``moments`` ``B 2C h w``."""

    @abstractmethod
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Images ``B 3 H W`` clamped to ``[-1, 1]`` from scaled latents ``B C h w``."""

    @abstractmethod
    def save_pretrained(self, folder: str | Path) -> None:
        """Write the codec to ``folder`` (atomically) so :func:`load_codec` reads it back."""


class IdentityCodec(ImageCodec):
    """Pixels as latents: ``C = 3``, ``d = 1``, scale 1, and a posterior with no spread."""

    latent_channels = 3
    downsample = 1
    scaling_factor = 1.0

    @torch.no_grad()
    def encode_moments(self, images: torch.Tensor) -> torch.Tensor:
        self.check_images(images)
        return torch.cat([images, torch.full_like(images, LOGVAR_RANGE[0])], dim=1)  # B 6 H W

    @torch.no_grad()
    def latents_from_moments(
        self, moments: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        self.check_latents(moments, 2 * self.latent_channels)
        # Pixels are exact: drawing from a zero-width posterior returns the mean itself.
        return moments[:, : self.latent_channels].clone()

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        self.check_latents(latents, self.latent_channels)
        return latents.clamp(-1.0, 1.0)

    def save_pretrained(self, folder: str | Path) -> None:
        with atomic_dir(folder) as tmp:
            (tmp / "config.json").write_text(json.dumps({"_class_name": "IdentityCodec"}) + "\n")


class VaeCodec(ImageCodec):
    """A frozen diffusers ``AutoencoderKL``; ``scaling_factor`` (and ``shift_factor``) come from its
    config unless overridden (e.g. 0.23010, U-ViT's value for Stable Diffusion's VAE)."""

    def __init__(self, vae, scaling_factor: float | None = None) -> None:
        super().__init__()
        if scaling_factor is not None:
            # Stored in the config so save_pretrained/load_codec keep the override.
            vae.register_to_config(scaling_factor=float(scaling_factor))
        self.vae = vae.eval().requires_grad_(False)
        self.latent_channels = int(vae.config.latent_channels)
        self.downsample = 2 ** (len(vae.config.block_out_channels) - 1)
        self.scaling_factor = float(vae.config.scaling_factor)
        self.shift_factor = float(vae.config.shift_factor or 0.0)

    @classmethod
    def from_config(cls, config: dict | None = None, seed: int = 0) -> VaeCodec:
        """A random-initialised codec (default :data:`TINY_VAE_CONFIG`), e.g. before ``train-codec``."""
        from diffusers import AutoencoderKL

        with torch.random.fork_rng():
            torch.manual_seed(seed)
            vae = AutoencoderKL(**(TINY_VAE_CONFIG if config is None else config))
        return cls(vae)

    def scale(self, mean: torch.Tensor) -> torch.Tensor:
        return (mean - self.shift_factor) * self.scaling_factor

    @torch.no_grad()
    def encode_moments(self, images: torch.Tensor) -> torch.Tensor:
        self.check_images(images)
        images = images.to(device=self.vae.device, dtype=self.vae.dtype)
        return self.vae.encode(images).latent_dist.parameters  # B 2C h w

    @torch.no_grad()
    def latents_from_moments(
        self, moments: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        from diffusers.utils.torch_utils import randn_tensor

        self.check_latents(moments, 2 * self.latent_channels)
        mean, logvar = moments.chunk(2, dim=1)  # B C h w each
        std = torch.exp(0.5 * logvar.clamp(*LOGVAR_RANGE))
        noise = randn_tensor(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        return self.scale(mean + std * noise)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        self.check_latents(latents, self.latent_channels)
        z = latents.to(device=self.vae.device, dtype=self.vae.dtype) / self.scaling_factor + self.shift_factor
        return self.vae.decode(z).sample.clamp(-1.0, 1.0)  # B 3 H W

    def save_pretrained(self, folder: str | Path) -> None:
        bad = nonfinite(self.vae.named_parameters())
        if bad:
            raise WeightsError(
                f"refusing to save a codec with NaN or infinite weights ({describe_names(bad)})"
            )
        with atomic_dir(folder) as tmp:
            self.vae.save_pretrained(tmp, safe_serialization=True)


def _how_to_get(name: str) -> str:
    return (
        f"on a connected machine run `hf download {SD_VAE} --local-dir DIR` (or any Stable Diffusion "
        f"repository, whose VAE sits in its vae/ subfolder), copy DIR here and pass its path; for the "
        f"built-in world train one with `pandiff train-codec`, or use {IDENTITY!r} for pixel space"
    )


def _read_class_name(config_path: Path) -> str:
    try:
        return str(json.loads(config_path.read_text()).get("_class_name", ""))
    except (OSError, ValueError, AttributeError) as exc:
        raise WeightsError(
            f"codec config {str(config_path)!r} is unreadable ({exc}); re-save or re-download the codec"
        ) from exc


def load_codec(
    name_or_path: str | Path,
    scaling_factor: float | None = None,
    subfolder: str | None = None,
    device: str | torch.device = "cpu",
) -> ImageCodec:
    """Load a frozen image codec.

    Args:
        name_or_path: ``"identity"``, a folder written by ``save_pretrained`` / ``train-codec`` or
            holding a diffusers ``AutoencoderKL`` (a Stable Diffusion folder's ``vae/`` subfolder is
            found by itself), or a hub id (with ``HF_HUB_OFFLINE=1`` only cached ids load).
        scaling_factor: overrides the config's value (e.g. 0.23010 for U-ViT's COCO setup).
        subfolder: the VAE's subfolder inside ``name_or_path`` when it is not the top or ``vae/``.
        device: where the codec runs.

    Raises:
        WeightsError: absent, unreadable, or not an ``AutoencoderKL``.
    """
    name = str(name_or_path)
    if name == IDENTITY:
        return IdentityCodec().to(device)
    folder = Path(name).expanduser()
    if folder.is_dir():
        if subfolder is None and not (folder / "config.json").is_file() and (folder / "vae").is_dir():
            subfolder = "vae"
        config_path = folder / (subfolder or "") / "config.json"
        if not config_path.is_file():
            raise WeightsError(f"codec folder {name!r} has no {config_path.name}; {_how_to_get(name)}")
        class_name = _read_class_name(config_path)
        if class_name == "IdentityCodec":
            return IdentityCodec().to(device)
        if class_name != "AutoencoderKL":
            raise WeightsError(
                f"codec folder {name!r} holds a {class_name or 'model without _class_name'}, "
                f"not an AutoencoderKL; {_how_to_get(name)}"
            )
        sources = [subfolder]
    elif name.startswith(("/", ".", "~")) or name.count("/") > 1 or folder.exists():
        raise WeightsError(f"codec folder {name!r} does not exist; {_how_to_get(name)}")
    else:
        # A hub repository keeps the VAE at its top (sd-vae-ft-mse) or in vae/ (full pipelines).
        sources = [subfolder] if subfolder is not None else [None, "vae"]
    from diffusers import AutoencoderKL

    errors = []
    for sub in sources:
        try:
            vae = AutoencoderKL.from_pretrained(name, subfolder=sub, use_safetensors=True)
        except (OSError, ValueError, KeyError, TypeError, RuntimeError) as exc:
            errors.append(brief(exc))
            continue
        bad = nonfinite(vae.named_parameters())
        if bad:  # a diverged codec decodes every latent to NaN: black images
            raise WeightsError(f"codec {name!r} holds NaN or infinite weights ({describe_names(bad)})")
        return VaeCodec(vae, scaling_factor).to(device)
    raise WeightsError(f"cannot load codec {name!r} ({'; '.join(errors)}); {_how_to_get(name)}")
