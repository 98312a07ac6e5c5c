"""Exact checks of generated samples against the built-in world's scene specs.

Every world prompt comes from a structured spec (:mod:`pandiff.world.generator`): which shapes, how
many of each colour, the stuff, and in two-thing scenes a spatial relation. Those facts are
checked on the generated map (and image) directly; nothing here needs learned weights.

Shared conventions:

* A generated *instance* is a (thing category, instance index > 0) segment of the map, i.e.
  instances are counted from the decoded **instance bits**. Instance 0 of a thing category
  (unidentified / crowd pixels) is not counted. As a secondary number, counts from **connected
  components** of each thing category's pixels (4-connectivity) are reported too; they ignore
  the instance bits, so a gap between them shows how much instance identity the model adds.
* Segments and components smaller than ``min_fraction`` of the map (default 0.002: 8 pixels at
  64 x 64; world things keep at least 12) are sampling specks and are ignored everywhere.
* A map of another size than its image is brought to the image grid by nearest neighbour.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from functools import cache, lru_cache
from pathlib import Path

import numpy as np

from pandiff.data.panoptic_map import PanopticMap
from pandiff.errors import DataError
from pandiff.world.drawing import STUFF_COLORS, THING_COLORS
from pandiff.world.generator import spatial_relation

MIN_FRACTION = 0.002
ADHERENCE_CRITERIA = ("categories", "counts", "counts_components", "stuff_present", "stuff_exact", "relation")


def load_specs(root: str | Path, split: str) -> dict[int, dict]:
    """The scene specs of a world split, by image id (``world_specs_{split}2017.json``)."""
    path = Path(root) / "annotations" / f"world_specs_{split}2017.json"
    if not path.is_file():
        raise DataError(f"{path} does not exist; world checks need a built-in world (pandiff make-world)")
    try:
        specs = json.loads(path.read_text())["specs"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise DataError(f"{path} is not a world spec file ({exc}); make the world again") from None
    return {int(s["image_id"]): s for s in specs}


def _min_area(pmap: PanopticMap, min_fraction: float) -> int:
    return max(1, round(min_fraction * pmap.category.size))


def thing_instances(pmap: PanopticMap, min_fraction: float = MIN_FRACTION) -> list[tuple[str, np.ndarray]]:
    """``(category name, H W mask)`` of every thing instance (instance bits) big enough to count."""
    lut = pmap.table.isthing_lut()
    out = []
    for cat, inst in pmap.segments():
        if lut[cat] and inst > 0:
            mask = (pmap.category == cat) & (pmap.instance == inst)
            if mask.sum() >= _min_area(pmap, min_fraction):
                out.append((pmap.table[cat].name, mask))
    return out


def instance_counts(pmap: PanopticMap, min_fraction: float = MIN_FRACTION) -> dict[str, int]:
    """Instances per thing category name, from the instance bits."""
    return dict(Counter(name for name, _ in thing_instances(pmap, min_fraction)))


def touching_pairs(
    pmap: PanopticMap, gap: int = 2, min_fraction: float = MIN_FRACTION, same_category: bool = True
) -> int:
    """Pairs of thing instances of one category that touch: one's mask grown by ``gap`` pixels
    (4-connected steps) meets the other's. Such pairs stay two in a picture only through the
    outline between them, the hardest case for an image model (and for a judge counting them).
    ``same_category=False`` counts touching pairs of any two things (one in front of the other
    included)."""
    from scipy import ndimage

    if gap < 1:
        raise DataError(f"gap must be >= 1 pixel, got {gap}")
    cross = ndimage.generate_binary_structure(2, 1)
    things = thing_instances(pmap, min_fraction)
    grown = [ndimage.binary_dilation(mask, cross, iterations=gap) for _, mask in things]
    return sum(
        1
        for a in range(len(things))
        for b in range(a + 1, len(things))
        if (not same_category or things[a][0] == things[b][0]) and (grown[a] & things[b][1]).any()
    )


def separate_touching(pmap: PanopticMap, gap: int = 2, min_fraction: float = MIN_FRACTION) -> PanopticMap:
    """``pmap`` with no two thing instances touching in the sense of :func:`touching_pairs` (any
    categories): for each touching pair, the larger instance gives up its pixels within ``gap``
    4-connected steps of the smaller (which stays whole), keeps the largest 8-connected piece of
    what is left, and the freed pixels take the stuff of their nearest stuff pixel (void where the
    map holds no stuff). Pairs are settled one at a time on the current masks; a bite only shrinks
    an instance, so a settled pair stays apart. Instances below ``min_fraction`` (specks, not
    counted by the checks) are left alone.

    Why: a picture drawn for a map shows two touching shapes as one (one colour) or loses the one
    behind (session 21: a right map gives a right picture 36% of the time when two things of one
    category touch, 98% when every thing stands apart). Map -> image draws the background the
    bite leaves, so the redrawn picture shows each thing apart."""
    from scipy import ndimage

    if gap < 1:
        raise DataError(f"gap must be >= 1 pixel, got {gap}")
    cross = ndimage.generate_binary_structure(2, 1)
    eight = np.ones((3, 3), dtype=bool)
    masks = [mask.copy() for _, mask in thing_instances(pmap, min_fraction)]
    freed = np.zeros(pmap.shape, dtype=bool)
    settled = False
    while not settled:
        settled = True
        for a in range(len(masks)):
            for b in range(a + 1, len(masks)):
                near_b = ndimage.binary_dilation(masks[b], cross, iterations=gap)
                if not (near_b & masks[a]).any():
                    continue
                small, big = (a, b) if masks[a].sum() <= masks[b].sum() else (b, a)
                near = ndimage.binary_dilation(masks[small], cross, iterations=gap)
                left = masks[big] & ~near
                pieces, n = ndimage.label(left, eight)
                if n > 1:
                    sizes = np.bincount(pieces.ravel(), minlength=n + 1)
                    sizes[0] = -1
                    left = pieces == int(np.argmax(sizes))
                freed |= masks[big] & ~left
                masks[big] = left
                settled = False
    if not freed.any():
        return pmap
    lut = np.array(pmap.table.isthing_lut())
    stuff = ~lut[pmap.category] & (pmap.category > 0) & ~freed
    codes = pmap.codes()
    if stuff.any():
        from pandiff.data.panoptic_map import fill_from_nearest

        codes = fill_from_nearest(codes, freed, stuff)
    else:
        codes = np.where(freed, 0, codes)
    return PanopticMap.from_codes(codes, pmap.table)


# The colour-split check (:func:`colour_split_things`): a pixel is "another colour" when it lies
# further than this from its instance's median colour (RGB units; the nearest two thing colours of
# the built-in world lie further apart), and instances with fewer interior pixels are not judged.
SPLIT_DISTANCE = 60.0
SPLIT_MIN_PIXELS = 20


def colour_split_things(
    image: np.ndarray,
    pmap: PanopticMap,
    share: float,
    distance: float = SPLIT_DISTANCE,
    erode: int = 1,
    min_pixels: int = SPLIT_MIN_PIXELS,
    min_fraction: float = MIN_FRACTION,
) -> int:
    """How many thing instances of ``pmap`` the picture ``image`` (``H W 3`` uint8) paints in two
    colours: more than ``share`` of the instance's interior pixels (its mask eroded by ``erode``
    pixels, so the outline and the edge blur do not count) lie further than ``distance`` (RGB)
    from the interior's median colour. Instances with fewer than ``min_pixels`` interior pixels
    are not judged. ``share`` 0 or less judges nothing (returns 0).

    Why: the built-in world paints each thing in one flat colour, so a thing of the map shown
    half in one colour and half in another reads as two things (or a thing of another colour) to
    a viewer or a detector while the map counts one; on the world's own pictures it never fires
    (0 of 868 things in 400 val scenes at share 0.15). A COCO object is not one colour: this
    check belongs to flat-coloured worlds."""
    from scipy import ndimage

    if share <= 0:
        return 0
    if image.ndim != 3 or image.shape[2] != 3 or image.shape[0] != image.shape[1]:
        raise DataError(f"colour_split_things needs a square H W 3 picture, got shape {image.shape}")
    pixels = image.astype(np.float32)
    n = 0
    for _, mask in thing_instances(pmap, min_fraction):
        inner = _to_image_grid(mask, image.shape[0])
        if erode > 0:
            inner = ndimage.binary_erosion(inner, iterations=erode)
        if inner.sum() < min_pixels:
            continue
        inside = pixels[inner]
        far = np.linalg.norm(inside - np.median(inside, axis=0), axis=1) > distance
        n += int(far.mean() > share)
    return n


# Where the least solid single shape of each world category is looked for: the world's radii
# (both size words' ranges, as fractions of the picture side) over sub-pixel centre offsets.
SOLIDITY_RADII = tuple(np.linspace(0.1, 0.205, 15))
SOLIDITY_OFFSETS = tuple(np.linspace(0.0, 1.0, 5, endpoint=False))


def solidity(mask: np.ndarray) -> float:
    """A mask's area over the area of the convex hull of its pixels (each pixel a unit square):
    1 for a convex shape, lower for a notched, hollow or two-lobed one; 1.0 for an empty mask.

    Written by hand: scipy gives the hull, and the region-property libraries that compute this
    (scikit-image, OpenCV) are not dependencies of pandiff."""
    from scipy.spatial import ConvexHull, QhullError

    mask = np.asarray(mask, dtype=bool)
    rows = np.flatnonzero(mask.any(1))
    if len(rows) == 0:
        return 1.0
    # The hull of a row's pixels is spanned by its outermost two: their corners suffice.
    left = mask[rows].argmax(1)
    right = mask.shape[1] - mask[rows, ::-1].argmax(1)
    corners = np.concatenate([np.stack([x, rows + dy], 1) for x in (left, right) for dy in (0, 1)])
    try:
        hull = ConvexHull(corners.astype(np.float64))
    except QhullError:  # cannot happen for unit squares; a mask is then as solid as it gets
        return 1.0
    return float(mask.sum() / hull.volume)  # in 2-D a hull's volume is its area


@lru_cache(maxsize=8)
def shape_solidity_range(size: int) -> dict[str, tuple[float, float]]:
    """The least and the most :func:`solidity` of one whole world shape of each category drawn on
    a ``size`` pixel grid, over the world's radii (:data:`SOLIDITY_RADII`) and sub-pixel centres:
    what a single, unoccluded thing of that category can look like on a map of that side (64 px:
    circle 0.92-0.96, square 1.0, triangle 0.84-0.92, star 0.52-0.66, cross 0.66-0.81)."""
    from pandiff.world.drawing import THING_SHAPES, Thing, shape_mask

    if size < 8:
        raise DataError(f"shape solidities need a grid of at least 8 pixels, got {size}")
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    centre = size / 2
    ranges = {}
    for shape in THING_SHAPES:
        values = [
            solidity(shape_mask(Thing(shape, "red", "small", centre + ox, centre + oy, r * size), xx, yy))
            for r in SOLIDITY_RADII
            for ox in SOLIDITY_OFFSETS
            for oy in SOLIDITY_OFFSETS
        ]
        ranges[shape] = (min(values), max(values))
    return ranges


def misshapen_things(pmap: PanopticMap, ratio: float, min_fraction: float = MIN_FRACTION) -> int:
    """How many thing instances of ``pmap`` no single world shape of their category looks like:
    less solid than ``ratio`` times the least solid one (two shapes fused into one instance, a
    tangle, a shape with a bite out of it), or more solid than the most solid one over ``ratio``
    (a star or a cross drawn as a blob); :func:`shape_solidity_range` at the map's side.
    Categories that are not world shapes are not judged; ``ratio`` 0 or less judges nothing
    (returns 0).

    Why: a map that is right by count can still hold a thing no single world shape looks like (a
    triangle with two peaks, a cross as round as a circle), and the picture drawn for it then shows
    two things, a blob or another shape. On the world's own maps no thing that touches no other
    falls outside its range."""
    if ratio <= 0:
        return 0
    ranges = shape_solidity_range(min(pmap.shape))
    n = 0
    for name, mask in thing_instances(pmap, min_fraction):
        if name in ranges:
            least, most = ranges[name]
            value = solidity(mask)
            n += value < ratio * least or value > most / ratio
    return n


# Candidate world shapes :func:`shape_fit` tries for a mask: radii at these multiples of the radius
# its area gives (a thing partly behind another shows less than its whole area), centres first
# on a 2-pixel grid within FIT_SHIFT pixels of its centroid, then every pixel around the best.
FIT_SHIFT = 2
FIT_SCALES = (0.9, 1.0, 1.1, 1.2, 1.35, 1.5)


@cache
def shape_area(name: str) -> float:
    """The area of one world shape of category ``name`` in units of its radius squared, measured
    on a fine grid (radius 200 px) from :func:`pandiff.world.drawing.shape_masks` itself."""
    from pandiff.world.drawing import shape_masks

    yy, xx = np.mgrid[0:600, 0:600] + 0.5
    return float(shape_masks(name, 300.0, 300.0, 200.0, xx, yy).sum() / 200.0**2)


def shape_fit(mask: np.ndarray, name: str, occluders: np.ndarray | None = None) -> float:
    """How well ``mask`` looks like one world shape of category ``name``: the best IoU between
    it and such a shape, over radii at :data:`FIT_SCALES` times the one its area gives and
    centres on a 2-pixel grid within :data:`FIT_SHIFT` pixels of its centroid, then every pixel
    around the best; pixels of ``occluders`` (the other things of its map, which the world may
    have drawn over it) are taken out of every candidate shape first, so a thing partly behind
    another still fits. 1.0: exactly a world shape; a blob, two
    shapes fused, a cross with a stub or a triangle with two peaks score lower. An empty mask
    scores 0.0.

    Written by hand: it fits the built-in world's own shapes (:mod:`pandiff.world.drawing`),
    which no library knows."""
    return fit_shape(mask, name, occluders)[0]


def fit_shape(
    mask: np.ndarray, name: str, occluders: np.ndarray | None = None
) -> tuple[float, float, float, float]:
    """:func:`shape_fit`'s IoU with the world shape that reaches it: ``(iou, x, y, radius)``
    (pixel units, centres at ``col + 0.5, row + 0.5``); ``(0, 0, 0, 0)`` for an empty mask."""
    from pandiff.world.drawing import shape_masks

    mask = np.asarray(mask, dtype=bool)
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return 0.0, 0.0, 0.0, 0.0
    cx, cy = xs.mean() + 0.5, ys.mean() + 0.5
    r0 = float(np.sqrt(len(xs) / shape_area(name)))
    # Crop to where any candidate can reach: 1.25 radii (a star's tip) of the largest, shifted.
    reach = int(np.ceil(1.25 * r0 * max(FIT_SCALES))) + FIT_SHIFT + 2
    h, w = mask.shape
    y0, y1 = max(0, int(cy) - reach), min(h, int(cy) + reach + 1)
    x0, x1 = max(0, int(cx) - reach), min(w, int(cx) + reach + 1)
    crop = mask[y0:y1, x0:x1]
    free = ~occluders[y0:y1, x0:x1] if occluders is not None else np.ones_like(crop)
    yy, xx = np.mgrid[y0:y1, x0:x1] + 0.5
    yy, xx = yy.astype(np.float32), xx.astype(np.float32)

    def best(dx, dy, scales):  # the best IoU and its candidate among these offsets and scales
        gx, gy, gs = (a.ravel().astype(np.float32) for a in np.meshgrid(dx, dy, scales, indexing="ij"))
        k = (gx.size, 1, 1)
        shapes = shape_masks(name, (cx + gx).reshape(k), (cy + gy).reshape(k), (r0 * gs).reshape(k), xx, yy)
        shapes &= free
        inter = (shapes & crop).sum((1, 2))
        iou = inter / (shapes.sum((1, 2)) + len(xs) - inter)
        i = int(iou.argmax())
        return float(iou[i]), float(cx + gx[i]), float(cy + gy[i]), float(r0 * gs[i]), gs[i]

    coarse = np.arange(-FIT_SHIFT, FIT_SHIFT + 1, 2, dtype=np.float32)
    first = best(coarse, coarse, np.asarray(FIT_SCALES))
    j = FIT_SCALES.index(min(FIT_SCALES, key=lambda v: abs(v - first[4])))
    near = np.asarray(FIT_SCALES[max(0, j - 1) : j + 2])
    one = np.array([-1.0, 0.0, 1.0])
    fine = best(first[1] - cx + one, first[2] - cy + one, near)
    return (fine if fine[0] > first[0] else first)[:4]


def misfit_things(pmap: PanopticMap, iou: float, min_fraction: float = MIN_FRACTION) -> int:
    """How many thing instances of ``pmap`` fit no world shape of their category to ``iou``
    (:func:`shape_fit`, the other things' pixels allowed to hide part of it). Categories that are
    not world shapes are not judged; ``iou`` 0 or less judges nothing (returns 0).

    Why: solidity (:func:`misshapen_things`) sees a bite or a blob only when it changes the
    hull; a cross with a stub, two triangles overlapping into one outline or a star with a
    missing arm keep a plausible solidity but fit no single shape, and the picture drawn for
    them then shows another count. On the world's own maps every thing fits to 0.85 or more
    (tests/world/test_shape_fit.py)."""
    from pandiff.world.drawing import THING_SHAPES

    if iou <= 0:
        return 0
    things = thing_instances(pmap, min_fraction)
    every = _union(things, pmap.category.shape)
    return sum(shape_fit(mask, name, every & ~mask) < iou for name, mask in things if name in THING_SHAPES)


def _union(things: list[tuple[str, np.ndarray]], shape: tuple[int, int]) -> np.ndarray:
    """Every pixel of ``things`` (``(name, mask)`` pairs): what may hide each one of them."""
    every = np.zeros(shape, dtype=bool)
    for _, mask in things:
        every |= mask
    return every


# :func:`snap_things` keeps a map as it came when a thing would show less than this share of the
# pixels it showed before (a shape snapped over much of another).
SNAP_KEEP = 0.7


def _fitted_shapes(
    pmap: PanopticMap, things: list[tuple[str, np.ndarray]]
) -> list[tuple[int, int, str, float, float, float]]:
    """``(category, instance, name, x, y, radius)`` for each of ``things``: the world shape that
    fits it best (:func:`fit_shape`, the other things allowed to hide part of it)."""
    every = _union(things, pmap.category.shape)
    fitted = []
    for name, mask in things:
        _, x, y, r = fit_shape(mask, name, every & ~mask)
        fitted.append((pmap.category[mask][0], pmap.instance[mask][0], name, x, y, r))
    return fitted


def _grid(h: int, w: int, pad: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(xx, yy)``: pixel-centre coordinates of an ``h x w`` picture padded by ``pad`` pixels."""
    yy, xx = np.mgrid[-pad : h + pad, -pad : w + pad] + 0.5
    return xx, yy


def _stuff_only(pmap: PanopticMap, on_things: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(category, instance)`` of ``pmap`` with every pixel of a thing taking the stuff of the
    nearest pixel that is no thing's (``on_things``: the thing pixels; some stuff needed)."""
    from pandiff.data.panoptic_map import fill_from_nearest

    stuff = PanopticMap.from_codes(fill_from_nearest(pmap.codes(), on_things, ~on_things), pmap.table)
    return stuff.category, stuff.instance


def _world_things(
    pmap: PanopticMap, min_fraction: float
) -> tuple[list[tuple[str, np.ndarray]], np.ndarray, bool]:
    """The map's thing instances of world shape categories, its thing pixels, and whether every
    thing instance of the map is of a world shape category."""
    from pandiff.world.drawing import THING_SHAPES

    instances = thing_instances(pmap, min_fraction)
    things = [(n, m) for n, m in instances if n in THING_SHAPES]
    return (
        things,
        np.asarray(pmap.table.isthing_lut(), dtype=bool)[pmap.category],
        len(things) == len(instances),
    )


def snap_things(pmap: PanopticMap, min_fraction: float = MIN_FRACTION) -> PanopticMap:
    """``pmap`` with every thing instance of a world shape category redrawn as the world shape that
    fits it best (:func:`fit_shape`, the other things allowed to hide part of it), keeping its
    category and instance: a blob, a cross with a stub or a triangle with two peaks becomes the
    one clean shape it stands for. Shapes are drawn back to front by how much of each the map
    shows (the most hidden first), and pixels no shape covers any more take the stuff of the
    nearest stuff pixel. Thing pixels of instance 0 and specks below ``min_fraction`` go to stuff
    too. A map without such things, or one where a thing would then show less than
    :data:`SNAP_KEEP` of the pixels it showed, comes back as it is (the same object).

    Written by hand: it redraws the built-in world's own shapes (:mod:`pandiff.world.drawing`)."""
    things, on_things, _ = _world_things(pmap, min_fraction)
    if not things or on_things.all():  # nothing to snap, or no stuff to fill vacated pixels with
        return pmap
    from pandiff.world.drawing import shape_masks

    xx, yy = _grid(*pmap.category.shape)
    drawn = [
        (cat, inst, shape_masks(n, x, y, r, xx, yy)) for cat, inst, n, x, y, r in _fitted_shapes(pmap, things)
    ]
    shown = [
        (shape & mask).sum() / max(int(shape.sum()), 1) for (_, mask), (_, _, shape) in zip(things, drawn)
    ]
    category, instance = _stuff_only(pmap, on_things)
    for k in sorted(range(len(drawn)), key=lambda k: shown[k]):
        cat, inst, shape = drawn[k]
        category[shape], instance[shape] = cat, inst
    for (_, mask), (cat, inst, _) in zip(things, drawn):
        if ((category == cat) & (instance == inst)).sum() < SNAP_KEEP * mask.sum():
            return pmap  # a shape drawn over much of another: the map is kept as it came
    return PanopticMap(category, instance, pmap.table)


def _place(shapes, taken: np.ndarray, steps: np.ndarray, gap: int, cross: np.ndarray) -> list | None:
    """:func:`spread_things`' placement: each of ``shapes`` (``(category, instance, mask)`` on the
    padded grid), in order, moved by the first of ``steps`` that keeps it clear of ``taken`` (which
    then grows by it and ``gap``); None where one finds no such step."""
    from scipy import ndimage

    moved = []
    for cat, inst, shape in shapes:
        ys, xs = np.nonzero(shape)
        inside = (  # steps that keep the shape on the padded grid
            (ys.min() + steps[:, 0] >= 0) & (ys.max() + steps[:, 0] < taken.shape[0])
            & (xs.min() + steps[:, 1] >= 0) & (xs.max() + steps[:, 1] < taken.shape[1])
        )  # fmt: skip
        free = next(((dy, dx) for dy, dx in steps[inside] if not taken[ys + dy, xs + dx].any()), None)
        if free is None:
            return None
        shape = np.zeros_like(shape)
        shape[ys + free[0], xs + free[1]] = True
        moved.append((cat, inst, shape))
        taken |= ndimage.binary_dilation(shape, cross, iterations=gap)
    return moved


# :func:`spread_things` moves a thing at most this many pixels (Euclidean) from where it stood.
SPREAD_REACH = 16


def spread_things(
    pmap: PanopticMap, gap: int = 2, min_fraction: float = MIN_FRACTION, reach: int = SPREAD_REACH
) -> PanopticMap:
    """``pmap`` with its touching things moved apart, each whole. Every thing instance is fitted
    with the world shape of its category that fits it best (:func:`fit_shape`). Things whose shape
    comes within ``gap`` pixels (4-connected steps, :func:`touching_pairs`' sense) of no other
    shape keep their pixels as they are; the others, largest first, are drawn as that whole shape
    at the nearest place within ``reach`` pixels (integer steps, the nearest first) where it lies
    inside the picture and more than ``gap`` pixels from every shape placed before it; where one
    finds no such place, the order starts from each other moving shape in turn. Category and
    instance stay; pixels no thing covers any more take the stuff of the nearest stuff pixel.
    The map comes back as it is (the same object) when no two shapes touch, when it has fewer
    than two things, a thing of a category that is no world shape or no stuff, or when some shape
    finds no such place in any of those orders. On the world's own layouts with touching things
    (the first 600 scenes of seed 0) it spreads 46 of 47 with 2 things, 112 of 114 with 3 and 93
    of 100 with 4 (largest first alone: 46, 106 and 82).

    Why: the world judge counts the things of the world's own val scenes right in every scene
    whose things stand apart (1170 of 1170 of ``make-world --n 20000 --seed 0``'s val scenes) but
    in 82% of the 4+ thing scenes where some touch (219 of 268), and a picture drawn for a map
    shows what the map shows: things drawn apart are things counted right. Unlike
    :func:`separate_touching`, which bites the larger of two touching things (leaving a shape the
    judge may read as another), it keeps every shape whole.

    Written by hand: it places the built-in world's own shapes (:mod:`pandiff.world.drawing`)."""
    from scipy import ndimage

    if gap < 1:
        raise DataError(f"gap must be >= 1 pixel, got {gap}")
    things, on_things, all_shapes = _world_things(pmap, min_fraction)
    if len(things) < 2 or not all_shapes or on_things.all():
        return pmap
    from pandiff.world.drawing import shape_masks

    h, w = pmap.category.shape
    # Shapes on the picture padded by ``reach`` (so a moved shape is whole, never cut at the edge).
    xx, yy = _grid(h, w, reach)
    shapes = [
        (cat, inst, shape_masks(n, x, y, r, xx, yy)) for cat, inst, n, x, y, r in _fitted_shapes(pmap, things)
    ]
    cross = ndimage.generate_binary_structure(2, 1)
    near = [ndimage.binary_dilation(shape, cross, iterations=gap) for _, _, shape in shapes]
    moves = [
        any((near[a] & shapes[b][2]).any() for b in range(len(shapes)) if b != a) for a in range(len(shapes))
    ]
    if not any(moves):
        return pmap
    # Where a moved shape may not go: outside the picture, and within ``gap`` of a shape placed.
    taken = np.ones((h + 2 * reach, w + 2 * reach), dtype=bool)
    taken[reach : reach + h, reach : reach + w] = False
    steps = np.mgrid[-reach : reach + 1, -reach : reach + 1].reshape(2, -1).T
    length = np.hypot(steps[:, 0], steps[:, 1])
    order = np.argsort(length, kind="stable")
    steps = steps[order][length[order] <= reach]
    placed = []
    for k in (k for k in range(len(shapes)) if not moves[k]):  # they keep their pixels (and their room)
        cat, inst, shape = shapes[k]
        placed.append((cat, inst, things[k][1]))
        room = shape.copy()
        room[reach : reach + h, reach : reach + w] |= things[k][1]
        taken |= ndimage.binary_dilation(room, cross, iterations=gap)
    moving = sorted((k for k in range(len(shapes)) if moves[k]), key=lambda k: -int(shapes[k][2].sum()))
    # Largest first; where some shape finds no place, each other one first in turn.
    for first in range(len(moving)):
        moved = _place([shapes[k] for k in moving[first:] + moving[:first]], taken.copy(), steps, gap, cross)
        if moved is not None:
            placed += [(cat, inst, shape[reach : reach + h, reach : reach + w]) for cat, inst, shape in moved]
            break
    else:
        return pmap
    category, instance = _stuff_only(pmap, on_things)
    for cat, inst, shape in placed:
        category[shape], instance[shape] = cat, inst
    return PanopticMap(category, instance, pmap.table)


def component_counts(pmap: PanopticMap, min_fraction: float = MIN_FRACTION) -> dict[str, int]:
    """Connected components per thing category name (instance bits ignored)."""
    from scipy import ndimage

    counts = {}
    for cat in pmap.table.thing_indices():
        pieces, n = ndimage.label(pmap.category == cat)
        sizes = np.bincount(pieces.ravel(), minlength=n + 1)[1:]
        big = int((sizes >= _min_area(pmap, min_fraction)).sum())
        if big:
            counts[pmap.table[cat].name] = big
    return counts


def expected_counts(spec: dict) -> dict[str, int]:
    """Things per category name that the spec asks for (colours summed)."""
    return dict(Counter(t["category"] for t in spec["things"]))


def stuff_present(pmap: PanopticMap, min_fraction: float = MIN_FRACTION) -> set[str]:
    """Names of the stuff categories covering at least the minimum area."""
    hist = np.bincount(pmap.category.ravel(), minlength=len(pmap.table) + 1)
    return {
        pmap.table[c].name for c in pmap.table.stuff_indices() if hist[c] >= _min_area(pmap, min_fraction)
    }


def _to_image_grid(mask: np.ndarray, size: int) -> np.ndarray:
    """An ``M M`` mask on the ``size x size`` image grid (nearest neighbour)."""
    idx = (np.arange(size) * mask.shape[0]) // size
    return mask[idx][:, idx]


def dominant_colour(image: np.ndarray, mask: np.ndarray) -> str:
    """Colour name of the pixels under ``mask``: the median RGB (the one-pixel outline eroded away
    when something remains) matched to the nearest world colour. Thing colours are returned by
    name, stuff colours as ``"background <stuff>"`` (never a thing's colour)."""
    from scipy import ndimage

    mask = _to_image_grid(mask, image.shape[0])
    inner = ndimage.binary_erosion(mask)
    pixels = image[inner if inner.any() else mask].reshape(-1, 3).astype(np.float64)
    if len(pixels) == 0:
        raise DataError("dominant_colour needs a non-empty mask")
    median = np.median(pixels, axis=0)
    names = list(THING_COLORS) + [f"background {s}" for s in STUFF_COLORS]
    table = np.array(list(THING_COLORS.values()) + list(STUFF_COLORS.values()), dtype=np.float64)
    return names[int(np.argmin(((table - median) ** 2).sum(axis=1)))]


def centroid(mask: np.ndarray) -> np.ndarray:
    """``[x, y]`` centroid of a mask's pixels (pixel centres, y down)."""
    ys, xs = np.nonzero(mask)
    return np.array([xs.mean() + 0.5, ys.mean() + 0.5])


def relation_satisfied(
    pmap: PanopticMap, spec: dict, image: np.ndarray | None = None, min_fraction: float = MIN_FRACTION
) -> bool | None:
    """Whether the spec's relation holds in the map (None when the spec states none).

    Candidates for the subject (object) are the generated instances of its category, and, when the
    image is given, of its colour (:func:`dominant_colour`). The relation holds when some pair of
    distinct candidates stands in it by :func:`pandiff.world.generator.spatial_relation` on their
    centroids: the comparison the world generator used to write the caption.
    """
    if not spec["relations"]:
        return None
    rel = spec["relations"][0]
    instances = thing_instances(pmap, min_fraction)
    colours = [dominant_colour(image, m) if image is not None else None for _, m in instances]

    def wanted(thing: dict) -> tuple[str, str | None]:
        return thing["category"], thing["color"] if image is not None else None

    subject, obj = wanted(spec["things"][rel["subject"]]), wanted(spec["things"][rel["object"]])
    return relation_holds(instances, colours, subject, rel["relation"], obj)


def relation_holds(
    instances: list[tuple[str, np.ndarray]],
    colours: Sequence[str | None],
    subject: tuple[str, str | None],
    relation: str,
    obj: tuple[str, str | None],
) -> bool:
    """Whether some pair of distinct ``instances`` (:func:`thing_instances`) stands in ``relation``
    by :func:`pandiff.world.generator.spatial_relation` on their centroids, the first an instance
    of ``subject``, the second of ``obj``: ``(category, colour)``, the colour matched against the
    instance's ``colours`` entry unless it is None (any colour)."""

    def candidates(thing: tuple[str, str | None]) -> list[int]:
        name, colour = thing
        return [
            i for i, (n, _) in enumerate(instances) if n == name and (colour is None or colours[i] == colour)
        ]

    return any(
        spatial_relation(centroid(instances[a][1]), centroid(instances[b][1])) == relation
        for a in candidates(subject)
        for b in candidates(obj)
        if a != b
    )


def check_adherence(
    pmap: PanopticMap, spec: dict, image: np.ndarray | None = None, min_fraction: float = MIN_FRACTION
) -> dict[str, bool | None]:
    """Per-criterion verdicts for one generated map against its scene spec.

    ``categories``: the set of thing categories matches; ``counts``: categories and instance counts
    match exactly (the headline *category+count adherence*); ``counts_components``: the same with
    connected components; ``stuff_present``: every spec stuff appears; ``stuff_exact``: no other
    stuff appears either; ``relation``: :func:`relation_satisfied` (None without a relation).
    """
    want = expected_counts(spec)
    got = instance_counts(pmap, min_fraction)
    stuff_want = {s["category"] for s in spec["stuff"]}
    stuff_got = stuff_present(pmap, min_fraction)
    return {
        "categories": set(got) == set(want),
        "counts": got == want,
        "counts_components": component_counts(pmap, min_fraction) == want,
        "stuff_present": stuff_want <= stuff_got,
        "stuff_exact": stuff_want == stuff_got,
        "relation": relation_satisfied(pmap, spec, image, min_fraction),
    }


def adherence_rates(verdicts: list[dict[str, bool | None]]) -> dict[str, float | int]:
    """Share of samples passing each criterion (relations over scenes that state one), with counts."""
    if not verdicts:
        raise DataError("adherence needs at least one checked sample")
    rates: dict[str, float | int] = {}
    for key in ADHERENCE_CRITERIA:
        values = [v[key] for v in verdicts if v[key] is not None]
        rates[key] = float(np.mean(values)) if values else float("nan")
        rates[f"{key}_n"] = len(values)
    return rates


def colour_matches(
    pmap: PanopticMap, image: np.ndarray, spec: dict, min_fraction: float = MIN_FRACTION
) -> tuple[int, int]:
    """``(correct, judged)`` instance colours of one sample.

    Per thing category, the dominant colours of the map's instances are matched as a multiset
    against the spec's colours of that category: ``correct`` is the size of the intersection and
    ``judged`` is ``min(#generated, #asked)``, so a count error is not also charged as a colour
    error (adherence reports counts).
    """
    got: dict[str, list[str]] = {}
    for name, mask in thing_instances(pmap, min_fraction):
        got.setdefault(name, []).append(dominant_colour(image, mask))
    want: dict[str, list[str]] = {}
    for thing in spec["things"]:
        want.setdefault(thing["category"], []).append(thing["color"])
    correct = judged = 0
    for name, colours in want.items():
        generated = got.get(name, [])
        correct += sum((Counter(generated) & Counter(colours)).values())
        judged += min(len(generated), len(colours))
    return correct, judged
