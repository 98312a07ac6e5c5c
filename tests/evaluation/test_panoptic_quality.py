"""Panoptic quality and semantic mIoU on hand-built maps with known values."""

import numpy as np
import pytest

from pandiff.data.categories import CategoryTable
from pandiff.data.panoptic_map import PanopticMap
from pandiff.evaluation.panoptic_quality import map_miou, panoptic_quality

TABLE = CategoryTable.from_names(["circle", "square"], ["sky", "grass"])  # 1 2 things, 3 4 stuff


def scene() -> tuple[np.ndarray, np.ndarray]:
    """8x8: sky over grass, two 2x2 circles (instances 1 and 2)."""
    category = np.full((8, 8), 3)
    category[4:] = 4
    instance = np.zeros((8, 8), dtype=int)
    category[1:3, 1:3], instance[1:3, 1:3] = 1, 1
    category[5:7, 5:7], instance[5:7, 5:7] = 1, 2
    return category, instance


def test_identical_maps_have_pq_one_and_miou_one():
    m = PanopticMap(*scene(), TABLE)
    pq = panoptic_quality([m], [m])
    assert pq["pq"] == pq["sq"] == pq["rq"] == pq["pq_things"] == pq["pq_stuff"] == 1.0
    assert map_miou([m], [m]) == 1.0


def test_swapped_category_of_one_instance():
    target = PanopticMap(*scene(), TABLE)
    category, instance = scene()
    category[5:7, 5:7], instance[5:7, 5:7] = 2, 1  # circle 2 drawn as a square
    pq = panoptic_quality([PanopticMap(category, instance, TABLE)], [target])
    # circle: 1 TP (IoU 1), 1 FN -> RQ 2/3; square: 1 FP -> 0; sky, grass: 1 each.
    assert pq["pq"] == pytest.approx((2 / 3 + 0 + 1 + 1) / 4)
    assert pq["sq"] == pytest.approx((1 + 0 + 1 + 1) / 4)
    assert pq["pq_things"] == pytest.approx(1 / 3)
    assert pq["pq_stuff"] == pytest.approx(1.0)
    # circle IoU 4/8, square 0/4, sky 1, grass 1
    assert map_miou([PanopticMap(category, instance, TABLE)], [target]) == pytest.approx(2.5 / 4)


def test_merged_instances_fail_the_half_iou_match():
    target = PanopticMap(*scene(), TABLE)
    category, instance = scene()
    instance[5:7, 5:7] = 1  # both circles as one instance: IoU 4/8 with each, not > 0.5
    pq = panoptic_quality([PanopticMap(category, instance, TABLE)], [target])
    assert pq["pq_things"] == pytest.approx(0.0)  # 0 TP, 1 FP, 2 FN
    assert pq["pq_stuff"] == pytest.approx(1.0)


def test_void_target_pixels_are_ignored():
    category, instance = scene()
    category[0, :] = 0  # unlabelled row in the ground truth
    pred_category, _ = scene()  # the prediction calls that row sky
    pq = panoptic_quality(
        [PanopticMap(pred_category, instance, TABLE)], [PanopticMap(category, instance, TABLE)]
    )
    assert pq["pq"] == pytest.approx(1.0)
    assert (
        map_miou([PanopticMap(pred_category, instance, TABLE)], [PanopticMap(category, instance, TABLE)])
        == 1.0
    )


def test_smaller_prediction_is_resized_to_the_target():
    target = PanopticMap(*scene(), TABLE)
    small = target.resize(4)
    big_again = PanopticMap(np.repeat(np.repeat(small.category, 2, 0), 2, 1),
                            np.repeat(np.repeat(small.instance, 2, 0), 2, 1), TABLE)  # fmt: skip
    assert panoptic_quality([small], [target]) == panoptic_quality([big_again], [target])


def test_ground_truth_pixels_predicted_void_stay_in_the_union():
    """COCO: a thing of 50 pixels with 20 predicted void matches at IoU 30/50 = 0.6 (torchmetrics
    would drop those 20 pixels from the union and report 1.0)."""
    category, instance = np.full((10, 10), 3), np.zeros((10, 10), dtype=int)
    category[:5], instance[:5] = 1, 1  # circle 1: the top 50 pixels
    target = PanopticMap(category, instance, TABLE)
    pred_category = category.copy()
    pred_category[:2] = 0  # 20 of the circle's pixels predicted void
    pq = panoptic_quality([PanopticMap(pred_category, instance, TABLE)], [target])
    assert pq["pq_things"] == pytest.approx(0.6)  # 1 TP at IoU 0.6
    assert pq["pq"] == pytest.approx((0.6 + 1.0) / 2)  # sky matches exactly


