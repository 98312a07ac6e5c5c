"""The self check: prompts read into what they name, maps checked against them, best-of drawing,
and the pipeline's self-checked prompt -> image + map."""

import json
import re
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from pandiff.data.categories import CategoryTable
from pandiff.data.panoptic_map import PanopticMap
from pandiff.errors import ConfigError
from pandiff.pipeline import PanopticDiffusionPipeline
from pandiff.self_check import (
    CONSISTENCY_TIMESTEPS,
    PROMPT_WEIGHT,
    SHAPE_WEIGHT,
    best_of,
    count_disagreement,
    instance_match,
    map_consistency,
    map_failures,
    map_score,
    parse_prompt,
    rank_best,
)
from pandiff.world.captions import INVERSE_RELATION
from pandiff.world.generator import generate_world, spatial_relation, world_category_table

WORLD = world_category_table()


@pytest.mark.parametrize(
    ("prompt", "counts", "stuff", "relation"),
    [
        ("two red circles and a blue square on the grass", {"circle": 2, "square": 1}, {"grass"}, None),
        ("A red circle to the left of a blue star on the sand.", {"circle": 1, "star": 1}, {"sand"}, ("circle", "left of", "star")),
        ("two red circles, one above the other, on the grass", {"circle": 2}, {"grass"}, ("circle", "above", "circle")),
        # "under" before stuff is no relation; sizes and colours stand between count and shape
        ("three large pink squares under a blue sky", {"square": 3}, {"sky"}, None),
        ("The sky over the water, with a green cross and an orange star", {"cross": 1, "star": 1}, {"sky", "water"}, None),
        ("a yellow triangle and a red triangle below a purple cross", {"triangle": 2, "cross": 1}, set(), ("triangle", "below", "cross")),
        ("circles on the floor", {"circle": None}, {"floor"}, None),
        ("hello there", {}, set(), None),
    ],
)  # fmt: skip
def test_parse_prompt_known_cases(prompt, counts, stuff, relation):
    spec = parse_prompt(prompt, WORLD)
    assert spec.counts == counts
    assert spec.stuff == stuff
    assert spec.relation == relation
    assert spec.names_anything == bool(counts or stuff)


def test_parse_prompt_reads_coco_names():
    table = CategoryTable.from_names(
        ["person", "dog", "traffic light", "mouse"], ["wall-other-merged", "sky-other-merged"]
    )
    spec = parse_prompt("Three people and two dogs beside a traffic light, a mouse under a wall", table)
    assert spec.counts == {"person": 3, "dog": 2, "traffic light": 1, "mouse": 1}
    assert spec.stuff == {"wall-other-merged"}
    assert spec.relation is None  # the thing under it is stuff
    assert parse_prompt("a dog to the right of 2 people", table).relation == ("dog", "right of", "person")
    assert parse_prompt("a dog to the right of 2 people", table).counts == {"dog": 1, "person": 2}


def test_parse_prompt_reads_every_world_caption_as_its_scene(tmp_path):
    """Every caption of a generated world parses to its scene's counts, stuff and, where the
    caption states it, its relation (told from either side)."""
    generate_world(tmp_path / "w", n=60, size=32, seed=3, val_fraction=0.5)
    specs = {
        s["image_id"]: s
        for s in json.loads((tmp_path / "w/annotations/world_specs_val2017.json").read_text())["specs"]
    }
    captions = json.loads((tmp_path / "w/annotations/captions_val2017.json").read_text())["annotations"]
    stated = 0
    for cap in captions:
        scene = specs[cap["image_id"]]
        spec = parse_prompt(cap["caption"], WORLD)
        want = {}
        for thing in scene["things"]:
            want[thing["category"]] = want.get(thing["category"], 0) + 1
        assert spec.counts == want, cap["caption"]
        assert spec.stuff == {s["category"] for s in scene["stuff"]}, cap["caption"]
        if scene["relations"] and re.search(r"left of|right of|above|below", cap["caption"]):
            stated += 1
            rel = scene["relations"][0]
            s, o = scene["things"][rel["subject"]]["category"], scene["things"][rel["object"]]["category"]
            assert spec.relation in ((s, rel["relation"], o), (o, INVERSE_RELATION[rel["relation"]], s)), cap[
                "caption"
            ]
        else:
            assert spec.relation is None, cap["caption"]
    assert stated > 5


def _scene(things, stuff="grass", size=32):
    """A map of ``stuff`` with square things ``(name, x, y)`` (8 px, top-left corner)."""
    category = np.full((size, size), WORLD.index_of_name(stuff))
    instance = np.zeros((size, size), dtype=int)
    for k, (name, x, y) in enumerate(things, start=1):
        category[y : y + 8, x : x + 8] = WORLD.index_of_name(name)
        instance[y : y + 8, x : x + 8] = k
    return PanopticMap(category, instance, WORLD)


def test_map_failures_counts_each_wrong_fact():
    left_right = _scene([("circle", 2, 12), ("star", 20, 12)])
    assert (
        map_failures(left_right, parse_prompt("a red circle to the left of a blue star on the grass", WORLD))
        == 0
    )
    assert (
        map_failures(left_right, parse_prompt("a red circle to the right of a blue star on the grass", WORLD))
        == 1
    )
    assert map_failures(left_right, parse_prompt("a red circle above a blue star on the grass", WORLD)) == 1
    # wrong count (1), missing stuff (1), relation (1)
    assert map_failures(left_right, parse_prompt("two circles above a star on the sand", WORLD)) == 3
    # the star is not named: one failure when the prompt names every thing, none otherwise
    assert map_failures(left_right, parse_prompt("a circle on the grass", WORLD)) == 1
    assert map_failures(left_right, parse_prompt("a circle on the grass", WORLD), exhaustive=False) == 0
    # "circles" without a number wants two or more
    assert map_failures(left_right, parse_prompt("circles and a star on the grass", WORLD)) == 1
    # a prompt naming nothing the reader knows is not checked (no redraw would make it better)
    assert map_failures(left_right, parse_prompt("a cat on a sofa", WORLD)) == 0
    stacked = _scene([("circle", 12, 2), ("circle", 13, 20)])
    assert map_failures(stacked, parse_prompt("two circles, one above the other, on the grass", WORLD)) == 0
    assert map_failures(stacked, parse_prompt("two circles, one left of the other, on the grass", WORLD)) == 1


def test_map_score_ranks_touching_things_below_any_prompt_failure():
    """avoid_touching: each pair of touching things adds 1, each failure against the prompt
    PROMPT_WEIGHT; without it the score is the prompt failures alone."""
    prompt = parse_prompt("two circles on the grass", WORLD)
    side_by_side = _scene([("circle", 2, 12), ("circle", 10, 12)])  # edges meet
    one_apart = _scene([("circle", 2, 12), ("circle", 11, 12)])  # one pixel of grass between
    apart = _scene([("circle", 2, 12), ("circle", 20, 12)])
    for pmap in (side_by_side, one_apart, apart):
        assert map_failures(pmap, prompt) == 0 and map_score(pmap, prompt) == 0
    assert map_score(side_by_side, prompt, avoid_touching=True) == 1
    assert map_score(one_apart, prompt, avoid_touching=True) == 1  # within the 2-pixel gap
    assert map_score(apart, prompt, avoid_touching=True) == 0
    three = parse_prompt("three circles on the grass", WORLD)
    assert map_score(side_by_side, three, avoid_touching=True) == PROMPT_WEIGHT + 1
    assert map_score(apart, three, avoid_touching=True) == PROMPT_WEIGHT  # still worse than touching
    # a row of three circles: two touching pairs (the outer two are apart); a circle touching a
    # star is a pair too (things of any categories), one apart from it is not
    row = _scene([("circle", 2, 12), ("circle", 10, 12), ("circle", 18, 12)])
    assert map_score(row, parse_prompt("three circles on the grass", WORLD), avoid_touching=True) == 2
    one_each = parse_prompt("a circle and a star on the grass", WORLD)
    assert map_score(_scene([("circle", 2, 12), ("star", 10, 12)]), one_each, avoid_touching=True) == 1
    assert map_score(_scene([("circle", 2, 12), ("star", 20, 12)]), one_each, avoid_touching=True) == 0


def _fused_pair(stuff="grass", size=32):
    """Two 8 px squares overlapping by 4 px diagonally, one square instance: a blob no single world
    square looks like (112 pixels on a hull of 128: solidity 0.875)."""
    category = np.full((size, size), WORLD.index_of_name(stuff))
    instance = np.zeros((size, size), dtype=int)
    category[2:10, 2:10] = category[6:14, 6:14] = WORLD.index_of_name("square")
    instance[2:10, 2:10] = instance[6:14, 6:14] = 1
    return PanopticMap(category, instance, WORLD)


