"""The shape-fit check: the best IoU of a map's thing against one world shape of its category,
other things allowed to hide part of it."""

import numpy as np
import pytest

from pandiff.data.panoptic_map import PanopticMap
from pandiff.errors import DataError
from pandiff.world.checks import (
    instance_counts,
    misfit_things,
    shape_area,
    shape_fit,
    snap_things,
    spread_things,
    thing_instances,
)
from pandiff.world.drawing import THING_SHAPES, Thing, shape_mask, shape_masks
from pandiff.world.generator import make_scene, world_category_table

WORLD = world_category_table()
YY, XX = np.mgrid[0:64, 0:64] + 0.5


def _shape(name: str, x: float, y: float, r: float = 9.0) -> np.ndarray:
    return shape_mask(Thing(name, "red", "large", x, y, r), XX, YY)


def _map(things: list[tuple[str, int, np.ndarray]]) -> PanopticMap:
    category = np.full((64, 64), WORLD.index_of_name("grass"))
    instance = np.zeros((64, 64), dtype=int)
    for name, k, mask in things:
        category[mask], instance[mask] = WORLD.index_of_name(name), k
    return PanopticMap(category, instance, WORLD)


def test_candidate_shapes_at_once_equal_single_shapes():
    xs, ys, rs = np.array([20.3, 31.0, 40.7]), np.array([22.5, 33.2, 41.0]), np.array([6.0, 9.4, 12.1])
    for name in THING_SHAPES:
        many = shape_masks(name, xs[:, None, None], ys[:, None, None], rs[:, None, None], XX, YY)
        assert many.shape == (3, 64, 64)
        for k in range(3):
            np.testing.assert_array_equal(many[k], _shape(name, xs[k], ys[k], rs[k]))


def test_shape_areas_are_those_of_the_geometry():
    # circle pi r^2; square (1.7 r)^2; cross two 1.9 x 0.68 bars less their 0.68^2 overlap;
    # triangle of circumradius 1.15: 3 sqrt(3) / 4 * 1.15^2; star: 5 * 1.25 * 0.55 * sin(36 deg)
    expected = {
        "circle": np.pi,
        "square": 1.7**2,
        "cross": 2 * 1.9 * 0.68 - 0.68**2,
        "triangle": 3 * np.sqrt(3) / 4 * 1.15**2,
        "star": 5 * 1.25 * 0.55 * np.sin(np.pi / 5),
    }
    for name, area in expected.items():
        assert shape_area(name) == pytest.approx(area, rel=0.01)


def test_whole_world_shapes_fit_and_deformed_ones_do_not():
    rng = np.random.default_rng(0)
    for name in THING_SHAPES:
        for _ in range(8):
            r = rng.uniform(0.1, 0.205) * 64
            x, y = rng.uniform(22, 42, 2)
            assert shape_fit(_shape(name, x, y, r), name) > 0.9
    # a disc is no cross and no star; two triangles fused into one outline are not one triangle
    disc = _shape("circle", 30, 30, 9)
    assert shape_fit(disc, "cross") < 0.75 and shape_fit(disc, "star") < 0.75
    fused = _shape("triangle", 22, 30) | _shape("triangle", 36, 30)
    assert shape_fit(fused, "triangle") < 0.75
    # a cross with a stub on one arm, and a square with a quarter gone
    stub = _shape("cross", 30, 30, 9)
    stub[24:36, 38:46] = True
    assert shape_fit(stub, "cross") < shape_fit(_shape("cross", 30, 30, 9), "cross") - 0.1
    square = _shape("square", 30, 30, 9)
    square[22:30, 30:38] = False
    assert shape_fit(square, "square") < 0.8
    assert shape_fit(np.zeros((64, 64), bool), "circle") == 0.0


def test_a_thing_partly_behind_another_fits_when_the_other_may_hide_it():
    back, front = _shape("star", 28, 30, 11), _shape("circle", 40, 30, 8)
    visible = back & ~front
    hidden_alone = shape_fit(visible, "star")
    with_occluder = shape_fit(visible, "star", front)
    assert with_occluder > 0.9 and with_occluder > hidden_alone + 0.05


def test_misfit_things_counts_on_a_map():
    good = ("triangle", 1, _shape("triangle", 16, 20))
    bad = ("cross", 1, _shape("circle", 44, 44, 9))
    assert misfit_things(_map([good]), 0.8) == 0
    assert misfit_things(_map([good, bad]), 0.8) == 1
    assert misfit_things(_map([good, bad]), 0.0) == 0  # 0: off
    fused = _shape("triangle", 22, 40) | _shape("triangle", 36, 40)
    assert misfit_things(_map([good, bad, ("triangle", 2, fused)]), 0.8) == 2


def test_every_thing_of_the_worlds_own_scenes_fits():
    """The rule the check stands on: a world map's things, each behind whatever was drawn over
    it, fit a world shape of their category (the occluders are the map's other things)."""
    worst = 1.0
    for i in range(40):
        pmap = make_scene(0, i, 64).pmap
        things = thing_instances(pmap)
        every = np.zeros(pmap.category.shape, bool)
        for _, mask in things:
            every |= mask
        for name, mask in things:
            worst = min(worst, shape_fit(mask, name, every & ~mask))
        assert misfit_things(pmap, 0.8) == 0
    assert worst > 0.85


