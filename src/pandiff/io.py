"""Atomic file writes and output-folder guards.

A crash or kill mid-write never leaves a half-written file behind, and pandiff replaces only what
it wrote itself: every folder written through :func:`atomic_dir` carries the marker file
:data:`OUTPUT_MARKER`, and an existing folder without it (a user's project, the current folder) is
never replaced.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from pandiff.errors import ConfigError

OUTPUT_MARKER = ".pandiff-output"
_MARKER_TEXT = "written by pandiff: `--overwrite` may replace this folder as a whole\n"
# Folders pandiff wrote before it left markers, recognised when every entry is one pandiff writes
# there (one foreign file, e.g. the user's notes, and the folder is not ours to replace).
_LEGACY_LAYOUTS = (
    ("pandiff_pipeline.json", re.compile(r"^(pandiff_pipeline\.json|model|codec)$")),
    (
        "panoptic.json",
        re.compile(r"^(\d{3,}_(image|map|overlay)\.png|panoptic|panoptic\.json|captions\.json)$"),
    ),
    ("training.json", re.compile(r"^(training\.json|config\.json|diffusion_pytorch_model\.safetensors)$")),
    ("judge.safetensors", re.compile(r"^(judge\.safetensors|config\.json|metrics\.json)$")),
    (
        "checkpoint.json",
        re.compile(r"^(checkpoint\.json|model\.safetensors|ema\.safetensors|training_state\.pt)$"),
    ),
)


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path in the same folder; on success it is renamed onto ``path``.

    Rename within one filesystem is atomic, so readers see the old file or the new one, never a
    partial one. On error the temporary file is removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_json(path: str | Path, data, indent: int | None = None) -> None:
    """Write ``data`` as strict JSON, atomically: a NaN or infinity is refused, never written as
    the bare ``NaN`` token that other JSON readers reject."""
    try:
        text = json.dumps(data, indent=indent, allow_nan=False)
    except ValueError as exc:
        raise ConfigError(f"refusing to write {path}: a value is NaN or infinite ({exc})") from None
    atomic_write_text(path, text + "\n")


def is_pandiff_output(path: Path) -> bool:
    """Whether the folder ``path`` is empty or was written by pandiff as a whole (marker or a
    recognised layout of an older version)."""
    entries = {p.name for p in path.iterdir()}
    if not entries or OUTPUT_MARKER in entries:
        return True
    return any(key in entries and all(rx.match(e) for e in entries) for key, rx in _LEGACY_LAYOUTS)


def check_output_dir(
    out: str | Path, overwrite: bool, option: str = "--out", protect: Iterable[str | Path] = ()
) -> Path:
    """Refuse an output folder pandiff may not (re)place, before any work starts.

    Accepted: an absent path whose nearest existing parent is a writable folder; an empty folder;
    a folder pandiff wrote (:func:`is_pandiff_output`) when ``overwrite``. Refused: files, links,
    folders holding anything else, the current folder or one above it, and ``protect`` (inputs and
    run folders of the command) or a folder above one of them.
    """
    out = Path(out)
    try:
        resolved = out.resolve()
        cwd = Path.cwd().resolve()
        protected = [Path(p).resolve() for p in protect]
    except (OSError, RuntimeError) as exc:  # a symlink loop is a RuntimeError before Python 3.13
        raise ConfigError(
            f"{option} {out}: the path cannot be resolved ({exc}); choose another {option}"
        ) from None
    if resolved == cwd or resolved in cwd.parents:
        raise ConfigError(
            f"{option} {out} is the current folder (or holds it); pandiff writes its output into a "
            f"folder of its own: choose a new one, e.g. {option} outputs/NAME"
        )
    for p in protected:
        if resolved == p or resolved in p.parents:
            raise ConfigError(
                f"{option} {out} would replace {p}, which this command reads or writes; choose another {option}"
            )
    if out.is_symlink():
        raise ConfigError(
            f"{option} {out} is a symbolic link; pandiff does not replace links: choose another {option}"
        )
    if out.exists():
        if not out.is_dir():
            raise ConfigError(
                f"{option} {out} is an existing file, not a folder pandiff wrote; pandiff never replaces "
                f"files: choose another {option}"
            )
        try:
            ours = is_pandiff_output(out)
        except OSError as exc:
            raise ConfigError(
                f"{option} {out} cannot be read ({exc.strerror}); choose another {option}"
            ) from None
        if not ours:
            raise ConfigError(
                f"{option} {out} holds files pandiff did not write (no {OUTPUT_MARKER} marker); pandiff "
                f"replaces only folders it wrote itself: choose another {option}, or empty it yourself"
            )
        if any(out.iterdir()) and not overwrite:
            raise ConfigError(
                f"{option} {out} holds an earlier pandiff output; pass --overwrite to replace it, or "
                f"choose another {option}"
            )
    _check_writable_parent(out, option)
    return out


def check_output_file(out: str | Path, option: str = "--out") -> Path:
    """Refuse an output file path that cannot be written, before any work starts."""
    out = Path(out)
    if out.is_symlink() and not out.exists():
        raise ConfigError(f"{option} {out} is a dangling symbolic link or a loop; choose another {option}")
    if out.is_dir():
        raise ConfigError(f"{option} {out} is a folder; name a file, e.g. {option} report.json")
    if out.exists() and not os.access(out, os.W_OK):
        raise ConfigError(f"{option} {out} is not writable (permission denied); choose another {option}")
    _check_writable_parent(out, option)
    return out


def _check_writable_parent(out: Path, option: str) -> None:
    parent = out.absolute().parent
    while not parent.exists() and parent != parent.parent:
        if parent.is_symlink():  # a dangling link or a loop
            break
        parent = parent.parent
    if not parent.is_dir():
        raise ConfigError(f"{option} {out}: {parent} is not a folder; choose another {option}")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(
            f"{option} {out}: cannot write into {parent} (permission denied); choose another {option}"
        )


@contextmanager
def atomic_dir(path: str | Path, marker: bool = True) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; on success it replaces ``path`` by rename.

    Readers never see a half-written folder (a model saved by ``save_pretrained``, say): ``path``
    is the old folder, briefly absent, or the complete new one. On error the temporary folder is
    removed and ``path`` is untouched. ``marker`` leaves :data:`OUTPUT_MARKER` in the folder so a
    later ``--overwrite`` may replace it; an existing ``path`` that pandiff did not write is never
    replaced (checked again here, whatever the caller checked before its work).
    """
    path = Path(path)
    if path.is_symlink() or (path.exists() and not (path.is_dir() and is_pandiff_output(path))):
        raise ConfigError(f"{path} exists and was not written by pandiff; it is left as it is")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        if marker:
            (tmp / OUTPUT_MARKER).write_text(_MARKER_TEXT)
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
            os.replace(path, old / path.name)
            os.replace(tmp, path)
            shutil.rmtree(old)
        else:
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