def test_map_score_ranks_misshapen_things_between_prompt_failures_and_touching():
    """misshapen: each thing no single world shape of its category looks like adds SHAPE_WEIGHT,
    below any failure against the prompt and above touching pairs; off (0) it adds nothing."""
    fused = _fused_pair()
    one = parse_prompt("a square on the grass", WORLD)
    assert map_failures(fused, one) == 0 and map_score(fused, one) == 0
    assert map_score(fused, one, misshapen=0.95) == SHAPE_WEIGHT
    assert map_score(fused, one, misshapen=0.8) == 0  # 0.875 is above 0.8 of the square's 1.0
    assert map_score(fused, one, avoid_touching=True, misshapen=0.0) == 0
    whole = _scene([("square", 2, 12)])
    assert map_score(whole, one, misshapen=0.95) == 0
    two = parse_prompt("two squares on the grass", WORLD)
    assert map_score(fused, two, misshapen=0.95) == PROMPT_WEIGHT + SHAPE_WEIGHT
    touching = _scene([("square", 2, 12), ("square", 10, 12)])
    assert map_score(touching, two, avoid_touching=True, misshapen=0.95) == 1 < SHAPE_WEIGHT


def test_the_relation_rule_takes_the_axis_of_the_larger_offset():
    assert spatial_relation(np.array([0.0, 5.0]), np.array([4.0, 6.0])) == "left of"
    assert spatial_relation(np.array([9.0, 5.0]), np.array([4.0, 6.0])) == "right of"
    assert spatial_relation(np.array([4.0, 0.0]), np.array([5.0, 6.0])) == "above"
    assert spatial_relation(np.array([4.0, 9.0]), np.array([5.0, 2.0])) == "below"


def test_count_disagreement_counts_categories_that_differ():
    a = _scene([("circle", 2, 2), ("circle", 20, 2), ("star", 2, 20)])
    assert count_disagreement(a, a) == 0
    assert count_disagreement(a, _scene([("circle", 2, 2), ("star", 2, 20)])) == 1
    assert count_disagreement(a, _scene([("square", 2, 2)])) == 3  # circle, star and square differ


def test_instance_match_is_the_worst_best_iou_of_either_maps_instances():
    a = _scene([("circle", 2, 2), ("star", 20, 20)])
    assert instance_match(a, a) == 1.0
    # the circle moved 4 px: 8x8 squares overlapping 4x8 px, IoU 32 / 96; the star matches exactly
    assert instance_match(a, _scene([("circle", 6, 2), ("star", 20, 20)])) == pytest.approx(1 / 3)
    assert instance_match(a, _scene([("circle", 2, 2)])) == 0.0  # the star has no counterpart
    assert instance_match(_scene([("circle", 2, 2)]), a) == 0.0  # either direction
    assert (
        instance_match(a, _scene([("square", 2, 2), ("star", 20, 20)])) == 0.0
    )  # same place, other category
    assert instance_match(_scene([]), _scene([])) == 1.0  # no thing on either side


def test_rank_best_takes_fewest_failures_then_the_rank_sum():
    # draw 0 fails; of draws 1 and 2, draw 2 ranks better on both measures
    assert rank_best([1, 0, 0], [1.0, 0.2, 0.9], [0.0, 0.5, 0.4]) == 2
    # the measures disagree: ranks by match 0,1,2 and by error 2,0,1 -> sums 2,1,3
    assert rank_best([0, 0, 0], [0.9, 0.8, 0.1], [0.3, 0.1, 0.2]) == 1
    assert rank_best([0, 0], [0.5, 0.5], [0.1, 0.1]) == 0  # ties keep the earlier draw
    assert rank_best([2, 1], [1.0, 0.0], [0.0, 1.0]) == 1  # failures come first


def test_best_of_keeps_the_fewest_failures_and_redraws_only_failing_rows():
    draws = {0: [5, 0, 3], 1: [2, 1, 0], 2: [0, 0, 0]}  # row -> failures of its 1st, 2nd, 3rd draw
    seen: list[list[int]] = []
    made = {r: 0 for r in draws}

    def draw(idx):
        seen.append(list(idx))
        out = []
        for i in idx:
            out.append((i, made[i]))
            made[i] += 1
        return out

    def failures(idx, items):
        return [draws[i][k] for i, k in items]

    best, score = best_of(3, draw, failures, tries=2)
    assert seen == [[0, 1, 2], [0, 1], [1]]  # row 2 passed at once, row 0 at its 2nd draw
    assert best == [(0, 1), (1, 2), (2, 0)]
    assert score == [0, 0, 0]
    best, score = best_of(
        1, lambda idx: [made.__setitem__(0, 0) or "x" for _ in idx], lambda i, d: [4], tries=0
    )
    assert (best, score) == (["x"], [0])  # tries 0: one draw, nothing checked


def test_best_of_keeps_the_earlier_draw_on_ties_and_gives_up_after_tries():
    counter = iter(range(100))
    best, score = best_of(1, lambda idx: [next(counter) for _ in idx], lambda idx, d: [2 for _ in d], tries=3)
    assert best == [0] and score == [2]


@pytest.fixture(scope="module")
def pipe(tiny_pipeline_dir):
    return PanopticDiffusionPipeline.from_pretrained(tiny_pipeline_dir)


def _gens(n, seed=0):
    return [torch.Generator().manual_seed(seed + i) for i in range(n)]


def test_segment_once_gives_one_decoded_map_per_image(pipe, monkeypatch):
    """One forward with the picture clean (timestep 0) and the map pure noise at the last training
    timestep; its map prediction decoded per image."""
    latents = torch.randn(3, *pipe.latent_shape)
    text, _ = pipe._encode_prompts(["a red circle"] * 3)
    forwards = []
    model = pipe.model

    def spy(image, t_image, txt, map_in, t_map):
        forwards.append((image, t_image, txt, map_in, t_map))
        return model(image, t_image, txt, map_in, t_map)

    monkeypatch.setattr(pipe, "model", spy)
    maps = pipe.segment_once(latents, text, generator=_gens(3))
    assert len(forwards) == 1
    image, t_image, txt, map_in, t_map = forwards[0]
    assert torch.equal(image, latents) and torch.equal(txt, text)
    assert t_image.tolist() == [0, 0, 0]
    assert t_map.tolist() == [pipe.schedule.num_train_timesteps - 1] * 3
    assert map_in.shape == (3, *pipe.map_shape) and abs(float(map_in.std()) - 1.0) < 0.1  # pure noise
    assert len(maps) == 3
    assert all(m.category.shape == (pipe.map_size, pipe.map_size) for m in maps)
    again = pipe.segment_once(latents, text, generator=_gens(3))
    assert all(np.array_equal(a.category, b.category) for a, b in zip(maps, again))


def _fake_checks(monkeypatch, map_fails, image_fails):
    """Replace the checks by scripted failures: ``map_fails`` / ``image_fails`` map a prompt's
    first category to the failures of its successive draws (0 after the list ends)."""
    import pandiff.self_check as sc

    calls = {"map": {}, "image": {}}

    def scripted(kind, key, table):
        n = calls[kind].get(key, 0)
        calls[kind][key] = n + 1
        seq = table.get(key, [])
        return seq[n] if n < len(seq) else 0

    monkeypatch.setattr(
        sc,
        "map_failures",
        lambda m, spec, exhaustive: scripted("map", next(iter(spec.counts)), map_fails),
    )
    monkeypatch.setattr(sc, "count_disagreement", lambda drawn, seen: scripted("image", "any", image_fails))
    return calls


def _counting(monkeypatch, cls, name):
    rows: list[int] = []
    original = getattr(cls, name)

    def counting(self, text, *args, **kw):
        rows.append(text.shape[0])
        return original(self, text, *args, **kw)

    monkeypatch.setattr(cls, name, counting)
    return rows


PROMPTS = ["a red circle on the grass", "two blue stars on the sand"]


def test_self_check_draws_again_only_the_failing_rows(pipe, monkeypatch):
    """No redraw: a row that passes keeps its first draw (exactly the plain call's sample); a failing
    row is drawn again until it passes, within ``tries``, and keeps its best draw."""
    from pandiff.diffusion.sampler import LockstepSampler

    kwargs = {"num_inference_steps": 2, "redraw_image": False}
    plain = pipe(PROMPTS, generator=_gens(2), self_check=0, **kwargs)
    _fake_checks(monkeypatch, {"star": [2, 1, 0]}, {})
    rows = _counting(monkeypatch, LockstepSampler, "sample")
    checked = pipe(PROMPTS, generator=_gens(2), self_check=3, **kwargs)
    assert rows == [2, 1, 1]  # both, then the star row twice (it passes at its third draw)
    assert np.array_equal(np.asarray(checked.images[0]), np.asarray(plain.images[0]))
    assert np.array_equal(checked.maps[0].instance, plain.maps[0].instance)
    assert not np.array_equal(np.asarray(checked.images[1]), np.asarray(plain.images[1]))


