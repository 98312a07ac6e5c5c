"""``pandiff evaluate`` end to end on a tiny random model and a tiny world."""

import json

import pytest
import torch

from pandiff.cli import main
from pandiff.data.panoptic_map import PanopticMap
from pandiff.errors import ConfigError
from pandiff.evaluation.evaluate import EvaluationOptions, evaluate

HEADER = {"mode", "model", "weights", "data", "dataset", "split", "n", "sampler", "map_sampler", "steps", "guidance_scale",
          "map_guidance_scale", "map_cleanup", "one_piece_instances", "redraw_image", "self_check", "best_of", "avoid_touching", "separate_touching", "snap_shapes", "spread_things", "cogen_steps", "colour_split", "misshapen", "picture_match", "restarts", "colour_check", "image_map_guidance_scale", "seed", "generators", "prompts_cut", "batch", "prompts", "judge", "options", "metrics", "skipped"}  # fmt: skip


def options(pipe_dir, world, tmp_path, **kw) -> EvaluationOptions:
    return EvaluationOptions(
        model=str(pipe_dir), data=str(world), out=str(tmp_path / "report.json"), n=3, steps=2, batch=3,
        progress=False, **kw,
    )  # fmt: skip


def test_cogen_command_writes_json_and_markdown(
    tiny_pipeline_dir, tiny_world, tiny_judge_dir, tmp_path, capsys, monkeypatch
):
    from pandiff.world import relayout

    floor_calls = []  # the floor sees the evaluated prompts and scenes; its values reach the report

    def spy(specs, prompts, real_maps):
        floor_calls.append(([s["image_id"] for s in specs], list(prompts), len(real_maps)))
        return [0.1, 0.2, 0.3, float("nan")][: len(specs)]

    monkeypatch.setattr(relayout, "mcd_floor", spy)
    typical_calls = []

    def typical_spy(specs, prompts, real_maps):
        typical_calls.append(([s["image_id"] for s in specs], list(prompts), len(real_maps)))
        return [0.05, 0.15, 0.1, float("nan")][: len(specs)], [0.0, 0.1, 0.05, float("nan")][: len(specs)]

    monkeypatch.setattr(relayout, "mcd_typical", typical_spy)
    out = tmp_path / "eval" / "report.json"
    args = [
        "evaluate",
        "--model",
        str(tiny_pipeline_dir),
        "--data",
        str(tiny_world),
        "--n",
        "4",
        "--steps",
        "2",
    ]
    args += ["--batch", "4", "--judge", str(tiny_judge_dir), "--allow-weak-judge", "--out", str(out)]
    assert main(args) == 0
    report = json.loads(out.read_text())
    assert set(report) == HEADER | {"samples"}  # a judged cogen run records each scene's verdicts
    assert report["generators"] == "shared"  # the default, as in the reports so far
    from pandiff.pipeline import PanopticDiffusionPipeline

    assert (
        report["weights"]
        == PanopticDiffusionPipeline.from_pretrained(tiny_pipeline_dir).weights_fingerprint()
    )
    assert report["mode"] == "cogen" and report["dataset"] == "world" and report["n"] == 4
    assert report["sampler"] == report["map_sampler"] == "dpmsolver++" and report["steps"] == 2
    assert report["guidance_scale"] == 2.0 and report["map_guidance_scale"] == 1.0  # the model folder's
    assert report["redraw_image"] is False  # the tiny folder does not redraw
    assert report["self_check"] == 0 and report["best_of"] == 1  # nor check itself, nor draw several
    assert report["avoid_touching"] is False and report["separate_touching"] == 0
    assert report["snap_shapes"] is False and report["spread_things"] == 0 and report["cogen_steps"] == 0
    assert report["colour_split"] == 0.0 and report["misshapen"] == 0.0
    assert report["picture_match"] == 0.0 and report["restarts"] == 0
    assert report["map_cleanup"] == 3  # the pipeline default
    assert report["judge"]["path"] == str(tiny_judge_dir) and report["judge"]["val_miou"] > 0
    metrics = report["metrics"]
    assert set(metrics) == {
        "mcd",
        "mcd_floor",
        "mcd_typical",
        "map_adherence",
        "image_adherence",
        "image_colour_accuracy",
        "image_relations",
        "image_map_agreement",
        "image_map_agreement_touching",
        "judge_miou",
        "judge_pq",
        "world_fid",
        "world_kid",
    }
    assert all(m["how"] for m in metrics.values())
    assert 0.0 <= metrics["mcd"]["value"] <= 2.0
    floor = metrics["mcd_floor"]  # the world's own layouts for the same prompts (test_relayout)
    assert floor_calls == [
        ([r["image_id"] for r in report["samples"]], [r["prompt"] for r in report["samples"]], 4)
    ]
    assert floor["value"] == pytest.approx(0.2) and floor["judged_on"] == "map"  # NaN scenes left out
    assert floor["details"]["scenes_without_layout"] == 1
    assert sum(b["n"] for b in floor["details"]["by_bucket"].values()) == 4
    model = sum(b["model"] * b["n"] for b in floor["details"]["by_bucket"].values()) / 4
    assert model == pytest.approx(metrics["mcd"]["value"])  # the model's MCD split by bucket
    typical = metrics["mcd_typical"]  # one typical layout per prompt (test_relayout)
    assert typical_calls == floor_calls
    assert typical["value"] == pytest.approx(0.1) and typical["judged_on"] == "map"
    assert typical["details"]["per_bin_median"] == pytest.approx(0.05)
    assert typical["details"]["scenes_without_layout"] == 1 and typical["details"]["draws"] == 64
    assert {b: v["model"] for b, v in typical["details"]["by_bucket"].items()} == {
        b: v["model"] for b, v in floor["details"]["by_bucket"].items()
    }
    assert 0.0 <= metrics["map_adherence"]["value"] <= 1.0
    assert set(metrics["map_adherence"]["details"]) >= {"counts", "categories", "stuff_present", "by_bucket"}
    assert (
        metrics["image_adherence"]["judged_on"] == "image" and metrics["map_adherence"]["judged_on"] == "map"
    )
    by_bucket = metrics["image_adherence"]["details"]
    assert (
        by_bucket["all"]["n"] == 4
        and sum(by_bucket[b]["n"] for b in ("1", "2", "3", "4+") if b in by_bucket) == 4
    )
    truth = report["judge"]["ground_truth"]
    assert 0.0 <= truth["count_accuracy"] <= 1.0 and 0.0 <= truth["miou"] <= 1.0
    assert set(report["skipped"]) == {"fid", "clip_score"}
    assert "--inception" in report["skipped"]["fid"] and "--clip" in report["skipped"]["clip_score"]
    markdown = (tmp_path / "eval" / "report.md").read_text()
    assert "| metric | judged on | value | how it was measured |" in markdown and "| mcd | map |" in markdown
    assert "| mcd_floor | map |" in markdown and "| mcd_typical | map |" in markdown
    assert markdown.index("| image_adherence |") < markdown.index("| map_adherence |")
    assert "skipped fid" in capsys.readouterr().out


