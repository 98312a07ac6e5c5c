"""The built-in world: synthetic scenes of coloured shapes on simple backgrounds, with exact
panoptic maps, captions and a structured spec per image.

A scene has one or two *stuff* regions (``sky`` or ``wall`` above a horizontal horizon over
``grass``, ``water``, ``sand`` or ``floor``; or one region filling the picture) with light
texture, and 1-4 *things*: shapes (circle, square, triangle, star, cross) in one of eight
colours and two sizes, drawn back to front so later things occlude earlier ones. Every thing keeps
at least 60% (and 12 px) of its area visible. Things are flat-coloured with a one-pixel darker
outline (so touching shapes of one colour stay apart in the image); the map matches the image at
every pixel. Instances are labelled canonically (:func:`pandiff.data.panoptic_map.canonicalize`,
at most 7 per category, which the world never exceeds).

:func:`generate_world` writes the COCO 2017 panoptic layout, so the COCO loader reads it unchanged::

    DIR/annotations/panoptic_{train,val}2017.json   images, annotations (segments_info), categories
    DIR/annotations/captions_{train,val}2017.json   COCO captions (images, annotations)
    DIR/annotations/world_specs_{train,val}2017.json the structured specs (below)
    DIR/panoptic_{train,val}2017/<12-digit id>.png  RGB-encoded segment ids
    DIR/{train,val}2017/<12-digit id>.png           the images (PNG: lossless)

Scene ``i`` (0-based, image id ``i + 1``) is drawn from its own RNG seeded by ``(seed, i)``, so
the files are byte-identical for a seed whatever the number of workers, and scene ``i`` is the
same for every ``n``. Scene ``i`` goes to val when ``floor((i + 1) f) > floor(i f)`` for the val
fraction ``f``: an even spread of ``floor(n f)`` val scenes that does not depend on ``n``.

Spec file schema (``world_specs_<split>2017.json``)::

    {"info": {"description", "schema": "pandiff-world-spec/1", "seed", "size", "split"},
     "specs": [{
        "image_id": int, "file_name": str, "width": int, "height": int,
        "stuff": [{"category": "sky"|"wall"|"grass"|"water"|"sand"|"floor",
                   "region": "top"|"bottom"|"full", "segment_id": int, "area": int}],
        "horizon": int | null,          # first row of the bottom region (null: one region)
        "things": [{                    # drawing order, back to front; relations index this list
            "category": "circle"|"square"|"triangle"|"star"|"cross",
            "color": "red"|"orange"|"yellow"|"green"|"blue"|"purple"|"pink"|"white",
            "size": "small"|"large",
            "center": [x, y], "radius": float,   # drawn geometry in pixels (pixel centres at +0.5)
            "bbox": [x, y, w, h], "area": int,    # of the visible pixels, as in segments_info
            "centroid": [x, y],                   # mean position of the visible pixels
            "instance": int,                      # canonical instance index in the map (1..7)
            "segment_id": int}],                  # id in the panoptic PNG / segments_info
        "counts": [{"color", "category", "count"}],   # per (colour, shape), sorted
        "relations": [{"subject": k, "relation": "left of"|"right of"|"above"|"below",
                       "object": j}],     # two-thing scenes only; the inverse holds implicitly
        "captions": [str, ...]}]}      # the same captions as captions_<split>2017.json

A relation compares the centroids of the visible pixels along the axis where they differ most;
the generator only keeps two-thing scenes where that axis wins clearly (by 15% of the picture
and 1.5x the other axis), so a judge measuring centroids agrees with the caption.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import re
import shutil
import tempfile
import textwrap
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache, partial
from itertools import pairwise
from pathlib import Path

import numpy as np
from PIL import Image

from pandiff import checks
from pandiff.data.categories import Category, CategoryTable
from pandiff.data.coco_format import rgb_to_id
from pandiff.data.panoptic_map import PanopticMap, canonicalize
from pandiff.errors import ConfigError, DataError
from pandiff.io import atomic_write_text
from pandiff.world.captions import (
    NUMBER_WORDS,
    RELATION_PHRASES,
    captions_for,
    phrase_words,
    plural,
)
from pandiff.world.drawing import (
    SHAPE_EXTENT,
    SIZES,
    STUFF_COLORS,
    THING_COLORS,
    THING_SHAPES,
    Scene,
    Thing,
    paint,
    rasterize,
)

MAX_INSTANCES = 7
# Shape "radius" as a fraction of the picture side, per size word.
_RADIUS_RANGE = {"small": (0.1, 0.12), "large": (0.17, 0.205)}
_BOTTOMS_UNDER = {"sky": ("grass", "water", "sand"), "wall": ("floor", "grass")}
_SINGLE_REGION = ("grass", "water", "sand", "floor", "wall")
_NUM_THINGS_P = {1: 0.25, 2: 0.3, 3: 0.25, 4: 0.2}
_MIN_VISIBLE_FRACTION, _MIN_VISIBLE_PX = 0.6, 12
_MAX_ATTEMPTS = 500
# Map colours (the palette), distinct from each other; stuff close to its image colour.
_MAP_COLORS = {
    "circle": (220, 20, 60),
    "square": (0, 120, 215),
    "triangle": (255, 175, 0),
    "star": (160, 40, 220),
    "cross": (0, 180, 130),
    "sky": (120, 200, 250),
    "wall": (135, 135, 135),
    "grass": (70, 140, 40),
    "water": (25, 70, 150),
    "sand": (235, 215, 160),
    "floor": (125, 75, 35),
}


@lru_cache(maxsize=1)
def world_category_table() -> CategoryTable:
    """The world's categories: the 5 shapes (things, COCO ids 1-5) then the 6 stuff (ids 6-11)."""
    names = [(s, True, "shape") for s in THING_SHAPES] + [(s, False, "background") for s in STUFF_COLORS]
    return CategoryTable(
        tuple(Category(n, i, thing, _MAP_COLORS[n], sup) for i, (n, thing, sup) in enumerate(names, start=1))
    )