def test_self_check_gives_up_after_tries_and_keeps_the_best_draw(pipe, monkeypatch):
    from pandiff.diffusion.sampler import LockstepSampler

    kwargs = {"num_inference_steps": 2, "redraw_image": False}
    plain = pipe(PROMPTS, generator=_gens(2), self_check=0, **kwargs)
    _fake_checks(monkeypatch, {"circle": [1, 1, 1], "star": [1, 2, 3]}, {})
    rows = _counting(monkeypatch, LockstepSampler, "sample")
    checked = pipe(PROMPTS, generator=_gens(2), self_check=2, **kwargs)
    assert rows == [2, 2, 2]
    for i in range(2):  # ties and worse draws keep the first
        assert np.array_equal(np.asarray(checked.images[i]), np.asarray(plain.images[i]))


def test_self_check_redraws_the_picture_until_it_shows_its_map(pipe, monkeypatch):
    """With redraw: co-generation is checked against the prompt, the picture drawn for the map
    against the map (one-forward segmentation); a disagreeing picture is drawn again for the same map."""
    calls = _fake_checks(monkeypatch, {}, {"any": [0, 1, 0]})  # the 2nd image check of the first pass fails
    rows = _counting(monkeypatch, PanopticDiffusionPipeline, "redraw")
    out = pipe(PROMPTS, num_inference_steps=2, generator=_gens(2), self_check=2, redraw_image=True)
    assert rows == [2, 1]
    assert calls["image"]["any"] == 3
    plain = pipe(PROMPTS, num_inference_steps=2, generator=_gens(2), self_check=0, redraw_image=True)
    for i in range(2):  # the maps passed at once: both are the plain call's
        assert np.array_equal(out.maps[i].instance, plain.maps[i].instance)
    assert np.array_equal(np.asarray(out.images[0]), np.asarray(plain.images[0]))  # agreed at once
    assert not np.array_equal(np.asarray(out.images[1]), np.asarray(plain.images[1]))  # drawn again


def _spy_redraws(monkeypatch) -> list:
    """Record every redraw's ``(latents, maps)`` in call order."""
    drawn = []
    redraw = PanopticDiffusionPipeline.redraw

    def spy(self, text, empty, maps, *args, **kw):
        out = redraw(self, text, empty, maps, *args, **kw)
        drawn.append((out, list(maps)))
        return out

    monkeypatch.setattr(PanopticDiffusionPipeline, "redraw", spy)
    return drawn


def _fake_touching(monkeypatch, script):
    """Scripted touching pairs, one per call in call order (0 after the list ends); the prompt
    checks all pass."""
    import pandiff.self_check as sc

    seq = iter(script)
    monkeypatch.setattr(sc, "map_failures", lambda m, spec, exhaustive: 0)
    monkeypatch.setattr(sc, "count_disagreement", lambda drawn, seen: 0)
    monkeypatch.setattr(sc.wc, "touching_pairs", lambda pmap, **kw: next(seq, 0))


def test_self_check_avoid_touching_draws_a_touching_map_again(pipe, monkeypatch):
    """avoid_touching: a co-generated map whose things touch fails the self check
    (row 0's first draw), so the row is drawn again and keeps its apart draw; without it the same
    map passes and the call is the plain one."""
    from pandiff.diffusion.sampler import LockstepSampler

    kwargs = {"num_inference_steps": 2, "redraw_image": False}
    plain = pipe(PROMPTS, generator=_gens(2), self_check=0, **kwargs)
    _fake_touching(monkeypatch, [1, 0])
    rows = _counting(monkeypatch, LockstepSampler, "sample")
    same = pipe(PROMPTS, generator=_gens(2), self_check=2, avoid_touching=False, **kwargs)
    assert rows == [2]  # nothing touching is checked: both pass at once
    _fake_touching(monkeypatch, [1, 0])  # row 0 touches, row 1 does not; row 0's 2nd draw is apart
    apart = pipe(PROMPTS, generator=_gens(2), self_check=2, avoid_touching=True, **kwargs)
    assert rows == [2, 2, 1]
    for i in range(2):
        assert np.array_equal(np.asarray(same.images[i]), np.asarray(plain.images[i]))
    assert not np.array_equal(np.asarray(apart.images[0]), np.asarray(plain.images[0]))
    assert np.array_equal(np.asarray(apart.images[1]), np.asarray(plain.images[1]))


def test_best_of_avoid_touching_ranks_touching_maps_after_apart_ones(pipe, monkeypatch):
    """best_of with avoid_touching: a touching map loses to an apart one even where the picture
    ranks it first; the ranks decide between maps alike."""
    import pandiff.self_check as sc

    _fake_touching(monkeypatch, [1, 0, 0, 0])  # draw 0: row 0 touches; draw 1: neither row
    match = iter([1.0, 1.0, 0.5, 0.5])  # draw 0 ranks first on the picture for both rows
    monkeypatch.setattr(sc, "instance_match", lambda drawn, seen: next(match))
    monkeypatch.setattr(sc, "map_consistency", lambda pipe, latents, maps, text, noise: [0.1, 0.1])
    drawn = _spy_redraws(monkeypatch)
    out = pipe(
        PROMPTS, num_inference_steps=2, generator=_gens(2), best_of=2, redraw_image=True, avoid_touching=True
    )
    for row, k in ((0, 1), (1, 0)):  # row 0: the apart draw 1; row 1: draw 0, first on the ranks
        latents, maps = drawn[k]
        assert np.array_equal(
            np.asarray(out.images[row]), np.asarray(pipe._output(PROMPTS, latents, maps).images[row])
        )


def test_avoid_touching_setting_is_validated_and_defaults_to_the_folder(pipe, tiny_pipeline_dir):
    from pandiff.pipeline_config import PipelineConfig

    assert pipe.config.avoid_touching is False and pipe.avoids_touching() is False
    assert pipe.avoids_touching(True) is True
    with pytest.raises(ConfigError, match="avoid_touching"):
        pipe("a red circle", num_inference_steps=1, self_check=1, avoid_touching="yes")
    data = json.loads((tiny_pipeline_dir / "pandiff_pipeline.json").read_text())
    assert "avoid_touching" not in data or data["avoid_touching"] is False  # older folders: off
    with pytest.raises(ConfigError, match="'avoid_touching' must be true or false"):
        PipelineConfig.from_dict({**data, "avoid_touching": 1})


def test_keeps_apart_only_where_something_draws_again(pipe):
    """What reports record: things apart acts only with a self check or best of K; the tiny
    folder's own setting is off; a bad value is refused even where it would not act."""
    assert pipe.keeps_apart(True, self_check=1) is True
    assert pipe.keeps_apart(True, best_of=2) is True
    assert pipe.keeps_apart(True, self_check=0, best_of=1) is False  # nothing draws again
    assert pipe.keeps_apart(False, self_check=2) is False
    assert pipe.keeps_apart(None, self_check=2) is False  # the folder's: off
    with pytest.raises(ConfigError, match="avoid_touching"):
        pipe.keeps_apart("yes", self_check=0)


def test_self_check_misshapen_draws_a_misshapen_map_again(pipe, monkeypatch):
    """misshapen: a co-generated map holding a misshapen thing (row 0's first draw) fails the
    self check, so that row alone is drawn again; off, the same maps pass and the call is the plain
    one."""
    import pandiff.self_check as sc
    from pandiff.diffusion.sampler import LockstepSampler

    kwargs = {"num_inference_steps": 2, "redraw_image": False, "self_check": 2}
    plain = pipe(PROMPTS, generator=_gens(2), **{**kwargs, "self_check": 0})
    monkeypatch.setattr(sc, "map_failures", lambda m, spec, exhaustive: 0)
    monkeypatch.setattr(sc, "count_disagreement", lambda drawn, seen: 0)
    script, ratios = iter([1, 0, 0]), []

    def misshapen(pmap, ratio):
        ratios.append(ratio)
        return next(script, 0) if ratio > 0 else 0

    monkeypatch.setattr(sc.wc, "misshapen_things", misshapen)
    rows = _counting(monkeypatch, LockstepSampler, "sample")
    same = pipe(PROMPTS, generator=_gens(2), misshapen=0.0, **kwargs)
    assert rows == [2] and ratios == []  # off: nothing judged
    redone = pipe(PROMPTS, generator=_gens(2), misshapen=0.95, **kwargs)
    assert rows == [2, 2, 1] and ratios == [0.95] * 3
    for i in range(2):
        assert np.array_equal(np.asarray(same.images[i]), np.asarray(plain.images[i]))
    assert not np.array_equal(np.asarray(redone.images[0]), np.asarray(plain.images[0]))
    assert np.array_equal(np.asarray(redone.images[1]), np.asarray(plain.images[1]))


def test_self_check_setting_is_validated_and_defaults_to_the_folder(pipe):
    assert pipe.config.self_check == 0 and pipe.self_checks() == 0
    assert pipe.self_checks(3) == 3
    for bad in (-1, 1.5, "2", 17):
        with pytest.raises(ConfigError, match="self_check"):
            pipe("a red circle", num_inference_steps=1, self_check=bad)


