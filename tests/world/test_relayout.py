"""The world's own MCD floor (pandiff.world.relayout): a real scene laid out again for its prompt."""

import numpy as np
import pytest

import pandiff.world.relayout as rl
from pandiff.errors import DataError
from pandiff.world.checks import instance_counts
from pandiff.world.drawing import rasterize
from pandiff.world.generator import _RADIUS_RANGE, make_scene, spatial_relation, world_category_table
from pandiff.world.relayout import mcd_floor, mcd_typical, relayout, stated_sizes, typical_scores

TABLE = world_category_table()


def scene_spec(index: int, seed: int = 0) -> tuple[dict, object]:
    sample = make_scene(seed, index)
    return {**sample.spec, "image_id": index + 1, "width": 64}, sample.pmap


def first(condition) -> tuple[dict, object]:
    for i in range(400):
        spec, pmap = scene_spec(i)
        if condition(spec):
            return spec, pmap
    raise AssertionError("no such scene among the first 400")


def test_stated_sizes_reads_the_size_word_of_each_group():
    prompt = "Two small red crosses, a large blue square and a green circle on the grass."
    assert stated_sizes(prompt) == {("red", "cross"): "small", ("blue", "square"): "large"}
    assert stated_sizes("A red circle and two blue stars.") == {}
    assert stated_sizes("small things, a large sky") == {}  # a size word not before colour + shape


def test_a_relayout_keeps_what_the_prompt_fixes_and_redraws_the_rest():
    spec, real = first(lambda s: len(s["things"]) == 3 and s["horizon"] is not None)
    things = spec["things"]
    sizes = {(things[0]["color"], things[0]["category"]): things[0]["size"]}
    rng = np.random.default_rng(3)
    layouts = [relayout(spec, rng, sizes) for _ in range(8)]
    for scene, pmap in layouts:
        assert [(t.category, t.color) for t in scene.things] == [(t["category"], t["color"]) for t in things]
        assert scene.things[0].size == things[0]["size"]  # stated: kept
        lo, hi = _RADIUS_RANGE[things[0]["size"]]
        assert lo * 64 - 0.01 <= scene.things[0].radius <= hi * 64 + 0.01
        assert scene.stuff == tuple(s["category"] for s in spec["stuff"])
        assert 0.35 * 64 - 0.5 <= scene.horizon <= 0.6 * 64 + 0.5
        assert instance_counts(pmap) == instance_counts(real)
        stuff = {TABLE[c].name for c in np.unique(pmap.category) if not TABLE[c].isthing}
        assert stuff == set(scene.stuff)
    # unstated: horizon, positions and the other sizes vary between layouts
    assert len({scene.horizon for scene, _ in layouts}) > 1
    assert len({(scene.things[1].x, scene.things[1].y) for scene, _ in layouts}) == 8
    assert len({scene.things[2].size for scene, _ in layouts}) == 2
    assert all(scene.things[0].radius != layouts[0][0].things[0].radius for scene, _ in layouts[1:])


def test_a_two_thing_relation_is_kept():
    spec, _ = first(lambda s: len(s["things"]) == 2)
    wanted = spec["relations"][0]["relation"]
    rng = np.random.default_rng(0)
    for _ in range(10):
        scene, _ = relayout(spec, rng, {})
        labels = rasterize(scene, TABLE)[1]  # thing k drawn as k + 1, as the generator reads relations
        centroids = [
            np.array([np.nonzero(labels == k)[1].mean(), np.nonzero(labels == k)[0].mean()]) for k in (1, 2)
        ]
        assert spatial_relation(*centroids) == wanted


def test_floor_of_one_thing_on_one_stuff_is_twice_the_area_change():
    spec, real = first(lambda s: len(s["things"]) == 1 and s["horizon"] is None)
    prompt = "a thing"  # no size stated
    floor = mcd_floor([spec], [prompt], [real], draws=3, seed=5)
    rng = np.random.default_rng(np.random.SeedSequence(5, spawn_key=(spec["image_id"],)))
    thing = TABLE.index_of_name(spec["things"][0]["category"])
    by_hand = []
    for _ in range(3):
        _, pmap = relayout(spec, rng, {})
        # one stuff and one thing: the histograms differ by the thing's area change, once in each bin
        by_hand.append(
            2 * abs(int((pmap.category == thing).sum()) - int((real.category == thing).sum())) / 64**2
        )
    assert floor == [pytest.approx(np.mean(by_hand))]
    assert floor[0] > 0


