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
import pickle
import random
import re
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from pandiff.checks import describe_names, nonfinite
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
    bad = nonfinite([*model_state.items(), *ema_state.items()])
    if bad:  # the checkpoint a resume starts from must be one worth resuming
        last = latest_checkpoint(run_dir)
        raise WeightsError(
            f"step {step}: the weights hold NaN or infinite values ({describe_names(bad)}); the run "
            f"diverged and no checkpoint was written. The last good checkpoint is "
            f"{last or 'none (no checkpoint was written yet)'}. Lower train.lr or lengthen "
            "train.warmup_steps, then run again (with --resume to start from that checkpoint)"
        )
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
    except pickle.UnpicklingError as exc:
        raise WeightsError(
            f"checkpoint {path}: {FILES[2]} holds Python objects other than tensors and plain values "
            f"({' '.join(str(exc).split())[:200]}); pandiff refuses to unpickle them because a pickle can "
            "run any code. Resume from a checkpoint pandiff wrote"
        ) from None
    except (OSError, SafetensorError, RuntimeError, EOFError, ValueError) as exc:
        raise WeightsError(
            f"checkpoint {path} is unreadable ({exc}); resume from an older one by deleting it"
        ) from None
    bad = nonfinite([*model_state.items(), *ema_state.items()])
    if bad:
        raise WeightsError(f"checkpoint {path} holds NaN or infinite weights ({describe_names(bad)})")
    return model_state, ema_state, training_state


def load_newest(run_dir: str | Path) -> tuple[Path, tuple[dict, dict, dict]] | None:
    """The newest checkpoint of a run that loads and holds finite weights, with its states.

    A corrupt newest checkpoint (a disk error, a truncated copy) does not stop a resume: it is
    skipped with a warning naming it, and the next older one is used. None when the run has no
    checkpoint; WeightsError when none of them loads.
    """
    found = list_checkpoints(run_dir)
    problems = []
    for path in reversed(found):
        try:
            return path, load_checkpoint(path)
        except WeightsError as exc:
            problems.append(str(exc))
            warnings.warn(f"skipping checkpoint {path}: {exc}", stacklevel=2)
    if found:
        raise WeightsError(f"no checkpoint of {run_dir} can be resumed from: {'; '.join(problems)}")
    return None


def set_aside(run_dir: str | Path, step: int) -> Path | None:
    """Rename checkpoint ``step`` to ``diverged-checkpoint-...``: its weights are finite but gave a
    NaN/inf loss (a 1e30 update, say), so ``--resume`` must not start from it again. Kept, not
    deleted: the rename is the whole change."""
    path = checkpoint_path(run_dir, step)
    if not path.is_dir():
        return None
    target = path.with_name(f"diverged-{path.name}")
    if target.exists():
        shutil.rmtree(target)  # an earlier run's set-aside copy of the same step, pandiff's own
    os.replace(path, target)
    return target


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