# Example prompts of the vocabulary (counts, colours, sizes, relations, every stuff): a test keeps
# each one inside :func:`world_vocabulary`'s words.
EXAMPLE_PROMPTS = (
    "a red circle on the grass",
    "two blue squares on the sand under a blue sky",
    "three yellow stars in front of a grey wall",
    "a green triangle to the left of a pink cross on the water",
    "two white circles, one above the other, on the floor",
    "a large orange star and a small purple square on the grass under the sky",
    "four shapes: two red crosses, a blue circle and a yellow triangle on the sand",
)


def world_vocabulary() -> dict:
    """What the built-in world's captions say, read from the world's own tables: ``shapes``,
    ``colors``, ``sizes``, ``stuff`` (``single``: the one-region backgrounds, ``over``: each top
    region with the bottoms it goes over), ``relations`` (stated only in two-thing scenes),
    ``counts`` (count words, 1 to ``max_things`` things per picture, which is also the most
    instances of one category), ``max_map_instances`` (what the map encoding can hold),
    ``words`` (every word any caption uses) and ``examples``."""
    max_things = max(_NUM_THINGS_P)
    counts = {1: "a/an/one", **{n: NUMBER_WORDS[n] for n in range(2, max_things + 1)}}
    words = (
        phrase_words()
        | set(THING_SHAPES)
        | {plural(s) for s in THING_SHAPES}
        | set(THING_COLORS)
        | set(SIZES)
        | set(STUFF_COLORS)
        | {NUMBER_WORDS[n] for n in range(2, max_things + 1)}
    )
    return {
        "shapes": list(THING_SHAPES),
        "colors": list(THING_COLORS),
        "sizes": list(SIZES),
        "stuff": list(STUFF_COLORS),
        "layouts": {"single": list(_SINGLE_REGION), "over": {k: list(v) for k, v in _BOTTOMS_UNDER.items()}},
        "relations": list(RELATION_PHRASES),
        "counts": counts,
        "max_things": max_things,
        "max_per_category": max_things,
        "max_map_instances": MAX_INSTANCES,
        "words": sorted(words),
        "examples": list(EXAMPLE_PROMPTS),
    }


