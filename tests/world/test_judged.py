"""Image-judged adherence on hand-made pictures and maps with known counts, colours and centroids."""

import copy

import numpy as np
import pytest

from pandiff.data.panoptic_map import PanopticMap
from pandiff.evaluation.report import Report
from pandiff.world.drawing import STUFF_COLORS, THING_COLORS
from pandiff.world.generator import make_scene, world_category_table
from pandiff.world.judged import bucket, judge_ceiling, judge_sample, map_sample, summarise

TABLE = world_category_table()


def picture(squares: list[tuple[str, int, int]], size: int = 64):
    """Grass with ``size 12`` squares of the given colours at (row, col); the map labels each one
    its own square instance. Returns ``(image H W 3 uint8, PanopticMap)``."""
    image = np.zeros((size, size, 3), dtype=np.uint8)
    image[:] = STUFF_COLORS["grass"]
    category = np.full((size, size), TABLE.index_of_name("grass"))
    instance = np.zeros((size, size), dtype=int)
    for k, (colour, r, c) in enumerate(squares, start=1):
        image[r : r + 12, c : c + 12] = np.asarray(THING_COLORS[colour]) * 0.55  # the world's outline
        image[r + 1 : r + 11, c + 1 : c + 11] = THING_COLORS[colour]
        category[r : r + 12, c : c + 12], instance[r : r + 12, c : c + 12] = TABLE.index_of_name("square"), k
    return image, PanopticMap(category, instance, TABLE)


def spec_of(colours: list[str], relation: str | None = None) -> dict:
    things = [{"category": "square", "color": c, "instance": k} for k, c in enumerate(colours, start=1)]
    relations = [{"subject": 0, "relation": relation, "object": 1}] if relation else []
    return {"image_id": 1, "things": things, "stuff": [{"category": "grass"}], "relations": relations}


def test_a_picture_with_the_asked_count_and_colours_passes():
    image, pmap = picture([("red", 5, 5), ("blue", 30, 40)])
    verdict = judge_sample(pmap, spec_of(["red", "blue"]), image, own_map=pmap)
    assert verdict["adherence"] and verdict["counts"] and verdict["stuff_present"]
    assert verdict["colour"] == (2, 2) and verdict["agreement"] is True and verdict["relation"] is None


def test_one_square_too_few_fails_counts_and_agreement_but_not_colour():
    image, judged = picture([("red", 5, 5)])
    _, own = picture([("red", 5, 5), ("blue", 30, 40)])  # the model's map claims two squares
    verdict = judge_sample(judged, spec_of(["red", "blue"]), image, own_map=own)
    assert not verdict["adherence"] and not verdict["counts"]
    assert verdict["agreement"] is False
    assert verdict["colour"] == (1, 1)  # the count error is charged once, not again as colour
    assert map_sample(own, spec_of(["red", "blue"]))["adherence"] is True  # the map alone says yes


def test_a_wrongly_coloured_square_is_a_colour_error():
    image, pmap = picture([("red", 5, 5), ("green", 30, 40)])
    verdict = judge_sample(pmap, spec_of(["red", "blue"]), image)
    assert verdict["adherence"] and verdict["colour"] == (1, 2)


@pytest.mark.parametrize(
    "positions,relation,holds",
    [
        (((5, 5), (5, 45)), "left of", True),  # centroids x 11 vs 51, same row
        (((5, 5), (5, 45)), "right of", False),
        (((40, 20), (2, 22)), "below", True),  # centroids y 46 vs 8: dy dominates dx
        (((40, 20), (2, 22)), "above", False),
    ],
)
def test_relations_come_from_judged_centroids(positions, relation, holds):
    (r0, c0), (r1, c1) = positions
    image, pmap = picture([("red", r0, c0), ("blue", r1, c1)])
    assert judge_sample(pmap, spec_of(["red", "blue"], relation), image)["relation"] is holds


def test_relation_needs_the_named_colours_on_the_image():
    image, pmap = picture([("red", 5, 5), ("blue", 5, 45)])
    spec = spec_of(["blue", "red"], "left of")  # "a blue square left of a red square": it is the other way
    assert judge_sample(pmap, spec, image)["relation"] is False


def test_summary_rates_overall_and_by_bucket():
    specs = [spec_of(["red"]), spec_of(["red"]), spec_of(["red", "blue"], "left of")]
    specs.append({**spec_of(["red", "blue", "green", "white"]), "image_id": 4})
    verdicts = [
        {"adherence": True, "counts": True, "stuff_present": True, "relation": None, "colour": (1, 1), "agreement": True},
        {"adherence": False, "counts": False, "stuff_present": True, "relation": None, "colour": (0, 0), "agreement": False},
        {"adherence": True, "counts": True, "stuff_present": True, "relation": False, "colour": (1, 2), "agreement": True},
        {"adherence": False, "counts": False, "stuff_present": False, "relation": None, "colour": (3, 3), "agreement": None},
    ]  # fmt: skip
    summary = summarise(verdicts, specs)
    assert [bucket(s) for s in specs] == ["1", "1", "2", "4+"]
    assert summary["all"]["adherence"] == 0.5 and summary["all"]["n"] == 4
    assert summary["all"]["colour"] == pytest.approx(5 / 6) and summary["all"]["colour_n"] == 6
    assert summary["all"]["relation"] == 0.0 and summary["all"]["relation_n"] == 1
    assert summary["all"]["agreement"] == pytest.approx(2 / 3) and summary["all"]["agreement_n"] == 3
    assert summary["1"]["adherence"] == 0.5 and summary["2"]["adherence"] == 1.0 and summary["4+"]["n"] == 1
    assert "3" not in summary


