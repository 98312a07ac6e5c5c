"""``pandiff synthesize``: pair i depends only on (seed, i) (batch, processes, a SIGKILL and
--resume), foreign folders are refused, and the dataset reads back as COCO panoptic."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pandiff.data.coco import CocoPanoptic
from pandiff.data.coco_format import rgb_to_id
from pandiff.errors import ConfigError, DataError
from pandiff.synthesize import (
    SynthesizeOptions,
    pair_generators,
    pair_seed,
    paths,
    read_prompts,
    shard_file,
    synthesize,
)

PROMPTS = [
    "two red circles on the grass",
    "a blue square above a green star",
    "a yellow triangle on the sand",
]
N, STEPS = 24, 4


@pytest.fixture(scope="module")
def tiny_pipe(tiny_pipeline_dir):
    from pandiff.pipeline import PanopticDiffusionPipeline

    MODEL[:] = [str(tiny_pipeline_dir)]
    return PanopticDiffusionPipeline.from_pretrained(tiny_pipeline_dir)


@pytest.fixture(scope="module")
def prompts_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("prompts") / "prompts.txt"
    path.write_text("\n".join([PROMPTS[0], "", "  ", *PROMPTS[1:]]) + "\n")  # blank lines are skipped
    return path


MODEL: list[str] = []  # the tiny pipeline's folder, set by the tiny_pipe fixture


def options(out, prompts_file, **kw) -> SynthesizeOptions:
    base = {"out": str(out), "n": N, "prompts": str(prompts_file), "per_prompt": 2, "batch": 4,
            "steps": STEPS, "shard_size": 4, "precision": "bf16", "progress": False}  # fmt: skip
    return SynthesizeOptions(**{**base, "model": MODEL[0], **kw})


@pytest.fixture(scope="module")
def straight(tmp_path_factory, tiny_pipe, prompts_file) -> Path:
    """One uninterrupted single-process run at batch 4: the reference every other run must equal."""
    out = tmp_path_factory.mktemp("straight") / "data"
    synthesize(options(out, prompts_file), pipe=tiny_pipe)
    return out


def files(out: Path) -> dict[str, bytes]:
    """Every file of a dataset but the run's own bookkeeping, by relative path."""
    skip = {"synthesize.json", ".pandiff-output"}
    return {
        str(p.relative_to(out)): p.read_bytes()
        for p in sorted(out.rglob("*"))
        if p.is_file() and p.name not in skip and "shards" not in p.parts
    }


def assert_same_dataset(a: Path, b: Path) -> None:
    fa, fb = files(a), files(b)
    assert sorted(fa) == sorted(fb)
    different = [k for k in fa if fa[k] != fb[k]]
    assert not different, f"files differ: {different[:5]}"


def test_prompts_file_and_captions_order(tmp_path, prompts_file):
    assert read_prompts(prompts_file) == PROMPTS
    captions = {"annotations": [
        {"id": 7, "image_id": 2, "caption": "b second"}, {"id": 9, "image_id": 1, "caption": "a  second"},
        {"id": 3, "image_id": 2, "caption": "b first"}, {"id": 8, "image_id": 1, "caption": "a first"},
    ]}  # fmt: skip
    path = tmp_path / "captions.json"
    path.write_text(json.dumps(captions))
    assert read_prompts(captions_json=path) == ["a first", "a second", "b first", "b second"]
    path.write_text("{}")
    with pytest.raises(DataError, match="captions JSON"):
        read_prompts(captions_json=path)
    with pytest.raises(ConfigError, match="exactly one"):
        read_prompts(prompts_file, path)


def test_pair_seeds_differ_across_indices_and_runs():
    seeds = {pair_seed(s, i) for s in range(3) for i in range(100)}
    assert len(seeds) == 300  # seed + i would give 102 distinct values
    assert pair_seed(0, 5) == pair_seed(0, 5)