def unknown_words(prompt: str) -> list[str]:
    """The words of ``prompt`` (lower-cased, in order, once each) that no built-in-world caption
    uses: the bundled model has never seen them and draws as if they were not there."""
    known = _known_words()
    found = dict.fromkeys(w for w in re.findall(r"[^\W_]+", prompt.lower()) if w not in known)
    return list(found)


@lru_cache(maxsize=1)
def _known_words() -> frozenset[str]:
    return frozenset(world_vocabulary()["words"])


def vocabulary_text(width: int = 100) -> str:
    """The vocabulary as a few lines of plain text (``pandiff generate --help``, the README)."""
    v = world_vocabulary()
    over = "; ".join(f"{top} over {'/'.join(bottoms)}" for top, bottoms in v["layouts"]["over"].items())
    lines = [
        f"shapes: {', '.join(v['shapes'])} (plurals: {', '.join(plural(s) for s in v['shapes'])})",
        f"colours: {', '.join(v['colors'])}",
        f"sizes: {', '.join(v['sizes'])}",
        (
            f"counts: {', '.join(v['counts'].values())} ({v['max_things']} things at most per picture, "
            f"so at most {v['max_per_category']} of one shape)"
        ),
        (
            f"backgrounds (stuff): {', '.join(v['stuff'])}: {'/'.join(v['layouts']['single'])} alone, "
            f"or {over} (e.g. 'on the grass under a blue sky')"
        ),
        (
            f"relations (two things only): {', '.join(v['relations'])} "
            "(e.g. 'two red circles, one above the other')"
        ),
    ]
    wrapped = [textwrap.fill(line, width, subsequent_indent="    ") for line in lines]
    examples = [f'  "{e}"' for e in v["examples"]]
    return "\n".join(wrapped + ["examples:"] + examples)


def is_world_table(table: CategoryTable) -> bool:
    """Whether a model's categories are the built-in world's (its vocabulary then applies)."""
    return [c.name for c in table.categories] == [c.name for c in world_category_table().categories]


@dataclass
class WorldSample:
    """A rendered scene: ``image`` (H W 3 uint8), its canonical ``pmap``, the COCO panoptic form
    (``panoptic_png`` H W 3 uint8 and ``segments_info``) and the ``spec`` dict (schema above,
    without ``image_id``/``file_name``/``width``/``height``)."""

    image: np.ndarray
    pmap: PanopticMap
    panoptic_png: np.ndarray
    segments_info: list[dict]
    spec: dict


def _choice(rng: np.random.Generator, options: Sequence[str]) -> str:
    return options[int(rng.integers(len(options)))]


def things_mix(spec: str | dict | None) -> dict[int, float]:
    """The share of scenes with 1, 2, 3 and 4 things: the default weights for None, else weights given
    as ``{count: weight}`` or as text ``"1:1,2:3,3:2,4:2"`` (normalised to sum 1; counts left out
    get none). A relation-rich world for training is e.g. ``"2:1"``: every scene states a relation."""
    if spec is None:
        return dict(_NUM_THINGS_P)
    if isinstance(spec, str):
        weights: dict[int, float] = {}
        for part in spec.replace(" ", "").split(","):
            count, sep, weight = part.partition(":")
            try:
                if not sep:
                    raise ValueError
                key, value = int(count), float(weight)
            except ValueError:
                raise ConfigError(
                    f"--things takes COUNT:WEIGHT pairs separated by commas (e.g. 1:1,2:3,3:2,4:2), got {spec!r}"
                ) from None
            if key in weights:
                raise ConfigError(f"--things names {key} things twice in {spec!r}")
            weights[key] = value
    else:
        weights = {int(k): float(v) for k, v in spec.items()}
    allowed = sorted(_NUM_THINGS_P)
    for key, value in weights.items():
        if key not in _NUM_THINGS_P:
            raise ConfigError(
                f"--things: a scene holds {allowed[0]}-{allowed[-1]} things (the captions' and the map's "
                f"range), got {key}"
            )
        if not (np.isfinite(value) and value >= 0):
            raise ConfigError(
                f"--things: the weight of {key} things must be a finite number >= 0, got {value}"
            )
    total = sum(weights.values())
    if total <= 0:
        raise ConfigError(f"--things: at least one weight must be above 0, got {spec!r}")
    return {k: weights.get(k, 0.0) / total for k in allowed}