def test_mcd_references_of_a_bucket_without_layouts_are_nan_without_a_warning(monkeypatch):
    import warnings
    from types import SimpleNamespace

    import numpy as np

    from pandiff.evaluation import evaluate as ev
    from pandiff.evaluation.report import Report
    from pandiff.world import relayout
    from pandiff.world.generator import world_category_table

    table = world_category_table()
    grass, sky = table.index_of_name("grass"), table.index_of_name("sky")
    cat = np.full((8, 8), grass)
    cat[:2] = sky  # the real map: 25% sky, 75% grass
    real_map = PanopticMap(cat, np.zeros((8, 8), np.int64), table)
    gen_map = PanopticMap(np.full((8, 8), grass), np.zeros((8, 8), np.int64), table)  # all grass: MCD 0.5
    specs = [{"image_id": i, "things": [{}] * k} for i, k in enumerate([1, 1, 2, 2])]
    # the two-thing bucket's scenes got no layout; the one-thing bucket's floors are 0.1 and 0.3
    monkeypatch.setattr(relayout, "mcd_floor", lambda s, p, m: [0.1, 0.3, float("nan"), float("nan")])
    typical = [0.0, 0.2, float("nan"), float("nan")]
    monkeypatch.setattr(relayout, "mcd_typical", lambda s, p, m: (typical, typical))
    samples = SimpleNamespace(maps=[gen_map] * 4, prompts=["x"] * 4)
    report = Report({})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy's "Mean of empty slice" would fail here
        ev._mcd_references(samples, SimpleNamespace(maps=[real_map] * 4), specs, report)
    floor = report.to_dict()["metrics"]["mcd_floor"]
    assert floor["value"] == pytest.approx(0.2)  # the scenes without layout left out
    assert floor["details"]["scenes_without_layout"] == 2
    buckets = floor["details"]["by_bucket"]
    # the two-thing bucket's floor is NaN, which the report writes as null
    assert buckets["1"]["floor"] == pytest.approx(0.2) and buckets["2"]["floor"] is None
    assert buckets["1"]["model"] == pytest.approx(0.5) and buckets["2"]["model"] == pytest.approx(0.5)
    typical = report.to_dict()["metrics"]["mcd_typical"]
    assert typical["value"] == pytest.approx(0.1) and typical["details"]["per_bin_median"] == pytest.approx(
        0.1
    )
    assert typical["details"]["by_bucket"]["1"]["typical"] == pytest.approx(0.1)
    assert typical["details"]["by_bucket"]["2"]["typical"] is None
    assert typical["details"]["scenes_without_layout"] == 2
    monkeypatch.setattr(relayout, "mcd_floor", lambda s, p, m: [float("nan")] * 4)
    monkeypatch.setattr(relayout, "mcd_typical", lambda s, p, m: ([float("nan")] * 4, [float("nan")] * 4))
    report = Report({})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ev._mcd_references(samples, SimpleNamespace(maps=[real_map] * 4), specs, report)
    metrics = report.to_dict()["metrics"]
    assert metrics["mcd_floor"]["value"] is None and metrics["mcd_typical"]["value"] is None
    assert metrics["mcd_typical"]["details"]["per_bin_median"] is None


