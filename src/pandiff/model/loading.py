"""Loading model weights safely: pandiff model folders and public U-ViT checkpoints.

Nothing here unpickles arbitrary objects: folders are read as ``config.json`` + safetensors, and
``.pth`` files only through ``torch.load(..., weights_only=True)``. Every failure is a
:class:`~pandiff.errors.WeightsError` that names the file and what is wrong with it.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import torch
from diffusers.utils.constants import CONFIG_NAME, SAFETENSORS_WEIGHTS_NAME
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import Tensor, nn

from pandiff.checks import describe_names, nonfinite
from pandiff.errors import ConfigError, WeightsError
from pandiff.model.pdm import PDMTwoStream, PDMUnified
from pandiff.model.uvit import UViT

PDMModel = UViT | PDMUnified | PDMTwoStream
MODEL_CLASSES: dict[str, type[PDMModel]] = {cls.__name__: cls for cls in (UViT, PDMUnified, PDMTwoStream)}


def _some(keys: list[str], limit: int = 5) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys)} in all)" if len(keys) > limit else "")


def _read_safetensors(path: Path) -> dict[str, Tensor]:
    try:
        return load_file(path)
    except (SafetensorError, OSError) as err:
        raise WeightsError(
            f"{path} is not a readable safetensors file ({err}); re-save or re-download it"
        ) from err


def _load_checked(model: nn.Module, state: object, source: Path, allow_missing: bool) -> list[str]:
    """Load ``state`` into ``model`` after checking keys and shapes; return the keys left untouched.

    Unexpected keys and shape mismatches are always errors; missing keys are errors unless
    ``allow_missing`` (partial initialisation of a larger model).
    """
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise WeightsError(f"{source} does not hold a state dict of tensors (got {type(state).__name__})")
    expected = model.state_dict()
    unexpected = sorted(k for k in state if k not in expected)
    missing = sorted(k for k in expected if k not in state)
    mismatched = sorted(
        f"{k} {tuple(state[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    )
    problems = []
    if unexpected:
        problems.append(f"unexpected keys: {_some(unexpected)}")
    if missing and not allow_missing:
        problems.append(f"missing keys: {_some(missing)}")
    if mismatched:
        problems.append(f"shape mismatches: {_some(mismatched)}")
    if problems:
        raise WeightsError(
            f"{source} does not match {type(model).__name__} with this configuration ("
            + "; ".join(problems)
            + "); check that the weights were saved with the same sizes"
        )
    bad = nonfinite(state.items())
    if bad:  # a diverged run's weights draw black images and empty maps: refuse them outright
        raise WeightsError(
            f"{source} holds NaN or infinite weights ({describe_names(bad)}); the run that wrote it "
            "diverged. Use an earlier checkpoint or train again with a lower learning rate"
        )
    model.load_state_dict(state, strict=not allow_missing)
    return missing


def load_pdm(path: str | Path, expected: type[PDMModel] | None = None) -> PDMModel:
    """Load a model folder written by ``save_pretrained`` (``config.json`` + safetensors weights).

    Args:
        path: the folder.
        expected: if given, the class the folder must hold (UViT, PDMUnified or PDMTwoStream).
    Returns:
        The model, float32 on the CPU, in eval mode; a two-stream model's image stream is frozen.
    Raises:
        WeightsError: missing folder, config or weights; corrupt JSON or safetensors; a config for
            another class or with invalid values; weights whose keys or shapes differ from the config.
    """
    folder = Path(path)
    if not folder.is_dir():
        raise WeightsError(f"model folder {folder} does not exist; pass a folder written by save_pretrained")
    config_file = folder / CONFIG_NAME
    if not config_file.is_file():
        raise WeightsError(f"{folder} has no {CONFIG_NAME}; it is not a saved pandiff model folder")
    try:
        config = json.loads(config_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise WeightsError(f"{config_file} is not valid JSON ({err}); re-save the model") from err
    name = config.get("_class_name") if isinstance(config, dict) else None
    cls = MODEL_CLASSES.get(name)
    if cls is None:
        raise WeightsError(
            f"{config_file} describes a {name!r}, not one of the pandiff models {list(MODEL_CLASSES)}"
        )
    if expected is not None and cls is not expected:
        raise WeightsError(f"{folder} holds a {cls.__name__}, but a {expected.__name__} is needed here")
    weights = folder / SAFETENSORS_WEIGHTS_NAME
    if not weights.is_file():
        raise WeightsError(
            f"{folder} has no {SAFETENSORS_WEIGHTS_NAME}; pandiff reads only safetensors weights "
            "(save with save_pretrained(dir), whose default is safetensors)"
        )
    try:
        model = cls.from_config(config)
    except (ConfigError, TypeError, ValueError) as err:
        raise WeightsError(f"{config_file} holds an invalid {cls.__name__} configuration: {err}") from err
    _load_checked(model, _read_safetensors(weights), weights, allow_missing=False)
    return model.eval()


def load_uvit_checkpoint(model: PDMModel, path: str | Path, strict: bool = True) -> list[str]:
    """Load a U-ViT text-to-image state dict (``.pth`` or ``.safetensors``) into a model.

    U-ViT's training code calls the network with n = t + 1 (1..1000) for the noise level that
    diffusers indexes t (0..999); pass ``timestep_image = t + 1`` to reproduce its checkpoints exactly.

    Args:
        model: a :class:`UViT`; a :class:`PDMUnified` (its image part, with ``strict=False``); or a
            :class:`PDMTwoStream` (into its image stream).
        path: e.g. the public ``mscoco_uvit_small.pth`` (read with ``weights_only=True``).
        strict: every key of the target must be in the file. Keys in the file that the target
            lacks, and shape mismatches, are errors either way.
    Returns:
        The target's keys that the file did not provide (empty when strict), sorted.
    Raises:
        WeightsError: missing or unreadable file, a pickle with non-tensor objects, key or shape mismatch.
    """
    path = Path(path)
    target = model.image_stream if isinstance(model, PDMTwoStream) else model
    if not path.is_file():
        raise WeightsError(f"U-ViT checkpoint {path} does not exist; download it or fix the path")
    if path.suffix == ".safetensors":
        state = _read_safetensors(path)
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as err:
            raise WeightsError(
                f"{path} cannot be read as a tensors-only checkpoint ({type(err).__name__}: {err}); "
                "pandiff refuses pickles holding arbitrary objects; convert it to a plain state dict"
            ) from err
    return _load_checked(target, state, path, allow_missing=not strict)
