"""Mean Count Difference on hand-computed cases."""

import numpy as np
import pytest

from pandiff.data.categories import CategoryTable
from pandiff.data.panoptic_map import PanopticMap
from pandiff.errors import DataError
from pandiff.evaluation.mcd import category_histogram, count_difference, mean_count_difference

TABLE = CategoryTable.from_names(["circle", "square"], ["sky", "grass"])  # 1 2 things, 3 4 stuff


def semantic(category) -> PanopticMap:
    category = np.asarray(category)
    return PanopticMap(category, np.zeros_like(category), TABLE)


def test_histogram_counts_void_as_its_own_bin():
    assert category_histogram(np.array([[0, 0, 3], [4, 4, 4]]), 4).tolist() == [2, 0, 0, 1, 3]


def test_identical_maps_give_zero():
    m = semantic(np.arange(16).reshape(4, 4) % 5)
    assert count_difference(m, m) == 0.0
    assert mean_count_difference([m, m], [m, m]) == 0.0


def test_swapped_category_gives_l1_over_pixels():
    target = np.full((4, 4), 3)
    target[:1] = 1  # 4 circle pixels, 12 sky
    generated = target.copy()
    generated[0, :] = 2  # the circle pixels drawn as square
    # |4 - 0| (circle) + |0 - 4| (square) = 8 over 16 pixels
    assert count_difference(semantic(generated), semantic(target)) == pytest.approx(0.5)


def test_disjoint_categories_reach_the_maximum_two():
    assert count_difference(semantic(np.full((3, 3), 3)), semantic(np.full((3, 3), 4))) == pytest.approx(2.0)


def test_void_counts_like_a_category():
    target = np.full((2, 2), 4)
    generated = target.copy()
    generated[0, 0] = 0
    assert count_difference(semantic(generated), semantic(target)) == pytest.approx(2 / 4)


def test_different_sizes_compare_pixel_fractions():
    small = semantic([[3, 4], [3, 4]])  # half sky, half grass
    big = semantic(np.repeat(np.repeat(small.category, 4, 0), 4, 1))
    assert count_difference(small, big) == pytest.approx(0.0)
    quarter = semantic([[3, 3], [3, 4]])  # 3/4 sky vs 1/2 sky -> |0.25| + |0.25|
    assert count_difference(quarter, big) == pytest.approx(0.5)


def test_mean_over_samples():
    a, b = semantic(np.full((2, 2), 3)), semantic(np.full((2, 2), 4))
    assert mean_count_difference([a, a], [a, b]) == pytest.approx(1.0)


def test_mismatched_lists_are_rejected():
    a = semantic(np.full((2, 2), 3))
    with pytest.raises(DataError, match="one ground-truth map per generated map"):
        mean_count_difference([a], [a, a])
    with pytest.raises(DataError, match="at least one"):
        mean_count_difference([], [])
