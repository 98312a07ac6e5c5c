"""An evaluation report: a header saying how the numbers were produced, the numbers, and the
metrics that were skipped with the reason; written as JSON and as a Markdown table beside it."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from pandiff.errors import ConfigError
from pandiff.io import atomic_write_text

# Header keys shown in the Markdown summary, in order.
_SUMMARY = (
    "mode",
    "model",
    "weights",
    "data",
    "split",
    "n",
    "prompts_cut",
    "sampler",
    "map_sampler",
    "steps",
    "guidance_scale",
    "map_guidance_scale",
    "map_cleanup",
    "one_piece_instances",
    "redraw_image",
    "image_map_guidance_scale",
    "self_check",
    "best_of",
    "avoid_touching",
    "separate_touching",
    "snap_shapes",
    "spread_things",
    "cogen_steps",
    "colour_split",
    "misshapen",
    "picture_match",
    "restarts",
    "colour_check",
    "seed",
    "generators",
)


# What a figure is judged on, in the order the Markdown table shows it: the generated image first.
_ORDER = {"image": 0, "image vs map": 1, "map": 2, "map vs ground truth": 3}


def _json_safe(value: Any) -> Any:
    """NaN/inf -> None (JSON has no NaN), recursively through dicts and lists."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def check_json_path(path: str | Path) -> None:
    """Refuse an output path that is not a ``.json`` file (its Markdown table goes beside it)."""
    if Path(path).suffix != ".json":
        raise ConfigError(f"--out must name a .json file (the Markdown table goes beside it), got {path}")


def write_json_and_markdown(path: str | Path, data: dict[str, Any], markdown: str) -> None:
    """Write ``data`` to ``path`` (JSON) and ``markdown`` beside it (same name, ``.md``), atomically."""
    path = Path(path)
    atomic_write_text(path, json.dumps(data, indent=1, allow_nan=False) + "\n")
    atomic_write_text(path.with_suffix(".md"), markdown)


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{value:.4f}" if isinstance(value, float) else str(value)


class Report:
    """Collects metrics: ``add(name, value, how)``; ``skip(name, why)``; ``write(path)``."""

    def __init__(self, header: dict[str, Any]) -> None:
        self.header = dict(header)
        self.metrics: dict[str, dict[str, Any]] = {}
        self.skipped: dict[str, str] = {}
        # per-scene verdicts (a judged cogen run): what ``pandiff compare`` pairs across reports
        self.samples: list[dict[str, Any]] | None = None

    def add(
        self, name: str, value: float, how: str, details: dict | None = None, on: str | None = None
    ) -> None:
        """Record ``value`` with a sentence saying how it was measured (and optional sub-numbers).

        ``on`` says what the figure is judged on (``"image"``, ``"map"``, ``"image vs map"``, ...):
        the Markdown table leads with the image-judged figures and labels every row.
        """
        entry: dict[str, Any] = {"value": float(value), "how": how, "judged_on": on}
        if details is not None:
            entry["details"] = details
        self.metrics[name] = entry

    def skip(self, name: str, why: str) -> None:
        self.skipped[name] = why

    def to_dict(self) -> dict[str, Any]:
        extra = {} if self.samples is None else {"samples": self.samples}
        return _json_safe({**self.header, "metrics": self.metrics, "skipped": self.skipped, **extra})

    def markdown(self) -> str:
        """A summary line per header field, then ``| metric | value | how |`` and skipped notes."""
        lines = [f"# pandiff evaluation ({self.header.get('mode', '?')})", ""]
        lines += [f"- **{key}**: {_fmt(self.header.get(key))}" for key in _SUMMARY if key in self.header]
        judge = self.header.get("judge")
        if judge:
            lines.append(f"- **judge**: {judge['path']} (validation mIoU {_fmt(judge.get('val_miou'))})")
            truth = judge.get("ground_truth")
            if truth:
                lines.append(
                    f"- **judge on the real images of these scenes** (the ceiling of every image-judged "
                    f"figure): count accuracy {_fmt(truth['count_accuracy'])}, adherence "
                    f"{_fmt(truth['adherence'])}, mIoU {_fmt(truth['miou'])}"
                    + (
                        f"; count accuracy where two instances of one category touch "
                        f"{_fmt(truth['count_accuracy_touching'])} (n={truth['touching_n']})"
                        if truth.get("touching_n")
                        else ""
                    )
                )
        lines += ["", "| metric | judged on | value | how it was measured |", "|---|---|---|---|"]
        rows = sorted(
            self.metrics.items(), key=lambda item: _ORDER.get(item[1].get("judged_on"), len(_ORDER))
        )
        lines += [
            f"| {name} | {m.get('judged_on') or '-'} | {_fmt(m['value'])} | {m['how']} |" for name, m in rows
        ]
        if self.skipped:
            lines += ["", "Skipped:", ""] + [f"- **{name}**: {why}" for name, why in self.skipped.items()]
        return "\n".join(lines) + "\n"

    def write(self, path: str | Path) -> dict[str, Any]:
        """Write ``path`` (JSON) and the Markdown table beside it (same name, ``.md``); return the dict."""
        data = self.to_dict()
        write_json_and_markdown(path, data, self.markdown())
        return data
