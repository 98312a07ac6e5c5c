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