def sample_scene(rng: np.random.Generator, size: int = 64, num_things: int | None = None) -> Scene:
    """Draw a random layout (no visibility check; :func:`make_scene` adds that) of ``num_things``
    things (None: drawn here from the default weights)."""
    if rng.random() < 0.25:
        stuff, horizon = (_choice(rng, _SINGLE_REGION),), None
    else:
        top = _choice(rng, tuple(_BOTTOMS_UNDER))
        stuff, horizon = (top, _choice(rng, _BOTTOMS_UNDER[top])), draw_horizon(rng, size)
    if num_things is None:
        n = int(rng.choice(list(_NUM_THINGS_P), p=list(_NUM_THINGS_P.values())))
    else:
        n = num_things
    things: list[Thing] = []
    for i in range(n):
        if i and rng.random() < 0.35:  # repeat an earlier (colour, shape) so counts above one occur
            base = things[int(rng.integers(i))]
            shape, color = base.category, base.color
        else:
            shape, color = _choice(rng, THING_SHAPES), _choice(rng, tuple(THING_COLORS))
        things.append(place_thing(rng, shape, color, _choice(rng, SIZES), size))
    return Scene(size, stuff, horizon, tuple(things))


def draw_horizon(rng: np.random.Generator, size: int) -> int:
    """The row of a two-region scene's horizon: uniform over 35-60% of the picture's height."""
    return round(size * rng.uniform(0.35, 0.6))


def place_thing(rng: np.random.Generator, shape: str, color: str, size_word: str, size: int) -> Thing:
    """A thing of ``shape``, ``color`` and ``size_word`` with its radius drawn from that size's range
    and its centre uniform over the positions that keep it inside the picture."""
    radius = rng.uniform(*_RADIUS_RANGE[size_word]) * size
    margin = radius * SHAPE_EXTENT[shape] + 1
    x, y = rng.uniform(margin, size - margin, 2)
    return Thing(shape, color, size_word, round(float(x), 2), round(float(y), 2), round(float(radius), 2))


def visible_centroid(labels: np.ndarray, label: int) -> list[float]:
    """``[x, y]`` (pixel centres, rounded to 2 decimals) of the visible pixels of raw thing label
    ``label``: what a spec records and its relation compares."""
    ys, xs = np.nonzero(labels == label)
    return [round(float(xs.mean()) + 0.5, 2), round(float(ys.mean()) + 0.5, 2)]


def spatial_relation(subject: np.ndarray, obj: np.ndarray) -> str:
    """Relation of point ``subject`` to point ``obj`` (``[x, y]``, y down) along the axis where
    they differ most: ``left of``, ``right of``, ``above`` or ``below``."""
    dx, dy = subject[0] - obj[0], subject[1] - obj[1]
    if abs(dx) >= abs(dy):
        return "left of" if dx < 0 else "right of"
    return "above" if dy < 0 else "below"


def _acceptable(scene: Scene, category: np.ndarray, labels: np.ndarray, masks: list[np.ndarray]) -> bool:
    """Every thing visible enough, every stuff region at least 5% of the picture, and a clear
    relation in two-thing scenes."""
    visible = np.bincount(labels.ravel(), minlength=len(masks) + 1)[1:]
    for area, mask in zip(visible, masks):
        if area < max(_MIN_VISIBLE_FRACTION * mask.sum(), _MIN_VISIBLE_PX):
            return False
    edges = [0, scene.size] if scene.horizon is None else [0, scene.horizon, scene.size]
    for start, stop in pairwise(edges):
        if (labels[start:stop] == 0).sum() < 0.05 * category.size:
            return False
    if len(masks) == 2:
        (ya, xa), (yb, xb) = [np.nonzero(labels == k) for k in (1, 2)]
        dx, dy = abs(xa.mean() - xb.mean()), abs(ya.mean() - yb.mean())
        big, small = max(dx, dy), min(dx, dy)
        if big < 0.15 * scene.size or big < 1.5 * small:
            return False
    return True


