"""The world's own MCD floor: a real scene laid out again for the same prompt.

MCD compares a generated map's category composition with the one real map the prompt was written
for. A prompt does not fix that composition: the world draws the horizon, the positions and (when
the caption does not say "small" or "large") the sizes at random, so even a sampler of the world's
own distribution scores an MCD above 0. :func:`mcd_floor` measures that level: each real scene's
spec is laid out again under the world's own rules (:func:`relayout`: the same stuff, things,
colours, stated sizes, drawing order and two-thing relation; horizon, positions and unstated sizes
redrawn; the generator's visibility rules), and the MCD of those layouts against the real map is
averaged. A model whose MCD is below this floor draws less varied layouts than the world does, not
better ones.

The other end of the scale is :func:`mcd_typical`: a generator that draws, for every prompt, the one
most typical of the world's layouts (the medoid of many relayouts), with every count right. Its MCD
is about the lowest a generator of valid layouts can reach; the per-bin median composition of the
same layouts (not a drawable layout) bounds every predictor that sees only the prompt, since L1 is
minimised bin by bin by the median.

No library measures this: it needs the world's generator, which only pandiff has.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from pandiff.data.categories import CategoryTable
from pandiff.data.panoptic_map import PanopticMap, canonicalize
from pandiff.errors import DataError
from pandiff.evaluation.mcd import category_histogram, count_difference
from pandiff.world.captions import plural
from pandiff.world.drawing import SIZES, THING_SHAPES, rasterize
from pandiff.world.generator import (
    Scene,
    _acceptable,
    draw_horizon,
    place_thing,
    scene_from_spec,
    spatial_relation,
    visible_centroid,
    world_category_table,
)

# Layout draws per scene before giving up (a relation-bound crowded scene needs the most; the
# generator itself allows 500 per scene).
MAX_TRIES = 2000
# Layouts per scene whose MCD :func:`mcd_floor` averages, and the seed of their RNG (fixed, so the
# floor of one prompt set is one number whatever the evaluation's seed).
DRAWS, FLOOR_SEED = 4, 0
# Layouts per scene among which :func:`mcd_typical` picks the most typical one.
TYPICAL_DRAWS = 64
_SHAPE_OF = {**{s: s for s in THING_SHAPES}, **{plural(s): s for s in THING_SHAPES}}


def stated_sizes(prompt: str) -> dict[tuple[str, str], str]:
    """``{(colour, shape): size word}`` for every thing group the prompt names with a size: the
    world's captions write a group as ``<count> [<size>] <colour> <shape>[s]``."""
    words = re.findall(r"[a-z]+", prompt.lower())
    sizes = {}
    for size, colour, word in zip(words, words[1:], words[2:]):
        if size in SIZES and word in _SHAPE_OF:
            sizes[(colour, _SHAPE_OF[word])] = size
    return sizes


def relayout(
    spec: dict,
    rng: np.random.Generator,
    sizes: dict[tuple[str, str], str],
    table: CategoryTable | None = None,
) -> tuple[Scene, PanopticMap]:
    """Scene ``spec`` (a world spec entry) laid out again: its stuff, things (shape, colour, order)
    and relation kept, the sizes of ``sizes``' groups kept, the horizon, positions, radii and every
    other size drawn afresh until the layout passes the generator's rules (every thing visible
    enough, both stuff regions showing, a two-thing scene's relation clear) and keeps the spec's
    relation. Returns the new scene and its canonical map.

    Raises:
        DataError: no such layout within :data:`MAX_TRIES` draws.
    """
    table = table or world_category_table()
    real = scene_from_spec(spec, spec.get("width", 64))
    wanted = spec["relations"][0]["relation"] if spec.get("relations") else None
    for _ in range(MAX_TRIES):
        horizon = None if real.horizon is None else draw_horizon(rng, real.size)
        things = tuple(
            place_thing(
                rng,
                t.category,
                t.color,
                sizes.get((t.color, t.category)) or SIZES[int(rng.integers(len(SIZES)))],
                real.size,
            )
            for t in real.things
        )
        scene = Scene(real.size, real.stuff, horizon, things)
        category, labels, masks = rasterize(scene, table)
        if not _acceptable(scene, category, labels, masks):
            continue
        if wanted is not None:
            subject, obj = (np.array(visible_centroid(labels, k)) for k in (1, 2))
            if spatial_relation(subject, obj) != wanted:  # as the generator states the relation
                continue
        return scene, canonicalize(category, labels, table)[0]
    raise DataError(f"scene {spec.get('image_id')}: no layout passed the world's rules in {MAX_TRIES} draws")