def test_crowd_regions_stay_in_the_union_and_excuse_predictions_on_them():
    """COCO: a crowd region (thing pixels with instance 0) is never matched nor missed; its pixels
    count in the union of a prediction that covers them; an unmatched prediction of its category
    lying mostly on it is no false positive."""
    category, instance = np.full((10, 10), 3), np.zeros((10, 10), dtype=int)
    category[0:4, 0:5], instance[0:4, 0:5] = 1, 1  # circle 1: 20 px
    category[0:4, 5:10] = 1  # a circle crowd: 20 px, instance 0
    category[6:9, 6:9], instance[6:9, 6:9] = 1, 0  # a second crowd patch of the same category
    target = PanopticMap(category, instance, TABLE)
    pc, pi = np.full((10, 10), 3), np.zeros((10, 10), dtype=int)
    pc[0:4, 0:7], pi[0:4, 0:7] = 1, 1  # circle 1 spilling 8 px onto the crowd: IoU 20 / 28
    pc[6:9, 6:9], pi[6:9, 6:9] = 1, 2  # a circle entirely on crowd: excused, not a false positive
    pc[0:4, 7:10] = 3  # sky over the rest of the first crowd patch
    pq = panoptic_quality([PanopticMap(pc, pi, TABLE)], [target])
    assert pq["pq_things"] == pytest.approx(20 / 28)
    # Sky: predicted on 12 crowd + its own 51 pixels; target sky 51 px: IoU 51 / 63.
    assert pq["pq_stuff"] == pytest.approx(51 / 63)


def coco_pq_reference(preds, targets, table) -> dict[str, float]:
    """An independent, literal reading of panopticapi's ``pq_compute`` on id maps (segments
    described as COCO ``segments_info``), for the random comparison below."""
    from collections import Counter, defaultdict

    stats = defaultdict(lambda: {"iou": 0.0, "tp": 0, "fp": 0, "fn": 0})
    isthing = dict(zip(range(1, len(table) + 1), table.isthing_lut()[1:]))
    for pred, gt in zip(preds, targets):
        gt_ids = [
            int(c) * 1000 + int(i) if c else 0 for c, i in zip(gt.category.ravel(), gt.instance.ravel())
        ]
        pr_ids = [
            int(c) * 1000 + int(i) if c else 0 for c, i in zip(pred.category.ravel(), pred.instance.ravel())
        ]
        gt_segms = {
            g: {"category_id": g // 1000, "iscrowd": int(isthing[g // 1000] and g % 1000 == 0), "area": n}
            for g, n in Counter(gt_ids).items() if g
        }  # fmt: skip
        pred_segms = {p: {"category_id": p // 1000, "area": n} for p, n in Counter(pr_ids).items() if p}
        gt_pred_map = Counter(zip(gt_ids, pr_ids))
        gt_matched, pred_matched = set(), set()
        for (g, p), inter in gt_pred_map.items():
            if g not in gt_segms or p not in pred_segms or gt_segms[g]["iscrowd"]:
                continue
            if gt_segms[g]["category_id"] != pred_segms[p]["category_id"]:
                continue
            union = pred_segms[p]["area"] + gt_segms[g]["area"] - inter - gt_pred_map.get((0, p), 0)
            if inter / union > 0.5:
                stats[gt_segms[g]["category_id"]]["tp"] += 1
                stats[gt_segms[g]["category_id"]]["iou"] += inter / union
                gt_matched.add(g)
                pred_matched.add(p)
        crowd_labels = {}
        for g, info in gt_segms.items():
            if info["iscrowd"]:
                crowd_labels[info["category_id"]] = g
            elif g not in gt_matched:
                stats[info["category_id"]]["fn"] += 1
        for p, info in pred_segms.items():
            if p in pred_matched:
                continue
            inter = gt_pred_map.get((0, p), 0)
            if info["category_id"] in crowd_labels:
                inter += gt_pred_map.get((crowd_labels[info["category_id"]], p), 0)
            if inter / info["area"] > 0.5:
                continue
            stats[info["category_id"]]["fp"] += 1

    def average(which) -> float:
        pqs = []
        for cat in range(1, len(table) + 1):
            s = stats[cat]
            if which is not None and isthing[cat] != which or s["tp"] + s["fp"] + s["fn"] == 0:
                continue
            pqs.append(s["iou"] / (s["tp"] + 0.5 * s["fp"] + 0.5 * s["fn"]))
        return float(np.mean(pqs)) if pqs else float("nan")

    return {"pq": average(None), "pq_things": average(True), "pq_stuff": average(False)}


def random_map(rng, size: int = 12) -> PanopticMap:
    """Blocky random map: void, both things (instances 0-3, 0 = crowd) and both stuffs."""
    cells = size // 3
    category = rng.integers(0, 5, (cells, cells)).repeat(3, 0).repeat(3, 1)
    instance = rng.integers(0, 4, (cells, cells)).repeat(3, 0).repeat(3, 1)
    noise = rng.random((size, size)) < 0.15  # ragged edges
    category = np.where(noise, rng.integers(0, 5, (size, size)), category)
    instance = np.where(np.isin(category, [1, 2]), instance, 0)
    return PanopticMap(category, instance, TABLE)


def test_random_maps_agree_with_a_literal_coco_reading():
    rng = np.random.default_rng(0)
    for _ in range(30):
        targets = [random_map(rng) for _ in range(3)]
        # Predictions: the targets with some cells changed, so that many pairs match.
        preds = []
        for t in targets:
            p = random_map(rng)
            keep = rng.random(t.shape) < 0.7
            preds.append(
                PanopticMap(
                    np.where(keep, t.category, p.category), np.where(keep, t.instance, p.instance), TABLE
                )
            )
        ours, ref = panoptic_quality(preds, targets), coco_pq_reference(preds, targets, TABLE)
        for key in ("pq", "pq_things", "pq_stuff"):
            assert ours[key] == pytest.approx(ref[key], nan_ok=True), key