def render_scene(scene: Scene, rng: np.random.Generator, table: CategoryTable | None = None) -> WorldSample:
    """Draw ``scene``: its image, canonical map, COCO panoptic form and spec with captions.

    ``rng`` drives the textures and the caption wording; the map depends on ``scene`` only.
    """
    table = table or world_category_table()
    return _render(scene, rasterize(scene, table), rng, table)


def _render(scene: Scene, raster: tuple, rng: np.random.Generator, table: CategoryTable) -> WorldSample:
    category, labels, masks = raster
    image = paint(scene, masks, rng)
    pmap, _ = canonicalize(category, labels, table, max_instances=MAX_INSTANCES)
    png, segments_info = pmap.to_coco()
    ids = rgb_to_id(png)
    by_id = {seg["id"]: seg for seg in segments_info}
    things = []
    for k, thing in enumerate(scene.things):
        ys, xs = np.nonzero(labels == k + 1)
        if xs.size == 0:
            raise DataError(
                f"thing {k} ({thing.color} {thing.category}) is fully occluded; move it or draw it later"
            )
        seg = by_id[int(ids[ys[0], xs[0]])]
        things.append(
            {
                "category": thing.category, "color": thing.color, "size": thing.size,
                "center": [thing.x, thing.y], "radius": thing.radius,
                "bbox": seg["bbox"], "area": seg["area"],
                "centroid": visible_centroid(labels, k + 1),
                "instance": int(pmap.instance[ys[0], xs[0]]), "segment_id": seg["id"],
            }
        )  # fmt: skip
    stuff = []
    regions = ("full",) if scene.horizon is None else ("top", "bottom")
    for name, region in zip(scene.stuff, regions):
        seg_ids = np.unique(ids[category == table.index_of_name(name)])
        if seg_ids.size:
            seg = by_id[int(seg_ids[0])]
            stuff.append({"category": name, "region": region, "segment_id": seg["id"], "area": seg["area"]})
    groups = Counter((t["color"], t["category"]) for t in things)
    relations = []
    if len(things) == 2:
        rel = spatial_relation(np.array(things[0]["centroid"]), np.array(things[1]["centroid"]))
        relations.append({"subject": 0, "relation": rel, "object": 1})
    spec = {
        "stuff": stuff,
        "horizon": scene.horizon,
        "things": things,
        "counts": [{"color": c, "category": s, "count": n} for (c, s), n in sorted(groups.items())],
        "relations": relations,
    }
    spec["captions"] = captions_for(spec, rng)
    return WorldSample(image, pmap, png, segments_info, spec)


def scene_rng(seed: int, index: int) -> np.random.Generator:
    """The RNG of scene ``index`` for ``seed``: independent streams from one SeedSequence."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(index,)))


def make_scene(
    seed: int,
    index: int,
    size: int = 64,
    table: CategoryTable | None = None,
    mix: dict[int, float] | None = None,
) -> WorldSample:
    """Scene ``index`` of the world with ``seed``: layouts are redrawn until every thing is
    visible enough, both stuff regions show and a two-thing relation is clear.

    ``mix`` (:func:`things_mix`) is the share of scenes per thing count: the count is drawn once
    and kept while layouts are redrawn, so the shares hold exactly in expectation. None keeps the
    original draw, which draws the count again with every rejected layout; as crowded layouts are
    rejected more often, its scenes hold 1/2/3/4 things about 34/26/25/14% of the time (world-20k),
    not the weights' 25/30/25/20%."""
    table = table or world_category_table()
    rng = scene_rng(seed, index)
    n = None if mix is None else int(rng.choice(list(mix), p=list(mix.values())))
    for _ in range(_MAX_ATTEMPTS):
        scene = sample_scene(rng, size, n)
        raster = rasterize(scene, table)
        if _acceptable(scene, *raster):
            return _render(scene, raster, rng, table)
    raise RuntimeError(f"no acceptable layout in {_MAX_ATTEMPTS} attempts for scene {index} at size {size}")


def scene_from_spec(spec: dict, size: int) -> Scene:
    """The :class:`Scene` a spec entry describes (``stuff``, ``horizon``, ``things`` geometry)."""
    things = tuple(
        Thing(t["category"], t["color"], t["size"], t["center"][0], t["center"][1], t["radius"])
        for t in spec["things"]
    )
    return Scene(size, tuple(s["category"] for s in spec["stuff"]), spec["horizon"], things)


