"""Panoptic maps: canonical instance order, the instance budget, COCO conversion, resizing, palette."""

import io

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from pandiff.data.categories import Category, CategoryTable
from pandiff.data.coco_format import id_to_rgb, rgb_to_id
from pandiff.data.palette import category_colors, colorize, overlay
from pandiff.data.panoptic_map import MapCleanup, PanopticMap, canonicalize, resize_labels
from pandiff.errors import DataError

# person (thing, COCO id 1), car (thing, 3), sky (stuff, 187)
TABLE = CategoryTable(
    (
        Category("person", 1, True, (220, 20, 60)),
        Category("car", 3, True, (0, 0, 142)),
        Category("sky", 187, False, (70, 130, 180)),
    )
)
PERSON, CAR, SKY = 1, 2, 3


# -- canonical order and the instance budget ---------------------------------------------------------
def test_instances_are_numbered_in_raster_order_of_their_first_pixel():
    category = np.array(
        [
            [3, 3, 1, 1],
            [1, 3, 1, 1],
            [1, 2, 2, 3],
            [1, 1, 3, 3],
        ]
    )
    # Raw labels deliberately out of order; the sky's labels must be ignored.
    raw = np.array(
        [
            [9, 9, 40, 40],
            [17, 5, 40, 40],
            [17, 8, 8, 9],
            [23, 23, 5, 5],
        ]
    )
    pmap, merged = canonicalize(category, raw, TABLE)
    assert merged == 0
    # person 40 starts at (0, 2), person 17 at (1, 0), person 23 at (3, 0): numbered 1, 2, 3.
    expected = np.array(
        [
            [0, 0, 1, 1],
            [2, 0, 1, 1],
            [2, 1, 1, 0],
            [3, 3, 0, 0],
        ]
    )
    np.testing.assert_array_equal(pmap.instance, expected)
    np.testing.assert_array_equal(pmap.category, category)
    assert pmap.thing_counts() == {PERSON: 3, CAR: 1}


def overflow_scene() -> tuple[np.ndarray, np.ndarray]:
    """Ten people, one per row, with areas 1..10 in a shuffled order."""
    category = np.zeros((10, 12), dtype=np.int64)
    raw = np.zeros((10, 12), dtype=np.int64)
    for row, area in enumerate([4, 9, 1, 7, 10, 2, 6, 3, 8, 5]):
        category[row, :area] = PERSON
        raw[row, :area] = 100 + area
    return category, raw


def test_instances_beyond_the_budget_merge_into_the_crowd_region():
    category, raw = overflow_scene()
    pmap, merged = canonicalize(category, raw, TABLE, max_instances=3)
    assert merged == 7
    # The three largest (areas 10, 9, 8 in rows 4, 1, 8) keep identity, numbered in raster order.
    first_instance_per_row = [int(pmap.instance[row, 0]) for row in range(10)]
    assert first_instance_per_row == [0, 1, 0, 0, 2, 0, 0, 0, 3, 0]
    assert int((pmap.instance == 0)[category == PERSON].sum()) == sum(a for a in range(1, 8))

    png, segments = pmap.to_coco()
    crowd = [s for s in segments if s["iscrowd"]]
    assert len(crowd) == 1 and crowd[0]["category_id"] == 1
    assert crowd[0]["area"] == 28
    assert sorted(s["area"] for s in segments if not s["iscrowd"]) == [8, 9, 10]
    back, merged_again = PanopticMap.from_coco(png, segments, TABLE, max_instances=3)
    assert merged_again == 0
    np.testing.assert_array_equal(back.instance, pmap.instance)


def test_coco_crowd_segments_go_to_instance_zero():
    ids = np.array([[1, 1, 2], [3, 3, 2]])
    segments = [
        {"id": 1, "category_id": 1, "iscrowd": 1},
        {"id": 2, "category_id": 1, "iscrowd": 0},
        {"id": 3, "category_id": 187, "iscrowd": 0},
    ]
    pmap, merged = PanopticMap.from_coco(id_to_rgb(ids), segments, TABLE)
    assert merged == 0
    np.testing.assert_array_equal(pmap.category, [[1, 1, 1], [3, 3, 1]])
    np.testing.assert_array_equal(pmap.instance, [[0, 0, 1], [0, 0, 1]])


