"""The colour-split check: thing instances of a map that a picture paints in two colours."""

import numpy as np
import pytest

from pandiff.data.panoptic_map import PanopticMap
from pandiff.errors import DataError
from pandiff.world.checks import colour_split_things
from pandiff.world.drawing import STUFF_COLORS, THING_COLORS
from pandiff.world.generator import make_scene, world_category_table

WORLD = world_category_table()
RED, WHITE = THING_COLORS["red"], THING_COLORS["white"]


def one_square(size: int = 32, top: int = 8, side: int = 12) -> PanopticMap:
    """Grass with one square instance, ``side`` pixels wide, its top-left corner at (top, top)."""
    category = np.full((size, size), WORLD.index_of_name("grass"))
    instance = np.zeros((size, size), dtype=int)
    category[top : top + side, top : top + side] = WORLD.index_of_name("square")
    instance[top : top + side, top : top + side] = 1
    return PanopticMap(category, instance, WORLD)


def picture(pmap: PanopticMap, colour=RED, scale: int = 1) -> np.ndarray:
    """The map painted flat: the square in ``colour``, the rest grass, each map pixel ``scale`` px."""
    image = np.empty((*pmap.shape, 3), dtype=np.uint8)
    image[:] = STUFF_COLORS["grass"]
    image[pmap.instance == 1] = colour
    return image.repeat(scale, 0).repeat(scale, 1)


def test_a_flat_thing_is_not_split_and_a_half_painted_one_is():
    pmap = one_square()  # 12 x 12 square: 10 x 10 = 100 interior pixels after a 1 px erosion
    flat = picture(pmap)
    assert colour_split_things(flat, pmap, 0.15) == 0
    part = flat.copy()
    part[8:20, 15:20] = WHITE  # the square's right part white: 40 of its 100 interior pixels
    assert colour_split_things(part, pmap, 0.15) == 1
    assert colour_split_things(part, pmap, 0.39) == 1 and colour_split_things(part, pmap, 0.4) == 0
    assert colour_split_things(part, pmap, 0.0) == 0  # share 0: off


def test_the_share_counts_interior_pixels_only():
    """A corner of 3 x 3 = 9 of the 100 interior pixels: split at share 0.05, not at 0.15. The
    outline ring (eroded away) may hold any colour: blur and edges do not count."""
    pmap = one_square()
    corner = picture(pmap)
    corner[9:12, 9:12] = WHITE  # interior rows/cols 9..18: a 3 x 3 corner inside it
    assert colour_split_things(corner, pmap, 0.15) == 0
    assert colour_split_things(corner, pmap, 0.05) == 1
    ring = picture(pmap)
    ring[8, 8:20] = ring[19, 8:20] = ring[8:20, 8] = ring[8:20, 19] = WHITE  # the 1 px outline
    assert colour_split_things(ring, pmap, 0.01) == 0
    assert colour_split_things(ring, pmap, 0.01, erode=0) == 1  # without the erosion it would count


def test_a_near_colour_is_the_same_colour():
    """Pixels within ``distance`` RGB of the median are not another colour (a shade, noise)."""
    pmap = one_square()
    shade = picture(pmap)
    shade[8:20, 15:20] = np.array(RED) + np.array([-30, 30, 30])  # 40% of the inside 52 RGB from red
    assert colour_split_things(shade, pmap, 0.15) == 0
    assert colour_split_things(shade, pmap, 0.15, distance=40.0) == 1


def test_small_things_are_not_judged_and_every_instance_is():
    """Interiors below ``min_pixels`` are left alone; two split squares count two."""
    small = one_square(side=5)  # 3 x 3 = 9 interior pixels
    painted = picture(small)
    painted[8:13, 10:13] = WHITE
    assert colour_split_things(painted, small, 0.15) == 0
    assert colour_split_things(painted, small, 0.15, min_pixels=9) == 1
    two = one_square()
    two.category[22:30, 22:30], two.instance[22:30, 22:30] = WORLD.index_of_name("square"), 2
    image = picture(two)
    image[two.instance == 2] = THING_COLORS["blue"]
    assert colour_split_things(image, two, 0.15) == 0
    image[8:20, 15:20] = WHITE
    image[22:30, 26:30] = WHITE
    assert colour_split_things(image, two, 0.15) == 2


def test_a_coarser_map_is_brought_to_the_picture_grid():
    """A 32 px map judged on a 64 px picture gives what the 32 px picture gives."""
    pmap = one_square()
    half = picture(pmap)
    half[8:20, 15:20] = WHITE
    big = half.repeat(2, 0).repeat(2, 1)
    assert colour_split_things(big, pmap, 0.15) == colour_split_things(half, pmap, 0.15) == 1
    assert colour_split_things(picture(pmap, scale=2), pmap, 0.15) == 0


def test_the_worlds_own_pictures_never_split():
    """The rule the share stands on: the built-in world paints each thing flat, so no thing of its
    own scenes is split at the bundled share (every scene's every thing judged)."""
    judged = 0
    for i in range(40):
        scene = make_scene(0, i, 64)
        assert colour_split_things(scene.image, scene.pmap, 0.15) == 0, f"scene {i}"
        judged += len(scene.spec["things"])
    assert judged > 60


def test_a_picture_of_the_wrong_shape_is_named():
    pmap = one_square()
    for bad in (
        np.zeros((32, 32), np.uint8),
        np.zeros((32, 16, 3), np.uint8),
        np.zeros((32, 32, 4), np.uint8),
    ):
        with pytest.raises(DataError, match="square H W 3 picture"):
            colour_split_things(bad, pmap, 0.15)
