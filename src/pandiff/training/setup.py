"""Building the pieces of a training run: the Accelerator, the model and per-process seeds."""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState, GradientState
from diffusers.utils import SAFETENSORS_WEIGHTS_NAME

from pandiff.errors import ConfigError
from pandiff.training.config import ModelConfig

logger = logging.getLogger(__name__)


def make_accelerator(mixed_precision: str, grad_accum: int, compile: bool = False) -> Accelerator:
    """A fresh Accelerator. Accelerate keeps precision and accumulation in process-wide singletons;
    they are reset (the distributed state is kept) so that several trainers can run one after
    another in one process (tests, benchmarks). Without a GPU, ``cpu=True`` is what makes
    Accelerate see a ``torchrun`` launch as MULTI_CPU (gloo) instead of several lone processes.
    ``compile``: Accelerate wraps the prepared model in ``torch.compile`` (inductor backend)."""
    AcceleratorState._reset_state(reset_partial_state=False)
    GradientState._reset_state()
    return Accelerator(
        mixed_precision="no" if mixed_precision == "fp32" else mixed_precision,
        gradient_accumulation_steps=grad_accum,
        cpu=not torch.cuda.is_available(),
        dynamo_backend="inductor" if compile else "no",
    )


def build_model(cfg: ModelConfig, seed: int) -> torch.nn.Module:
    """The model of ``cfg``, initialised from ``seed`` (identical on every process).

    ``cfg.init`` loads a whole saved model. ``cfg.image_stream`` (a saved ``UViT`` folder or a
    U-ViT checkpoint file) becomes the frozen image stream of a two-stream model, whose map stream
    starts as a copy of its blocks; a unified model starts its image part from it.
    ``cfg.warm_start`` (a saved model folder) gives a new model every weight whose name and shape
    match, e.g. a latent-space model the transformer of a pixel-space one.
    """
    from pandiff.model import PRESETS, load_pdm, load_uvit_checkpoint, pdm_from_preset
    from pandiff.model.pdm import PDMTwoStream

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        if cfg.init is not None:
            model = load_pdm(cfg.init)
            if cfg.variant == "image-only" and getattr(model, "with_map", False):
                model = _image_side(model)
        elif cfg.image_stream is not None and cfg.variant == "two-stream":
            fields = {**PRESETS.get(cfg.preset, {}), **cfg.overrides}
            model = PDMTwoStream.from_image_stream(
                _pretrained_uvit(cfg), fields["map_bits"], fields["patch_factor"]
            )
        elif cfg.variant == "image-only":  # the map fields of a shared config do not apply
            fields = {k: v for k, v in cfg.overrides.items() if k not in ("map_bits", "patch_factor")}
            model = pdm_from_preset(cfg.preset, "image-only", **fields)
        else:
            model = pdm_from_preset(cfg.preset, cfg.variant, **cfg.overrides)
            if cfg.warm_start is not None:
                warm_start(model, cfg.warm_start)
            if cfg.image_stream is not None:
                path = Path(cfg.image_stream)
                load_uvit_checkpoint(
                    model, path / SAFETENSORS_WEIGHTS_NAME if path.is_dir() else path, strict=False
                )
    if cfg.variant == "two-stream":
        if not isinstance(model, PDMTwoStream):
            raise ConfigError(f"model.init {cfg.init} holds a {type(model).__name__}, not a two-stream model")
        model.freeze_image_stream()
    if cfg.trainable is not None:
        freeze_all_but(model, cfg.trainable)
    return model.train()