# -- COCO panoptic form --------------------------------------------------------------------------------
def test_segments_info_area_and_bbox_on_a_hand_built_map():
    category = np.array(
        [
            [3, 3, 3, 3, 3],
            [3, 1, 1, 3, 2],
            [0, 1, 1, 3, 2],
            [0, 1, 0, 0, 2],
        ]
    )
    instance = np.where(np.isin(category, [PERSON, CAR]), 1, 0)
    png, segments = PanopticMap(category, instance, TABLE).to_coco()
    assert png.shape == (4, 5, 3) and png.dtype == np.uint8
    by_category = {s["category_id"]: s for s in segments}
    assert by_category[1] == {"id": 1, "category_id": 1, "iscrowd": 0, "area": 5, "bbox": [1, 1, 2, 3]}
    assert by_category[3] == {"id": 2, "category_id": 3, "iscrowd": 0, "area": 3, "bbox": [4, 1, 1, 3]}
    assert by_category[187] == {"id": 3, "category_id": 187, "iscrowd": 0, "area": 8, "bbox": [0, 0, 5, 3]}
    ids = rgb_to_id(png)
    assert set(np.unique(ids).tolist()) == {0, 1, 2, 3}
    assert int((ids == 0).sum()) == 4  # void pixels


def random_canonical(seed: int, height: int, width: int, max_instances: int) -> PanopticMap:
    rng = np.random.default_rng(seed)
    category = rng.integers(0, len(TABLE) + 1, size=(height, width))
    crowd = rng.random((height, width)) < 0.15
    pmap, _ = canonicalize(category, rng.integers(0, 9, size=(height, width)), TABLE, max_instances, crowd)
    return pmap


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 12), st.integers(1, 12), st.integers(1, 7))
def test_coco_round_trip_is_exact(seed, height, width, max_instances):
    pmap = random_canonical(seed, height, width, max_instances)
    png, segments = pmap.to_coco()
    # Through a real PNG file, as COCO stores it.
    buffer = io.BytesIO()
    Image.fromarray(png).save(buffer, format="PNG")
    decoded = np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))
    back, merged = PanopticMap.from_coco(decoded, segments, TABLE, max_instances)
    assert merged == 0
    np.testing.assert_array_equal(back.category, pmap.category)
    np.testing.assert_array_equal(back.instance, pmap.instance)
    assert sum(s["area"] for s in segments) == int((pmap.category > 0).sum())


def test_png_segment_missing_from_segments_info_is_an_error():
    ids = np.array([[1, 2]])
    with pytest.raises(DataError, match=r"segment id\(s\) \[2\]"):
        PanopticMap.from_coco(id_to_rgb(ids), [{"id": 1, "category_id": 1}], TABLE)


# -- resizing ---------------------------------------------------------------------------------------
def test_mode_pooling_known_values():
    labels = np.array(
        [
            [5, 5, 7, 7],
            [5, 9, 7, 0],
            [0, 0, 4, 4],
            [0, 3, 4, 6],
        ]
    )
    np.testing.assert_array_equal(resize_labels(labels, 2), [[5, 7], [0, 4]])


def test_ties_go_to_the_smaller_label_and_void_loses_ties():
    np.testing.assert_array_equal(resize_labels(np.array([[7, 3], [3, 7]]), 1), [[3]])
    np.testing.assert_array_equal(resize_labels(np.array([[0, 9], [9, 0]]), 1), [[9]])
    np.testing.assert_array_equal(resize_labels(np.array([[0, 0], [0, 9]]), 1), [[0]])


def test_thin_segments_vanish_under_4x_pooling_and_wide_ones_survive():
    labels = np.full((16, 16), 1)
    labels[:, 9] = 2  # one pixel wide: a quarter of its block column
    labels[:, 4:7] = 3  # three pixels wide inside block column 1
    out = resize_labels(labels, 4)
    assert 2 not in out
    np.testing.assert_array_equal(out, np.tile([1, 3, 1, 1], (4, 1)))


