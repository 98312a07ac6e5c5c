"""Moving touching things apart in a map (pandiff.world.checks.separate_touching) on hand-made maps."""

import numpy as np
import pytest

from pandiff.data.panoptic_map import PanopticMap
from pandiff.errors import DataError
from pandiff.world.checks import instance_counts, separate_touching, touching_pairs
from pandiff.world.generator import world_category_table

TABLE = world_category_table()
GRASS, SKY = TABLE.index_of_name("grass"), TABLE.index_of_name("sky")
SQUARE, CIRCLE = TABLE.index_of_name("square"), TABLE.index_of_name("circle")


def blank(stuff: int = GRASS, size: int = 64) -> PanopticMap:
    return PanopticMap(np.full((size, size), stuff), np.zeros((size, size), dtype=int), TABLE)


def paint(pmap: PanopticMap, category: int, instance: int, rows: slice, cols: slice) -> PanopticMap:
    pmap.category[rows, cols], pmap.instance[rows, cols] = category, instance
    return pmap


def mask(pmap: PanopticMap, category: int, instance: int) -> np.ndarray:
    return (pmap.category == category) & (pmap.instance == instance)


def test_side_by_side_squares_get_a_gap_bitten_from_one():
    pmap = paint(paint(blank(), SQUARE, 1, np.s_[5:17], np.s_[5:17]), SQUARE, 2, np.s_[5:17], np.s_[17:29])
    out = separate_touching(pmap)
    assert touching_pairs(pmap) == 1 and touching_pairs(out, same_category=False) == 0
    assert instance_counts(out) == {"square": 2}
    # equal areas: the first stays whole, the second loses the two columns within 2 steps of it
    assert (mask(out, SQUARE, 1) == mask(pmap, SQUARE, 1)).all()
    assert mask(out, SQUARE, 2).sum() == 144 - 2 * 12
    assert (out.category[5:17, 17:19] == GRASS).all() and (out.instance[5:17, 17:19] == 0).all()
    assert (out.category != pmap.category).sum() == 24  # nothing else moved


def test_the_smaller_thing_stays_whole_when_one_overlaps_another():
    pmap = paint(blank(), SQUARE, 1, np.s_[5:25], np.s_[5:25])  # 400 px, partly hidden below
    pmap = paint(pmap, CIRCLE, 1, np.s_[18:26], np.s_[18:26])  # 64 px in front, across its corner
    out = separate_touching(pmap)
    assert touching_pairs(out, same_category=False) == 0
    assert (mask(out, CIRCLE, 1) == mask(pmap, CIRCLE, 1)).all()
    rows, cols = np.nonzero(mask(out, SQUARE, 1))
    # every square pixel left is more than 2 four-connected steps from the circle
    steps = np.maximum(18 - rows, 0) + np.maximum(18 - cols, 0)
    assert steps.min() == 3
    assert instance_counts(out) == {"square": 1, "circle": 1}


def test_apart_things_and_maps_without_things_are_left_as_they_are():
    apart = paint(paint(blank(), SQUARE, 1, np.s_[5:17], np.s_[5:17]), SQUARE, 2, np.s_[5:17], np.s_[20:32])
    assert separate_touching(apart) is apart  # three columns of grass between them
    empty = blank(SKY)
    assert separate_touching(empty) is empty  # no things at all
    near = paint(
        paint(blank(), SQUARE, 1, np.s_[5:17], np.s_[5:17]), SQUARE, 2, np.s_[5:17], np.s_[18:30]
    )  # 1 column between
    assert separate_touching(near, gap=1) is near and separate_touching(near) is not near


def test_a_bite_that_cuts_a_thing_in_two_keeps_its_larger_piece():
    pmap = paint(blank(), SQUARE, 1, np.s_[30:33], np.s_[2:50])  # a bar, 3 x 48
    pmap = paint(pmap, CIRCLE, 1, np.s_[27:36], np.s_[12:18])  # across it, left of centre
    out = separate_touching(pmap)
    bar = mask(out, SQUARE, 1)
    cols = np.nonzero(bar.any(axis=0))[0]
    assert cols.min() == 20 and cols.max() == 49  # the right piece; the left one (cols 2-9) went
    assert (out.category[30:33, 2:20] != SQUARE).all()
    assert touching_pairs(out, same_category=False) == 0


def test_three_in_a_row_end_apart_and_the_freed_pixels_take_the_nearest_stuff():
    pmap = blank(GRASS)
    pmap.category[:, 32:] = SKY  # grass left, sky right
    for k, c in enumerate((10, 22, 34), start=1):
        paint(pmap, SQUARE, k, np.s_[20:32], np.s_[c : c + 12])
    out = separate_touching(pmap)
    assert touching_pairs(out, same_category=False) == 0
    assert instance_counts(out) == {"square": 3}
    freed = (pmap.category == SQUARE) & (out.category != SQUARE)
    assert freed.any()
    assert set(np.unique(out.category[freed])) <= {GRASS, SKY}
    assert (out.instance[freed] == 0).all()


def test_without_stuff_the_freed_pixels_become_void():
    pmap = PanopticMap(np.zeros((32, 32), dtype=int), np.zeros((32, 32), dtype=int), TABLE)
    paint(pmap, SQUARE, 1, np.s_[4:14], np.s_[4:14])
    paint(pmap, SQUARE, 2, np.s_[4:14], np.s_[14:24])
    out = separate_touching(pmap)
    assert touching_pairs(out, same_category=False) == 0
    assert (out.category[4:14, 14:16] == 0).all()


def test_gap_below_one_is_refused():
    with pytest.raises(DataError, match="gap"):
        separate_touching(blank(), gap=0)