def test_dataset_reads_back_as_coco_panoptic(straight, tiny_pipe):
    p = paths(straight, "train")
    panoptic = json.loads(p["panoptic_json"].read_text())
    captions = json.loads(p["captions_json"].read_text())
    info = panoptic["info"]
    assert info["steps"] == STEPS and info["seed"] == 0 and info["sampler"] == "dpmsolver++"
    assert {"model", "guidance_scale", "map_guidance_scale", "pandiff_version"} <= set(info)
    assert [im["id"] for im in panoptic["images"]] == list(range(1, N + 1))
    # pair i draws prompt (i // per_prompt) mod len(prompts)
    by_id = {c["image_id"]: c["caption"] for c in captions["annotations"]}
    assert [by_id[i + 1] for i in range(N)] == [PROMPTS[(i // 2) % 3] for i in range(N)]
    # panopticapi's checks: the PNG's ids are exactly the JSON's, areas are pixel counts
    for ann in panoptic["annotations"]:
        ids = rgb_to_id(np.asarray(Image.open(p["panoptic"] / ann["file_name"]).convert("RGB")))
        segs = ann["segments_info"]
        assert sorted(s["id"] for s in segs) == sorted(int(i) for i in np.unique(ids) if i != 0)
        assert len({s["id"] for s in segs}) == len(segs)
        for s in segs:
            assert s["area"] == int((ids == s["id"]).sum())
            ys, xs = np.nonzero(ids == s["id"])
            assert s["bbox"] == [int(xs.min()), int(ys.min()), int(np.ptp(xs)) + 1, int(np.ptp(ys)) + 1]
        image = Image.open(p["images"] / ann["file_name"])
        assert image.size == ids.shape[::-1] == (tiny_pipe.image_size,) * 2
    first, second = (np.asarray(Image.open(p["images"] / f"{i:012d}.png")) for i in (1, 2))
    assert not np.array_equal(first, second)  # one prompt, two pairs: their own noise each
    data = CocoPanoptic(straight, "train", image_size=16, map_size=16)
    assert len(data) == N and data.table.to_coco() == tiny_pipe.table.to_coco()
    assert data[3]["captions"] == [PROMPTS[1]]
    assert not any(straight.glob("**/*.tmp"))


def test_pairs_equal_the_pipeline_with_the_same_generators(straight, tiny_pipe):
    """The dataset's pairs are the pipeline's own (same prompt, same per-pair generator)."""
    out = tiny_pipe(PROMPTS[1], num_inference_steps=STEPS, num_images=2, generator=pair_generators(0, [2, 3]))
    p = paths(straight, "train")
    data = CocoPanoptic(straight, "train", image_size=16, map_size=16)
    for k, index in enumerate((2, 3)):
        assert np.array_equal(
            np.asarray(Image.open(p["images"] / f"{index + 1:012d}.png")), np.asarray(out.images[k])
        )
        pmap = data.load_map(index)
        assert np.array_equal(pmap.category, out.maps[k].category)


def test_batch_size_does_not_change_the_pairs(tmp_path, straight, tiny_pipe, prompts_file):
    """Batch 1 draws the same pairs as batch 4 (bf16 forwards on this CPU are batch-invariant;
    see the module docstring of pandiff.synthesize)."""
    synthesize(options(tmp_path / "b1", prompts_file, batch=1), pipe=tiny_pipe)
    assert_same_dataset(straight, tmp_path / "b1")


def test_writer_processes_write_the_same_dataset(tmp_path, straight, tiny_pipe, prompts_file):
    """The GPU path: map decoding and PNG writing in a spawned worker process (same files)."""
    synthesize(options(tmp_path / "w", prompts_file, workers=1), pipe=tiny_pipe)
    assert_same_dataset(straight, tmp_path / "w")


def test_resume_redoes_exactly_the_missing_shards(tmp_path, straight, tiny_pipe, prompts_file):
    out = tmp_path / "data"
    shutil.copytree(straight, out)
    p = paths(out, "train")
    p["panoptic_json"].unlink()  # as if killed before the assembly
    p["captions_json"].unlink()
    shard_file(out, 1).unlink()  # shard 1 (pairs 4..7) was not committed
    (p["images"] / "000000000006.png").write_bytes(b"half a png")
    (p["panoptic"] / "000000000009.png").unlink()  # shard 2 lost a PNG: redone too
    summary = synthesize(options(out, prompts_file, resume=True), pipe=tiny_pipe)
    assert summary["resumed_shards"] == N // 4 - 2 and summary["written"] == 4 + 4
    assert_same_dataset(straight, out)


def test_refuses_foreign_or_mismatched_folders(tmp_path, straight, tiny_pipe, prompts_file):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    for resume in (False, True):
        with pytest.raises(ConfigError, match="choose another --out"):
            synthesize(options(foreign, prompts_file, resume=resume), pipe=tiny_pipe)
    assert [f.name for f in foreign.iterdir()] == ["notes.txt"]
    with pytest.raises(ConfigError, match="existing file"):
        synthesize(options(foreign / "notes.txt", prompts_file), pipe=tiny_pipe)
    with pytest.raises(ConfigError, match="pass --resume"):
        synthesize(options(straight, prompts_file), pipe=tiny_pipe)
    with pytest.raises(ConfigError, match="seed 0 -> 1"):
        synthesize(options(straight, prompts_file, seed=1, resume=True), pipe=tiny_pipe)
    with pytest.raises(ConfigError, match="--batch must be >= 1"):
        synthesize(options(tmp_path / "new", prompts_file, batch=0), pipe=tiny_pipe)


def _command(out: Path, model: Path, prompts_file: Path, *extra: str) -> list[str]:
    return ["synthesize", "--out", str(out), "--model", str(model), "--prompts", str(prompts_file),
            "--n", str(N), "--per-prompt", "2", "--batch", "4", "--shard-size", "4", "--steps", str(STEPS),
            "--precision", "bf16", "--no-progress", *extra]  # fmt: skip


def test_sigkill_then_resume_gives_the_straight_dataset(
    tmp_path, straight, tiny_pipe, tiny_pipeline_dir, prompts_file
):
    """A real SIGKILL of ``pandiff synthesize`` after its first shard; --resume finishes it."""
    out = tmp_path / "data"
    # Batch 1 (same pairs, see the batch test) makes many small steps, so the kill lands mid-run.
    args = _command(out, tiny_pipeline_dir, prompts_file, "--batch", "1")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "pandiff.cli", *args], env=env, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not shard_file(out, 0).exists():
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "no shard within 120 s"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert not paths(out, "train")["panoptic_json"].exists()  # killed before the end
    summary = synthesize(options(out, prompts_file, resume=True), pipe=tiny_pipe)
    assert 1 <= summary["resumed_shards"] < N // 4
    assert_same_dataset(straight, out)


@pytest.mark.skipif(shutil.which("torchrun") is None, reason="torchrun is not installed")
def test_two_cpu_processes_split_the_pairs(tmp_path, straight, tiny_pipeline_dir, prompts_file):
    """torchrun with 2 CPU processes (gloo): each writes its own shards, the main one assembles,
    and the dataset is the single process's. (``--`` stops torchrun's argparse from reading
    ``--n`` as an abbreviation of its own options.)"""
    out = tmp_path / "data"
    env = dict(os.environ, OMP_NUM_THREADS="1", ACCELERATE_USE_CPU="1")
    result = subprocess.run(
        ["torchrun", "--standalone", "--nproc_per_node", "2", "-m", "pandiff.cli", "--",
         *_command(out, tiny_pipeline_dir, prompts_file)],
        env=env, capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "over 2 process(es)" in result.stdout
    assert_same_dataset(straight, out)


def test_one_generator_per_sample_is_checked(tiny_pipe):
    with pytest.raises(ConfigError, match="3 generators for 2 samples"):
        tiny_pipe(PROMPTS[0], num_inference_steps=1, num_images=2, generator=pair_generators(0, range(3)))


def test_redraw_pairs_are_the_pipelines_and_the_setting_is_kept(tmp_path, straight, tiny_pipe, prompts_file):
    """With redraw_image the dataset's images are the pipeline's redrawn ones (pair by pair), the
    maps stay the co-generated ones, and --resume refuses to mix the two kinds of pairs."""
    out = tmp_path / "redrawn"
    synthesize(options(out, prompts_file, n=4, redraw_image=True), pipe=tiny_pipe)
    p = paths(out, "train")
    assert json.loads(p["panoptic_json"].read_text())["info"]["redraw_image"] is True
    pipe_out = tiny_pipe(PROMPTS[1], num_inference_steps=STEPS, num_images=2, generator=pair_generators(0, [2, 3]),
                         redraw_image=True)  # fmt: skip
    plain = paths(straight, "train")
    for k, index in enumerate((2, 3)):
        name = f"{index + 1:012d}.png"
        image = np.asarray(Image.open(p["images"] / name))
        assert np.array_equal(image, np.asarray(pipe_out.images[k]))
        assert not np.array_equal(image, np.asarray(Image.open(plain["images"] / name)))  # redrawn
        # the map is the co-generated one, as without the redraw
        assert Image.open(p["panoptic"] / name).tobytes() == Image.open(plain["panoptic"] / name).tobytes()
    with pytest.raises(ConfigError, match="redraw_image True -> False"):
        synthesize(options(out, prompts_file, n=4, redraw_image=False, resume=True), pipe=tiny_pipe)
    with pytest.raises(ConfigError, match="image_map_guidance_scale 0.0 -> 2.0"):
        synthesize(options(out, prompts_file, n=4, redraw_image=True, image_map_guidance=2.0, resume=True),
                   pipe=tiny_pipe)  # fmt: skip
    # the redraw with image-side map guidance: the pipeline's pairs with the same guidance
    guided = tmp_path / "guided"
    synthesize(options(guided, prompts_file, n=4, redraw_image=True, image_map_guidance=2.0), pipe=tiny_pipe)
    pipe_out = tiny_pipe(PROMPTS[1], num_inference_steps=STEPS, num_images=2, generator=pair_generators(0, [2, 3]),
                         redraw_image=True, image_map_guidance_scale=2.0)  # fmt: skip
    for k, index in enumerate((2, 3)):
        image = np.asarray(Image.open(paths(guided, "train")["images"] / f"{index + 1:012d}.png"))
        assert np.array_equal(image, np.asarray(pipe_out.images[k]))
        assert not np.array_equal(image, np.asarray(Image.open(p["images"] / f"{index + 1:012d}.png")))
    # without the redraw no image is drawn for a given map: the setting changes nothing, recorded as off
    unused = tmp_path / "unused"
    synthesize(options(unused, prompts_file, n=4, image_map_guidance=2.0), pipe=tiny_pipe)
    assert json.loads((unused / "synthesize.json").read_text())["config"]["image_map_guidance_scale"] == 0.0
    for name in sorted(paths(unused, "train")["images"].iterdir()):
        assert name.read_bytes() == (paths(straight, "train")["images"] / name.name).read_bytes()


def test_one_piece_maps_are_the_pipelines_and_the_setting_is_kept(
    tmp_path, straight, tiny_pipe, prompts_file
):
    """With one_piece_instances the dataset's maps (with and without the redraw) are the pipeline's
    one-piece maps, and --resume refuses to mix them with maps decoded without it."""
    for redraw in (False, True):
        out = tmp_path / f"one-piece-{redraw}"
        synthesize(
            options(out, prompts_file, n=4, one_piece_instances=True, redraw_image=redraw), pipe=tiny_pipe
        )
        assert json.loads((out / "synthesize.json").read_text())["config"]["one_piece_instances"] is True
        pipe_out = tiny_pipe(PROMPTS[1], num_inference_steps=STEPS, num_images=2, generator=pair_generators(0, [2, 3]),
                             redraw_image=redraw, one_piece_instances=True)  # fmt: skip
        pieces_kept = tiny_pipe(PROMPTS[1], num_inference_steps=STEPS, num_images=2,
                                generator=pair_generators(0, [2, 3]), redraw_image=redraw)  # fmt: skip
        # the random tiny model's maps do hold split instances, so the files below show the clean-up
        assert any(not np.array_equal(a.codes(), b.codes()) for a, b in zip(pipe_out.maps, pieces_kept.maps))
        for k, index in enumerate((2, 3)):
            png = np.asarray(Image.open(paths(out, "train")["panoptic"] / f"{index + 1:012d}.png"))
            rgb, _ = pipe_out.maps[k].resize(png.shape[0]).to_coco()
            assert np.array_equal(png, rgb)
        with pytest.raises(ConfigError, match="one_piece_instances True -> False"):
            synthesize(options(out, prompts_file, n=4, redraw_image=redraw, resume=True), pipe=tiny_pipe)


def test_resume_refuses_other_weights_under_the_same_model_path(tmp_path, straight, tiny_pipe, prompts_file):
    """The manifest and the COCO info block record the weights' fingerprint; a folder whose weights
    changed (retrained in place, same path) is refused, so one dataset never mixes two models."""
    from pandiff.pipeline import PanopticDiffusionPipeline

    fingerprint = tiny_pipe.weights_fingerprint()
    assert json.loads((straight / "synthesize.json").read_text())["config"]["weights"] == fingerprint
    assert json.loads(paths(straight, "train")["panoptic_json"].read_text())["info"]["weights"] == fingerprint
    other = PanopticDiffusionPipeline.from_pretrained(MODEL[0])
    with torch.no_grad():
        next(other.model.parameters()).add_(1e-3)
    with pytest.raises(ConfigError, match=f"weights '{fingerprint}' -> '{other.weights_fingerprint()}'"):
        synthesize(options(straight, prompts_file, resume=True), pipe=other)


def test_a_folder_from_before_the_redraw_setting_resumes(tmp_path, straight, tiny_pipe, prompts_file):
    """A manifest written before redraw_image existed was made without the redraw."""
    copy = tmp_path / "old"
    shutil.copytree(straight, copy)
    manifest = copy / "synthesize.json"
    data = json.loads(manifest.read_text())
    del data["config"]["redraw_image"]
    del data["config"]["image_map_guidance_scale"]
    del data["config"]["one_piece_instances"]
    del data["config"]["map_sampler"]  # sampled its maps with its "sampler"
    del data["config"]["weights"]  # not fingerprinted then: resumes unchecked
    manifest.write_text(json.dumps(data))
    assert synthesize(options(copy, prompts_file, resume=True), pipe=tiny_pipe)["written"] == 0
    with pytest.raises(ConfigError, match="redraw_image False -> True"):
        synthesize(options(copy, prompts_file, resume=True, redraw_image=True), pipe=tiny_pipe)
    with pytest.raises(ConfigError, match=re.escape("map_sampler 'dpmsolver++' -> 'ddim'")):
        synthesize(options(copy, prompts_file, resume=True, scheduler="ddim"))  # loads the folder with ddim
    with pytest.raises(ConfigError, match=re.escape("map_sampler 'dpmsolver++' -> 'ddpm'")):
        synthesize(options(copy, prompts_file, resume=True, map_scheduler="ddpm"))  # the map's alone


def test_resume_with_a_larger_n_grows_the_dataset(tmp_path, straight, tiny_pipe, prompts_file):
    """6 pairs (shards of 4: the second one partial), then --resume --n 24: the same dataset as a
    straight 24-pair run; shrinking is refused and leaves the folder as it was."""
    grow = tmp_path / "grow"
    synthesize(options(grow, prompts_file, n=6), pipe=tiny_pipe)
    assert len(json.loads(paths(grow, "train")["panoptic_json"].read_text())["images"]) == 6
    summary = synthesize(options(grow, prompts_file, resume=True), pipe=tiny_pipe)
    assert summary["resumed_shards"] == 1 and summary["written"] == N - 4  # shard 1 was partial: redone
    assert_same_dataset(straight, grow)
    assert json.loads((grow / "synthesize.json").read_text())["config"]["n"] == N
    with pytest.raises(ConfigError, match="can grow, not shrink"):
        synthesize(options(grow, prompts_file, n=8, resume=True), pipe=tiny_pipe)
    assert_same_dataset(straight, grow)


def _pipelines_pairs(tiny_pipe, **kw):
    """The pipeline's pairs 2 and 3 (prompt 1, per_prompt 2, seed 0) with the redraw and ``kw``."""
    gens = pair_generators(0, [2, 3])
    return tiny_pipe(
        PROMPTS[1], num_inference_steps=STEPS, num_images=2, generator=gens, redraw_image=True, **kw
    )


def _written_pairs_are_the_pipelines(out, tiny_pipe, **kw):
    """Pairs 2 and 3 of ``out`` (prompt 1, per_prompt 2) equal the pipeline's with ``kw`` and the
    same generators; returns the pipeline's output."""
    p = paths(out, "train")
    pipe_out = _pipelines_pairs(tiny_pipe, **kw)
    for k, index in enumerate((2, 3)):
        name = f"{index + 1:012d}.png"
        assert np.array_equal(np.asarray(Image.open(p["images"] / name)), np.asarray(pipe_out.images[k]))
        rgb, _ = pipe_out.maps[k].to_coco()
        assert np.array_equal(np.asarray(Image.open(p["panoptic"] / name)), rgb)
    return pipe_out


def test_self_checked_pairs_are_the_pipelines_and_the_setting_is_kept(tmp_path, tiny_pipe, prompts_file):
    """With self_check the dataset's pairs are the pipeline's self-checked ones (same generators),
    the setting is recorded, and --resume refuses to mix checked and unchecked pairs."""
    out = tmp_path / "checked"
    synthesize(options(out, prompts_file, n=4, self_check=1, redraw_image=True), pipe=tiny_pipe)
    assert json.loads(paths(out, "train")["panoptic_json"].read_text())["info"]["self_check"] == 1
    pipe_out = _written_pairs_are_the_pipelines(out, tiny_pipe, self_check=1)
    plain = _pipelines_pairs(tiny_pipe, self_check=0)
    # the tiny random model's maps miss the prompt, so the check drew them again: not the plain pairs
    assert any(
        not np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(pipe_out.images, plain.images)
    )
    with pytest.raises(ConfigError, match="self_check 1 -> 0"):
        synthesize(
            options(out, prompts_file, n=4, self_check=0, redraw_image=True, resume=True), pipe=tiny_pipe
        )


def test_best_of_pairs_are_the_pipelines_and_the_setting_is_kept(tmp_path, tiny_pipe, prompts_file):
    """With best_of the dataset's pairs are the pipeline's best-of-K ones (same generators), the
    setting is recorded, and --resume refuses to mix best-of-2 and plain pairs."""
    out = tmp_path / "best"
    synthesize(options(out, prompts_file, n=4, best_of=2, redraw_image=True), pipe=tiny_pipe)
    assert json.loads(paths(out, "train")["panoptic_json"].read_text())["info"]["best_of"] == 2
    _written_pairs_are_the_pipelines(out, tiny_pipe, best_of=2)
    with pytest.raises(ConfigError, match="best_of 2 -> 1"):
        synthesize(options(out, prompts_file, n=4, best_of=1, redraw_image=True, resume=True), pipe=tiny_pipe)


def test_avoid_touching_pairs_are_the_pipelines_and_the_setting_is_kept(
    tmp_path, tiny_pipe, prompts_file, monkeypatch
):
    """With the self check and avoid_touching the pairs are the pipeline's (same generators), the
    setting is recorded, and --resume refuses to mix it with pairs drawn without it; without a
    check it changes nothing and is recorded as off."""
    import pandiff.self_check as sc

    # The random model's maps fail the prompt anyway, and whether touching things then break a tie
    # depends on its numerics (bf16 differs between CPUs): every map passes the prompt and counts
    # one touching pair instead, so with the setting every row is drawn again, without it none is.
    monkeypatch.setattr(sc, "map_failures", lambda m, spec, exhaustive: 0)
    monkeypatch.setattr(sc, "count_disagreement", lambda drawn, seen: 0)
    monkeypatch.setattr(sc.wc, "touching_pairs", lambda pmap, **kw: 1)
    out = tmp_path / "apart"
    synthesize(
        options(out, prompts_file, n=4, self_check=1, avoid_touching=True, redraw_image=True), pipe=tiny_pipe
    )
    assert json.loads(paths(out, "train")["panoptic_json"].read_text())["info"]["avoid_touching"] is True
    apart = _written_pairs_are_the_pipelines(out, tiny_pipe, self_check=1, avoid_touching=True)
    touching = _pipelines_pairs(tiny_pipe, self_check=1, avoid_touching=False)
    # the setting changes these pairs, so the equality above shows it reached the sampling
    assert any(
        not np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(apart.images, touching.images)
    )
    with pytest.raises(ConfigError, match="avoid_touching True -> False"):
        synthesize(
            options(
                out, prompts_file, n=4, self_check=1, avoid_touching=False, redraw_image=True, resume=True
            ),
            pipe=tiny_pipe,
        )
    plain = tmp_path / "plain"
    synthesize(options(plain, prompts_file, n=2, self_check=0, avoid_touching=True), pipe=tiny_pipe)
    assert json.loads(paths(plain, "train")["panoptic_json"].read_text())["info"]["avoid_touching"] is False


def test_separate_touching_pairs_are_the_pipelines_and_the_setting_is_kept(tmp_path, tiny_pipe, prompts_file):
    """With the redraw and separate_touching the pairs are the pipeline's (same generators, maps
    bitten before the redraw), the gap is recorded, and --resume refuses to mix it with pairs drawn
    without it; without the redraw it bites nothing and is recorded as 0."""
    out = tmp_path / "bitten"
    synthesize(options(out, prompts_file, n=4, separate_touching=2, redraw_image=True), pipe=tiny_pipe)
    assert json.loads(paths(out, "train")["panoptic_json"].read_text())["info"]["separate_touching"] == 2
    bitten = _written_pairs_are_the_pipelines(out, tiny_pipe, separate_touching=2)
    touching = _pipelines_pairs(tiny_pipe, separate_touching=0)
    # the bite changes these maps, so the equality above shows it reached the sampling
    assert any(not np.array_equal(a.category, b.category) for a, b in zip(bitten.maps, touching.maps))
    with pytest.raises(ConfigError, match="separate_touching 2 -> 0"):
        synthesize(
            options(out, prompts_file, n=4, separate_touching=0, redraw_image=True, resume=True),
            pipe=tiny_pipe,
        )
    plain = tmp_path / "plain"
    synthesize(options(plain, prompts_file, n=2, separate_touching=2, redraw_image=False), pipe=tiny_pipe)
    assert json.loads(paths(plain, "train")["panoptic_json"].read_text())["info"]["separate_touching"] == 0


@pytest.mark.parametrize(
    ("key", "check", "on", "off", "called_with"),
    [("snap_shapes", "snap_things", True, False, {}), ("spread_things", "spread_things", 3, 0, {"gap": 3})],
)
def test_map_repair_pairs_are_the_pipelines_and_the_setting_is_kept(
    tmp_path, tiny_pipe, prompts_file, monkeypatch, key, check, on, off, called_with
):
    """With the redraw and snap_shapes (spread_things) the pairs are the pipeline's (same
    generators, maps snapped / spread before the redraw, each map once with the setting's
    arguments), the setting is recorded, and --resume refuses to mix it with pairs drawn without
    it; without the redraw it changes nothing and is recorded as off."""
    from pandiff.world import checks as wc

    calls = []
    original = getattr(wc, check)

    def counting(pmap, **kw):
        calls.append(kw)
        return original(pmap, **kw)

    monkeypatch.setattr(wc, check, counting)
    out = tmp_path / "repaired"
    synthesize(options(out, prompts_file, n=4, **{key: on}, redraw_image=True), pipe=tiny_pipe)
    recorded = json.loads(paths(out, "train")["panoptic_json"].read_text())["info"][key]
    assert recorded == on and type(recorded) is type(on)
    assert calls == [called_with] * 4
    _written_pairs_are_the_pipelines(out, tiny_pipe, **{key: on})
    with pytest.raises(ConfigError, match=f"{key} {on} -> {off}"):
        synthesize(
            options(out, prompts_file, n=4, **{key: off}, redraw_image=True, resume=True), pipe=tiny_pipe
        )
    calls.clear()
    plain = tmp_path / "plain"
    synthesize(options(plain, prompts_file, n=2, **{key: on}, redraw_image=False), pipe=tiny_pipe)
    recorded = json.loads(paths(plain, "train")["panoptic_json"].read_text())["info"][key]
    assert recorded == off and type(recorded) is type(off)
    assert calls == []


def test_cogen_steps_pairs_are_the_pipelines_and_the_setting_is_kept(tmp_path, tiny_pipe, prompts_file):
    """With the redraw and cogen_steps the pairs are the pipeline's (same generators, co-generation
    at those steps, the redraw at --steps), the setting is recorded as it acted, and --resume
    refuses to mix it with pairs drawn without it; without the redraw it is recorded as 0."""
    out = tmp_path / "fewer"
    synthesize(options(out, prompts_file, n=4, cogen_steps=2, redraw_image=True), pipe=tiny_pipe)
    recorded = json.loads(paths(out, "train")["panoptic_json"].read_text())["info"]
    assert (recorded["cogen_steps"], recorded["steps"]) == (2, STEPS)
    fewer = _written_pairs_are_the_pipelines(out, tiny_pipe, cogen_steps=2)
    full = _pipelines_pairs(tiny_pipe, cogen_steps=0)
    assert any(not np.array_equal(a.category, b.category) for a, b in zip(fewer.maps, full.maps))
    with pytest.raises(ConfigError, match="cogen_steps 2 -> 0"):
        synthesize(
            options(out, prompts_file, n=4, cogen_steps=0, redraw_image=True, resume=True), pipe=tiny_pipe
        )
    plain = tmp_path / "plain"
    synthesize(options(plain, prompts_file, n=2, cogen_steps=2, redraw_image=False), pipe=tiny_pipe)
    assert json.loads(paths(plain, "train")["panoptic_json"].read_text())["info"]["cogen_steps"] == 0


@pytest.mark.parametrize(
    ("key", "check", "value"),
    [("colour_split", "colour_split_things", 0.15), ("misshapen", "misshapen_things", 0.9)],
)
def test_checked_setting_pairs_are_the_pipelines_and_the_setting_is_kept(
    tmp_path, tiny_pipe, prompts_file, monkeypatch, key, check, value
):
    """With the self check and colour_split (a picture check) or misshapen (a map check) the pairs
    are the pipeline's (same generators, flagged samples drawn again), the value reaches the check
    and is recorded, and --resume refuses to mix it with pairs drawn without it; without a check it
    changes nothing and is recorded as 0."""
    import pandiff.self_check as sc

    # the random model's maps hold no thing to judge: a rule of the picture (colour split) or of
    # the map (misshapen) stands in for the check (the same input gets the same verdict in
    # synthesize and in the pipeline)
    values = []

    def rule(first, *rest):
        values.append(rest[-1])
        return int(np.asarray(getattr(first, "category", first)).sum()) % 2

    monkeypatch.setattr(sc.wc, check, rule)
    out = tmp_path / "checked"
    kw = {"self_check": 1, "redraw_image": True}
    synthesize(options(out, prompts_file, n=4, **{key: value}, **kw), pipe=tiny_pipe)
    assert values and set(values) == {value}  # every sample of the run was judged at the value
    assert json.loads(paths(out, "train")["panoptic_json"].read_text())["info"][key] == value
    _written_pairs_are_the_pipelines(out, tiny_pipe, self_check=1, **{key: value})
    with pytest.raises(ConfigError, match=f"{key} {value} -> 0.0"):
        synthesize(options(out, prompts_file, n=4, resume=True, **{key: 0.0}, **kw), pipe=tiny_pipe)
    plain = tmp_path / "plain"
    synthesize(options(plain, prompts_file, n=2, self_check=0, **{key: value}), pipe=tiny_pipe)
    assert json.loads(paths(plain, "train")["panoptic_json"].read_text())["info"][key] == 0.0


def test_colour_checked_pairs_are_the_pipelines_and_the_setting_is_kept(
    tmp_path, tiny_pipe, prompts_file, monkeypatch
):
    """With the self check and colour_check the pairs are the pipeline's (same generators, the
    pictures with wrong colours drawn again), the setting is recorded, and --resume refuses to mix
    it with pairs drawn without it; without a check it changes nothing and is recorded as False."""
    import pandiff.self_check as sc

    # the random model paints no world colours: a rule of the picture stands in for the check
    # (the same picture gets the same verdict in synthesize and in the pipeline)
    judged = []

    def rule(picture, pmap, colours):
        judged.append(colours)
        return int(picture.sum()) % 2

    monkeypatch.setattr(sc, "colour_failures", rule)
    out = tmp_path / "checked"
    kw = {"self_check": 1, "redraw_image": True}
    synthesize(options(out, prompts_file, n=4, colour_check=True, **kw), pipe=tiny_pipe)
    assert judged and all(isinstance(c, sc.PromptColours) for c in judged)
    assert json.loads(paths(out, "train")["panoptic_json"].read_text())["info"]["colour_check"] is True
    _written_pairs_are_the_pipelines(out, tiny_pipe, self_check=1, colour_check=True)
    with pytest.raises(ConfigError, match="colour_check True -> False"):
        synthesize(options(out, prompts_file, n=4, resume=True, colour_check=False, **kw), pipe=tiny_pipe)
    plain = tmp_path / "plain"
    synthesize(options(plain, prompts_file, n=2, self_check=0, colour_check=True), pipe=tiny_pipe)
    assert json.loads(paths(plain, "train")["panoptic_json"].read_text())["info"]["colour_check"] is False


@pytest.mark.parametrize(("key", "value"), [("picture_match", 0.5), ("restarts", 1)])
def test_self_check_setting_pairs_are_the_pipelines_and_the_setting_is_kept(
    tmp_path, tiny_pipe, prompts_file, key, value
):
    """With the self check, picture_match (a picture check) and restarts (whole draws again) give
    the pipeline's pairs (same generators, the same draws again), the value is recorded, and
    --resume refuses to mix it with pairs drawn without it; with best of K (which replaces the
    self check) it is recorded as 0."""
    out = tmp_path / "checked"
    kw = {"self_check": 1, "redraw_image": True}
    synthesize(options(out, prompts_file, n=4, **{key: value}, **kw), pipe=tiny_pipe)
    assert json.loads(paths(out, "train")["panoptic_json"].read_text())["info"][key] == value
    _written_pairs_are_the_pipelines(out, tiny_pipe, self_check=1, **{key: value})
    with pytest.raises(ConfigError, match=f"{key} {value} -> 0"):
        synthesize(options(out, prompts_file, n=4, resume=True, **{key: 0}, **kw), pipe=tiny_pipe)
    ranked = tmp_path / "ranked"
    synthesize(options(ranked, prompts_file, n=2, best_of=2, **{key: value}), pipe=tiny_pipe)
    assert json.loads(paths(ranked, "train")["panoptic_json"].read_text())["info"][key] == 0