def test_non_integer_ratio_and_exact_nearest_upsampling():
    labels = np.zeros((6, 6), dtype=np.int64)
    labels[:, :3], labels[:, 3:] = 1, 2
    np.testing.assert_array_equal(resize_labels(labels, 4), np.tile([1, 1, 2, 2], (4, 1)))

    small = np.array([[1, 2], [3, 0]])
    np.testing.assert_array_equal(resize_labels(small, 4), np.kron(small, np.ones((2, 2), dtype=int)))
    idx = (np.arange(7) * 3) // 7
    odd = np.arange(9).reshape(3, 3)
    np.testing.assert_array_equal(resize_labels(odd, 7), odd[idx][:, idx])


def test_resize_only_takes_square_maps():
    with pytest.raises(DataError, match="square"):
        resize_labels(np.zeros((4, 6)), 2)


def test_map_resize_and_crop_keep_category_instance_pairs():
    category = np.full((8, 12), SKY)
    instance = np.zeros((8, 12), dtype=np.int64)
    category[2:6, 4:8], instance[2:6, 4:8] = PERSON, 2
    category[0:2, 0:2], instance[0:2, 0:2] = PERSON, 1  # falls outside the centred crop
    pmap = PanopticMap(category, instance, TABLE).center_crop()
    assert pmap.shape == (8, 8)
    small = pmap.resize(4)
    assert small.segments() == [(PERSON, 2), (SKY, 0)]
    np.testing.assert_array_equal(small.category[1:3, 1:3], PERSON)


# -- sliver clean-up of generated maps --------------------------------------------------------------------
def _sky(h=12, w=12):
    return np.full((h, w), SKY), np.zeros((h, w), dtype=np.int64)


def test_a_rim_between_two_instances_joins_its_neighbours():
    category, instance = _sky()
    category[2:10, 1:11] = PERSON
    instance[2:10, 1:5], instance[2:10, 5], instance[2:10, 6:11] = 1, 3, 2  # a 1-pixel rim of instance 3
    out = PanopticMap(category, instance, TABLE).absorb_slivers(3)
    assert out.segments() == [(PERSON, 1), (PERSON, 2), (SKY, 0)]
    assert set(out.instance[2:10, 5].tolist()) <= {1, 2}
    keep = np.ones_like(category, dtype=bool)
    keep[2:10, 5] = False
    np.testing.assert_array_equal(out.instance[keep], instance[keep])  # solid pixels never change
    np.testing.assert_array_equal(out.category, category)


def test_a_fringe_of_another_category_goes_to_the_nearest_solid_pixel():
    category, instance = _sky()
    category[3:9, 3:9], instance[3:9, 3:9] = CAR, 1  # a car with a person-coloured outline
    category[4:8, 4:8], instance[4:8, 4:8] = PERSON, 1
    out = PanopticMap(category, instance, TABLE).absorb_slivers(3)
    assert out.segments() == [(PERSON, 1), (SKY, 0)]
    ring = category == CAR
    # Each outline pixel takes its nearest solid pixel: the sky outside or the person inside (the
    # corners are nearer the sky; edge pixels are as near to both); the person's square is untouched.
    assert SKY in set(out.category[ring].tolist()) <= {PERSON, SKY}
    assert (out.category[3, 3], out.category[8, 8]) == (SKY, SKY)
    assert out.instance[out.category == SKY].max() == 0  # stuff gets instance 0
    np.testing.assert_array_equal(out.category[4:8, 4:8], PERSON)


@pytest.mark.parametrize("size, survives", [(0, True), (1, True), (2, True), (3, True), (4, False)])
def test_a_segment_survives_when_it_holds_a_size_block(size, survives):
    category, instance = _sky()
    category[4:7, 4:7], instance[4:7, 4:7] = CAR, 1  # a 3 x 3 car
    out = PanopticMap(category, instance, TABLE).absorb_slivers(size)
    assert ((CAR, 1) in out.segments()) is survives


def test_the_frame_does_not_thin_what_touches_it():
    category, instance = _sky()
    category[0:2, 2:9], instance[0:2, 2:9] = CAR, 1  # 2 rows along the top edge: kept
    category[6:8, 2:9], instance[6:8, 2:9] = CAR, 2  # the same strip inside the picture: a sliver
    out = PanopticMap(category, instance, TABLE).absorb_slivers(3)
    assert out.segments() == [(CAR, 1), (SKY, 0)]


