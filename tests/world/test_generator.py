"""The built-in world: COCO layout, exact panoptic JSON/PNG agreement, captions, specs, determinism."""

from __future__ import annotations

import argparse
import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO

from pandiff.cli import make_world as world_cli
from pandiff.data.coco import CocoPanoptic
from pandiff.data.coco_format import rgb_to_id
from pandiff.data.panoptic_map import PanopticMap
from pandiff.errors import ConfigError, DataError
from pandiff.world.captions import INVERSE_RELATION, NUMBER_WORDS, plural
from pandiff.world.drawing import Thing, shape_mask
from pandiff.world.generator import (
    STUFF_COLORS,
    THING_COLORS,
    generate_world,
    is_val_scene,
    make_scene,
    render_scene,
    scene_from_spec,
    things_mix,
    world_category_table,
    world_paths,
)

N, SIZE, SEED = 12, 64, 3
TABLE = world_category_table()


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("world") / "w"
    summary = generate_world(out, N, size=SIZE, seed=SEED, workers=1)
    assert (summary["n"], summary["train"], summary["val"]) == (N, 11, 1)
    return out


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _specs(world: Path) -> list[dict]:
    return [
        s
        for split in ("train", "val")
        for s in json.loads(world_paths(world, split)["specs_json"].read_text())["specs"]
    ]


def _count_pattern(count: int, color: str, shape: str) -> re.Pattern:
    head = "(?:a|an|one)" if count == 1 else NUMBER_WORDS[count]
    noun = shape if count == 1 else plural(shape)
    return re.compile(rf"\b{head} (?:(?:small|large) )?{color} {noun}\b", re.IGNORECASE)


def _relation_pattern(spec: dict) -> re.Pattern:
    """Captions may state the spec's relation or its inverse; equal pairs say "one ... the other"."""
    (rel,) = spec["relations"]
    subject, obj = spec["things"][rel["subject"]], spec["things"][rel["object"]]
    words = {"left of": "to the left of", "right of": "to the right of", "above": "above", "below": "below"}

    def phrase(a: dict, relation: str, b: dict) -> str:
        size = "(?:(?:small|large) )?"
        return rf"{a['color']} {a['category']} {words[relation]} an? {size}{b['color']} {b['category']}\b"

    options = [phrase(subject, rel["relation"], obj), phrase(obj, INVERSE_RELATION[rel["relation"]], subject)]
    if (subject["color"], subject["category"]) == (obj["color"], obj["category"]):
        options.append(
            rf"one (?:{words[rel['relation']]}|{words[INVERSE_RELATION[rel['relation']]]}) the other"
        )
    return re.compile("|".join(options), re.IGNORECASE)


def test_layout_is_coco_2017_panoptic(world):
    names = {str(p.relative_to(world)) for p in world.rglob("*") if p.is_file()}
    for split in ("train", "val"):
        for kind in ("panoptic", "captions", "world_specs"):
            assert f"annotations/{kind}_{split}2017.json" in names
    pan = json.loads((world / "annotations" / "panoptic_train2017.json").read_text())
    assert {c["name"] for c in pan["categories"]} == {c.name for c in TABLE.categories}
    assert all({"id", "name", "isthing", "color", "supercategory"} <= set(c) for c in pan["categories"])
    for image in pan["images"]:
        assert (world / "train2017" / image["file_name"]).is_file()
        assert Image.open(world / "train2017" / image["file_name"]).size == (SIZE, SIZE)
    # The val split is the documented even spread: with f = 0.1 scene index 9 (image id 10).
    val = json.loads((world / "annotations" / "panoptic_val2017.json").read_text())
    assert [im["id"] for im in val["images"]] == [i + 1 for i in range(N) if is_val_scene(i, 0.1)] == [10]
    assert len(pan["annotations"]) == len(pan["images"]) == 11


