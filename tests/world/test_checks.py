"""Prompt adherence and colour accuracy against built-in-world scene specs."""

import copy

import numpy as np
import pytest

from pandiff.data.panoptic_map import PanopticMap
from pandiff.world.captions import INVERSE_RELATION
from pandiff.world.checks import (
    adherence_rates,
    check_adherence,
    colour_matches,
    component_counts,
    dominant_colour,
    instance_counts,
)
from pandiff.world.drawing import THING_COLORS
from pandiff.world.generator import make_scene

SEED = 0


def scene_with(n_things: int, relation: bool = False):
    for i in range(200):
        s = make_scene(SEED, i, 64)
        if len(s.spec["things"]) == n_things and bool(s.spec["relations"]) == relation:
            return s
    raise AssertionError("no such scene")


def without_thing(sample, k: int) -> PanopticMap:
    """The scene's map with thing ``k`` painted as the stuff below it (the first stuff)."""
    thing = sample.spec["things"][k]
    table = sample.pmap.table
    cat = table.index_of_name(thing["category"])
    mask = (sample.pmap.category == cat) & (sample.pmap.instance == thing["instance"])
    category, instance = sample.pmap.category.copy(), sample.pmap.instance.copy()
    category[mask], instance[mask] = table.index_of_name(sample.spec["stuff"][0]["category"]), 0
    return PanopticMap(category, instance, table)


@pytest.mark.parametrize("n_things,relation", [(1, False), (2, True), (3, False), (4, False)])
def test_ground_truth_map_passes_every_criterion(n_things, relation):
    s = scene_with(n_things, relation)
    verdict = check_adherence(s.pmap, s.spec, s.image)
    assert verdict == {
        "categories": True, "counts": True, "counts_components": verdict["counts_components"],
        "stuff_present": True, "stuff_exact": True, "relation": True if relation else None,
    }  # fmt: skip
    assert colour_matches(s.pmap, s.image, s.spec) == (n_things, n_things)


def test_removing_an_instance_fails_the_count():
    s = scene_with(3)
    verdict = check_adherence(without_thing(s, 0), s.spec, s.image)
    assert verdict["counts"] is False
    assert verdict["stuff_present"] is True


def test_swapped_relation_fails():
    s = scene_with(2, relation=True)
    spec = copy.deepcopy(s.spec)
    spec["relations"][0]["relation"] = INVERSE_RELATION[spec["relations"][0]["relation"]]
    assert check_adherence(s.pmap, s.spec)["relation"] is True
    assert check_adherence(s.pmap, spec)["relation"] is False
    assert check_adherence(s.pmap, spec, s.image)["relation"] is False


def test_relation_needs_the_right_colours_when_the_image_is_given():
    s = scene_with(2, relation=True)
    spec = copy.deepcopy(s.spec)
    for thing in spec["things"]:
        thing["color"] = "black" if thing["color"] != "black" else "white"
    assert check_adherence(s.pmap, spec)["relation"] is True  # the map alone cannot see colours
    assert check_adherence(s.pmap, spec, s.image)["relation"] is False


def test_colour_accuracy_counts_a_repainted_instance():
    s = scene_with(3)
    thing = s.spec["things"][0]
    cat = s.pmap.table.index_of_name(thing["category"])
    mask = (s.pmap.category == cat) & (s.pmap.instance == thing["instance"])
    other = next(
        c for c in THING_COLORS if c != thing["color"] and c not in {t["color"] for t in s.spec["things"]}
    )
    image = s.image.copy()
    image[mask] = THING_COLORS[other]
    assert dominant_colour(image, mask) == other
    assert colour_matches(s.pmap, image, s.spec) == (2, 3)


def test_instance_bits_versus_connected_components():
    table = make_scene(SEED, 0, 64).pmap.table
    category = np.full((64, 64), table.index_of_name("grass"))
    instance = np.zeros((64, 64), dtype=int)
    circle = table.index_of_name("circle")
    category[2:8, 2:14], instance[2:8, 2:8], instance[2:8, 8:14] = circle, 1, 2  # two touching circles
    category[40:46, 40:46], instance[40:46, 40:46] = circle, 3
    category[0, 60:63] = circle  # a 3-pixel speck (< 8 px at 64 x 64): ignored as noise
    pmap = PanopticMap(category, instance, table)
    assert instance_counts(pmap) == {"circle": 3}
    assert component_counts(pmap) == {"circle": 2}


def test_rates_aggregate_criteria_and_skip_missing_relations():
    verdicts = [
        {"categories": True, "counts": True, "counts_components": True, "stuff_present": True,
         "stuff_exact": False, "relation": None},
        {"categories": True, "counts": False, "counts_components": False, "stuff_present": True,
         "stuff_exact": True, "relation": False},
    ]  # fmt: skip
    rates = adherence_rates(verdicts)
    assert rates["counts"] == 0.5 and rates["categories"] == 1.0 and rates["stuff_exact"] == 0.5
    assert rates["relation"] == 0.0 and rates["relation_n"] == 1