def test_floors_are_per_scene_and_repeatable():
    a, b = scene_spec(1), scene_spec(2)
    both = mcd_floor([a[0], b[0]], ["x", "y"], [a[1], b[1]])
    assert both == mcd_floor([a[0]], ["x"], [a[1]]) + mcd_floor([b[0]], ["y"], [b[1]])
    assert all(0 < f <= 2 for f in both)


def test_stated_sizes_lower_the_floor():
    specs, maps = zip(*(scene_spec(i) for i in range(40)))
    free = mcd_floor(specs, ["" for _ in specs], maps)
    stated = []
    for spec in specs:
        stated.append(" ".join(f"a {t['size']} {t['color']} {t['category']}" for t in spec["things"]))
    kept = mcd_floor(specs, stated, maps)
    assert np.mean(kept) < np.mean(free)


def test_bad_input_is_named(monkeypatch):
    spec, real = scene_spec(0)
    with pytest.raises(DataError, match="one prompt and one real map per spec"):
        mcd_floor([spec], [], [real])
    monkeypatch.setattr(rl, "_acceptable", lambda *a: False)
    monkeypatch.setattr(rl, "MAX_TRIES", 5)
    with pytest.raises(DataError, match="no layout passed the world's rules in 5 draws"):
        relayout(spec, np.random.default_rng(0), {})
    assert np.isnan(mcd_floor([spec], ["x"], [real])[0])  # a reference figure never ends an evaluation


def test_typical_scores_by_hand():
    # sky / grass shares 0.1 .. 0.4 and 0.9: summed L1 to the others is least for 0.3 (2.0 against
    # 2.2, 2.2, 2.8 and 4.8), which is also the per-bin median; the real scene has 0.5 sky
    layouts = np.array([[s, 1 - s] for s in (0.1, 0.2, 0.3, 0.4, 0.9)])
    assert typical_scores(layouts, np.array([0.5, 0.5])) == (pytest.approx(0.4), pytest.approx(0.4))
    # three layouts of one category each: every one equally typical (the first is taken); the per-bin
    # median is all zeros, 1 away from any composition
    layouts = np.eye(3)
    assert typical_scores(layouts, np.array([1.0, 0.0, 0.0])) == (0.0, 1.0)
    assert typical_scores(layouts, np.array([0.0, 0.5, 0.5])) == (2.0, 1.0)
    # scored against the layouts themselves, the per-bin median is never farther than the medoid
    rng = np.random.default_rng(0)
    for _ in range(20):
        layouts = rng.dirichlet(np.ones(5), size=9)
        medoid, median = zip(*(typical_scores(layouts, row) for row in layouts))
        assert np.mean(median) <= np.mean(medoid) + 1e-12


def test_one_typical_layout_scores_well_below_the_floor():
    specs, maps = zip(*(scene_spec(i) for i in range(40)))
    prompts = ["" for _ in specs]
    typical, medians = mcd_typical(specs, prompts, maps, draws=16)
    floors = mcd_floor(specs, prompts, maps, draws=16)
    assert all(0 <= t <= 2 for t in typical)
    # one typical layout trades all variety for closeness to the average scene
    assert np.mean(typical) < 0.8 * np.mean(floors) and np.mean(medians) < 0.8 * np.mean(floors)
    # per scene and repeatable; its layouts are not the floor's
    first, _ = mcd_typical(specs[:1], prompts[:1], maps[:1], draws=16)
    assert first == typical[:1]
    rng = np.random.default_rng(np.random.SeedSequence(0, spawn_key=(specs[0]["image_id"], 1)))
    own = [relayout(specs[0], rng, {})[1] for _ in range(16)]
    hists = np.stack([np.bincount(m.category.ravel(), minlength=len(TABLE) + 1) / 64**2 for m in own])
    real = np.bincount(maps[0].category.ravel(), minlength=len(TABLE) + 1) / 64**2
    assert typical_scores(hists, real)[0] == pytest.approx(typical[0])


def test_typical_of_a_scene_without_layout_is_nan(monkeypatch):
    spec, real = scene_spec(0)
    with pytest.raises(DataError, match="mcd_typical needs one prompt and one real map per spec"):
        mcd_typical([spec], [], [real])
    monkeypatch.setattr(rl, "_acceptable", lambda *a: False)
    monkeypatch.setattr(rl, "MAX_TRIES", 5)
    typical, medians = mcd_typical([spec], ["x"], [real], draws=2)
    assert np.isnan(typical[0]) and np.isnan(medians[0])
