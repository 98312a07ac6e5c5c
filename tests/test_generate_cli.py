"""`pandiff generate` / `pandiff segment` end to end on a tiny model, and their error messages."""

import json

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO

from pandiff.cli import main
from pandiff.data.coco import CocoPanoptic
from pandiff.data.coco_format import rgb_to_id
from pandiff.data.panoptic_map import PanopticMap


def _generate(tiny_pipeline_dir, out, *extra):
    return main(
        [
            "generate",
            "two red circles on the grass",
            "--model",
            str(tiny_pipeline_dir),
            "--n",
            "2",
            "--steps",
            "2",
            "--out",
            str(out),
            *extra,
        ]
    )


@pytest.fixture(scope="module")
def export(tiny_pipeline_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("gen") / "run"
    assert _generate(tiny_pipeline_dir, out) == 0
    return out


def test_generate_writes_a_coco_panoptic_folder(export, tiny_pipeline_dir):
    names = sorted(p.name for p in export.iterdir())
    for i in range(2):
        for kind in ("image", "map", "overlay"):
            assert f"{i:03d}_{kind}.png" in names
        assert (export / "panoptic" / f"{i:03d}.png").is_file()
    panoptic = json.loads((export / "panoptic.json").read_text())
    assert panoptic["info"]["steps"] == 2 and panoptic["info"]["sampler"] == "dpmsolver++"
    assert panoptic["info"]["map_sampler"] == "dpmsolver++"
    assert panoptic["info"]["map_cleanup"] == 3  # the default sliver size, recorded with the output
    from pandiff.pipeline import PanopticDiffusionPipeline

    fingerprint = PanopticDiffusionPipeline.from_pretrained(tiny_pipeline_dir).weights_fingerprint()
    assert panoptic["info"]["weights"] == fingerprint  # which weights drew the pairs
    for ann in panoptic["annotations"]:
        ids = rgb_to_id(np.asarray(Image.open(export / "panoptic" / ann["file_name"])))
        listed = {s["id"]: s for s in ann["segments_info"]}
        assert set(np.unique(ids)) - {0} == set(listed)
        for seg_id, seg in listed.items():
            assert seg["area"] == int((ids == seg_id).sum())


def test_generate_takes_the_maps_own_sampler(tiny_pipeline_dir, tmp_path, capsys):
    """--map-scheduler: the map's sampler alone, recorded with the output; unknown names refused."""
    out = tmp_path / "mixed"
    assert _generate(tiny_pipeline_dir, out, "--map-scheduler", "sde-dpmsolver++") == 0
    info = json.loads((out / "panoptic.json").read_text())["info"]
    assert (info["sampler"], info["map_sampler"]) == ("dpmsolver++", "sde-dpmsolver++")
    with pytest.raises(SystemExit):
        _generate(tiny_pipeline_dir, tmp_path / "bad", "--map-scheduler", "euler")
    assert "invalid choice: 'euler'" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_export_reads_back_with_our_loader_and_pycocotools(export):
    ds = CocoPanoptic.from_export(export, image_size=16, map_size=16)
    assert len(ds) == 2
    item = ds[0]
    assert item["captions"] == ["two red circles on the grass"]
    assert item["image"].shape == (3, 16, 16)
    coco = COCO(str(export / "captions.json"))
    assert len(coco.getImgIds()) == 2


def test_generate_is_reproducible(tiny_pipeline_dir, export, tmp_path):
    assert _generate(tiny_pipeline_dir, tmp_path / "again") == 0
    for name in ("000_image.png", "001_map.png"):
        a = np.asarray(Image.open(export / name))
        b = np.asarray(Image.open(tmp_path / "again" / name))
        assert np.array_equal(a, b)


def test_map_to_image_and_segment(tiny_pipeline_dir, export, tmp_path):
    png = export / "panoptic" / "000.png"
    assert (
        main(
            [
                "generate",
                "a scene",
                "--model",
                str(tiny_pipeline_dir),
                "--map",
                str(png),
                "--n",
                "1",
                "--steps",
                "2",
                "--out",
                str(tmp_path / "m2i"),
            ]
        )
        == 0
    )
    given = np.asarray(Image.open(png))
    assert np.array_equal(np.asarray(Image.open(tmp_path / "m2i" / "panoptic" / "000.png")) != 0, given != 0)
    assert (
        main(
            [
                "segment",
                str(export / "000_image.png"),
                "a scene",
                "--model",
                str(tiny_pipeline_dir),
                "--steps",
                "2",
                "--out",
                str(tmp_path / "seg"),
            ]
        )
        == 0
    )
    seg_image = np.asarray(Image.open(tmp_path / "seg" / "000_image.png")).astype(int)
    assert np.abs(seg_image - np.asarray(Image.open(export / "000_image.png"))).max() <= 1


@pytest.mark.parametrize(
    "args, message",
    [
        (["--steps", "0"], "--steps must be >= 1"),
        (["--guidance", "-1"], "--guidance must be >= 0"),
        (["--map-guidance", "-2"], "--map-guidance must be >= 0"),
        (["--map-cleanup", "-1"], "--map-cleanup must be >= 0"),
        (["--n", "0"], "--n must be >= 1"),
        (["--self-check", "-1"], "--self-check must be >= 0 and <= 16"),
        (["--self-check", "17"], "--self-check must be >= 0 and <= 16"),
        (["--best-of", "0"], "--best-of must be >= 1 and <= 16"),
        (["--best-of", "17"], "--best-of must be >= 1 and <= 16"),
        (["--separate-touching", "-1"], "--separate-touching must be >= 0 and <= 16"),
        (["--separate-touching", "17"], "--separate-touching must be >= 0 and <= 16"),
        (["--colour-split", "-0.1"], "--colour-split must be >= 0 and <= 0.99"),
        (["--colour-split", "1"], "--colour-split must be >= 0 and <= 0.99"),
        (["--misshapen", "-0.1"], "--misshapen must be >= 0 and <= 1"),
        (["--misshapen", "1.5"], "--misshapen must be >= 0 and <= 1"),
        (["--picture-match", "1.5"], "--picture-match must be >= 0 and <= 1"),
        (["--restarts", "-1"], "--restarts must be >= 0 and <= 10"),
        (["--restarts", "11"], "--restarts must be >= 0 and <= 10"),
    ],
)
def test_bad_options(tiny_pipeline_dir, tmp_path, capsys, args, message):
    assert _generate(tiny_pipeline_dir, tmp_path / "x", *args) == 2
    assert message in capsys.readouterr().err


def test_existing_output_is_refused_without_overwrite(tiny_pipeline_dir, export, capsys):
    before = sorted(p.name for p in export.iterdir())
    assert _generate(tiny_pipeline_dir, export) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert sorted(p.name for p in export.iterdir()) == before


def test_empty_prompt_and_missing_model(tiny_pipeline_dir, tmp_path, capsys):
    assert main(["generate", " ", "--model", str(tiny_pipeline_dir), "--out", str(tmp_path / "e")]) == 2
    assert "prompt is empty" in capsys.readouterr().err
    assert (
        main(["generate", "a circle", "--model", str(tmp_path / "none"), "--out", str(tmp_path / "f")]) == 2
    )
    assert "does not exist" in capsys.readouterr().err


def test_map_with_unknown_category_or_missing_json(tiny_pipeline_dir, export, tmp_path, capsys):
    folder = tmp_path / "bad"
    folder.mkdir()
    png = folder / "000.png"
    png.write_bytes((export / "panoptic" / "000.png").read_bytes())
    args = [
        "generate",
        "x",
        "--model",
        str(tiny_pipeline_dir),
        "--map",
        str(png),
        "--out",
        str(tmp_path / "o"),
    ]
    assert main(args) == 2
    assert "--map-json" in capsys.readouterr().err
    panoptic = json.loads((export / "panoptic.json").read_text())
    panoptic["annotations"][0]["segments_info"][0]["category_id"] = 999
    (folder / "panoptic.json").write_text(json.dumps(panoptic))
    assert main(args) == 2
    assert "unknown category id 999" in capsys.readouterr().err


@pytest.mark.parametrize("extra, size", [([], 3), (["--map-cleanup", "0"], 0), (["--map-cleanup", "5"], 5)])
def test_map_cleanup_reaches_the_pipeline(tiny_pipeline_dir, tmp_path, monkeypatch, extra, size):
    sizes = []
    real = PanopticMap.absorb_slivers
    monkeypatch.setattr(PanopticMap, "absorb_slivers", lambda self, s=3: sizes.append(s) or real(self, s))
    assert _generate(tiny_pipeline_dir, tmp_path / "out", *extra) == 0
    assert sizes == ([size] * 2 if size else [])  # one clean-up per generated map, none when off
    assert json.loads((tmp_path / "out" / "panoptic.json").read_text())["info"]["map_cleanup"] == size


@pytest.mark.parametrize("extra, on", [([], False), (["--one-piece-instances"], True)])
def test_one_piece_instances_reaches_the_pipeline(tiny_pipeline_dir, tmp_path, monkeypatch, extra, on):
    calls = []
    real = PanopticMap.keep_largest_pieces
    monkeypatch.setattr(PanopticMap, "keep_largest_pieces", lambda self: calls.append(1) or real(self))
    assert _generate(tiny_pipeline_dir, tmp_path / "out", *extra) == 0
    assert len(calls) == (2 if on else 0)  # one per generated map
    assert json.loads((tmp_path / "out" / "panoptic.json").read_text())["info"]["one_piece_instances"] is on


def test_export_of_a_non_square_image_keeps_png_and_json_sizes_equal(tmp_path):
    """write_export: the panoptic PNG has the image's own height and width (it was square before),
    and upsampling a map onto the image grid keeps every label."""
    from pandiff.coco_export import write_export
    from pandiff.world.generator import world_category_table

    table = world_category_table()
    category = np.full((8, 8), table.index_of_name("grass"))
    instance = np.zeros((8, 8), dtype=int)
    category[2:4, 1:5], instance[2:4, 1:5] = table.index_of_name("circle"), 1
    image = Image.new("RGB", (32, 16), "green")  # 32 wide, 16 high
    out = write_export(
        tmp_path / "export",
        ["a red circle on the grass"],
        [image],
        [PanopticMap(category, instance, table)],
        table,
    )
    spec = json.loads((out / "panoptic.json").read_text())
    png = np.asarray(Image.open(out / "panoptic" / spec["annotations"][0]["file_name"]).convert("RGB"))
    assert png.shape[:2] == (spec["images"][0]["height"], spec["images"][0]["width"]) == (16, 32)
    ids = rgb_to_id(png)
    areas = {s["id"]: s["area"] for s in spec["annotations"][0]["segments_info"]}
    assert {int(i): int((ids == i).sum()) for i in np.unique(ids)} == areas
    assert sorted(areas.values()) == [8 * 8, 16 * 32 - 8 * 8]  # the circle: 2x4 cells of 2x4 px each


def test_redraw_image_flag_reaches_the_pipeline(tiny_pipeline_dir, export, tmp_path):
    """--redraw-image redraws each image for its map (other images, the same maps); the setting
    is recorded with the output; the tiny folder's default is off."""
    assert json.loads((export / "panoptic.json").read_text())["info"]["redraw_image"] is False
    assert _generate(tiny_pipeline_dir, tmp_path / "r", "--redraw-image") == 0
    assert json.loads((tmp_path / "r" / "panoptic.json").read_text())["info"]["redraw_image"] is True
    for i in range(2):
        plain, redrawn = (np.asarray(Image.open(d / f"{i:03d}_image.png")) for d in (export, tmp_path / "r"))
        assert not np.array_equal(plain, redrawn)
        maps = [np.asarray(Image.open(d / "panoptic" / f"{i:03d}.png")) for d in (export, tmp_path / "r")]
        assert np.array_equal(*maps)
    assert _generate(tiny_pipeline_dir, tmp_path / "n", "--no-redraw-image") == 0
    assert np.array_equal(
        np.asarray(Image.open(export / "000_image.png")),
        np.asarray(Image.open(tmp_path / "n" / "000_image.png")),
    )


def test_self_check_flag_reaches_the_pipeline(tiny_pipeline_dir, export, tmp_path, pipeline_calls):
    """--self-check N is the call's number of extra draws and is recorded with the output; the tiny
    folder's default is 0 (off)."""
    assert json.loads((export / "panoptic.json").read_text())["info"]["self_check"] == 0
    assert _generate(tiny_pipeline_dir, tmp_path / "s", "--self-check", "2") == 0
    assert [k["self_check"] for k in pipeline_calls] == [2]
    assert json.loads((tmp_path / "s" / "panoptic.json").read_text())["info"]["self_check"] == 2


def test_image_map_guidance_flag_reaches_the_redraw(tiny_pipeline_dir, tmp_path):
    """--image-map-guidance changes the redrawn pictures, not the maps, and is recorded; without
    the redraw (no image drawn for a given map) it is not."""
    assert _generate(tiny_pipeline_dir, tmp_path / "a", "--redraw-image") == 0
    assert _generate(tiny_pipeline_dir, tmp_path / "b", "--redraw-image", "--image-map-guidance", "2.5") == 0
    info = [json.loads((tmp_path / d / "panoptic.json").read_text())["info"] for d in ("a", "b")]
    assert (info[0]["image_map_guidance_scale"], info[1]["image_map_guidance_scale"]) == (0.0, 2.5)
    images = [np.asarray(Image.open(tmp_path / d / "000_image.png")) for d in ("a", "b")]
    maps = [np.asarray(Image.open(tmp_path / d / "panoptic" / "000.png")) for d in ("a", "b")]
    assert not np.array_equal(*images) and np.array_equal(*maps)
    assert (
        _generate(tiny_pipeline_dir, tmp_path / "c", "--no-redraw-image", "--image-map-guidance", "2.5") == 0
    )
    assert (
        "image_map_guidance_scale" not in json.loads((tmp_path / "c" / "panoptic.json").read_text())["info"]
    )
    assert _generate(tiny_pipeline_dir, tmp_path / "d", "--image-map-guidance", "-1") == 2


def test_best_of_flag_reaches_the_pipeline(tiny_pipeline_dir, export, tmp_path, pipeline_calls):
    """--best-of K is the call's number of whole draws per prompt and is recorded with the output;
    the tiny folder's default is 1 (off)."""
    assert json.loads((export / "panoptic.json").read_text())["info"]["best_of"] == 1
    assert _generate(tiny_pipeline_dir, tmp_path / "b", "--best-of", "2") == 0
    assert [k["best_of"] for k in pipeline_calls] == [2]
    assert json.loads((tmp_path / "b" / "panoptic.json").read_text())["info"]["best_of"] == 2


def test_avoid_touching_flag_reaches_the_pipeline(tiny_pipeline_dir, export, tmp_path, pipeline_calls):
    """--avoid-touching / --no-avoid-touching reach the call and are recorded; neither is the
    folder's (the tiny folder's: off)."""
    assert json.loads((export / "panoptic.json").read_text())["info"]["avoid_touching"] is False
    assert _generate(tiny_pipeline_dir, tmp_path / "a", "--self-check", "1", "--avoid-touching") == 0
    assert _generate(tiny_pipeline_dir, tmp_path / "b", "--no-avoid-touching") == 0
    # without a self check (the tiny folder's: 0) nothing is drawn again: recorded as off
    assert _generate(tiny_pipeline_dir, tmp_path / "c", "--avoid-touching") == 0
    assert [k["avoid_touching"] for k in pipeline_calls] == [True, False, True]
    info = [json.loads((tmp_path / d / "panoptic.json").read_text())["info"] for d in ("a", "b", "c")]
    assert [i["avoid_touching"] for i in info] == [True, False, False]


@pytest.mark.parametrize(
    ("flag", "key"), [("--separate-touching", "separate_touching"), ("--spread-things", "spread_things")]
)
def test_map_gap_flags_reach_the_pipeline(tiny_pipeline_dir, export, tmp_path, pipeline_calls, flag, key):
    """--separate-touching / --spread-things PX reach the call and are recorded as they acted: the gap
    with the redraw, 0 without it (the tiny folder neither redraws nor bites nor spreads)."""
    assert json.loads((export / "panoptic.json").read_text())["info"][key] == 0
    assert _generate(tiny_pipeline_dir, tmp_path / "a", "--redraw-image", flag, "3") == 0
    assert _generate(tiny_pipeline_dir, tmp_path / "b", flag, "3") == 0
    assert [k[key] for k in pipeline_calls] == [3, 3]
    info = [json.loads((tmp_path / d / "panoptic.json").read_text())["info"] for d in ("a", "b")]
    assert [i[key] for i in info] == [3, 0]


def test_snap_shapes_flag_reaches_the_pipeline(tiny_pipeline_dir, export, tmp_path, pipeline_calls):
    """--snap-shapes / --no-snap-shapes reach the call and are recorded as they acted: on with the
    redraw, off without it (the tiny folder neither redraws nor snaps)."""
    assert json.loads((export / "panoptic.json").read_text())["info"]["snap_shapes"] is False
    assert _generate(tiny_pipeline_dir, tmp_path / "a", "--redraw-image", "--snap-shapes") == 0
    assert _generate(tiny_pipeline_dir, tmp_path / "b", "--snap-shapes") == 0
    assert _generate(tiny_pipeline_dir, tmp_path / "c", "--redraw-image", "--no-snap-shapes") == 0
    assert [k["snap_shapes"] for k in pipeline_calls] == [True, True, False]
    info = [json.loads((tmp_path / d / "panoptic.json").read_text())["info"] for d in ("a", "b", "c")]
    assert [i["snap_shapes"] for i in info] == [True, False, False]


def test_colour_check_flag_reaches_the_pipeline(tiny_pipeline_dir, export, tmp_path, pipeline_calls):
    """--colour-check / --no-colour-check reach the call and are recorded as they acted: on with a
    self check, off without one (the tiny folder has neither)."""
    assert json.loads((export / "panoptic.json").read_text())["info"]["colour_check"] is False
    assert _generate(tiny_pipeline_dir, tmp_path / "a", "--self-check", "1", "--colour-check") == 0
    assert _generate(tiny_pipeline_dir, tmp_path / "b", "--colour-check") == 0
    assert _generate(tiny_pipeline_dir, tmp_path / "c", "--self-check", "1", "--no-colour-check") == 0
    assert [k["colour_check"] for k in pipeline_calls] == [True, True, False]
    info = [json.loads((tmp_path / d / "panoptic.json").read_text())["info"] for d in ("a", "b", "c")]
    assert [i["colour_check"] for i in info] == [True, False, False]


def test_cogen_steps_flag_reaches_the_pipeline(tiny_pipeline_dir, export, tmp_path, pipeline_calls):
    """--cogen-steps N reaches the call and is recorded as it acted: N with the redraw and fewer
    steps than --steps (2), 0 without the redraw or with as many steps."""
    assert json.loads((export / "panoptic.json").read_text())["info"]["cogen_steps"] == 0
    runs = (("a", "--redraw-image", "--cogen-steps", "1"), ("b", "--cogen-steps", "1"))
    runs += (("c", "--redraw-image", "--cogen-steps", "2"),)
    for name, *flags in runs:
        assert _generate(tiny_pipeline_dir, tmp_path / name, *flags) == 0
    assert [k["cogen_steps"] for k in pipeline_calls] == [1, 1, 2]
    info = [json.loads((tmp_path / d / "panoptic.json").read_text())["info"] for d in ("a", "b", "c")]
    assert [i["cogen_steps"] for i in info] == [1, 0, 0]
    with pytest.raises(SystemExit):
        _generate(tiny_pipeline_dir, tmp_path / "d", "--cogen-steps", "two")


@pytest.mark.parametrize(
    ("flag", "key", "value"), [("--colour-split", "colour_split", 0.2), ("--misshapen", "misshapen", 0.9)]
)
def test_check_flags_reach_the_pipeline(
    tiny_pipeline_dir, export, tmp_path, pipeline_calls, flag, key, value
):
    """--colour-split SHARE and --misshapen RATIO reach the call and are recorded as they acted: the
    value with a self check or best of K, 0 without one (the tiny folder checks nothing)."""
    assert json.loads((export / "panoptic.json").read_text())["info"][key] == 0.0
    assert _generate(tiny_pipeline_dir, tmp_path / "a", "--self-check", "1", flag, str(value)) == 0
    assert _generate(tiny_pipeline_dir, tmp_path / "b", "--best-of", "2", flag, str(value)) == 0
    assert _generate(tiny_pipeline_dir, tmp_path / "c", flag, str(value)) == 0
    assert [k[key] for k in pipeline_calls] == [value, value, value]
    info = [json.loads((tmp_path / d / "panoptic.json").read_text())["info"] for d in ("a", "b", "c")]
    assert [i[key] for i in info] == [value, value, 0.0]


@pytest.mark.parametrize(
    ("flag", "key", "value"), [("--picture-match", "picture_match", 0.5), ("--restarts", "restarts", 2)]
)
def test_self_check_flags_reach_the_pipeline(
    tiny_pipeline_dir, export, tmp_path, pipeline_calls, flag, key, value
):
    """--picture-match IOU and --restarts N reach the call and are recorded as they acted: the
    value with a self check, 0 with best of K (it replaces the self check) or without a check."""
    assert json.loads((export / "panoptic.json").read_text())["info"][key] == 0
    assert _generate(tiny_pipeline_dir, tmp_path / "a", "--self-check", "1", flag, str(value)) == 0
    assert _generate(tiny_pipeline_dir, tmp_path / "b", "--best-of", "2", flag, str(value)) == 0
    assert _generate(tiny_pipeline_dir, tmp_path / "c", flag, str(value)) == 0
    assert [k[key] for k in pipeline_calls] == [value, value, value]
    info = [json.loads((tmp_path / d / "panoptic.json").read_text())["info"] for d in ("a", "b", "c")]
    assert [i[key] for i in info] == [value, 0, 0]
