"""Prompt adherence judged on the generated **image**, by the world judge, broken down by how many
things the prompt names.

A model's own map is no evidence of what its picture shows (GenEval judges the image with a
detector for this reason): here the judge segments each generated image and the scene spec's
criteria of :mod:`pandiff.world.checks` are applied to that judged map. The same
criteria on the model's own map stay available as a second, labelled figure, and the judge is
scored on the real images of the same scenes so that every report states its ceiling.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from pandiff.data.panoptic_map import PanopticMap
from pandiff.errors import DataError
from pandiff.world import checks as wc

BUCKETS = ("1", "2", "3", "4+")
# Yes/no criteria of one sample, in report order; colour is a share of instances instead.
CRITERIA = ("adherence", "counts", "stuff_present", "relation", "agreement", "agreement_touching")


def bucket(spec: dict) -> str:
    """The prompt's bucket by the number of things it names: ``"1"``, ``"2"``, ``"3"`` or ``"4+"``."""
    n = len(spec["things"])
    if n < 1:
        raise DataError(f"scene {spec.get('image_id')} names no thing; every world prompt names one")
    return BUCKETS[min(n, 4) - 1]


def judge_sample(
    judged: PanopticMap, spec: dict, image: np.ndarray, own_map: PanopticMap | None = None
) -> dict:
    """Verdicts for one picture from its judged map (``judged``: the judge's segmentation of
    ``image``, ``H W 3`` uint8).

    Keys: those of :func:`world_checks.check_adherence` (``categories``, ``counts``, ...), and
    ``adherence`` (thing counts per category equal the prompt's **and** every named stuff is
    present), ``relation`` (None when the prompt states none; on
    judged instance centroids, candidates of the named colour), ``colour`` (``(correct, judged)``
    instance colours, :func:`world_checks.colour_matches`), ``agreement`` (judged thing counts equal
    those of ``own_map``, the map generated beside the image; None without one) and
    ``agreement_touching`` (the same, only where ``own_map`` has two touching instances of one
    category, :func:`world_checks.touching_pairs`; None elsewhere): whether such shapes stay
    apart in the picture.
    """
    if own_map is None:
        return _verdicts(judged, spec, image, None)
    own = wc.instance_counts(own_map)
    agreement = wc.instance_counts(judged) == own
    # a touching pair needs two instances of one category: most maps skip the dilations
    touching = any(n > 1 for n in own.values()) and wc.touching_pairs(own_map) > 0
    return _verdicts(judged, spec, image, agreement, agreement if touching else None)


def map_sample(own_map: PanopticMap, spec: dict, image: np.ndarray | None = None) -> dict:
    """The same verdicts read off the model's own map (colours still read from ``image``)."""
    return _verdicts(own_map, spec, image, None)


def _verdicts(
    pmap: PanopticMap,
    spec: dict,
    image: np.ndarray | None,
    agreement: bool | None,
    agreement_touching: bool | None = None,
) -> dict:
    verdict = wc.check_adherence(pmap, spec, image)  # every criterion, so adherence_rates reads these too
    return {
        **verdict,
        "adherence": bool(verdict["counts"] and verdict["stuff_present"]),
        "colour": wc.colour_matches(pmap, image, spec) if image is not None else (0, 0),
        "agreement": agreement,
        "agreement_touching": agreement_touching,
    }


def _rates(verdicts: Sequence[dict]) -> dict[str, float | int]:
    out: dict[str, float | int] = {"n": len(verdicts)}
    for key in CRITERIA:
        values = [v[key] for v in verdicts if v.get(key) is not None]
        out[key] = float(np.mean(values)) if values else float("nan")
        out[f"{key}_n"] = len(values)
    correct = sum(v["colour"][0] for v in verdicts)
    judged = sum(v["colour"][1] for v in verdicts)
    out["colour"] = correct / judged if judged else float("nan")
    out["colour_n"] = judged
    return out