def test_panoptic_json_matches_png_exactly(world):
    for split in ("train", "val"):
        paths = world_paths(world, split)
        for ann in json.loads(paths["panoptic_json"].read_text())["annotations"]:
            ids = rgb_to_id(np.asarray(Image.open(paths["panoptic"] / ann["file_name"])))
            assert (ids > 0).all()  # the world has no void pixels
            assert set(np.unique(ids).tolist()) == {s["id"] for s in ann["segments_info"]}
            for seg in ann["segments_info"]:
                ys, xs = np.nonzero(ids == seg["id"])
                assert seg["area"] == xs.size
                assert seg["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
                assert seg["iscrowd"] == 0


def test_pycocotools_reads_captions_and_every_image_has_three_distinct(world):
    for split in ("train", "val"):
        coco = COCO(str(world_paths(world, split)["captions_json"]))
        pan = json.loads(world_paths(world, split)["panoptic_json"].read_text())
        assert sorted(coco.getImgIds()) == sorted(im["id"] for im in pan["images"])
        for image_id in coco.getImgIds():
            captions = [a["caption"] for a in coco.loadAnns(coco.getAnnIds(imgIds=image_id))]
            assert len(set(captions)) >= 3


def _check_captions(spec: dict) -> None:
    """Every caption names each (colour, shape) group with its count and every stuff; exactly
    three state a two-thing relation; relation words appear nowhere else."""
    assert len(set(spec["captions"])) >= 3
    for caption in spec["captions"]:
        for group in spec["counts"]:
            pattern = _count_pattern(group["count"], group["color"], group["category"])
            assert pattern.search(caption), caption
        for stuff in spec["stuff"]:
            assert stuff["category"] in caption, caption
    if spec["relations"]:
        pattern = _relation_pattern(spec)
        assert sum(bool(pattern.search(c)) for c in spec["captions"]) == 3, spec["captions"]
    else:
        relation_words = re.compile(r"\b(left of|right of|above|below)\b")
        assert not any(relation_words.search(c) for c in spec["captions"]), spec["captions"]


def test_captions_name_every_thing_with_count_and_colour_and_the_stuff(world):
    specs = _specs(world)
    assert len(specs) == N and sum(len(s["things"]) == 2 for s in specs) >= 2
    for spec in specs:
        _check_captions(spec)


def test_specs_agree_with_the_maps(world):
    for split in ("train", "val"):
        paths = world_paths(world, split)
        anns = {a["image_id"]: a for a in json.loads(paths["panoptic_json"].read_text())["annotations"]}
        for spec in json.loads(paths["specs_json"].read_text())["specs"]:
            ann = anns[spec["image_id"]]
            png = np.asarray(Image.open(paths["panoptic"] / ann["file_name"]))
            pmap, merged = PanopticMap.from_coco(png, ann["segments_info"], TABLE, max_instances=7)
            assert merged == 0
            per_category = Counter()
            for group in spec["counts"]:
                per_category[TABLE.index_of_name(group["category"])] += group["count"]
            assert pmap.thing_counts() == dict(per_category)
            assert sum(g["count"] for g in spec["counts"]) == len(spec["things"])
            ids = rgb_to_id(png)
            for thing in spec["things"]:
                mask = ids == thing["segment_id"]
                assert mask.sum() == thing["area"]
                assert set(np.unique(pmap.instance[mask]).tolist()) == {thing["instance"]}
                assert set(np.unique(pmap.category[mask]).tolist()) == {
                    TABLE.index_of_name(thing["category"])
                }
            if len(spec["things"]) == 2:
                (rel,) = spec["relations"]
                a, b = (np.array(spec["things"][k]["centroid"]) for k in (rel["subject"], rel["object"]))
                dx, dy = a - b
                expected = {"left of": dx < 0, "right of": dx > 0, "above": dy < 0, "below": dy > 0}
                assert expected[rel["relation"]]
            else:
                assert spec["relations"] == []


def test_image_colours_match_the_spec(world):
    names = list(THING_COLORS)
    palette = np.array([THING_COLORS[c] for c in names], dtype=np.float64)
    for split in ("train", "val"):
        paths = world_paths(world, split)
        for spec in json.loads(paths["specs_json"].read_text())["specs"]:
            image = np.asarray(Image.open(paths["images"] / spec["file_name"])).astype(np.float64)
            ids = rgb_to_id(np.asarray(Image.open(paths["panoptic"] / spec["file_name"])))
            for thing in spec["things"]:
                pixels = image[ids == thing["segment_id"]]
                nearest = np.argmin(((pixels[:, None] - palette[None]) ** 2).sum(-1), axis=1)
                assert names[np.bincount(nearest).argmax()] == thing["color"]
            stuff_names = list(STUFF_COLORS)
            stuff_palette = np.array([STUFF_COLORS[s] for s in stuff_names], dtype=np.float64)
            for stuff in spec["stuff"]:
                mean = image[ids == stuff["segment_id"]].mean(axis=0)
                assert stuff_names[np.argmin(((stuff_palette - mean) ** 2).sum(-1))] == stuff["category"]


def test_same_seed_is_byte_identical_for_any_worker_count(world, tmp_path):
    again = tmp_path / "again"
    generate_world(again, N, size=SIZE, seed=SEED, workers=2)
    assert _files(again) == _files(world)
    other = tmp_path / "other"
    generate_world(other, N, size=SIZE, seed=SEED + 1, workers=1)
    theirs, ours = _files(other), _files(world)
    assert theirs.keys() == ours.keys()
    assert theirs["annotations/world_specs_train2017.json"] != ours["annotations/world_specs_train2017.json"]
    assert sum(theirs[k] != ours[k] for k in ours if k.startswith("train2017/")) >= 10


def test_existing_folder_is_refused_unless_overwrite(tmp_path, capsys):
    out = tmp_path / "w"
    out.mkdir()
    (out / "keep.txt").write_text("user file")
    with pytest.raises(DataError, match="--overwrite"):
        generate_world(out, 3, workers=1)
    parser = argparse.ArgumentParser()
    world_cli.add_arguments(parser)
    with pytest.raises(DataError, match="--overwrite"):
        world_cli.run(parser.parse_args(["--out", str(out), "--n", "3", "--workers", "1"]))
    assert (
        world_cli.run(parser.parse_args(["--out", str(out), "--n", "3", "--workers", "1", "--overwrite"]))
        == 0
    )
    assert "wrote 3 scenes (3 train, 0 val)" in capsys.readouterr().out
    assert (out / "keep.txt").read_text() == "user file"
    # A smaller world over a larger one leaves no stale pictures behind.
    generate_world(out, 2, workers=1, val_fraction=0.0, overwrite=True)
    assert sorted(p.name for p in (out / "train2017").iterdir()) == ["000000000001.png", "000000000002.png"]
    assert not any((out / "val2017").iterdir())


@pytest.mark.parametrize(
    "kwargs", [{"n": 0}, {"size": 16}, {"seed": -1}, {"val_fraction": 1.0}, {"workers": 0}]
)
def test_bad_options_raise_config_error(tmp_path, kwargs):
    options = {"n": 2, "workers": 1} | kwargs
    with pytest.raises(ConfigError):
        generate_world(tmp_path / "w", **options)


def test_scene_statistics_over_many_scenes():
    shapes, colors, sizes, num_things, stuff = Counter(), Counter(), Counter(), Counter(), Counter()
    yy, xx = np.mgrid[0:SIZE, 0:SIZE] + 0.5
    for index in range(150):
        sample = make_scene(0, index, SIZE)
        things = sample.spec["things"]
        num_things[len(things)] += 1
        assert max(sample.pmap.thing_counts().values()) <= 7
        for thing in things:
            shapes[thing["category"]] += 1
            colors[thing["color"]] += 1
            sizes[thing["size"]] += 1
            drawn = Thing(thing["category"], thing["color"], thing["size"], *thing["center"], thing["radius"])
            full_area = shape_mask(drawn, xx, yy).sum()
            assert thing["area"] >= max(0.6 * full_area, 12)
        assert 1 <= len(sample.spec["stuff"]) <= 2
        _check_captions(sample.spec)
        stuff[len(sample.spec["stuff"])] += 1
    assert set(num_things) == {1, 2, 3, 4}
    assert len(shapes) >= 4 and len(colors) >= 6 and set(sizes) == {"small", "large"}
    assert stuff[1] > 0 and stuff[2] > stuff[1]


def test_rendering_a_spec_reproduces_its_map():
    for index in range(6):
        sample = make_scene(7, index, SIZE)
        again = render_scene(scene_from_spec(sample.spec, SIZE), np.random.default_rng(0))
        np.testing.assert_array_equal(again.pmap.category, sample.pmap.category)
        np.testing.assert_array_equal(again.pmap.instance, sample.pmap.instance)
        assert again.spec["counts"] == sample.spec["counts"]
        # Flat-coloured interiors: the image equals the thing colour up to the sensor noise.
        for thing in sample.spec["things"]:
            ids = rgb_to_id(sample.panoptic_png)
            mask = ids == thing["segment_id"]
            inner = mask.copy()
            inner[1:-1, 1:-1] &= mask[:-2, 1:-1] & mask[2:, 1:-1] & mask[1:-1, :-2] & mask[1:-1, 2:]
            inner[[0, -1]] = inner[:, [0, -1]] = False
            diff = np.abs(sample.image[inner].astype(int) - np.array(THING_COLORS[thing["color"]]))
            assert diff.max() <= 12


def test_the_coco_loader_reads_the_world_unchanged(world):
    for split, count in (("train", 11), ("val", 1)):
        dataset = CocoPanoptic(world, split=split, image_size=SIZE, map_size=SIZE, strict=True)
        assert len(dataset) == count
        assert [c.name for c in dataset.table.categories] == [c.name for c in TABLE.categories]
        item = dataset[0]
        spec = next(s for s in _specs(world) if s["image_id"] == item["image_id"])
        assert item["captions"] == spec["captions"]
        assert tuple(item["image"].shape) == (3, SIZE, SIZE)
        counts = Counter()
        for group in spec["counts"]:
            counts[TABLE.index_of_name(group["category"])] += group["count"]
        pmap = PanopticMap(item["category"].numpy(), item["instance"].numpy(), dataset.table)
        assert pmap.thing_counts() == dict(counts)


def test_things_mix_sets_the_share_of_scenes_per_count(tmp_path):
    assert things_mix(None) == {1: 0.25, 2: 0.3, 3: 0.25, 4: 0.2}
    assert things_mix("1:1, 2:3,4:4") == {1: 0.125, 2: 0.375, 3: 0.0, 4: 0.5}
    assert things_mix({2: 5}) == {1: 0.0, 2: 1.0, 3: 0.0, 4: 0.0}
    # Only two-thing scenes: every scene states its relation, in the spec and in the captions.
    mix = things_mix("2:1")
    for index in range(8):
        spec = make_scene(0, index, SIZE, mix=mix).spec
        assert len(spec["things"]) == 2 and len(spec["relations"]) == 1
        _check_captions(spec)
    # 1:1,4:1 draws only 1 and 4, half each in the scenes written: the count is kept while crowded
    # layouts are redrawn (drawing it again with each retry, as the default does, gives 4 things
    # in far fewer than half).
    counts = Counter(
        len(make_scene(1, i, SIZE, mix=things_mix("1:1,4:1")).spec["things"]) for i in range(100)
    )
    assert set(counts) == {1, 4} and 36 <= counts[4] <= 64
    # Through the CLI: recorded in every JSON file's info and in the summary; others keep no key.
    parser = argparse.ArgumentParser()
    world_cli.add_arguments(parser)
    out = tmp_path / "rel"
    assert (
        world_cli.run(parser.parse_args(["--out", str(out), "--n", "5", "--workers", "1", "--things", "2:1"]))
        == 0
    )
    for key in ("panoptic_json", "captions_json", "specs_json"):
        info = json.loads(world_paths(out, "train")[key].read_text())["info"]
        assert info["things_mix"] == {"1": 0.0, "2": 1.0, "3": 0.0, "4": 0.0}
    assert all(len(s["things"]) == 2 for s in _specs(out))
    assert generate_world(tmp_path / "d", 2, workers=1)["things_mix"] is None
    assert (
        "things_mix"
        not in json.loads(world_paths(tmp_path / "d", "train")["panoptic_json"].read_text())["info"]
    )


@pytest.mark.parametrize(
    "spec, message",
    [
        ("2", "COUNT:WEIGHT"),
        ("2:x", "COUNT:WEIGHT"),
        ("5:1", "1-4 things"),
        ("0:1", "1-4 things"),
        ("2:-1", ">= 0"),
        ("2:nan", ">= 0"),
        ("1:0,2:0", "above 0"),
        ("2:1,2:3", "twice"),
    ],
)
def test_bad_things_mix_is_refused_before_anything_is_written(tmp_path, spec, message):
    with pytest.raises(ConfigError, match=message):
        generate_world(tmp_path / "w", 2, workers=1, things=spec)
    assert not (tmp_path / "w").exists()