def test_self_check_off_is_the_plain_call(pipe):
    a = pipe("a red circle on the grass", num_inference_steps=2, generator=_gens(1), self_check=0)
    b = pipe("a red circle on the grass", num_inference_steps=2, generator=_gens(1))
    assert np.array_equal(np.asarray(a.images[0]), np.asarray(b.images[0]))
    assert np.array_equal(a.maps[0].category, b.maps[0].category)


def test_map_consistency_is_the_clean_map_error_given_the_clean_picture(pipe, monkeypatch):
    """One forward per timestep of CONSISTENCY_TIMESTEPS: the picture clean (timestep 0), the map
    noised to t with the given noise; the error is the mean squared distance of the predicted bits
    to the map's bits, averaged over the timesteps."""
    maps = pipe(PROMPTS, num_inference_steps=1, generator=_gens(2), self_check=0).maps
    latents = torch.randn(2, *pipe.latent_shape)
    text, _ = pipe._encode_prompts(PROMPTS)
    noise = torch.randn(2, len(CONSISTENCY_TIMESTEPS), *pipe.map_shape)
    bits = torch.stack([pipe.prepare_map(m) for m in maps])
    forwards = []

    def fake(predict):
        def model(image, t_image, txt, map_in, t_map):
            forwards.append((image, t_image, map_in, t_map))
            return SimpleNamespace(image=image, map=predict(map_in))

        return model

    monkeypatch.setattr(pipe, "model", fake(lambda m: torch.zeros_like(m)))
    assert map_consistency(pipe, latents, maps, text, noise) == pytest.approx([1.0, 1.0])  # bits are +-1
    noiser = pipe.schedule.training_scheduler()
    assert [int(f[3][0]) for f in forwards] == list(CONSISTENCY_TIMESTEPS)
    for k, (image, t_image, map_in, t_map) in enumerate(forwards):
        assert torch.equal(image, latents) and t_image.tolist() == [0, 0]
        expected = noiser.add_noise(pipe.schedule.bits_to_diffusion(bits), noise[:, k], t_map)
        assert torch.allclose(map_in, expected)
    monkeypatch.setattr(pipe, "model", fake(lambda m: bits))
    assert map_consistency(pipe, latents, maps, text, noise) == pytest.approx([0.0, 0.0])
    half = bits.clone()
    half[1, :, : pipe.map_size // 2] = 0  # half of row 1's bits predicted 0: error 1/2
    monkeypatch.setattr(pipe, "model", fake(lambda m: half))
    assert map_consistency(pipe, latents, maps, text, noise) == pytest.approx([0.0, 0.5])


def test_best_of_draws_whole_samples_and_keeps_the_best_ranked(pipe, monkeypatch):
    """best_of=K: K co-generations and K redraws over all rows; per row the draw with the fewest map
    failures, then the best rank sum of instance match and consistency error, is returned."""
    import pandiff.self_check as sc
    from pandiff.diffusion.sampler import LockstepSampler

    failures = iter([0, 1, 0, 0, 0, 0])  # per draw, per row
    match = iter([0.2, 1.0, 0.9, 1.0, 0.5, 1.0])
    errors = iter([[0.5, 0.2], [0.1, 0.2], [0.3, 0.1]])  # per draw: both rows
    monkeypatch.setattr(sc, "map_failures", lambda m, spec, exhaustive: next(failures))
    monkeypatch.setattr(sc, "instance_match", lambda drawn, seen: next(match))
    noises = []

    def consistency(pipe, latents, maps, text, noise):
        noises.append(noise)
        return next(errors)

    monkeypatch.setattr(sc, "map_consistency", consistency)
    drawn = _spy_redraws(monkeypatch)
    rows = _counting(monkeypatch, LockstepSampler, "sample")
    out = pipe(PROMPTS, num_inference_steps=2, generator=_gens(2), best_of=3, self_check=2, redraw_image=True)
    assert rows == [2, 2, 2, 2, 2, 2]  # co-generation and redraw, three times, all rows
    # every draw of a row is scored on the same map noise, one noise per timestep and row
    assert len(noises) == 3 and all(torch.equal(n, noises[0]) for n in noises)
    assert noises[0].shape == (2, len(CONSISTENCY_TIMESTEPS), *pipe.map_shape)
    assert not torch.equal(noises[0][0], noises[0][1])
    # row 0: draw 1 (best match and error); row 1: draw 0 fails, draw 2 beats draw 1 on the ranks
    for row, k in ((0, 1), (1, 2)):
        latents, maps = drawn[k]
        expected = pipe._output(PROMPTS, latents, maps)
        assert np.array_equal(np.asarray(out.images[row]), np.asarray(expected.images[row]))
        assert np.array_equal(out.maps[row].instance, maps[row].instance)


def test_best_of_setting_is_validated_and_one_is_the_plain_call(pipe):
    assert pipe.config.best_of == 1 and pipe.best_ofs() == 1 and pipe.best_ofs(4) == 4
    for bad in (0, 1.5, "2", 17):
        with pytest.raises(ConfigError, match="best_of"):
            pipe("a red circle", num_inference_steps=1, best_of=bad)
    a = pipe("a red circle on the grass", num_inference_steps=2, generator=_gens(1), self_check=0, best_of=1)
    b = pipe("a red circle on the grass", num_inference_steps=2, generator=_gens(1), self_check=0)
    assert np.array_equal(np.asarray(a.images[0]), np.asarray(b.images[0]))


def _two_squares(gap_columns: int = 0) -> PanopticMap:
    """16 px grass with two 4 x 4 squares side by side, ``gap_columns`` of grass between them."""
    grass, square = WORLD.index_of_name("grass"), WORLD.index_of_name("square")
    category, instance = np.full((16, 16), grass), np.zeros((16, 16), dtype=int)
    right = 6 + gap_columns
    category[4:8, 2:6] = category[4:8, right : right + 4] = square
    instance[4:8, 2:6], instance[4:8, right : right + 4] = 1, 2
    return PanopticMap(category, instance, WORLD)


def test_bite_apart_bites_touching_things_unless_that_makes_the_map_wrong():
    from pandiff.self_check import bite_apart
    from pandiff.world.checks import instance_counts, touching_pairs

    two = parse_prompt("two red squares on the grass", WORLD)
    touching, apart = _two_squares(), _two_squares(3)
    bitten, kept = bite_apart([touching, apart], [two, two], True, 2)
    assert touching_pairs(touching) == 1 and touching_pairs(bitten) == 0
    assert instance_counts(bitten) == {"square": 2} and map_failures(bitten, two) == 0
    assert ((bitten.category != touching.category).sum(), kept is apart) == (8, True)  # 2 columns of 4 rows
    assert bite_apart([touching], [two], True, 0)[0] is touching  # gap 0: off
    # a thin square wholly within 2 pixels of a thinner one would vanish: the map stays as it was
    thin = _two_squares()
    thin.category[4:8, 2:5], thin.instance[4:8, 2:5] = WORLD.index_of_name("grass"), 0  # 1 column left
    thin.category[4:8, 8:10], thin.instance[4:8, 8:10] = WORLD.index_of_name("grass"), 0  # 2 columns right
    assert _bite_loses_a_thing(thin)
    assert bite_apart([thin], [two], True, 2)[0] is thin


def _bite_loses_a_thing(pmap: PanopticMap) -> bool:
    from pandiff.world.checks import instance_counts, separate_touching

    return sum(instance_counts(separate_touching(pmap)).values()) < sum(instance_counts(pmap).values())


@pytest.mark.parametrize("how", [{"self_check": 0}, {"self_check": 1}, {"best_of": 2}])
def test_separate_touching_bites_the_map_the_picture_is_redrawn_for(pipe, monkeypatch, how):
    """Every prompt -> image + map path with the redraw (plain, self check, best of K): the
    co-generated map's touching things are bitten apart, and that bitten map is both returned and
    the one the picture is drawn for; 0 leaves them touching; without the redraw nothing is bitten."""
    from pandiff.world.checks import touching_pairs

    monkeypatch.setattr(type(pipe.bit_codec), "decode_map", lambda self, bits, table: _two_squares())
    drawn = _spy_redraws(monkeypatch)
    prompts = ["two red squares on the grass"] * 2
    kwargs = {"num_inference_steps": 2, "redraw_image": True, **how}
    out = pipe(prompts, generator=_gens(2), separate_touching=2, **kwargs)
    assert [touching_pairs(m) for m in out.maps] == [0, 0]
    assert all(touching_pairs(m) == 0 for _, maps in drawn for m in maps) and drawn
    # every map drawn for is the returned (bitten) one: all co-generated maps here are alike
    assert all(np.array_equal(m.category, out.maps[0].category) for _, maps in drawn for m in maps)
    drawn.clear()
    kept = pipe(prompts, generator=_gens(2), separate_touching=0, **kwargs)
    assert [touching_pairs(m) for m in kept.maps] == [1, 1] and [touching_pairs(m) for m in drawn[0][1]] == [
        1,
        1,
    ]
    unbitten = pipe(prompts, generator=_gens(2), separate_touching=2, **{**kwargs, "redraw_image": False})
    assert [touching_pairs(m) for m in unbitten.maps] == [1, 1]


@pytest.mark.parametrize(
    ("key", "acting"), [("separate_touching", "separates"), ("spread_things", "spreads")]
)
def test_map_gap_settings_are_validated_default_to_the_folder_and_need_the_redraw(
    pipe, tiny_pipeline_dir, key, acting
):
    """separate_touching and spread_things: integer gaps 0-16, 0 in older folders, 0 as they act
    without the redraw."""
    from pandiff.pipeline_config import PipelineConfig

    gap = getattr(pipe, acting)
    assert getattr(pipe.config, key) == 0 and gap(redraw_image=True) == 0  # older folders: off
    assert gap(3, redraw_image=True) == 3 and gap(3, redraw_image=False) == 0
    for bad in (-1, 1.5, 2.5, True, 17, 99, "2"):
        with pytest.raises(ConfigError, match=key):
            pipe("a red circle", num_inference_steps=1, redraw_image=True, **{key: bad})
    data = json.loads((tiny_pipeline_dir / "pandiff_pipeline.json").read_text())
    assert getattr(PipelineConfig.from_dict({**data, key: 2}), key) == 2
    with pytest.raises(ConfigError, match=f"'{key}'"):
        PipelineConfig.from_dict({**data, key: -2})


def _blob_cross() -> PanopticMap:
    """One cross with a stub on its right arm (a misfit: no world cross looks like it) on grass."""
    from pandiff.world.drawing import Thing, shape_mask

    yy, xx = np.mgrid[0:64, 0:64] + 0.5
    cross = shape_mask(Thing("cross", "red", "large", 30, 30, 9), xx, yy)
    cross[24:36, 38:46] = True
    category = np.full((64, 64), WORLD.index_of_name("grass"))
    instance = np.zeros((64, 64), dtype=int)
    category[cross], instance[cross] = WORLD.index_of_name("cross"), 1
    return PanopticMap(category, instance, WORLD)


def _notched_square() -> PanopticMap:
    """16 px grass with one 8 x 8 square missing a quarter (an L: no world square looks like it)."""
    category, instance = np.full((16, 16), WORLD.index_of_name("grass")), np.zeros((16, 16), dtype=int)
    category[4:12, 4:12], instance[4:12, 4:12] = WORLD.index_of_name("square"), 1
    category[4:8, 8:12], instance[4:8, 8:12] = WORLD.index_of_name("grass"), 0
    return PanopticMap(category, instance, WORLD)


def test_bite_apart_snaps_misfit_things_unless_that_makes_the_map_wrong(monkeypatch):
    import pandiff.self_check as sc
    from pandiff.world.checks import misfit_things

    one = parse_prompt("a red cross on the grass", WORLD)
    blob = _blob_cross()
    snapped = sc.bite_apart([blob], [one], True, 0, snap=True)[0]
    assert misfit_things(blob, 0.9) == 1 and misfit_things(snapped, 0.9) == 0
    assert map_failures(snapped, one) == 0
    assert sc.bite_apart([blob], [one], True, 0)[0] is blob  # no snap, no gap: off
    # a snap that would leave the map wrong against its prompt is not taken
    empty = PanopticMap(np.full((64, 64), WORLD.index_of_name("grass")), np.zeros((64, 64), int), WORLD)
    monkeypatch.setattr(sc.wc, "snap_things", lambda pmap: empty)
    assert sc.bite_apart([blob], [one], True, 0, snap=True)[0] is blob


@pytest.mark.parametrize("how", [{"self_check": 0}, {"self_check": 1}, {"best_of": 2}])
def test_snap_shapes_snaps_the_map_the_picture_is_redrawn_for(pipe, monkeypatch, how):
    """Every prompt -> image + map path with the redraw (plain, self check, best of K): the
    co-generated map's things are snapped to world shapes, and that map is both returned and the
    one the picture is drawn for; off, or without the redraw, the map stays as it came."""
    from pandiff.world.checks import misfit_things

    monkeypatch.setattr(type(pipe.bit_codec), "decode_map", lambda self, bits, table: _notched_square())
    drawn = _spy_redraws(monkeypatch)
    prompts = ["a red square on the grass"] * 2
    kwargs = {"num_inference_steps": 2, "redraw_image": True, **how}
    out = pipe(prompts, generator=_gens(2), snap_shapes=True, **kwargs)
    assert [misfit_things(m, 0.9) for m in out.maps] == [0, 0] and drawn
    assert all(np.array_equal(m.category, out.maps[0].category) for _, maps in drawn for m in maps)
    drawn.clear()
    kept = pipe(prompts, generator=_gens(2), snap_shapes=False, **kwargs)
    assert [misfit_things(m, 0.9) for m in kept.maps] == [1, 1]
    assert [misfit_things(m, 0.9) for m in drawn[0][1]] == [1, 1]
    plain = pipe(prompts, generator=_gens(2), snap_shapes=True, **{**kwargs, "redraw_image": False})
    assert [misfit_things(m, 0.9) for m in plain.maps] == [1, 1]


def test_snap_shapes_setting_is_validated_defaults_to_the_folder_and_needs_the_redraw(
    pipe, tiny_pipeline_dir
):
    from pandiff.pipeline_config import PipelineConfig

    assert pipe.config.snap_shapes is False and pipe.snaps(redraw_image=True) is False  # older folders: off
    assert pipe.snaps(True, redraw_image=True) is True and pipe.snaps(True, redraw_image=False) is False
    for bad in (1, "yes"):
        with pytest.raises(ConfigError, match="snap_shapes"):
            pipe("a red circle", num_inference_steps=1, redraw_image=True, snap_shapes=bad)
    data = json.loads((tiny_pipeline_dir / "pandiff_pipeline.json").read_text())
    assert PipelineConfig.from_dict({**data, "snap_shapes": True}).snap_shapes is True
    with pytest.raises(ConfigError, match="'snap_shapes'"):
        PipelineConfig.from_dict({**data, "snap_shapes": 1})


def test_bite_apart_spreads_touching_things_unless_that_makes_the_map_wrong(monkeypatch):
    import pandiff.self_check as sc
    from pandiff.world.checks import instance_counts, touching_pairs

    two = parse_prompt("two red squares on the grass", WORLD)
    touching = _two_squares()
    spread = sc.bite_apart([touching], [two], True, 0, spread=2)[0]
    assert touching_pairs(touching) == 1 and touching_pairs(spread) == 0
    assert instance_counts(spread) == {"square": 2} and map_failures(spread, two) == 0
    # both squares whole (16 px each), where a bite would have cut the larger
    square = WORLD.index_of_name("square")
    assert [int(((spread.category == square) & (spread.instance == k)).sum()) for k in (1, 2)] == [16, 16]
    assert sc.bite_apart([touching], [two], True, 0, spread=0)[0] is touching  # off
    # a move that would leave the map wrong against its prompt is not taken
    empty = PanopticMap(np.full((16, 16), WORLD.index_of_name("grass")), np.zeros((16, 16), int), WORLD)
    monkeypatch.setattr(sc.wc, "spread_things", lambda pmap, gap: empty)
    assert sc.bite_apart([touching], [two], True, 0, spread=2)[0] is touching


@pytest.mark.parametrize("how", [{"self_check": 0}, {"self_check": 1}, {"best_of": 2}])
def test_spread_things_spreads_the_map_the_picture_is_redrawn_for(pipe, monkeypatch, how):
    """Every prompt -> image + map path with the redraw (plain, self check, best of K): the
    co-generated map's touching things are moved apart whole, and that map is both returned and
    the one the picture is drawn for; 0, or no redraw, leaves them touching."""
    from pandiff.world.checks import touching_pairs

    monkeypatch.setattr(type(pipe.bit_codec), "decode_map", lambda self, bits, table: _two_squares())
    drawn = _spy_redraws(monkeypatch)
    prompts = ["two red squares on the grass"] * 2
    kwargs = {"num_inference_steps": 2, "redraw_image": True, "separate_touching": 0, **how}
    out = pipe(prompts, generator=_gens(2), spread_things=2, **kwargs)
    assert [touching_pairs(m) for m in out.maps] == [0, 0] and drawn
    assert all(np.array_equal(m.category, out.maps[0].category) for _, maps in drawn for m in maps)
    square = WORLD.index_of_name("square")
    assert int((out.maps[0].category == square).sum()) == 32  # nothing bitten: two whole squares
    drawn.clear()
    kept = pipe(prompts, generator=_gens(2), spread_things=0, **kwargs)
    assert [touching_pairs(m) for m in kept.maps] == [1, 1]
    assert [touching_pairs(m) for m in drawn[0][1]] == [1, 1]
    plain = pipe(prompts, generator=_gens(2), spread_things=2, **{**kwargs, "redraw_image": False})
    assert [touching_pairs(m) for m in plain.maps] == [1, 1]


@pytest.mark.parametrize("how", [{"self_check": 0}, {"self_check": 1}, {"best_of": 2}])
def test_cogen_steps_run_co_generation_at_its_steps_and_every_picture_at_the_calls(pipe, monkeypatch, how):
    """Every prompt -> image + map path with the redraw (plain, self check, best of K): each
    co-generation pass runs at cogen_steps, each picture drawn for a map at the call's steps; 0,
    a value not below the call's steps, or no redraw runs everything at the call's steps."""
    from pandiff.diffusion.sampler import LockstepSampler

    runs = []  # (steps, whether a map was given) of every sampler run
    real = LockstepSampler.sample

    def spy(self, *args, **kwargs):
        runs.append((kwargs["num_inference_steps"], kwargs.get("map_bits") is not None))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(LockstepSampler, "sample", spy)
    prompts = ["two red circles on the grass"] * 2
    kwargs = {"num_inference_steps": 4, "redraw_image": True, **how}
    out = pipe(prompts, generator=_gens(2), cogen_steps=2, **kwargs)
    assert len(out.maps) == 2
    assert {s for s, given in runs if not given} == {2}  # co-generation
    assert {s for s, given in runs if given} == {4}  # the redraw
    for cogen, redraw in ((0, True), (4, True), (6, True), (2, False)):
        runs.clear()
        pipe(prompts, generator=_gens(2), cogen_steps=cogen, **{**kwargs, "redraw_image": redraw})
        assert runs and {s for s, _ in runs} == {4}
        assert any(given for _, given in runs) is redraw


def test_cogen_steps_setting_is_validated_defaults_to_the_folder_and_needs_the_redraw(
    pipe, tiny_pipeline_dir
):
    from pandiff.pipeline_config import PipelineConfig

    assert pipe.config.cogen_steps == 0 and pipe.cogen_steps_of(None, 4, True) == 0  # older folders: off
    assert pipe.cogen_steps_of(2, 4, True) == 2 and pipe.cogen_steps_of(2, 4, False) == 0
    assert pipe.cogen_steps_of(4, 4, True) == 0 and pipe.cogen_steps_of(9, 4, True) == 0  # not fewer steps
    for bad in (-1, 1.5, True, 5000):
        with pytest.raises(ConfigError, match="cogen_steps"):
            pipe("a red circle", num_inference_steps=2, redraw_image=True, cogen_steps=bad)
    data = json.loads((tiny_pipeline_dir / "pandiff_pipeline.json").read_text())
    folder = PipelineConfig.from_dict({**data, "cogen_steps": 3})
    assert folder.cogen_steps == 3
    with pytest.raises(ConfigError, match="'cogen_steps'"):
        PipelineConfig.from_dict({**data, "cogen_steps": -2})


def _square_picture(pipe, split: bool) -> tuple[PanopticMap, torch.Tensor]:
    """A map of the pipeline's size with one 8 px square on grass, and its picture as image
    latents (identity codec: pixels in [-1, 1]); ``split`` paints the square's right half white."""
    from pandiff.world.drawing import STUFF_COLORS, THING_COLORS

    s = pipe.map_size
    category, instance = np.full((s, s), WORLD.index_of_name("grass")), np.zeros((s, s), dtype=int)
    category[4:12, 4:12], instance[4:12, 4:12] = WORLD.index_of_name("square"), 1
    image = np.empty((s, s, 3), dtype=np.float32)
    image[:] = STUFF_COLORS["grass"]
    image[instance == 1] = THING_COLORS["red"]
    if split:
        image[4:12, 9:12] = THING_COLORS["white"]
    latents = torch.from_numpy(image).permute(2, 0, 1) / 127.5 - 1
    return PanopticMap(category, instance, WORLD), latents


def test_colour_splits_judges_each_decoded_picture_against_its_map(pipe, monkeypatch):
    """Per sample, the things its picture paints in two colours; share 0 decodes nothing."""
    import pandiff.self_check as sc

    (flat_map, flat), (split_map, split) = _square_picture(pipe, False), _square_picture(pipe, True)
    latents = torch.stack([flat, split])
    assert sc.colour_splits(pipe, latents, [flat_map, split_map], 0.15) == [0, 1]
    assert sc.colour_splits(pipe, latents, [flat_map, split_map], 0.5) == [0, 0]  # 3 of 6 columns: 18/36
    monkeypatch.setattr(pipe, "uint8_pictures", lambda latents: pytest.fail("share 0 decodes nothing"))
    assert sc.colour_splits(pipe, latents, [flat_map, split_map], 0.0) == [0, 0]


def _fake_picture_check(monkeypatch, owner, name, script):
    """Scripted verdicts of the picture check ``owner.name(picture, map, setting)``, one per judged
    picture in call order (0 after the list ends); the prompt and count checks all pass. Returns the
    settings it was called with."""
    import pandiff.self_check as sc

    seq, settings = iter(script), []
    monkeypatch.setattr(sc, "map_failures", lambda m, spec, exhaustive: 0)
    monkeypatch.setattr(sc, "count_disagreement", lambda drawn, seen: 0)

    def check(image, pmap, setting):
        settings.append(setting)
        assert image.shape == (*pmap.shape, 3) and image.dtype == np.uint8  # the decoded picture
        return next(seq, 0)

    monkeypatch.setattr(owner, name, check)
    return settings


def _fake_splits(monkeypatch, script):
    """Scripted colour splits (:func:`_fake_picture_check`); returns the shares."""
    import pandiff.self_check as sc

    return _fake_picture_check(monkeypatch, sc.wc, "colour_split_things", script)


def test_self_check_colour_split_draws_a_split_picture_again(pipe, monkeypatch):
    """With the redraw: a picture that paints a thing of its map in two colours fails its check
    against the map (row 1's first picture), so it alone is drawn again for the same map; with the
    share 0 the same pictures pass and the call is the plain one."""
    kwargs = {"num_inference_steps": 2, "redraw_image": True, "self_check": 2}
    plain = pipe(PROMPTS, generator=_gens(2), **{**kwargs, "self_check": 0})
    shares = _fake_splits(monkeypatch, [0, 1, 0])
    rows = _counting(monkeypatch, PanopticDiffusionPipeline, "redraw")
    same = pipe(PROMPTS, generator=_gens(2), colour_split=0.0, **kwargs)
    assert rows == [2] and shares == []  # off: nothing judged, nothing drawn again
    split = pipe(PROMPTS, generator=_gens(2), colour_split=0.15, **kwargs)
    assert rows == [2, 2, 1] and shares == [0.15] * 3
    for i in range(2):
        assert np.array_equal(split.maps[i].instance, plain.maps[i].instance)  # the same maps
        assert np.array_equal(np.asarray(same.images[i]), np.asarray(plain.images[i]))
    assert np.array_equal(np.asarray(split.images[0]), np.asarray(plain.images[0]))
    assert not np.array_equal(np.asarray(split.images[1]), np.asarray(plain.images[1]))  # drawn again


def test_self_check_colour_split_joins_the_co_generation_check_without_the_redraw(pipe, monkeypatch):
    from pandiff.diffusion.sampler import LockstepSampler

    kwargs = {"num_inference_steps": 2, "redraw_image": False, "self_check": 2}
    _fake_splits(monkeypatch, [1, 0, 0])  # row 0's first co-generated picture is split
    rows = _counting(monkeypatch, LockstepSampler, "sample")
    pipe(PROMPTS, generator=_gens(2), colour_split=0.15, **kwargs)
    assert rows == [2, 1]


def test_best_of_ranks_split_pictures_after_map_failures_and_before_the_picture_ranks(pipe, monkeypatch):
    import pandiff.self_check as sc

    # fewest map failures first, then fewest splits, then the ranks (match 1.0 beats 0.5)
    assert rank_best([0, 0], [1.0, 0.5], [0.1, 0.1], [1, 0]) == 1
    assert rank_best([0, 1], [1.0, 0.5], [0.1, 0.1], [1, 0]) == 0
    assert rank_best([0, 0], [1.0, 0.5], [0.1, 0.1], None) == rank_best([0, 0], [1.0, 0.5], [0.1, 0.1]) == 0
    shares = _fake_splits(monkeypatch, [1, 0, 0, 0])  # draw 0: row 0 split; draw 1: neither row
    match = iter([1.0, 1.0, 0.5, 0.5])  # draw 0 ranks first on the picture for both rows
    monkeypatch.setattr(sc, "instance_match", lambda drawn, seen: next(match))
    monkeypatch.setattr(sc, "map_consistency", lambda pipe, latents, maps, text, noise: [0.1, 0.1])
    drawn = _spy_redraws(monkeypatch)
    out = pipe(
        PROMPTS, num_inference_steps=2, generator=_gens(2), best_of=2, redraw_image=True, colour_split=0.2
    )
    assert shares == [0.2] * 4
    for row, k in ((0, 1), (1, 0)):  # row 0: draw 1, whose picture is not split; row 1: draw 0
        latents, maps = drawn[k]
        assert np.array_equal(
            np.asarray(out.images[row]), np.asarray(pipe._output(PROMPTS, latents, maps).images[row])
        )


@pytest.mark.parametrize(
    ("key", "acting", "value", "bad"),
    [
        ("colour_split", "splits_colours", 0.15, (-0.1, 1.0, float("nan"), "0.1", True)),
        ("misshapen", "flags_misshapen", 0.95, (-0.1, 1.5, float("nan"), "0.9", True)),
    ],
)
def test_picture_and_shape_settings_are_validated_default_to_the_folder_and_need_a_check(
    pipe, tiny_pipeline_dir, key, acting, value, bad
):
    """colour_split and misshapen: off in older folders, the given value where something is drawn
    again (a self check or best of K), 0 where nothing is, bad values named on the call and in a
    folder."""
    from pandiff.pipeline_config import PipelineConfig

    given = getattr(pipe, acting)
    assert getattr(pipe.config, key) == 0.0 and given(None, 2) == 0.0  # older folders: off
    assert given(value, 2) == value and given(value, 0, 3) == value
    assert given(value, 0, 1) == 0.0  # nothing drawn again: it cannot act
    for wrong in bad:
        with pytest.raises(ConfigError, match=key):
            pipe("a red circle", num_inference_steps=1, self_check=1, **{key: wrong})
    data = json.loads((tiny_pipeline_dir / "pandiff_pipeline.json").read_text())
    assert getattr(PipelineConfig.from_dict({**data, key: 0.5}), key) == 0.5
    with pytest.raises(ConfigError, match=f"'{key}'"):
        PipelineConfig.from_dict({**data, key: -1})


def test_self_check_restarts_draw_a_still_failing_sample_again_whole(pipe, monkeypatch):
    """With the redraw and one try: row 1's picture fails its check against its map on both of
    its picture draws, so with a restart the row is drawn again whole (a new map, its picture);
    the restart's sample passes and is kept. Row 0 passed at once and stays the plain call's."""
    kwargs = {"num_inference_steps": 2, "redraw_image": True, "self_check": 1}
    plain = pipe(PROMPTS, generator=_gens(2), **{**kwargs, "self_check": 0})
    calls = _fake_checks(monkeypatch, {}, {"any": [0, 1, 1, 0]})
    redraws = _counting(monkeypatch, PanopticDiffusionPipeline, "redraw")
    import pandiff.self_check as sc

    cogens = []
    cogenerate = sc._cogenerate
    monkeypatch.setattr(
        sc, "_cogenerate", lambda p, text, *a: cogens.append(text.shape[0]) or cogenerate(p, text, *a)
    )
    out = pipe(PROMPTS, generator=_gens(2), restarts=1, **kwargs)
    assert cogens == [2, 1] and redraws == [2, 1, 1] and calls["image"]["any"] == 4
    assert np.array_equal(np.asarray(out.images[0]), np.asarray(plain.images[0]))
    assert np.array_equal(out.maps[0].instance, plain.maps[0].instance)
    assert not np.array_equal(np.asarray(out.images[1]), np.asarray(plain.images[1]))  # drawn whole again


def test_self_check_restart_that_fails_as_much_keeps_the_first_sample(pipe, monkeypatch):
    """A restart is kept only when it fails less: here it fails as much (ties keep the earlier),
    so the call gives what it gives without restarts; restarts 0 draws nothing more."""
    kwargs = {"num_inference_steps": 2, "redraw_image": True, "self_check": 1}
    _fake_checks(monkeypatch, {}, {"any": [0, 1, 1]})
    none = pipe(PROMPTS, generator=_gens(2), restarts=0, **kwargs)
    _fake_checks(monkeypatch, {}, {"any": [0, 1, 1, 1, 1, 1, 1]})
    redraws = _counting(monkeypatch, PanopticDiffusionPipeline, "redraw")
    out = pipe(PROMPTS, generator=_gens(2), restarts=2, **kwargs)
    assert redraws == [2, 1, 1, 1, 1, 1]  # the first pass, then two restarts of row 1 (2 pictures each)
    for i in range(2):
        assert np.array_equal(np.asarray(out.images[i]), np.asarray(none.images[i]))
        assert np.array_equal(out.maps[i].instance, none.maps[i].instance)


def test_self_check_restarts_a_map_that_still_fails_its_prompt(pipe, monkeypatch):
    """No redraw: a map failing its prompt on every try is drawn again whole (with its tries)."""
    from pandiff.diffusion.sampler import LockstepSampler

    _fake_checks(monkeypatch, {"star": [1, 1, 1, 0]}, {})
    rows = _counting(monkeypatch, LockstepSampler, "sample")
    pipe(PROMPTS, num_inference_steps=2, generator=_gens(2), redraw_image=False, self_check=1, restarts=1)
    assert rows == [2, 1, 1, 1]  # first pass: both, then the star row; the restart: twice more


def test_self_check_picture_match_draws_an_unmatched_picture_again(pipe, monkeypatch):
    """With the redraw: a picture whose one-forward segmentation matches a thing of its map below
    the IoU fails its check (row 1's first picture, 0.3 < 0.5), so it alone is drawn again for the
    same map; at 0 nothing is matched and the call is the plain one."""
    import pandiff.self_check as sc

    kwargs = {"num_inference_steps": 2, "redraw_image": True, "self_check": 2}
    plain = pipe(PROMPTS, generator=_gens(2), **{**kwargs, "self_check": 0})
    monkeypatch.setattr(sc, "map_failures", lambda m, spec, exhaustive: 0)
    monkeypatch.setattr(sc, "count_disagreement", lambda drawn, seen: 0)
    scores = iter([1.0, 0.3, 0.9])
    matched = []
    monkeypatch.setattr(sc, "instance_match", lambda drawn, seen: matched.append(1) or next(scores))
    rows = _counting(monkeypatch, PanopticDiffusionPipeline, "redraw")
    same = pipe(PROMPTS, generator=_gens(2), picture_match=0.0, **kwargs)
    assert rows == [2] and matched == []
    out = pipe(PROMPTS, generator=_gens(2), picture_match=0.5, **kwargs)
    assert rows == [2, 2, 1] and len(matched) == 3
    for i in range(2):
        assert np.array_equal(out.maps[i].instance, plain.maps[i].instance)  # the same maps
        assert np.array_equal(np.asarray(same.images[i]), np.asarray(plain.images[i]))
    assert np.array_equal(np.asarray(out.images[0]), np.asarray(plain.images[0]))
    assert not np.array_equal(np.asarray(out.images[1]), np.asarray(plain.images[1]))  # drawn again


@pytest.mark.parametrize(
    ("key", "acting", "value", "bad"),
    [
        ("picture_match", "matches_pictures", 0.5, (-0.1, 1.5, float("nan"), "0.5", True)),
        ("restarts", "restarts_failing", 2, (-1, 11, 1.5, "1", True)),
    ],
)
def test_self_check_only_settings_are_validated_default_to_the_folder_and_need_the_self_check(
    pipe, tiny_pipeline_dir, key, acting, value, bad
):
    """picture_match and restarts: off in older folders, the given value with a self check, 0
    without one or with best of K (which replaces the self check), bad values named on the call
    and in a folder."""
    from pandiff.pipeline_config import PipelineConfig

    given = getattr(pipe, acting)
    assert getattr(pipe.config, key) == 0 and given(None, 2) == 0  # older folders: off
    assert given(value, 2) == value and given(value, 2, 1) == value
    assert given(value, 0) == 0 and given(value, 2, 3) == 0  # no self check runs: it cannot act
    for wrong in bad:
        with pytest.raises(ConfigError, match=key):
            pipe("a red circle", num_inference_steps=1, self_check=1, **{key: wrong})
    data = json.loads((tiny_pipeline_dir / "pandiff_pipeline.json").read_text())
    assert getattr(PipelineConfig.from_dict({**data, key: value}), key) == value
    with pytest.raises(ConfigError, match=f"'{key}'"):
        PipelineConfig.from_dict({**data, key: -1})


@pytest.mark.parametrize(
    ("prompt", "wanted", "relation"),
    [
        ("two red circles and a blue square on the grass", {"circle": ("red", "red"), "square": ("blue",)}, None),
        ("A green circle above an orange circle on green grass.", {"circle": ("green", "orange")},
         (("green", "circle"), "above", ("orange", "circle"))),
        # told from the other side: the subject is the thing before the phrase
        ("A red square to the right of a green square on the water beneath a clear sky.",
         {"square": ("red", "green")}, (("red", "square"), "right of", ("green", "square"))),
        # two things alike: which is which does not matter, so no coloured relation
        ("two white circles, one above the other, on the sand", {"circle": ("white", "white")}, None),
        ("three shapes: two small red crosses, a large blue star, on the floor",
         {"cross": ("red", "red"), "star": ("blue",)}, None),
        # no colour word before the shape, or a plural without a number: nothing wanted
        ("a circle below a red star", {"star": ("red",)}, None),
        ("red circles on the floor", {}, None),
        ("a picture of nothing", {}, None),
    ],
)  # fmt: skip
def test_prompt_colours_known_cases(prompt, wanted, relation):
    from pandiff.self_check import prompt_colours

    colours = prompt_colours(prompt, WORLD)
    assert colours.wanted == wanted
    assert colours.relation == relation


def _painted(things, size=32):
    """A map of grass with 8 px square things ``(name, colour, x, y)`` and its picture, each thing
    painted flat in its colour (uint8, on the map's grid)."""
    from pandiff.world.drawing import STUFF_COLORS, THING_COLORS

    pmap = _scene([(name, x, y) for name, _, x, y in things], size=size)
    picture = np.empty((size, size, 3), dtype=np.uint8)
    picture[:] = STUFF_COLORS["grass"]
    for _, colour, x, y in things:
        picture[y : y + 8, x : x + 8] = THING_COLORS[colour]
    return picture, pmap


def test_colour_failures_count_unmatched_colours_and_a_relation_painted_the_wrong_way():
    from pandiff.self_check import colour_failures, prompt_colours

    prompt = "A green circle above an orange circle on the grass."
    colours = prompt_colours(prompt, WORLD)
    right = _painted([("circle", "green", 12, 2), ("circle", "orange", 12, 20)])
    assert colour_failures(*right, colours) == 0
    # the colours swapped: both are there (no colour unmatched), but the green one is below
    swapped = _painted([("circle", "orange", 12, 2), ("circle", "green", 12, 20)])
    assert colour_failures(*swapped, colours) == 1
    # one circle painted blue: one colour unmatched, and no green circle above an orange one
    blue = _painted([("circle", "green", 12, 2), ("circle", "blue", 12, 20)])
    assert colour_failures(*blue, colours) == 2
    # counts: "two red circles and a blue square"; the map holds three circles (a count error,
    # the map check's): the two red ones match, the third is not charged
    colours = prompt_colours("two red circles and a blue square on the grass", WORLD)
    extra = _painted([("circle", "red", 0, 0), ("circle", "red", 10, 0), ("circle", "pink", 20, 0),
                      ("square", "blue", 0, 20)])  # fmt: skip
    assert colour_failures(*extra, colours) == 0
    wrong = _painted([("circle", "red", 0, 0), ("circle", "white", 10, 0), ("square", "yellow", 0, 20)])
    assert colour_failures(*wrong, colours) == 2
    # a prompt naming no colours checks nothing
    assert colour_failures(*wrong, prompt_colours("two circles and a square", WORLD)) == 0


def test_colour_splits_also_counts_the_prompts_colours_on_the_decoded_pictures(pipe, monkeypatch):
    """Given the prompts' colours, each decoded picture's wrong colours join its splits: the red
    square is right for "a red square", wrong for "a blue square"; with share 0 only the colours
    count, and without colours nor a share nothing is decoded."""
    import pandiff.self_check as sc

    (flat_map, flat), (split_map, split) = _square_picture(pipe, False), _square_picture(pipe, True)
    latents, maps = torch.stack([flat, split]), [flat_map, split_map]
    red = sc.prompt_colours("a red square on the grass", WORLD)
    blue = sc.prompt_colours("a blue square on the grass", WORLD)
    assert sc.colour_splits(pipe, latents, maps, 0.0, [red, red]) == [0, 0]
    assert sc.colour_splits(pipe, latents, maps, 0.0, [blue, red]) == [1, 0]
    assert sc.colour_splits(pipe, latents, maps, 0.15, [blue, blue]) == [1, 2]  # the split one: both
    monkeypatch.setattr(pipe, "uint8_pictures", lambda latents: pytest.fail("nothing to judge"))
    assert sc.colour_splits(pipe, latents, maps, 0.0, None) == [0, 0]


def test_prompts_colours_act_only_when_on_and_on_world_tables(pipe, monkeypatch):
    import pandiff.self_check as sc

    assert sc.prompts_colours(pipe, PROMPTS, False) is None
    got = sc.prompts_colours(pipe, PROMPTS, True)
    assert [c.wanted for c in got] == [{"circle": ("red",)}, {"star": ("blue", "blue")}]
    monkeypatch.setattr(sc, "is_world_table", lambda table: False)
    assert sc.prompts_colours(pipe, PROMPTS, True) is None  # other tables: the check cannot read them


def _fake_colours(monkeypatch, script):
    """Scripted colour failures (:func:`_fake_picture_check`); returns the prompt colours."""
    import pandiff.self_check as sc

    return _fake_picture_check(monkeypatch, sc, "colour_failures", script)


def test_self_check_colour_check_draws_a_wrong_coloured_picture_again(pipe, monkeypatch):
    """With the redraw: a picture that gets the prompt's colours wrong fails its check (row 1's
    first picture), so it alone is drawn again for the same map, each picture judged against its
    own prompt's colours; off, nothing is judged and the call is the plain one."""
    from pandiff.self_check import prompt_colours

    kwargs = {"num_inference_steps": 2, "redraw_image": True, "self_check": 2}
    plain = pipe(PROMPTS, generator=_gens(2), **{**kwargs, "self_check": 0})
    seen = _fake_colours(monkeypatch, [0, 1, 0])
    rows = _counting(monkeypatch, PanopticDiffusionPipeline, "redraw")
    same = pipe(PROMPTS, generator=_gens(2), colour_check=False, **kwargs)
    assert rows == [2] and seen == []
    checked = pipe(PROMPTS, generator=_gens(2), colour_check=True, **kwargs)
    assert rows == [2, 2, 1]
    assert seen == [prompt_colours(p, WORLD) for p in (PROMPTS[0], PROMPTS[1], PROMPTS[1])]
    for i in range(2):
        assert np.array_equal(checked.maps[i].instance, plain.maps[i].instance)  # the same maps
        assert np.array_equal(np.asarray(same.images[i]), np.asarray(plain.images[i]))
    assert np.array_equal(np.asarray(checked.images[0]), np.asarray(plain.images[0]))
    assert not np.array_equal(np.asarray(checked.images[1]), np.asarray(plain.images[1]))  # drawn again


def test_best_of_ranks_wrong_coloured_pictures_after_map_failures(pipe, monkeypatch):
    import pandiff.self_check as sc

    _fake_colours(monkeypatch, [1, 0, 0, 0])  # draw 0: row 0 wrong; draw 1: neither row
    match = iter([1.0, 1.0, 0.5, 0.5])  # draw 0 ranks first on the picture for both rows
    monkeypatch.setattr(sc, "instance_match", lambda drawn, seen: next(match))
    monkeypatch.setattr(sc, "map_consistency", lambda pipe, latents, maps, text, noise: [0.1, 0.1])
    drawn = _spy_redraws(monkeypatch)
    out = pipe(
        PROMPTS, num_inference_steps=2, generator=_gens(2), best_of=2, redraw_image=True, colour_check=True
    )
    for row, k in ((0, 1), (1, 0)):  # row 0: draw 1, whose colours are right; row 1: draw 0
        latents, maps = drawn[k]
        assert np.array_equal(
            np.asarray(out.images[row]), np.asarray(pipe._output(PROMPTS, latents, maps).images[row])
        )


def test_colour_check_is_validated_defaults_to_the_folder_and_needs_a_check(pipe, tiny_pipeline_dir):
    from pandiff.pipeline_config import PipelineConfig

    assert pipe.config.colour_check is False and pipe.checks_colours(None, 2) is False  # older folders
    assert pipe.checks_colours(True, 2) is True and pipe.checks_colours(True, 0, 3) is True
    assert pipe.checks_colours(True, 0, 1) is False  # nothing drawn again: it cannot act
    assert pipe.checks_as_acting(2, 1, colour_check=True)["colour_check"] is True
    for wrong in (1, "true", 0.5):
        with pytest.raises(ConfigError, match="colour_check"):
            pipe("a red circle", num_inference_steps=1, self_check=1, colour_check=wrong)
    data = json.loads((tiny_pipeline_dir / "pandiff_pipeline.json").read_text())
    folder = PipelineConfig.from_dict({**data, "colour_check": True})
    assert folder.colour_check is True and folder.to_dict()["colour_check"] is True
    with pytest.raises(ConfigError, match="'colour_check'"):
        PipelineConfig.from_dict({**data, "colour_check": "yes"})
