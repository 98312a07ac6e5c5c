"""Paired comparison of two judged ``cogen`` reports of the same scenes (``pandiff compare``).

Two evaluation runs of 200 prompts differ by +-3 points of adherence by chance alone, so a
sampling or training change worth 2 points cannot be told apart by comparing two headline
figures. Both runs ask the same prompts, though: pairing them scene by scene leaves only the
scenes where the two verdicts differ ("wins" of the new run and "losses"), and the exact McNemar
test (a two-sided binomial test of the wins among those discordant scenes at 1/2) says how often
chance alone gives a split at least that lopsided. With ``--generators per-sample`` in both runs
and one seed, a scene's sample depends on that scene alone, so the two runs differ only where the
changed setting acts and the test is at its sharpest.

The per-scene records come from :func:`pandiff.evaluation.evaluate.sample_records`. The test is
scipy's ``binomtest``; what is written here is only the pairing and the table.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pandiff.errors import DataError
from pandiff.world.judged import BUCKETS as THING_BUCKETS

BUCKETS = ("all", *THING_BUCKETS)
# Per-scene yes/no verdicts compared, in table order: judged on the image, then on the model's map.
PAIRED = ("adherence", "relation", "agreement", "agreement_touching", "map_adherence")
# Header fields a reader needs beside the table, shown for both runs.
SETTINGS = (
    "model",
    "weights",
    "steps",
    "guidance_scale",
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


def load_report(path: str | Path) -> dict[str, Any]:
    """A report JSON written by ``pandiff evaluate`` with per-scene verdicts, or a clear error."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"report {path} does not exist; pass a JSON report written by pandiff evaluate")
    try:
        report = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(
            f"report {path} is not valid JSON ({err}); pass a report written by pandiff evaluate"
        ) from err
    if not isinstance(report, dict) or "metrics" not in report:
        raise DataError(f"{path} is not a pandiff evaluation report (it has no 'metrics')")
    if not report.get("samples"):
        raise DataError(
            f"report {path} holds no per-scene verdicts: only a cogen run on a built-in world with --judge "
            "writes them (older reports do not); run pandiff evaluate --mode cogen --judge DIR again"
        )
    return report


def check_pairs(base: dict, new: dict) -> None:
    """Refuse two reports whose scenes or prompts differ: pairing them would compare different questions."""
    for key in ("data", "split"):
        if base.get(key) != new.get(key):
            raise DataError(
                f"the reports evaluate different scenes ({key}: {base.get(key)!r} vs {new.get(key)!r}); "
                "compare runs of one dataset and split"
            )
    a, b = base["samples"], new["samples"]
    if len(a) != len(b):
        raise DataError(
            f"the reports hold {len(a)} and {len(b)} scenes; compare runs with the same --n "
            "(or cut the longer one to the shorter)"
        )
    for x, y in zip(a, b):
        if (x["image_id"], x["prompt"]) != (y["image_id"], y["prompt"]):
            raise DataError(
                f"scene {x['index']} differs between the reports (image {x['image_id']} {x['prompt']!r} vs "
                f"image {y['image_id']} {y['prompt']!r}); compare runs of the same scenes and prompts"
            )


def mcnemar_p(wins: int, losses: int) -> float:
    """Exact two-sided McNemar p-value: the binomial test of ``wins`` among ``wins + losses``
    discordant pairs at probability 1/2 (1.0 when no pair is discordant)."""
    from scipy.stats import binomtest

    if wins < 0 or losses < 0:
        raise ValueError(f"wins and losses must be >= 0, got {wins}, {losses}")
    n = wins + losses
    return 1.0 if n == 0 else float(binomtest(wins, n, 0.5).pvalue)


def paired_rows(base: dict, new: dict) -> list[dict[str, Any]]:
    """One row per criterion and bucket that has a tested scene: ``n`` (scenes both runs tested),
    the two rates, ``wins`` (new right, base wrong), ``losses`` and McNemar's ``p``."""
    check_pairs(base, new)
    rows = []
    for key in PAIRED:
        for bucket in BUCKETS:
            pairs = [
                (x[key], y[key])
                for x, y in zip(base["samples"], new["samples"])
                if (bucket == "all" or x["bucket"] == bucket)
                and x.get(key) is not None
                and y.get(key) is not None
            ]
            if not pairs:
                continue
            wins = sum(bool(y) and not x for x, y in pairs)
            losses = sum(bool(x) and not y for x, y in pairs)
            rows.append(
                {
                    "criterion": key,
                    "bucket": bucket,
                    "n": len(pairs),
                    "base": sum(bool(x) for x, _ in pairs) / len(pairs),
                    "new": sum(bool(y) for _, y in pairs) / len(pairs),
                    "wins": wins,
                    "losses": losses,
                    "p": mcnemar_p(wins, losses),
                }
            )
    return rows


def pairing(base: dict, new: dict) -> str:
    """How tightly the two runs are paired, in words."""
    same_seed = base.get("seed") == new.get("seed")
    if base.get("generators") == new.get("generators") == "per-sample" and same_seed:
        return (
            "scene by scene: one generator per scene, same seed (a scene differs only where the settings act)"
        )
    return "by prompt only: a shared generator or different seeds (the noise differs too)"


def compare(base: dict, new: dict) -> dict[str, Any]:
    """The comparison as a dict (what ``pandiff compare --out`` writes)."""
    return {
        "pairing": pairing(base, new),
        "base": {k: base.get(k) for k in SETTINGS},
        "new": {k: new.get(k) for k in SETTINGS},
        # settings a report does not hold (written before the setting existed), told apart from a
        # recorded None ("not applicable")
        "not_recorded": {
            "base": [k for k in SETTINGS if k not in base],
            "new": [k for k in SETTINGS if k not in new],
        },
        "rows": paired_rows(base, new),
    }


def markdown(result: dict[str, Any], base_name: str = "base", new_name: str = "new") -> str:
    """The comparison as a Markdown table, settings that differ first."""
    lines = [f"# Paired comparison: {new_name} against {base_name}", "", f"- **paired**: {result['pairing']}"]
    absent = result.get("not_recorded", {})
    for key in SETTINGS:
        a, b = result["base"].get(key), result["new"].get(key)
        mark = "" if a == b else " (differs)"
        shown = [
            "not recorded" if key in absent.get(side, ()) else v for side, v in (("base", a), ("new", b))
        ]
        lines.append(f"- **{key}**: {shown[0]} / {shown[1]}{mark}")
    lines += [
        "",
        f"| criterion | things | n | {base_name} | {new_name} | wins | losses | McNemar p |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['criterion']} | {r['bucket']} | {r['n']} | {100 * r['base']:.1f}% | {100 * r['new']:.1f}% | "
            f"{r['wins']} | {r['losses']} | {r['p']:.3f} |"
        )
    lines += [
        "",
        (
            "wins: scenes the new run gets right and the base run wrong; losses: the reverse. p: how often "
            "chance alone splits that many discordant scenes at least this unevenly (exact McNemar test)."
        ),
    ]
    return "\n".join(lines) + "\n"
