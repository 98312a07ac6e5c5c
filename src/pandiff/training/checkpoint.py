"""Training checkpoints: atomic folders, the last K kept, the latest valid one found on resume.

A checkpoint is a folder ``RUN/checkpoint-{step:08d}/``::

    model.safetensors        the model's weights (all of them, frozen ones included)
    ema.safetensors          the EMA weights of the trainable parameters, by parameter name
    training_state.pt        optimizer, LR scheduler, EMA counters, step, data position and every
                             process's RNG states: tensors and plain Python values only, read back
                             with ``torch.load(weights_only=True)``
    checkpoint.json          step and file list (a folder without it is not a checkpoint)

It is written into a temporary folder beside its final name, every file fsync'ed, then renamed:
a run killed at any moment (SIGKILL included) leaves the previous checkpoints whole, so it loses
at most one checkpoint interval.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from pandiff.errors import WeightsError
from pandiff.io import atomic_dir

PREFIX = "checkpoint-"
FILES = ("model.safetensors", "ema.safetensors", "training_state.pt")
_NAME = re.compile(rf"^{PREFIX}(\d+)$")


def checkpoint_path(run_dir: str | Path, step: int) -> Path:
    return Path(run_dir) / f"{PREFIX}{step:08d}"


def save_checkpoint(
    run_dir: str | Path,
    step: int,
    model_state: dict[str, torch.Tensor],
    ema_state: dict[str, torch.Tensor],
    training_state: dict[str, Any],
    keep: int,
) -> Path:
    """Write checkpoint ``step`` atomically, then delete all but the newest ``keep`` checkpoints."""
    final = checkpoint_path(run_dir, step)
    with atomic_dir(final) as tmp:
        save_file(_cpu(model_state), str(tmp / FILES[0]))
        save_file(_cpu(ema_state), str(tmp / FILES[1]))
        torch.save(training_state, tmp / FILES[2])
        (tmp / "checkpoint.json").write_text(json.dumps({"step": step, "files": list(FILES)}) + "\n")
        for name in (*FILES, "checkpoint.json"):
            _fsync(tmp / name)
        _fsync(tmp)
    _fsync(final.parent)
    for old in list_checkpoints(run_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Complete checkpoint folders of a run, oldest first."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in run_dir.iterdir() if (m := _NAME.match(p.name)) and _complete(p)]
    return [p for _, p in sorted(found)]


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest checkpoint whose files all exist, or None."""
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def load_checkpoint(
    path: str | Path,
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict[str, Any]]:
    """``(model_state, ema_state, training_state)`` of a checkpoint folder."""
    path = Path(path)
    if not _complete(path):
        raise WeightsError(f"{path} is not a complete checkpoint (one of {', '.join(FILES)} is missing)")
    try:
        model_state = load_file(str(path / FILES[0]))
        ema_state = load_file(str(path / FILES[1]))
        training_state = torch.load(path / FILES[2], map_location="cpu", weights_only=True)
    except (OSError, SafetensorError, RuntimeError, EOFError) as exc:
        raise WeightsError(
            f"checkpoint {path} is unreadable ({exc}); resume from an older one by deleting it"
        ) from None
    return model_state, ema_state, training_state


def remove_temporaries(run_dir: str | Path) -> None:
    """Delete half-written checkpoint folders that a killed run left behind."""
    run_dir = Path(run_dir)
    if run_dir.is_dir():
        for p in run_dir.glob(f".{PREFIX}*"):
            shutil.rmtree(p, ignore_errors=True)


def capture_rng(generator: torch.Generator) -> dict[str, Any]:
    """This process's RNG states (Python, NumPy, torch CPU and CUDA, and ``generator``) as tensors
    and plain values, so they pass ``torch.load(weights_only=True)``."""
    _, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": {
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "generator": generator.get_state(),
    }


def restore_rng(state: dict[str, Any], generator: torch.Generator) -> None:
    """Put back what :func:`capture_rng` recorded."""
    random.setstate(state["python"])
    n = state["numpy"]
    np.random.set_state(
        ("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    )
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    generator.set_state(state["generator"])


def _complete(path: Path) -> bool:
    return path.is_dir() and all((path / name).is_file() for name in (*FILES, "checkpoint.json"))


def _cpu(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu").contiguous() for k, v in state.items()}


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
