"""Named model sizes, as data, and one constructor for every size x variant.

* ``world-s``: sized for CPU training on the built-in world (64 px images -> 4x16x16 latents,
  64x64 maps with 7 bits, MiniLM text features 24 x 384); ``world-s-pixel``: the same in pixel
  space (identity codec, 8x8 patches), the bundled model's preset.
* ``uvit-s2`` / ``uvit-s2-deep`` / ``uvit-m2``: the paper's COCO configurations (U-ViT-S/2, its
  deep variant and U-ViT-M/2; SD-VAE latents 4x32x32, CLIP ViT-L/14 text 77 x 768, 64x64 maps of
  8 category + 3 instance bits with patch factor 2).
"""

from __future__ import annotations

import inspect
from typing import Any

from pandiff.errors import ConfigError
from pandiff.model.pdm import PDMTwoStream, PDMUnified
from pandiff.model.uvit import UViT

_UVIT_S2: dict[str, Any] = {
    "latent_channels": 4,
    "latent_size": 32,
    "patch_size": 2,
    "patch_factor": 2,
    "map_bits": 11,
    "embed_dim": 512,
    "depth": 12,
    "num_heads": 8,
    "mlp_ratio": 4.0,
    "text_dim": 768,
    "text_len": 77,
}

PRESETS: dict[str, dict[str, Any]] = {
    "world-s": {
        "latent_channels": 4,
        "latent_size": 16,
        "patch_size": 2,
        "patch_factor": 4,
        "map_bits": 7,
        "embed_dim": 192,
        "depth": 8,
        "num_heads": 3,
        "mlp_ratio": 4.0,
        "text_dim": 384,
        "text_len": 24,
    },
    # The same transformer in pixel space (identity codec): 64x64x3 images in 8x8 patches, so the
    # token count (64 image + 64 map tokens) and the cost per step equal world-s's.
    "world-s-pixel": {
        "latent_channels": 3,
        "latent_size": 64,
        "patch_size": 8,
        "patch_factor": 1,
        "map_bits": 7,
        "embed_dim": 192,
        "depth": 8,
        "num_heads": 3,
        "mlp_ratio": 4.0,
        "text_dim": 384,
        "text_len": 24,
    },
    "uvit-s2": _UVIT_S2,
    "uvit-s2-deep": {**_UVIT_S2, "depth": 16},
    "uvit-m2": {**_UVIT_S2, "embed_dim": 768, "depth": 16, "num_heads": 12},
}

VARIANTS: dict[str, type[UViT | PDMUnified | PDMTwoStream]] = {
    "unified": PDMUnified,
    "two-stream": PDMTwoStream,
    "image-only": UViT,
}


def pdm_from_preset(
    name: str, variant: str = "unified", **overrides: Any
) -> UViT | PDMUnified | PDMTwoStream:
    """Build a freshly initialised model of a named size.

    Args:
        name: a key of :data:`PRESETS`.
        variant: ``"unified"``, ``"two-stream"`` or ``"image-only"`` (the plain U-ViT, no map).
        overrides: config fields replacing the preset's (e.g. ``map_bits=8``, ``text_len=16``).
            ``with_map=False`` is another way to ask for the image-only U-ViT.
    Raises:
        ConfigError: unknown preset, variant or field, or values the model cannot be built with.
    """
    if name not in PRESETS:
        raise ConfigError(f"unknown model preset {name!r}; choose one of {list(PRESETS)}")
    if variant not in VARIANTS:
        raise ConfigError(f"unknown model variant {variant!r}; choose one of {list(VARIANTS)}")
    if overrides.pop("with_map", True) is False:
        if variant == "two-stream":
            raise ConfigError("with_map=False asks for the image-only U-ViT, which has no two-stream variant")
        variant = "image-only"
    cls = VARIANTS[variant]
    known = set(inspect.signature(cls.__init__).parameters) - {"self"}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ConfigError(f"{cls.__name__} has no config fields {unknown}; its fields are {sorted(known)}")
    config = {k: v for k, v in PRESETS[name].items() if k in known}
    return cls(**{**config, **overrides})