def summarise(verdicts: Sequence[dict], specs: Sequence[dict]) -> dict:
    """Rates of every criterion overall and per bucket: ``{"all": {...}, "1": {...}, ...}``; each
    holds ``n``, the share passing each criterion (relations over prompts that state one, colour
    over judged instances) and ``<criterion>_n``, the number of cases behind it. Buckets without a
    sample are left out."""
    if len(verdicts) != len(specs) or not verdicts:
        raise DataError(f"need one verdict per scene, got {len(verdicts)} verdicts for {len(specs)} scenes")
    out = {"all": _rates(verdicts)}
    keys = [bucket(s) for s in specs]
    for b in BUCKETS:
        chosen = [v for v, k in zip(verdicts, keys) if k == b]
        if chosen:
            out[b] = _rates(chosen)
    return out


def by_bucket(summary: dict, key: str) -> str:
    """``"1: 0.98 (n=120), 2: ..."`` of one criterion, for a report's "how" sentence."""
    parts = []
    for b in BUCKETS:
        if b in summary and summary[b][f"{key}_n"]:
            parts.append(f"{b}: {summary[b][key]:.3f} (n={summary[b][f'{key}_n']})")
    return ", ".join(parts)


def judge_ceiling(
    judged: Sequence[PanopticMap], real_maps: Sequence[PanopticMap], specs: Sequence[dict], images
) -> dict:
    """The judge's own error on ground truth: its verdicts on the **real** images of the scenes
    (``images``: ``N H W 3`` uint8) against their specs, and its semantic mIoU against the real maps.

    Returns ``{"miou", "count_accuracy", "adherence", "by_bucket": {...}}``: a figure judged on
    generated images cannot be trusted above these.
    """
    from pandiff.evaluation.panoptic_quality import map_miou

    verdicts = [judge_sample(j, s, im, m) for j, s, im, m in zip(judged, specs, images, real_maps)]
    summary = summarise(verdicts, specs)
    return {
        "miou": map_miou(list(judged), list(real_maps)),
        "count_accuracy": summary["all"]["counts"],
        "adherence": summary["all"]["adherence"],
        "relation": summary["all"]["relation"],
        "colour": summary["all"]["colour"],
        # count accuracy on the real scenes with touching instances of one category
        "count_accuracy_touching": summary["all"]["agreement_touching"],
        "touching_n": summary["all"]["agreement_touching_n"],
        "by_bucket": {
            b: {k: summary[b][k] for k in ("n", "counts", "adherence")} for b in BUCKETS if b in summary
        },
    }


def report_image_figures(summary: dict, report) -> None:
    """The headline co-generation figures: the prompt's criteria judged on the generated image."""
    rows = (
        ("image_adherence", "adherence", "thing counts per category equal the prompt's and every named stuff is present"),
        ("image_colour_accuracy", "colour", "judged instances whose pixels have the prompt's colour for them"),
        ("image_relations", "relation", "prompts stating a relation whose judged instance centroids stand in it"),
        ("image_map_agreement", "agreement", "judged thing counts equal the generated map's counts"),
        ("image_map_agreement_touching", "agreement_touching", "judged thing counts equal the generated map's, among generated maps with two touching instances of one category"),
    )  # fmt: skip
    for name, key, what in rows:
        how = f"judged on the generated image: {what}; by things named: {by_bucket(summary, key)}"
        report.add(name, summary["all"][key], how, details=summary, on="image")


def report_judge_ceiling(judge, real, specs: Sequence[dict], report) -> None:
    """Score the judge on the real images of the evaluated scenes; the header states it as the
    ceiling of every image-judged figure."""
    from pandiff.world.judge import segment_images

    judged = segment_images(judge, real.images)
    report.header["judge"]["ground_truth"] = judge_ceiling(
        judged, real.maps, specs, real.images.permute(0, 2, 3, 1).numpy()
    )