# -- writing a world in the COCO 2017 panoptic layout ---------------------------------------------
SPLITS = ("train", "val")
_SPEC_SCHEMA = "pandiff-world-spec/1"


def is_val_scene(index: int, val_fraction: float) -> bool:
    """Whether scene ``index`` belongs to val: ``floor((i + 1) f) > floor(i f)``, in exact
    rational arithmetic so the split never depends on float rounding."""
    f = Fraction(val_fraction).limit_denominator(1_000_000)
    return (index + 1) * f.numerator // f.denominator > index * f.numerator // f.denominator


def world_paths(out_dir: str | Path, split: str) -> dict[str, Path]:
    """The files and folders of one split (keys ``panoptic_json``, ``captions_json``,
    ``specs_json``, ``images``, ``panoptic``)."""
    out = Path(out_dir)
    return {
        "panoptic_json": out / "annotations" / f"panoptic_{split}2017.json",
        "captions_json": out / "annotations" / f"captions_{split}2017.json",
        "specs_json": out / "annotations" / f"world_specs_{split}2017.json",
        "images": out / f"{split}2017",
        "panoptic": out / f"panoptic_{split}2017",
    }


def _write_scene(task: tuple[int, int, int, str, str, dict | None]) -> dict:
    """Worker: render scene ``index`` and write its two PNGs; return its JSON records."""
    seed, index, size, out_dir, split, mix = task
    sample = make_scene(seed, index, size, mix=mix)
    image_id = index + 1
    file_name = f"{image_id:012d}.png"
    paths = world_paths(out_dir, split)
    # PNGs are written without an fsync per file (which would dominate the run time) into the
    # hidden folder that moves into place only when the whole world is complete.
    Image.fromarray(sample.image).save(paths["images"] / file_name, compress_level=1)
    Image.fromarray(sample.panoptic_png).save(paths["panoptic"] / file_name, compress_level=1)
    image = {"id": image_id, "file_name": file_name, "width": size, "height": size}
    return {
        "split": split,
        "image": image,
        "panoptic": {"image_id": image_id, "file_name": file_name, "segments_info": sample.segments_info},
        "spec": {"image_id": image_id, "file_name": file_name, "width": size, "height": size, **sample.spec},
    }


def _check_options(n: int, size: int, seed: int, val_fraction: float, workers: int) -> None:
    if n < 1:
        raise ConfigError(f"--n must be at least 1, got {n}")
    if size < 32:
        raise ConfigError(f"--size must be at least 32 (shapes need room), got {size}")
    checks.number(size, "--size", 32, 4096, integer=True)  # 200000 px would ask for 120 GB a scene
    checks.seed(seed)
    if not 0.0 <= val_fraction < 1.0:
        raise ConfigError(f"--val-fraction must lie in [0, 1), got {val_fraction}")
    if workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {workers}")


def _check_out_dir(out: Path, overwrite: bool) -> None:
    """Refuse a non-empty folder unless ``overwrite`` (which replaces only a world's own files)."""
    if out.exists() and not out.is_dir():
        raise DataError(f"{out} exists and is not a folder; choose another --out")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise DataError(f"{out} already exists and is not empty; pass --overwrite to replace the world in it")


def _make_split_dirs(root: Path) -> None:
    for split in SPLITS:
        paths = world_paths(root, split)
        for key in ("images", "panoptic"):
            paths[key].mkdir(parents=True, exist_ok=True)
        paths["panoptic_json"].parent.mkdir(parents=True, exist_ok=True)


def _install(tmp: Path, out: Path) -> None:
    """Move a complete world from ``tmp`` into ``out`` by renames, replacing a previous world's
    files (and nothing else of the folder)."""
    for split in SPLITS:
        for key, path in world_paths(out, split).items():
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
            path.parent.mkdir(parents=True, exist_ok=True)
            os.replace(world_paths(tmp, split)[key], path)