def test_void_never_changes_and_never_spreads():
    category, instance = _sky()
    category[:, 6] = 0  # a void line
    category[5, :6] = PERSON  # a person sliver touching the void and the sky
    instance[5, :6] = 1
    out = PanopticMap(category, instance, TABLE).absorb_slivers(3)
    np.testing.assert_array_equal(out.category == 0, category == 0)
    assert out.segments() == [(SKY, 0)]
    lone = PanopticMap(np.where(category == SKY, 0, category), instance, TABLE).absorb_slivers(3)
    np.testing.assert_array_equal(lone.category, np.where(category == SKY, 0, category))  # no solid source


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), cells=st.integers(1, 5))
def test_maps_of_solid_blocks_are_unchanged(seed, cells):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 4, size=(cells, cells))  # one label per 3 x 3 cell
    category = np.kron(labels, np.ones((3, 3), dtype=np.int64))
    instance = np.where(np.isin(category, (PERSON, CAR)), 1 + (category == CAR), 0)
    pmap = PanopticMap(category, instance, TABLE)
    out = pmap.absorb_slivers(3)
    np.testing.assert_array_equal(out.category, category)
    np.testing.assert_array_equal(out.instance, instance)


def test_negative_sliver_size_is_an_error():
    with pytest.raises(DataError, match="sliver size"):
        PanopticMap(*_sky(), TABLE).absorb_slivers(-1)


# -- one piece per instance ----------------------------------------------------------------------------
def test_a_stray_piece_of_an_instance_joins_what_surrounds_it():
    category, instance = _sky()
    category[1:5, 1:5], instance[1:5, 1:5] = PERSON, 1  # 16 pixels
    category[8:11, 8:11], instance[8:11, 8:11] = PERSON, 1  # the same id, 9 pixels far away
    category[1:4, 8:11], instance[1:4, 8:11] = PERSON, 2
    pmap = PanopticMap(category, instance, TABLE)
    out = pmap.keep_largest_pieces()
    assert out.thing_counts() == pmap.thing_counts() == {PERSON: 2}  # the ids the model gave
    np.testing.assert_array_equal(out.category[8:11, 8:11], SKY)  # the stray blob is sky now
    assert out.instance[8:11, 8:11].max() == 0
    keep = np.ones_like(category, dtype=bool)
    keep[8:11, 8:11] = False
    np.testing.assert_array_equal(out.codes()[keep], pmap.codes()[keep])  # nothing else moves


def test_a_stray_piece_inside_a_shape_takes_that_shape():
    category, instance = _sky()
    category[3:11, 3:11], instance[3:11, 3:11] = CAR, 1
    category[0:2, 0:3], instance[0:2, 0:3] = PERSON, 1  # the person: 6 pixels in a corner
    category[5:8, 5:9], instance[5:8, 5:9] = PERSON, 1  # and 12 pixels inside the car: kept
    out = PanopticMap(category, instance, TABLE).keep_largest_pieces()
    np.testing.assert_array_equal(out.category[5:8, 5:9], PERSON)
    np.testing.assert_array_equal(out.category[0:2, 0:3], SKY)
    category[0:2, 0:7], instance[0:2, 0:7] = PERSON, 1  # the corner piece grows to 14 pixels
    out = PanopticMap(category, instance, TABLE).keep_largest_pieces()
    np.testing.assert_array_equal(out.category[0:2, 0:7], PERSON)
    np.testing.assert_array_equal(out.category[5:8, 5:9], CAR)  # the piece in the car is the stray
    np.testing.assert_array_equal(out.instance[5:8, 5:9], 1)


def test_diagonal_neighbours_and_stuff_crowd_and_void_stay_as_they_are():
    category, instance = _sky()
    category[2:4, 2:4], instance[2:4, 2:4] = PERSON, 1
    category[4:6, 4:6], instance[4:6, 4:6] = PERSON, 1  # touches the first block at a corner only
    category[8:10, 0:2], category[8:10, 8:10] = CAR, CAR  # crowd (instance 0) in two pieces
    category[:, 11] = 0  # void splits the sky into two pieces
    category[5, 11] = SKY
    pmap = PanopticMap(category, instance, TABLE)
    out = pmap.keep_largest_pieces()
    np.testing.assert_array_equal(out.codes(), pmap.codes())