def mcd_floor(
    specs: Sequence[dict],
    prompts: Sequence[str],
    real_maps: Sequence[PanopticMap],
    draws: int = DRAWS,
    seed: int = FLOOR_SEED,
) -> list[float]:
    """Per scene, the mean MCD of ``draws`` relayouts (:func:`relayout`, sizes kept where its
    prompt states them) against its real map. Scene i's layouts come from its own RNG, seeded by
    ``(seed, image id)``, so a scene's floor does not depend on the other scenes. A scene that no
    layout fits within :data:`MAX_TRIES` draws gets NaN (a reference figure must not end a long
    evaluation)."""
    _check_lengths("mcd_floor", specs, prompts, real_maps)
    floors = []
    for spec, prompt, real in zip(specs, prompts, real_maps):
        layouts = _layouts(spec, prompt, real.table, draws, (seed, int(spec.get("image_id", 0))))
        floors.append(
            float("nan") if layouts is None else float(np.mean([count_difference(m, real) for m in layouts]))
        )
    return floors


def mcd_typical(
    specs: Sequence[dict],
    prompts: Sequence[str],
    real_maps: Sequence[PanopticMap],
    draws: int = TYPICAL_DRAWS,
    seed: int = FLOOR_SEED,
) -> tuple[list[float], list[float]]:
    """Per scene, two MCDs against its real map from ``draws`` relayouts for its prompt (their RNG
    seeded by ``(seed, image id, 1)``, apart from :func:`mcd_floor`'s): of the most typical layout
    (:func:`typical_scores`' medoid) and of the layouts' per-bin median composition. NaN for a scene
    no layout fits."""
    _check_lengths("mcd_typical", specs, prompts, real_maps)
    medoids, medians = [], []
    for spec, prompt, real in zip(specs, prompts, real_maps):
        layouts = _layouts(spec, prompt, real.table, draws, (seed, int(spec.get("image_id", 0)), 1))
        if layouts is None:
            medoids.append(float("nan"))
            medians.append(float("nan"))
            continue
        medoid, median = typical_scores(np.stack([_composition(m) for m in layouts]), _composition(real))
        medoids.append(medoid)
        medians.append(median)
    return medoids, medians


def typical_scores(layouts: np.ndarray, real: np.ndarray) -> tuple[float, float]:
    """``layouts`` (``M K``) and ``real`` (``K``) normalised category histograms -> the L1 distance
    to ``real`` of the medoid layout (least summed L1 to the other layouts; the first on a tie) and
    of the per-bin median of the layouts (the fixed vector of least mean L1 to them)."""
    spread = np.abs(layouts[:, None] - layouts[None]).sum(-1).sum(1)
    medoid = layouts[int(np.argmin(spread))]
    median = np.median(layouts, axis=0)
    return float(np.abs(medoid - real).sum()), float(np.abs(median - real).sum())


def _composition(pmap: PanopticMap) -> np.ndarray:
    """Normalised category histogram of a map, as MCD compares them."""
    return category_histogram(pmap.category, len(pmap.table)) / pmap.category.size


def _check_lengths(name: str, specs: Sequence, prompts: Sequence, real_maps: Sequence) -> None:
    if not (len(specs) == len(prompts) == len(real_maps)):
        raise DataError(
            f"{name} needs one prompt and one real map per spec, got {len(specs)} specs, "
            f"{len(prompts)} prompts and {len(real_maps)} maps"
        )


def _layouts(
    spec: dict, prompt: str, table: CategoryTable, draws: int, key: tuple[int, ...]
) -> list[PanopticMap] | None:
    """``draws`` relayouts of ``spec`` (sizes the prompt states kept) from an RNG seeded by ``key``;
    None when no layout fits within :data:`MAX_TRIES` draws (a reference figure must not end a long
    evaluation)."""
    rng = np.random.default_rng(np.random.SeedSequence(key[0], spawn_key=key[1:]))
    sizes = stated_sizes(prompt)
    try:
        return [relayout(spec, rng, sizes, table)[1] for _ in range(draws)]
    except DataError:
        return None