def _write_split_jsons(
    out: Path, split: str, records: list[dict], seed: int, size: int, mix: dict[int, float] | None
) -> None:
    paths = world_paths(out, split)
    info = {"description": "pandiff built-in world (synthetic)", "seed": seed, "size": size, "split": split}
    if mix is not None:  # only a chosen mix is recorded, so default worlds stay byte-identical
        info["things_mix"] = {str(k): v for k, v in mix.items()}
    images = [r["image"] for r in records]
    panoptic = {
        "info": info, "licenses": [], "images": images,
        "annotations": [r["panoptic"] for r in records],
        "categories": world_category_table().to_coco(),
    }  # fmt: skip
    captions = [
        {"id": r["image"]["id"] * 10 + k, "image_id": r["image"]["id"], "caption": text}
        for r in records
        for k, text in enumerate(r["spec"]["captions"])
    ]
    specs = {"info": {**info, "schema": _SPEC_SCHEMA}, "specs": [r["spec"] for r in records]}
    dump = partial(json.dumps, separators=(",", ":"), allow_nan=False)
    atomic_write_text(paths["panoptic_json"], dump(panoptic))
    atomic_write_text(
        paths["captions_json"],
        dump({"info": info, "licenses": [], "images": images, "annotations": captions}),
    )
    atomic_write_text(paths["specs_json"], dump(specs))


def generate_world(
    out_dir: str | Path,
    n: int,
    size: int = 64,
    seed: int = 0,
    val_fraction: float = 0.1,
    workers: int | None = None,
    overwrite: bool = False,
    things: str | dict | None = None,
) -> dict:
    """Write a world of ``n`` scenes of ``size x size`` pixels to ``out_dir`` (layout above).

    Args:
        out_dir: target folder; must be absent or empty unless ``overwrite``.
        n: number of scenes (train + val); image ids are 1..n.
        size: picture side in pixels (>= 32).
        seed: world seed (>= 0); the same seed gives byte-identical files.
        val_fraction: share of scenes in val, in [0, 1).
        workers: processes drawing scenes (default ``os.cpu_count()``); the output does not
            depend on it.
        overwrite: replace a previous world in ``out_dir``.
        things: the share of scenes with 1-4 things (:func:`things_mix`: ``"2:1"`` gives only
            two-thing scenes, each with a stated relation); None: the original draw (about
            34/26/25/14% of scenes with 1/2/3/4 things; see :func:`make_scene`). Recorded in the
            JSON files' ``info``.

    Returns:
        A summary: ``out_dir``, ``n``, ``train``, ``val`` (scene counts), ``size``, ``seed``,
        ``workers``, ``seconds``, ``scenes_per_second``, ``things_mix`` (None for the default).

    Raises:
        ConfigError for invalid options; DataError for a non-empty ``out_dir`` without ``overwrite``.
    """
    workers = (os.cpu_count() or 1) if workers is None else workers
    _check_options(n, size, seed, val_fraction, workers)
    mix = None if things is None else things_mix(things)
    start = time.perf_counter()
    out = Path(out_dir)
    _check_out_dir(out, overwrite)
    out.mkdir(parents=True, exist_ok=True)
    # The world is drawn into a hidden folder inside ``out`` and moved into place when complete, so
    # a full disk or a kill never leaves a partial world (nor a half-replaced previous one).
    tmp = Path(tempfile.mkdtemp(prefix=".world-", suffix=".tmp", dir=out))
    try:
        _make_split_dirs(tmp)
        tasks = [
            (seed, i, size, str(tmp), "val" if is_val_scene(i, val_fraction) else "train", mix)
            for i in range(n)
        ]
        workers = min(workers, n)
        if workers == 1:
            records = [_write_scene(t) for t in tasks]
        else:
            with multiprocessing.Pool(workers) as pool:
                records = pool.map(_write_scene, tasks, chunksize=max(1, min(256, n // (workers * 8))))
        counts = {}
        for split in SPLITS:
            split_records = [r for r in records if r["split"] == split]
            _write_split_jsons(tmp, split, split_records, seed, size, mix)
            counts[split] = len(split_records)
        _install(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    seconds = time.perf_counter() - start
    return {
        "out_dir": str(out), "n": n, **counts, "size": size, "seed": seed, "workers": workers,
        "seconds": round(seconds, 3), "scenes_per_second": round(n / seconds, 1), "things_mix": mix,
    }  # fmt: skip