def test_map2image_and_image2map_modes(tiny_pipeline_dir, tiny_world, tiny_judge_dir, tmp_path):
    m2i = evaluate(options(tiny_pipeline_dir, tiny_world, tmp_path, mode="map2image", judge=str(tiny_judge_dir),
                           min_judge_miou=0.0))  # fmt: skip
    assert set(m2i["metrics"]) == {"colour_accuracy", "judge_miou", "judge_pq", "world_fid", "world_kid"}
    assert "given map" in m2i["metrics"]["judge_pq"]["how"]
    i2m = evaluate(options(tiny_pipeline_dir, tiny_world, tmp_path, mode="image2map", map_scheduler="ddpm"))
    assert set(i2m["metrics"]) == {"mcd", "pq", "miou", "map_adherence"}
    assert (i2m["sampler"], i2m["map_sampler"]) == ("dpmsolver++", "ddpm")  # the map's own sampler
    assert 0.0 <= i2m["metrics"]["pq"]["value"] <= 1.0
    assert i2m["skipped"] == {}  # image -> map needs no Inception, CLIP or judge


def test_downstream_mode_compares_generated_and_real_training_data(tiny_pipeline_dir, tiny_world, tmp_path):
    report = evaluate(options(tiny_pipeline_dir, tiny_world, tmp_path, mode="downstream", judge_steps=4))
    metrics = report["metrics"]
    real, generated = metrics["downstream_miou_real"]["value"], metrics["downstream_miou_generated"]["value"]
    assert real > 0 and metrics["downstream_miou_ratio"]["value"] == pytest.approx(generated / real)
    real_pq, generated_pq = (
        metrics["downstream_pq_real"]["value"],
        metrics["downstream_pq_generated"]["value"],
    )
    expected = generated_pq / real_pq if real_pq > 0 else None  # JSON null: undefined ratio
    assert metrics["downstream_pq_ratio"]["value"] == (
        pytest.approx(expected) if expected is not None else None
    )
    assert report["split"] == "train" and report["n"] == 3


@pytest.mark.parametrize("size", [0, 4])
def test_map_cleanup_reaches_the_pipeline_and_the_report(
    tiny_pipeline_dir, tiny_world, tmp_path, monkeypatch, size
):
    sizes = []
    real = PanopticMap.absorb_slivers
    monkeypatch.setattr(PanopticMap, "absorb_slivers", lambda self, s=3: sizes.append(s) or real(self, s))
    report = evaluate(options(tiny_pipeline_dir, tiny_world, tmp_path, mode="image2map", map_cleanup=size))
    assert sizes == ([size] * 3 if size else [])  # one clean-up per generated map (n=3), none when off
    assert report["map_cleanup"] == size