def freeze_all_but(model: torch.nn.Module, prefixes: list) -> None:
    """Train only the parameters whose names start with one of ``prefixes`` (``model.trainable``):
    e.g. a new head on a trained model, whose predictions the frozen rest then cannot lose.

    Raises:
        ConfigError: an empty list, a prefix that is not a string, or one that names no parameter.
    """
    names = [n for n, _ in model.named_parameters()]
    if not prefixes or not all(isinstance(p, str) and p for p in prefixes):
        raise ConfigError(
            f"model.trainable must be a non-empty list of parameter-name prefixes, got {prefixes!r}"
        )
    unknown = [p for p in prefixes if not any(n.startswith(p) for n in names)]
    if unknown:
        tops = sorted({n.split(".")[0] for n in names})
        raise ConfigError(
            f"model.trainable: {unknown} name no parameter of this {type(model).__name__}; "
            f"its top-level modules are {tops}"
        )
    for name, param in model.named_parameters():
        param.requires_grad_(param.requires_grad and name.startswith(tuple(prefixes)))
    if not any(p.requires_grad for p in model.parameters()):
        raise ConfigError(f"model.trainable {prefixes}: every parameter it names is frozen already")


def warm_start(model: torch.nn.Module, folder: str | Path) -> list[str]:
    """Copy into ``model`` every weight of the saved model in ``folder`` whose name and shape match.

    A pixel-space and a latent-space PDM with the same width, depth, text and map tokens differ
    only in the image patch embedding and head, so the transformer (layout, counting, binding)
    carries over and only the image projections start afresh.

    Returns:
        The names of ``model``'s weights left at their initial values (logged).
    Raises:
        ConfigError: nothing in ``folder`` fits, or the transformer blocks themselves do not.
    """
    from pandiff.model import load_pdm

    source = load_pdm(folder).state_dict()
    own = model.state_dict()
    fits = {k: v for k, v in source.items() if k in own and own[k].shape == v.shape}
    fresh = sorted(k for k in own if k not in fits)
    if not fits or any(k.startswith(("in_blocks", "mid_block", "out_blocks")) for k in fresh):
        raise ConfigError(
            f"model.warm_start {folder}: its transformer does not fit the {type(model).__name__} of this "
            f"config ({len(fresh)} of {len(own)} weights differ, e.g. {fresh[:3]}); use a model of the "
            "same width, depth and token counts"
        )
    model.load_state_dict(fits, strict=False)
    logger.info("warm start from %s: %d weights copied, %d fresh: %s", folder, len(fits), len(fresh), fresh)
    return fresh


def _image_side(model):
    """The image-only U-ViT inside a unified PDM: its image-side modules carry U-ViT's names and
    shapes, so they load as they are (the map modules are left out)."""
    from pandiff.model import UViT

    known = set(inspect.signature(UViT.__init__).parameters) - {"self"}
    uvit = UViT(**{k: v for k, v in model.config.items() if k in known})
    own = uvit.state_dict()
    missing, _ = uvit.load_state_dict({k: v for k, v in model.state_dict().items() if k in own}, strict=False)
    if missing:
        raise ConfigError(f"{type(model).__name__} lacks the U-ViT weights {missing[:5]}")
    return uvit


def _pretrained_uvit(cfg: ModelConfig):
    """The image-only U-ViT named by ``cfg.image_stream``: a saved folder, or a checkpoint file
    loaded into the preset's U-ViT."""
    from pandiff.model import UViT, load_pdm, load_uvit_checkpoint, pdm_from_preset

    path = Path(cfg.image_stream)
    if path.is_dir():
        return load_pdm(path, expected=UViT)
    fields = {k: v for k, v in cfg.overrides.items() if k not in ("map_bits", "patch_factor")}
    uvit = pdm_from_preset(cfg.preset, "image-only", **fields)
    load_uvit_checkpoint(uvit, path)
    return uvit


def seed_for(seed: int, rank: int) -> int:
    """A distinct, reproducible seed for each process of a run."""
    return int(np.random.SeedSequence([seed, rank]).generate_state(1)[0])


def architecture_hash(model: torch.nn.Module) -> str:
    """Fingerprint of a model's class and config (its architecture), which a checkpoint must match."""
    config = {k: v for k, v in dict(model.config).items() if not k.startswith("_")}
    text = type(model).__name__ + json.dumps(config, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