def test_judge_ceiling_against_ground_truth():
    scenes = [make_scene(0, i, 64) for i in range(6)]
    specs, maps = [s.spec for s in scenes], [s.pmap for s in scenes]
    images = np.stack([s.image for s in scenes])
    perfect = judge_ceiling(maps, maps, specs, images)
    assert perfect["count_accuracy"] == 1.0 and perfect["adherence"] == 1.0
    assert perfect["miou"] == pytest.approx(1.0)
    # A judge that misses one scene's things entirely (paints them as the first stuff).
    blind = copy.deepcopy(maps)
    k = 2
    things = np.asarray(blind[k].table.isthing_lut(), dtype=bool)[blind[k].category]
    blind[k].category[things] = blind[k].table.index_of_name(specs[k]["stuff"][0]["category"])
    blind[k].instance[things] = 0
    worse = judge_ceiling(blind, maps, specs, images)
    assert worse["count_accuracy"] == pytest.approx(5 / 6)
    assert worse["miou"] < 1.0


def test_markdown_leads_with_image_figures_and_states_the_ceiling():
    report = Report({"mode": "cogen", "judge": {"path": "j", "val_miou": 0.97, "ground_truth": {
        "count_accuracy": 0.96, "adherence": 0.95, "miou": 0.97}}})  # fmt: skip
    report.add("map_adherence", 0.88, "on the map", on="map")
    report.add("image_adherence", 0.41, "on the image", on="image")
    lines = report.markdown().splitlines()
    rows = [line for line in lines if line.startswith("| ") and "adherence" in line]
    assert rows[0].startswith("| image_adherence | image |") and rows[1].startswith("| map_adherence | map |")
    assert any("count accuracy 0.9600" in line for line in lines)


def test_touching_pairs_count_same_category_instances_within_the_gap():
    from pandiff.world.checks import touching_pairs

    _, apart = picture([("red", 5, 5), ("red", 5, 40)])  # 23 pixels apart
    _, touching = picture([("red", 5, 5), ("red", 5, 17)])  # side by side: cols 5-16 and 17-28
    _, near = picture([("red", 5, 5), ("blue", 5, 18)])  # 1 pixel of grass (col 17) between them
    _, three = picture([("red", 5, 5), ("red", 5, 17), ("red", 17, 5)])  # an L of three squares
    assert touching_pairs(apart) == 0
    assert touching_pairs(touching) == 1
    assert touching_pairs(near, gap=2) == 1 and touching_pairs(near, gap=1) == 0
    # two side by side pairs; the other two meet corner to corner ((16, 17) and (17, 16): 2 steps)
    assert touching_pairs(three) == 3 and touching_pairs(three, gap=1) == 2
    pmap = copy.deepcopy(touching)  # the right square relabelled a circle: another category
    pmap.category[pmap.instance == 2] = TABLE.index_of_name("circle")
    assert touching_pairs(pmap) == 0
    assert touching_pairs(pmap, same_category=False) == 1  # any two things
    assert touching_pairs(apart, same_category=False) == 0
    assert touching_pairs(three, same_category=False) == 3


def test_agreement_where_instances_touch_is_reported_apart():
    image, merged = picture([("red", 5, 5)])
    merged.category[5:17, 5:29], merged.instance[5:17, 5:29] = TABLE.index_of_name("square"), 1  # one blob
    _, own = picture([("red", 5, 5), ("red", 5, 17)])  # the map: two touching squares
    verdict = judge_sample(merged, spec_of(["red", "red"]), image, own_map=own)
    assert verdict["agreement"] is False and verdict["agreement_touching"] is False
    _, apart = picture([("red", 5, 5), ("red", 30, 40)])
    verdict = judge_sample(apart, spec_of(["red", "red"]), image, own_map=apart)
    assert verdict["agreement"] is True and verdict["agreement_touching"] is None  # nothing touches
    summary = summarise(
        [judge_sample(merged, spec_of(["red", "red"]), image, own_map=own), verdict],
        [spec_of(["red", "red"])] * 2,
    )
    assert summary["all"]["agreement"] == 0.5 and summary["all"]["agreement_touching"] == 0.0
    assert summary["all"]["agreement_touching_n"] == 1


def test_ceiling_line_states_the_judge_on_touching_scenes():
    truth = {
        "count_accuracy": 0.96,
        "adherence": 0.95,
        "miou": 0.97,
        "count_accuracy_touching": 0.9,
        "touching_n": 40,
    }
    report = Report({"mode": "cogen", "judge": {"path": "j", "val_miou": 0.97, "ground_truth": truth}})
    assert "where two instances of one category touch 0.9000 (n=40)" in report.markdown()
    scenes = [make_scene(0, i, 64) for i in range(12)]
    specs, maps = [s.spec for s in scenes], [s.pmap for s in scenes]
    ceiling = judge_ceiling(maps, maps, specs, np.stack([s.image for s in scenes]))
    from pandiff.world.checks import touching_pairs

    touching = sum(touching_pairs(m) > 0 for m in maps)
    assert touching == 3 and ceiling["touching_n"] == touching  # world seed 0, scenes 5, 9 and 11
    assert ceiling["count_accuracy_touching"] == 1.0  # a perfect judge counts them right