@pytest.mark.parametrize("on", [None, True])
def test_one_piece_instances_reaches_the_pipeline_and_the_report(
    tiny_pipeline_dir, tiny_world, tmp_path, monkeypatch, on
):
    calls = []
    real = PanopticMap.keep_largest_pieces
    monkeypatch.setattr(PanopticMap, "keep_largest_pieces", lambda self: calls.append(1) or real(self))
    report = evaluate(
        options(tiny_pipeline_dir, tiny_world, tmp_path, mode="image2map", one_piece_instances=on)
    )
    assert len(calls) == (3 if on else 0)  # one per generated map (n=3); the tiny folder's default is off
    assert report["one_piece_instances"] is bool(on)


@pytest.mark.parametrize("redraw", [None, False, True])
def test_redraw_reaches_the_pipeline_and_the_report(
    tiny_pipeline_dir, tiny_world, tmp_path, monkeypatch, redraw
):
    """cogen redraws each image for its map when asked (the tiny folder's default is off)."""
    from pandiff.pipeline import PanopticDiffusionPipeline

    batches, scales = [], []  # per redrawn batch: its size, and the image-side map guidance it got
    real = PanopticDiffusionPipeline.redraw

    def spy(self, text, empty, maps, settings, *a, **k):
        batches.append(len(text))
        scales.append(settings["image_map_guidance_scale"])
        return real(self, text, empty, maps, settings, *a, **k)

    monkeypatch.setattr(PanopticDiffusionPipeline, "redraw", spy)
    report = evaluate(options(tiny_pipeline_dir, tiny_world, tmp_path, redraw_image=redraw))
    assert batches == ([3] if redraw else [])  # one batch of n=3 prompts, redrawn or not
    assert report["redraw_image"] is bool(redraw)
    # the image-side map guidance applies to the redraw only: recorded with it, else None
    assert report["image_map_guidance_scale"] == (0.0 if redraw else None)
    guided = evaluate(
        options(tiny_pipeline_dir, tiny_world, tmp_path, redraw_image=True, image_map_guidance=1.5)
    )
    assert guided["image_map_guidance_scale"] == 1.5 and scales[-1] == 1.5  # reported and used


def test_self_check_reaches_the_sampling_and_the_report(
    tiny_pipeline_dir, tiny_world, tmp_path, pipeline_calls
):
    report = evaluate(options(tiny_pipeline_dir, tiny_world, tmp_path, self_check=1))
    assert [k["self_check"] for k in pipeline_calls] == [1] and report["self_check"] == 1
    assert evaluate(options(tiny_pipeline_dir, tiny_world, tmp_path, mode="image2map"))["self_check"] is None


def test_avoid_touching_reaches_the_sampling_and_is_reported_where_it_acts(
    tiny_pipeline_dir, tiny_world, tmp_path, pipeline_calls
):
    """avoid_touching reaches the call; the report says True only where a self check (or best of
    K) draws again, since without one it changes nothing."""
    checked = evaluate(options(tiny_pipeline_dir, tiny_world, tmp_path, self_check=1, avoid_touching=True))
    unchecked = evaluate(options(tiny_pipeline_dir, tiny_world, tmp_path, avoid_touching=True))
    assert [k["avoid_touching"] for k in pipeline_calls] == [True, True]
    assert (checked["avoid_touching"], unchecked["avoid_touching"]) == (True, False)
    assert (
        evaluate(options(tiny_pipeline_dir, tiny_world, tmp_path, mode="image2map"))["avoid_touching"] is None
    )


def test_snap_shapes_reaches_the_sampling_and_is_reported_where_it_acts(
    tiny_pipeline_dir, tiny_world, tmp_path, pipeline_calls
):
    """snap_shapes reaches the call; the report gives it on only where the picture is redrawn, and
    nothing outside co-generation."""
    snapped = evaluate(options(tiny_pipeline_dir, tiny_world, tmp_path, redraw_image=True, snap_shapes=True))
    plain = evaluate(options(tiny_pipeline_dir, tiny_world, tmp_path, snap_shapes=True))
    assert [k["snap_shapes"] for k in pipeline_calls] == [True, True]
    assert (snapped["snap_shapes"], plain["snap_shapes"]) == (True, False)
    assert evaluate(options(tiny_pipeline_dir, tiny_world, tmp_path, mode="image2map"))["snap_shapes"] is None