def test_snapping_redraws_a_misfit_thing_as_its_world_shape():
    blob = _shape("cross", 30, 30, 9)
    blob[24:36, 38:46] = True  # a stub on the right arm
    pmap = _map([("cross", 3, blob), ("circle", 1, _shape("circle", 12, 12, 5))])
    snapped = snap_things(pmap)
    assert instance_counts(snapped) == {"cross": 1, "circle": 1}
    cross = (snapped.category == WORLD.index_of_name("cross")) & (snapped.instance == 3)
    assert shape_fit(cross, "cross") > 0.97 and shape_fit(blob, "cross") < 0.9
    # the stub's pixels went back to the grass around them; the circle kept its pixels
    assert (snapped.category[30, 44] == WORLD.index_of_name("grass")) and not cross[30, 44]
    circle = _shape("circle", 12, 12, 5)
    assert (snapped.category[circle] == WORLD.index_of_name("circle")).mean() > 0.95
    assert misfit_things(snapped, 0.9) == 0 and misfit_things(pmap, 0.9) == 1


def test_snapping_keeps_the_thing_in_front_in_front():
    back, front = _shape("circle", 26, 30, 10), _shape("square", 38, 30, 8)
    back_seen = back & ~front
    back_seen[22:26, 18:23] = False  # a notch inside the circle: it needs snapping
    pmap = _map([("circle", 1, back_seen), ("square", 1, front)])
    snapped = snap_things(pmap)
    square = snapped.category == WORLD.index_of_name("square")
    assert (square & front).sum() / front.sum() > 0.95  # still whole, over the circle
    assert (snapped.category == WORLD.index_of_name("circle"))[23, 20]  # the notch filled


def test_snapping_a_world_map_changes_little_and_no_map_without_things():
    for i in range(15):
        pmap = make_scene(0, i, 64).pmap
        snapped = snap_things(pmap)
        assert instance_counts(snapped) == instance_counts(pmap)
        assert (snapped.category == pmap.category).mean() > 0.97
    bare = _map([])
    assert snap_things(bare) is bare


def _apart(pmap: PanopticMap) -> bool:
    from pandiff.world.checks import touching_pairs

    return touching_pairs(pmap, gap=2, same_category=False) == 0


def _thing(pmap: PanopticMap, name: str, k: int) -> np.ndarray:
    return (pmap.category == WORLD.index_of_name(name)) & (pmap.instance == k)


def test_spreading_moves_touching_things_apart_each_whole():
    circle, square = _shape("circle", 26, 30, 9), _shape("square", 36, 30, 8)
    pmap = _map([("circle", 1, circle & ~square), ("square", 1, square)])  # the square in front
    spread = spread_things(pmap)
    assert not _apart(pmap) and _apart(spread)
    assert instance_counts(spread) == {"circle": 1, "square": 1}
    moved_circle, moved_square = _thing(spread, "circle", 1), _thing(spread, "square", 1)
    # both whole world shapes now (the circle no longer hidden), of the sizes they had
    assert shape_fit(moved_circle, "circle") > 0.97 and shape_fit(moved_square, "square") > 0.97
    assert moved_circle.sum() == pytest.approx(circle.sum(), rel=0.08)
    assert moved_square.sum() == pytest.approx(square.sum(), rel=0.08)
    # the larger (the circle) stays, the square goes to the nearest place 3+ pixels clear of it
    assert (moved_circle & circle).sum() / (moved_circle | circle).sum() > 0.95
    ys, xs = np.nonzero(moved_square)
    assert 0 < np.hypot(xs.mean() + 0.5 - 36, ys.mean() + 0.5 - 30) <= 16
    # every pixel that no shape covers is grass again
    assert set(np.unique(spread.category[~moved_circle & ~moved_square])) == {WORLD.index_of_name("grass")}


def test_spreading_leaves_things_apart_where_they_are():
    lone = _shape("star", 50, 50, 7)
    pair = [_shape("cross", 14, 14, 7), _shape("cross", 24, 16, 7)]
    pmap = _map([("star", 1, lone), ("cross", 1, pair[0]), ("cross", 2, pair[1] & ~pair[0])])
    spread = spread_things(pmap)
    assert _apart(spread) and instance_counts(spread) == {"star": 1, "cross": 2}
    assert np.array_equal(_thing(spread, "star", 1), lone)  # touching nothing: not moved
    apart = _map([("star", 1, lone), ("cross", 1, pair[0])])
    assert spread_things(apart) is apart  # nothing touches: the same map
    one = _map([("cross", 1, pair[0] | pair[1])])
    assert spread_things(one) is one  # a single thing has nothing to stand apart from
    with pytest.raises(DataError, match="gap"):
        spread_things(pmap, gap=0)


def test_spreading_gives_up_where_there_is_no_room():
    big = [_shape("square", x, y, 15) for x, y in ((20, 20), (40, 22), (22, 42), (42, 42), (31, 31))]
    pmap = _map([("square", k + 1, m) for k, m in enumerate(big)])
    assert not _apart(pmap)
    assert spread_things(pmap) is pmap  # five 25 px squares with 3 px between them do not fit in 64 px


def test_spreading_world_scenes_keeps_their_things():
    moved = 0
    for i in range(20):
        pmap = make_scene(0, i, 64).pmap
        spread = spread_things(pmap)
        assert instance_counts(spread) == instance_counts(pmap)
        if spread is not pmap:
            moved += 1
            assert _apart(spread)
            for name, mask in thing_instances(spread):
                assert shape_fit(mask, name) > 0.9  # whole shapes, none hidden (small stars fit 0.94)
    assert moved > 0


def test_spreading_tries_each_shape_first_before_giving_up():
    # world scenes 19 and 231 (seed 0): placing the largest moving shape first leaves another no
    # free place within reach (checked against that order alone when this was written); taking each
    # other shape first in turn finds one
    for i in (19, 231):
        pmap = make_scene(0, i, 64).pmap
        spread = spread_things(pmap)
        assert spread is not pmap and _apart(spread)
        assert instance_counts(spread) == instance_counts(pmap)
