"""``pandiff_pipeline.json``: read and validate a pipeline folder's description before any use.

A hand-edited or foreign file (a string guidance scale, an unknown schedule key, NaN) fails here
with a WeightsError naming the key, instead of a traceback deep in sampling.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pandiff import checks
from pandiff.errors import ConfigError, WeightsError

PIPELINE_FILE = "pandiff_pipeline.json"
DEFAULT_MODEL_DIR = Path(__file__).parent / "weights" / "world-s"


def resolve_model_dir(folder: str | Path | None) -> Path:
    """The pipeline folder to load: ``folder`` (default: the bundled model), or, for a training
    run's folder (no pipeline file, but its export ``final/`` has one), that export, with a warning."""
    folder = Path(folder) if folder is not None else DEFAULT_MODEL_DIR
    export = folder / "final"
    if folder.is_dir() and not (folder / PIPELINE_FILE).is_file() and (export / PIPELINE_FILE).is_file():
        import warnings

        warnings.warn(
            f"{folder} is a training run, not a pipeline folder; using its export {export}", stacklevel=2
        )
        return export
    return folder


def read_pipeline_spec(folder: Path) -> dict[str, Any]:
    """The validated description in ``folder``; optional keys get their defaults."""
    path = folder / PIPELINE_FILE
    if not folder.is_dir():
        what = "is a file, not a folder" if folder.exists() else "does not exist"
        raise WeightsError(f"model folder {folder} {what}; pass --model with a pipeline folder")
    if not path.is_file():
        raise WeightsError(
            f"{folder} is not a pandiff pipeline folder: {PIPELINE_FILE} is missing "
            "(export one with `pandiff train ... --export DIR`)"
        )
    try:
        spec = json.loads(path.read_text(encoding="utf-8"), parse_constant=_no_constant)
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise WeightsError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(spec, dict):
        raise WeightsError(f"{path} must hold a JSON object, got {type(spec).__name__}")
    missing = [k for k in ("codec", "text_encoder", "categories") if k not in spec]
    if missing:
        raise WeightsError(f"{path} lacks {', '.join(missing)}; re-export the pipeline")
    spec = {"model": "model", "schedule": {}, "instance_bits": 3, "image_size": 64, **spec}

    def fail(message: str) -> WeightsError:
        return WeightsError(f"{path}: {message}; re-export the pipeline or fix the file")

    for key in ("model", "codec", "text_encoder"):
        if not isinstance(spec[key], str) or not spec[key]:
            raise fail(f"{key!r} must be a non-empty string, got {spec[key]!r}")
    if not isinstance(spec["categories"], list) or not spec["categories"]:
        raise fail("'categories' must be a non-empty list of COCO categories")
    if not isinstance(spec["schedule"], dict):
        raise fail(f"'schedule' must be an object, got {spec['schedule']!r}")
    try:
        checks.number(spec["instance_bits"], "'instance_bits'", 0, 16, integer=True)
        checks.number(spec["image_size"], "'image_size'", 8, 4096, integer=True)
        for key in ("guidance_scale", "map_guidance_scale"):
            if key in spec:
                checks.guidance(spec[key], repr(key))
        if "map_cleanup" in spec:
            checks.number(spec["map_cleanup"], "'map_cleanup'", 0, 4096, integer=True)
    except ConfigError as exc:
        raise fail(str(exc)) from None
    return spec


def schedule_from_spec(spec: dict, path: Path):
    from pandiff.diffusion.schedule import NoiseSchedule

    try:
        return NoiseSchedule(**spec["schedule"])
    except (TypeError, ConfigError) as exc:
        raise WeightsError(
            f"{path / PIPELINE_FILE}: invalid 'schedule' ({exc}); re-export the pipeline"
        ) from None


def _no_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")
