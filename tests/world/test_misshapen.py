"""The misshapen-thing check: solidity (area over convex hull) of a map's things against the least
solid single world shape of their category."""

import numpy as np
import pytest

from pandiff.data.panoptic_map import PanopticMap
from pandiff.errors import DataError
from pandiff.world.checks import misshapen_things, shape_solidity_range, solidity, thing_instances
from pandiff.world.drawing import THING_SHAPES, Thing, shape_mask
from pandiff.world.generator import make_scene, world_category_table

WORLD = world_category_table()


def test_solidity_of_hand_made_masks():
    square = np.zeros((20, 20), bool)
    square[5:15, 5:15] = True
    assert solidity(square) == pytest.approx(1.0)
    notched = square.copy()
    notched[5:10, 10:15] = False  # an L: 75 pixels, hull = 100 minus the 5 x 5 corner's half = 87.5
    assert solidity(notched) == pytest.approx(75 / 87.5)
    two = np.zeros((20, 20), bool)
    two[0:4, 0:4] = two[0:4, 12:16] = True  # two 4 x 4 squares 8 px apart: 32 / (4 * 16)
    assert solidity(two) == pytest.approx(0.5)
    single = np.zeros((5, 5), bool)
    single[2, 3] = True
    assert solidity(single) == pytest.approx(1.0)
    assert solidity(np.zeros((5, 5), bool)) == 1.0  # empty: nothing to fault
    diagonal = np.eye(6, dtype=bool)  # a staircase of 6 pixels: its hull adds 2 * 5 half pixels
    assert solidity(diagonal) == pytest.approx(6 / 11)


def test_the_range_is_that_of_single_shapes():
    ranges = shape_solidity_range(64)
    assert set(ranges) == set(THING_SHAPES)
    assert ranges["square"] == pytest.approx((1.0, 1.0))  # world squares are never rotated
    (c0, c1), (t0, t1) = ranges["circle"], ranges["triangle"]
    assert 0.88 < c0 < c1 < 0.98 and 0.8 < t0 < t1 < 0.95
    (s0, s1), (x0, x1) = ranges["star"], ranges["cross"]
    assert 0.48 < s0 < s1 < 0.7 and 0.62 < x0 < x1 < 0.85
    # single shapes at radii and centres off the grid the range was taken on stay within 3% of it
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:64, 0:64] + 0.5
    for shape in THING_SHAPES:
        least, most = ranges[shape]
        for _ in range(20):
            r = rng.uniform(0.1, 0.205) * 64
            x, y = rng.uniform(20, 44, 2)
            value = solidity(shape_mask(Thing(shape, "red", "small", x, y, r), xx, yy))
            assert 0.97 * least <= value <= most / 0.97
    with pytest.raises(DataError, match="at least 8 pixels"):
        shape_solidity_range(4)


def _map(things: list[tuple[str, int, np.ndarray]], size: int = 64) -> PanopticMap:
    """Grass with the given (category, instance, mask) things."""
    category = np.full((size, size), WORLD.index_of_name("grass"))
    instance = np.zeros((size, size), dtype=int)
    for name, k, mask in things:
        category[mask], instance[mask] = WORLD.index_of_name(name), k
    return PanopticMap(category, instance, WORLD)


def _shape(name: str, x: float, y: float, r: float = 9.0) -> np.ndarray:
    yy, xx = np.mgrid[0:64, 0:64] + 0.5
    return shape_mask(Thing(name, "red", "large", x, y, r), xx, yy)


def test_two_shapes_fused_into_one_instance_are_misshapen():
    one = _map([("triangle", 1, _shape("triangle", 20, 30))])
    assert misshapen_things(one, 0.95) == 0
    # two overlapping triangles side by side, one instance: a triangle with two peaks
    fused = _shape("triangle", 20, 30) | _shape("triangle", 34, 30)  # their bases overlap
    two_peaks = _map([("triangle", 1, fused)])
    assert solidity(fused) < 0.95 * shape_solidity_range(64)["triangle"][0]
    assert misshapen_things(two_peaks, 0.95) == 1
    assert misshapen_things(two_peaks, 0.0) == 0  # ratio 0: off
    # the same two triangles as two instances: each is whole
    apart = _map([("triangle", 1, _shape("triangle", 20, 30)), ("triangle", 2, _shape("triangle", 44, 30))])
    assert misshapen_things(apart, 0.95) == 0
    # every instance is judged: a fused pair of circles and a whole star
    circles = _shape("circle", 14, 14, 6) | _shape("circle", 25, 14, 6)  # a peanut: 0.87 of 0.92
    both = _map([("circle", 1, circles), ("star", 1, _shape("star", 40, 44))])
    assert misshapen_things(both, 0.95) == 1


def test_a_star_or_cross_drawn_as_a_blob_is_misshapen():
    """Too solid counts too: a cross as round as a disc, a star with its points filled in."""
    disc = _shape("circle", 30, 30, 9)
    assert misshapen_things(_map([("cross", 1, disc)]), 0.95) == 1
    assert misshapen_things(_map([("star", 1, disc)]), 0.95) == 1
    assert misshapen_things(_map([("circle", 1, disc)]), 0.95) == 0
    assert misshapen_things(_map([("cross", 1, _shape("cross", 30, 30, 9))]), 0.95) == 0
    filled = _shape("star", 30, 30) | _shape("circle", 30, 30, 7)  # points on a fat body
    assert solidity(filled) > shape_solidity_range(64)["star"][1] / 0.95
    assert misshapen_things(_map([("star", 1, filled)]), 0.95) == 1


def test_a_bite_counts_only_below_the_ratio():
    square = np.zeros((64, 64), bool)
    square[10:30, 10:30] = True
    bitten = square.copy()
    bitten[10:14, 26:30] = False  # a 4 x 4 corner off: 384 / (400 - 8) = 0.98
    assert misshapen_things(_map([("square", 1, bitten)]), 0.95) == 0
    assert misshapen_things(_map([("square", 1, bitten)]), 0.99) == 1
    half = square.copy()
    half[10:20, 20:30] = False  # a quarter off: 300 / 350 = 0.857
    assert misshapen_things(_map([("square", 1, half)]), 0.95) == 1


def test_no_whole_thing_of_the_worlds_own_scenes_is_misshapen():
    """The rule the ratio stands on: a world thing that no other thing overlaps or touches is as
    solid as single shapes of its category are (things half behind another may not be)."""
    from scipy import ndimage

    judged = 0
    for i in range(60):
        pmap = make_scene(0, i, 64).pmap
        things = thing_instances(pmap)
        grown = [ndimage.binary_dilation(m, iterations=2) for _, m in things]
        for a, (name, mask) in enumerate(things):
            if any((grown[a] & things[b][1]).any() for b in range(len(things)) if b != a):
                continue
            alone = _map([(name, 1, mask)])
            assert misshapen_things(alone, 0.95) == 0, f"scene {i}: {name} {solidity(mask):.3f}"
            judged += 1
    assert judged > 60