def test_equal_pieces_keep_the_first_in_raster_order():
    category, instance = _sky()
    category[1:3, 6:8], instance[1:3, 6:8] = PERSON, 1
    category[6:8, 1:3], instance[6:8, 1:3] = PERSON, 1
    out = PanopticMap(category, instance, TABLE).keep_largest_pieces()
    assert (out.category[1:3, 6:8] == PERSON).all() and (out.category[6:8, 1:3] == SKY).all()


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_after_the_clean_up_every_thing_instance_is_one_piece(seed):
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    category = rng.choice([PERSON, CAR, SKY], size=(16, 16), p=[0.3, 0.3, 0.4])
    instance = np.where(category == SKY, 0, rng.integers(1, 3, size=(16, 16)))
    pmap = PanopticMap(category, instance, TABLE)
    out = pmap.keep_largest_pieces()
    for cat, inst in out.segments():
        if cat != SKY and inst > 0:
            mask = (out.category == cat) & (out.instance == inst)
            assert ndimage.label(mask, np.ones((3, 3)))[1] == 1
    assert out.thing_counts() == pmap.thing_counts()  # a largest piece always stays


def test_map_cleanup_runs_the_sliver_pass_then_the_piece_pass():
    category, instance = _sky()
    category[1:5, 1:5], instance[1:5, 1:5] = PERSON, 1
    category[7:10, 7:10], instance[7:10, 7:10] = PERSON, 1  # a second solid piece
    category[0, 8:11], instance[0, 8:11] = PERSON, 2  # a sliver instance
    pmap = PanopticMap(category, instance, TABLE)
    assert not MapCleanup(0, False) and MapCleanup(3) and MapCleanup(0, True)
    assert MapCleanup(0, False)(pmap) is pmap
    assert MapCleanup(3)(pmap).thing_counts() == {PERSON: 1}
    assert (MapCleanup(3)(pmap).category[7:10, 7:10] == PERSON).all()  # slivers only
    both = MapCleanup(3, True)(pmap)
    np.testing.assert_array_equal(both.codes(), pmap.absorb_slivers(3).keep_largest_pieces().codes())
    assert (both.category[7:10, 7:10] == SKY).all()


# -- palette --------------------------------------------------------------------------------------------
def test_category_colours_are_fixed():
    colors = category_colors(TABLE)
    assert colors.shape == (4, 3)
    assert colors[0].tolist() == [0, 0, 0]  # void
    assert colors[PERSON].tolist() == [220, 20, 60]  # the table's own colour
    named = CategoryTable.from_names(["circle", "square"], ["grass"])
    derived = category_colors(named)
    np.testing.assert_array_equal(
        derived, category_colors(CategoryTable.from_names(["circle", "square"], ["grass"]))
    )
    assert len({tuple(c) for c in derived[1:]}) == 3


def test_every_instance_of_a_category_gets_its_own_colour():
    # Columns of instances 0..7 of one person category, 3 pixels wide; read the middle column.
    instance = np.repeat(np.arange(8), 3)[None].repeat(3, axis=0)
    rgb = colorize(PanopticMap(np.full(instance.shape, PERSON), instance, TABLE))
    interior = {tuple(rgb[1, 3 * i + 1]) for i in range(8)}
    assert len(interior) == 8  # crowd (0) and instances 1..7 all differ
    assert tuple(rgb[1, 1]) == (220, 20, 60)  # instance 0 keeps the category colour


def test_overlay_is_image_sized_and_draws_boundaries():
    pmap = PanopticMap(np.array([[SKY, SKY], [PERSON, PERSON]]), np.array([[0, 0], [1, 1]]), TABLE)
    image = np.full((8, 8, 3), 100, dtype=np.uint8)
    out = overlay(image, pmap, alpha=0.0)
    assert out.shape == (8, 8, 3) and out.dtype == np.uint8
    # alpha 0 leaves the image except on boundaries, drawn opaque: the sky's map row touches the
    # person below, and nearest upsampling makes it the top 4 image rows.
    edge_colour = colorize(pmap)[0, 0]
    assert edge_colour.tolist() == [int(c * 0.35) for c in (70, 130, 180)]
    np.testing.assert_array_equal(out[:4], np.broadcast_to(edge_colour, (4, 8, 3)))
    np.testing.assert_array_equal(out[4:], image[4:])
    full = overlay(image, pmap, alpha=1.0)
    np.testing.assert_array_equal(full[6, 3], colorize(pmap)[1, 0])