@pytest.mark.parametrize(
    ("key", "value", "enabling", "off"),
    [
        ("separate_touching", 2, {"redraw_image": True}, 0),
        ("spread_things", 3, {"redraw_image": True}, 0),
        ("cogen_steps", 1, {"redraw_image": True}, 0),
        ("colour_split", 0.2, {"self_check": 1}, 0.0),
        ("misshapen", 0.9, {"self_check": 1}, 0.0),
        ("colour_check", True, {"self_check": 1}, False),
    ],
)
def test_sampling_settings_reach_the_call_and_are_reported_where_they_act(
    tiny_pipeline_dir, tiny_world, tmp_path, pipeline_calls, key, value, enabling, off
):
    """The setting reaches the call; the report gives it only where it acts (the map settings and
    cogen_steps with the redraw, below the call's 2 steps; the picture checks where something is
    drawn again, a self check or best of K; the tiny folder has neither: off), and None outside
    co-generation."""
    acting = evaluate(options(tiny_pipeline_dir, tiny_world, tmp_path, **enabling, **{key: value}))
    plain = evaluate(options(tiny_pipeline_dir, tiny_world, tmp_path, **{key: value}))
    assert [k[key] for k in pipeline_calls] == [value, value]
    assert (acting[key], plain[key], acting["steps"]) == (value, off, 2)
    assert evaluate(options(tiny_pipeline_dir, tiny_world, tmp_path, mode="image2map"))[key] is None


@pytest.mark.parametrize(("key", "value"), [("picture_match", 0.5), ("restarts", 2)])
def test_self_check_settings_reach_the_sampling_and_are_reported_where_they_act(
    tiny_pipeline_dir, tiny_world, tmp_path, pipeline_calls, key, value
):
    """picture_match and restarts reach the call; the report gives the value only where the self
    check runs (not with best of K, which replaces it; the tiny folder has neither: 0), nothing
    outside sampling."""
    checked = evaluate(options(tiny_pipeline_dir, tiny_world, tmp_path, self_check=1, **{key: value}))
    ranked = evaluate(
        options(tiny_pipeline_dir, tiny_world, tmp_path, self_check=1, best_of=2, **{key: value})
    )
    plain = evaluate(options(tiny_pipeline_dir, tiny_world, tmp_path, **{key: value}))
    assert [k[key] for k in pipeline_calls] == [value, value, value]
    assert (checked[key], ranked[key], plain[key]) == (value, 0, 0)
    assert evaluate(options(tiny_pipeline_dir, tiny_world, tmp_path, mode="image2map"))[key] is None


def test_the_report_counts_the_prompts_cut_to_the_text_window(
    tiny_pipeline_dir, tiny_world, tmp_path, monkeypatch
):
    """prompts_cut: the scenes none of whose captions fit the window, so their prompt was cut. The
    tiny world's captions fit; told that every caption is longer, all n prompts count as cut."""
    from pandiff.encoders.text import TextEncoder

    assert evaluate(options(tiny_pipeline_dir, tiny_world, tmp_path))["prompts_cut"] == 0
    real = TextEncoder.count_tokens
    monkeypatch.setattr(TextEncoder, "count_tokens", lambda self, p: real(self, p) + self.max_length)
    report = evaluate(options(tiny_pipeline_dir, tiny_world, tmp_path))
    assert report["prompts_cut"] == report["n"] == 3
    assert "- **prompts_cut**: 3" in (tmp_path / "report.md").read_text()


def test_bad_options_are_rejected(tiny_pipeline_dir, tiny_world, tmp_path, coco_sample_dir):
    with pytest.raises(ConfigError, match="--mode"):
        evaluate(options(tiny_pipeline_dir, tiny_world, tmp_path, mode="text2video"))
    with pytest.raises(ConfigError, match=".json"):
        evaluate(EvaluationOptions(model=None, data=str(tiny_world), out=str(tmp_path / "report.md")))
    with pytest.raises(ConfigError, match="--map-cleanup must be >= 0"):
        evaluate(options(tiny_pipeline_dir, tiny_world, tmp_path, map_cleanup=-1))
    with pytest.raises(ConfigError, match="--generators must be one of shared, per-sample"):
        evaluate(options(tiny_pipeline_dir, tiny_world, tmp_path, generators="each"))


def test_per_scene_records_match_the_headline_figures(
    tiny_pipeline_dir, tiny_world, tiny_judge_dir, tmp_path
):
    """A judged cogen report holds one record per scene, in scene order, whose verdicts give back
    the report's own rates (overall and by bucket)."""
    opts = options(tiny_pipeline_dir, tiny_world, tmp_path, judge=str(tiny_judge_dir), min_judge_miou=0.0)
    opts.n, opts.batch = 6, 4
    report = evaluate(opts)
    records = report["samples"]
    assert [r["index"] for r in records] == list(range(6))
    # each record is its own scene's: the scenes in evaluation order, each with its spec's bucket
    from pandiff.world.checks import load_specs
    from pandiff.world.judge_training import load_split
    from pandiff.world.judged import bucket as bucket_of

    real = load_split(str(tiny_world), "val", 32, 32, limit=6)
    specs = load_specs(str(tiny_world), "val")
    assert [r["image_id"] for r in records] == [int(i) for i in real.image_ids]
    assert [r["bucket"] for r in records] == [bucket_of(specs[i]) for i in real.image_ids]
    assert all(r["prompt"] in captions for r, captions in zip(records, real.captions))
    details = report["metrics"]["image_adherence"]["details"]
    for bucket, rates in details.items():
        chosen = [r for r in records if bucket == "all" or r["bucket"] == bucket]
        assert rates["n"] == len(chosen)
        assert rates["adherence"] == pytest.approx(sum(r["adherence"] for r in chosen) / len(chosen))
        assert rates["agreement"] == pytest.approx(sum(r["agreement"] for r in chosen) / len(chosen))
    own = report["metrics"]["map_adherence"]["value"]
    assert own == pytest.approx(sum(r["map_adherence"] for r in records) / 6)
    correct, judged = (sum(r["colour"][k] for r in records) for k in (0, 1))
    assert report["metrics"]["image_colour_accuracy"]["value"] == (
        pytest.approx(correct / judged) if judged else None
    )
    # without a judge there is nothing judged on the image to pair: no records
    assert "samples" not in evaluate(options(tiny_pipeline_dir, tiny_world, tmp_path))


def test_per_sample_generators_make_a_scene_independent_of_its_batch(tiny_pipeline_dir, tiny_world, tmp_path):
    """With one generator per scene a scene's sample is the same whatever the batch size (and so
    whatever the other scenes draw); a shared generator hands out noise in batch order."""
    from pandiff.evaluation.evaluate import generate, sample_seed
    from pandiff.pipeline import PanopticDiffusionPipeline
    from pandiff.world.judge_training import load_split

    pipe = PanopticDiffusionPipeline.from_pretrained(str(tiny_pipeline_dir))
    real = load_split(str(tiny_world), "val", pipe.image_size, pipe.map_size, limit=4)

    def sampled(generators, batch):
        opts = options(tiny_pipeline_dir, tiny_world, tmp_path, generators=generators)
        opts.batch = batch
        return generate(pipe, real, opts, "cogen").images

    assert torch.equal(sampled("per-sample", 4), sampled("per-sample", 1))
    assert not torch.equal(sampled("shared", 4), sampled("shared", 1))
    # the seeds of (seed, index) pairs are distinct across neighbouring seeds and indices
    seeds = {sample_seed(s, i) for s in range(3) for i in range(50)}
    assert len(seeds) == 150 and all(0 <= x < 2**63 for x in seeds)


def test_report_names_the_bundled_model_when_none_is_given(tiny_pipeline_dir, tiny_world, tmp_path):
    from pandiff.pipeline import PanopticDiffusionPipeline

    opts = options(tiny_pipeline_dir, tiny_world, tmp_path, mode="image2map")
    opts.model = None  # as `pandiff evaluate` without --model; the pipeline is handed in
    report = evaluate(opts, pipe=PanopticDiffusionPipeline.from_pretrained(str(tiny_pipeline_dir)))
    assert report["model"].endswith("weights/world-s (bundled)")
