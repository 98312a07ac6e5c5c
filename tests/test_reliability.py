"""Hostile inputs through the real CLI entry point: each gives a clear one-line error (exit code
!= 0, no traceback) and leaves every file as it was (issue 18).

Output-path cases run with the model loader replaced by a tripwire: the refusal must come
before any model is loaded, let alone sampled or trained.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from pandiff.cli import main
from pandiff.io import OUTPUT_MARKER


def snapshot(root):
    """Every file below ``root`` with its bytes (``{relative path: bytes}``)."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def run_cli(argv, capsys):
    """``(exit code, stderr)`` of ``pandiff ARGV``; argparse's own exits count as exit codes."""
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:
        code = exc.code
    return code, capsys.readouterr().err


@pytest.fixture
def tripwire(monkeypatch):
    """Loading a model or building a trainer fails the test: checks must come first."""
    from pandiff.pipeline import PanopticDiffusionPipeline
    from pandiff.training import trainer

    def boom(*args, **kwargs):
        raise AssertionError("work started before the options were checked")

    monkeypatch.setattr(PanopticDiffusionPipeline, "from_pretrained", boom)
    monkeypatch.setattr(trainer, "Trainer", boom)


def _user_folder(tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("my notes")
    return folder


def _a_file(tmp_path):
    path = tmp_path / "report.txt"
    path.write_text("keep me")
    return path


def _symlink_loop(tmp_path):
    os.symlink(tmp_path / "loop", tmp_path / "loop")
    return tmp_path / "loop"


def _pandiff_output(tmp_path):
    folder = tmp_path / "model-export"
    folder.mkdir()
    (folder / OUTPUT_MARKER).write_text("written by pandiff\n")
    (folder / "pandiff_pipeline.json").write_text("{}")
    return folder


# (make the --out path, command before --out, message). Every command gets --overwrite where it has one.
GEN = ["generate", "a red circle", "--steps", "1", "--n", "1"]
SEG = ["segment", "IMAGE", "a red circle", "--steps", "1"]
CODEC = ["train-codec", "--data", "DATA", "--steps", "1"]
OUTPUT_CASES = [
    (_user_folder, GEN, "did not write"),
    (_a_file, GEN, "existing file"),
    (_symlink_loop, GEN, "cannot be resolved"),
    (_user_folder, SEG, "did not write"),
    (_a_file, SEG, "existing file"),
    (_user_folder, CODEC, "did not write"),
    (_a_file, CODEC, "existing file"),
    (_user_folder, ["train-judge", "--data", "DATA"], "did not write"),
]


@pytest.mark.parametrize("make_out, command, message", OUTPUT_CASES)
def test_overwrite_replaces_only_pandiff_outputs(make_out, command, message, tmp_path, capsys, tripwire):
    from PIL import Image

    Image.new("RGB", (16, 16)).save(tmp_path / "in.png")
    out = make_out(tmp_path)
    command = [
        str(tmp_path / "in.png") if a == "IMAGE" else str(tmp_path) if a == "DATA" else a for a in command
    ]
    before = snapshot(tmp_path)
    overwrite = [] if command[0] == "train-judge" else ["--overwrite"]  # it replaces earlier judges itself
    code, err = run_cli([*command, "--out", out, *overwrite], capsys)
    assert code == 2 and message in err and "Traceback" not in err
    assert snapshot(tmp_path) == before  # nothing deleted, nothing written


def test_current_folder_is_never_an_output(tmp_path, capsys, monkeypatch, tripwire):
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / OUTPUT_MARKER).write_text("even with a marker")
    monkeypatch.chdir(tmp_path)
    for out in (".", str(tmp_path), ".."):
        code, err = run_cli([*GEN, "--out", out, "--overwrite"], capsys)
        assert code == 2 and "current folder" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == [OUTPUT_MARKER, "notes.txt"]  # no ..xxxx.old left


def test_the_model_folder_is_never_an_output(tmp_path, capsys, tripwire):
    model = _pandiff_output(tmp_path)
    before = snapshot(tmp_path)
    code, err = run_cli([*GEN, "--model", model, "--out", model, "--overwrite"], capsys)
    assert code == 2 and "would replace" in err
    assert snapshot(tmp_path) == before


def test_earlier_output_needs_overwrite_and_then_is_replaced(tiny_pipeline_dir, tmp_path, capsys):
    out = tmp_path / "gen"
    args = [*GEN, "--model", tiny_pipeline_dir, "--out", out]
    assert run_cli(args, capsys)[0] == 0
    assert (out / OUTPUT_MARKER).is_file()
    code, err = run_cli(args, capsys)
    assert code == 2 and "pass --overwrite" in err
    (out / "000_image.png").unlink()
    assert run_cli([*args, "--overwrite"], capsys)[0] == 0
    assert (out / "000_image.png").is_file() and not list(tmp_path.glob(".gen.*"))


@pytest.mark.parametrize("where", ["user", "run", "checkpoint", "features"])
def test_train_export_refuses_foreign_and_run_folders(where, tmp_path, capsys, tripwire):
    run_dir, features = tmp_path / "run", tmp_path / "features"
    for folder in (run_dir / "checkpoint-00000010", features):
        folder.mkdir(parents=True)
        (folder / "data.bin").write_text("x")
    (run_dir / "config.yaml").write_text("run: {}\n")
    export = {
        "user": _user_folder(tmp_path),
        "run": run_dir,
        "checkpoint": run_dir / "checkpoint-00000010",
        "features": features,
    }[where]
    before = snapshot(tmp_path)
    argv = ["train", "--run-dir", run_dir, "--set", f"data.features={features}", "--export", export]
    code, err = run_cli(argv, capsys)
    assert code == 2 and "--export" in err and "Traceback" not in err
    assert snapshot(tmp_path) == before


# (argv, message): bad numbers and options, each refused before any work.
NUMBER_CASES = [
    ([*GEN, "--guidance", "nan"], "not a finite number"),
    ([*GEN, "--guidance", "inf"], "not a finite number"),
    ([*GEN, "--map-guidance=-inf"], "not a finite number"),
    ([*GEN, "--guidance", "-1"], "--guidance must be >= 0"),
    ([*GEN, "--seed", str(2**70)], "--seed must be"),
    ([*GEN, "--seed", "-1"], "--seed must be"),
    ([*GEN, "--n", "0"], "--n must be"),
    ([*GEN, "--batch", "0"], "--batch must be"),
    ([*GEN, "--map-cleanup", "-1"], "--map-cleanup must be"),
    ([*GEN, "--device", "tpu"], "not a torch device"),
    (["evaluate", "--data", "D", "--out", "r.json", "--guidance", "nan"], "not a finite number"),
    (["evaluate", "--data", "D", "--out", "r.json", "--seed", "-5"], "--seed must be"),
    (["prepare", "--data", "D", "--out", "O", "--codec", "identity", "--scaling-factor", "nan"], "finite"),
    (["prepare", "--data", "D", "--out", "O", "--codec", "identity", "--scaling-factor", "0"], "> 0"),
    (["prepare", "--data", "D", "--out", "O", "--codec", "identity", "--workers", "-1"], "--workers"),
    (["prepare", "--data", "D", "--out", "O", "--codec", "identity", "--map-size", "100000"], "--map-size"),
    (["make-world", "--out", "W", "--n", "2", "--size", "200000"], "--size must be"),
    (["make-world", "--out", "W", "--n", "2", "--val-fraction", "nan"], "not a finite number"),
    ([*CODEC, "--out", "C", "--lr", "nan"], "not a finite number"),
    ([*CODEC, "--out", "C", "--lr", "0"], "--lr must be > 0"),
    ([*CODEC, "--out", "C", "--max-minutes", "0"], "--max-minutes must be > 0"),
    ([*CODEC, "--out", "C", "--max-minutes", "-1"], "--max-minutes must be > 0"),
    (["train-judge", "--data", "D", "--out", "J", "--lr", "nan"], "not a finite number"),
    (["train-judge", "--data", "D", "--out", "J", "--limit", "0"], "--limit must be"),
    (["train", "--set", "train.lr=.inf"], "train.lr must be a finite number"),
    (["train", "--set", "train.lr=.nan"], "train.lr must be a finite number"),
    (["train", "--set", "train.adam_eps=-1"], "train.adam_eps must be > 0"),
    (["train", "--set", "sample.guidance_scale=.nan"], "sample.guidance_scale must be a finite number"),
    (["train", "--set", "sample.steps=5000"], "sample.steps must be"),
    (["train", "--set", "run.seed=-1"], "run.seed must be"),
]


@pytest.mark.parametrize(
    "argv, message", NUMBER_CASES, ids=lambda v: " ".join(v) if isinstance(v, list) else None
)
def test_bad_numbers_are_refused_before_any_work(argv, message, tmp_path, capsys, monkeypatch, tripwire):
    monkeypatch.chdir(tmp_path)
    code, err = run_cli(argv, capsys)
    assert code == 2 and message in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_environment_errors_are_one_line(tmp_path, capsys, monkeypatch):
    """A full disk, a permission or memory: the top-level handler prints one line with the path."""
    from pandiff.cli import train as train_cli

    failures = [
        (OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "x")), "disk is full"),
        (PermissionError(errno.EACCES, "Permission denied", "/etc/shadow"), "permissions"),
        (MemoryError(), "out of memory"),
        (UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte"), "UTF-8"),
    ]
    for exc, message in failures:

        def fail(args, exc=exc):
            raise exc

        monkeypatch.setattr(train_cli, "run", fail)
        code, err = run_cli(["train"], capsys)
        assert code == 1 and message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    monkeypatch.setenv("PANDIFF_DEBUG", "1")  # shows the traceback of the last failure
    with pytest.raises(UnicodeDecodeError):
        main(["train"])


def bomb_png(path, side=40000):
    """A PNG whose header claims ``side`` x ``side`` pixels: a few bytes that would decode to GBs."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b""))
    return path


def test_binary_config_and_a_bomb_image(tmp_path, capsys, tripwire):
    (tmp_path / "c.yaml").write_bytes(b"\xff\xfe\x00binary")
    code, err = run_cli(["train", "--config", tmp_path / "c.yaml"], capsys)
    assert code == 2 and "not UTF-8 text" in err
    from pandiff.data.readers import read_image

    with pytest.raises(Exception, match="cannot read the image .*decompression bomb"):
        read_image(bomb_png(tmp_path / "bomb.png"))


# -- the Python API ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pipe(tiny_pipeline_dir):
    from pandiff.pipeline import PanopticDiffusionPipeline

    return PanopticDiffusionPipeline.from_pretrained(tiny_pipeline_dir)


def _api_cases():
    import numpy as np
    import torch

    image = np.zeros((16, 16, 3), np.uint8)
    return [
        ({"prompt": None}, TypeError, "prompt must be a string"),
        ({"prompt": 5}, TypeError, "prompt must be a string"),
        ({"prompt": ["a red circle", 3]}, TypeError, "each prompt must be a string"),
        ({"num_inference_steps": 2.0}, ValueError, "num_inference_steps must be an integer"),
        ({"num_inference_steps": 100_000}, ValueError, "training timesteps"),
        ({"guidance_scale": float("nan")}, ValueError, "guidance_scale must be a finite number"),
        ({"map_guidance_scale": float("inf")}, ValueError, "map_guidance_scale must be a finite number"),
        ({"generator": 0}, TypeError, "generator must be a torch.Generator"),
        ({"num_images": 1.5}, ValueError, "num_images must be an integer"),
        ({"map_cleanup": 10**6}, ValueError, "map_cleanup must be"),
        ({"image": image.astype(np.float32)}, TypeError, "must be uint8"),
        ({"image": np.zeros((0, 64, 3), np.uint8)}, ValueError, "empty"),
        ({"image": image, "mask": np.zeros((0, 0))}, ValueError, "non-empty"),
        ({"image": image, "mask": np.full((4, 4), np.nan)}, ValueError, "without NaN"),
        ({"prompt": "a \udcff circle"}, ValueError, "not UTF-8"),
        (
            {"generator": torch.Generator().manual_seed(0), "num_images": 0},
            ValueError,
            "num_images must be >= 1",
        ),
    ]


@pytest.mark.parametrize("index", range(16))
def test_api_misuse_names_the_argument(pipe, index):
    kwargs, error, message = _api_cases()[index]
    kwargs = {"prompt": "a red circle", "num_inference_steps": 1, **kwargs}
    with pytest.raises(error, match=message):
        pipe(kwargs.pop("prompt"), **kwargs)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"guidance_scale": "3"}, "'guidance_scale' must be a number"),
        ({"instance_bits": "3"}, "'instance_bits' must be an integer"),
        ({"schedule": {"num_train_timesteps": 1000, "speed": 2}}, "invalid 'schedule'"),
        ({"map_guidance_scale": None}, "must be a number"),
        ({"codec": 7}, "'codec' must be a non-empty string"),
        ({"image_size": 10**9}, "'image_size' must be"),
    ],
)
def test_pipeline_json_is_validated_on_load(change, message, tiny_pipeline_dir, tmp_path):
    import json
    import shutil

    from pandiff.errors import WeightsError
    from pandiff.pipeline import PanopticDiffusionPipeline

    folder = tmp_path / "pipe"
    shutil.copytree(tiny_pipeline_dir, folder)
    spec = json.loads((folder / "pandiff_pipeline.json").read_text())
    (folder / "pandiff_pipeline.json").write_text(json.dumps({**spec, **change}))
    with pytest.raises(WeightsError, match=message):
        PanopticDiffusionPipeline.from_pretrained(folder)


def test_a_nan_json_constant_and_nan_weights_are_refused(tiny_pipeline_dir, tmp_path):
    import json
    import shutil

    from safetensors.torch import load_file, save_file

    from pandiff.errors import WeightsError
    from pandiff.pipeline import PanopticDiffusionPipeline

    folder = tmp_path / "pipe"
    shutil.copytree(tiny_pipeline_dir, folder)
    spec_path = folder / "pandiff_pipeline.json"
    spec_path.write_text(spec_path.read_text().replace('"guidance_scale": 2.0', '"guidance_scale": NaN'))
    with pytest.raises(WeightsError, match="not valid JSON"):
        PanopticDiffusionPipeline.from_pretrained(folder)
    shutil.copy(tiny_pipeline_dir / "pandiff_pipeline.json", spec_path)
    weights = folder / "model" / "diffusion_pytorch_model.safetensors"
    state = load_file(weights)
    name = next(iter(state))
    state[name][..., 0] = float("nan")
    save_file(state, weights)
    with pytest.raises(WeightsError, match=f"NaN or infinite weights.*{name}"):
        PanopticDiffusionPipeline.from_pretrained(folder)
    assert json.loads(spec_path.read_text())["guidance_scale"] == 2.0


def test_generate_writes_strict_json(tiny_pipeline_dir, tmp_path, capsys):
    import json

    out = tmp_path / "gen"
    assert run_cli([*GEN, "--model", tiny_pipeline_dir, "--out", out, "--guidance", "0"], capsys)[0] == 0
    for name in ("panoptic.json", "captions.json"):
        json.loads(
            (out / name).read_text(), parse_constant=lambda c, name=name: pytest.fail(f"{name} holds {c}")
        )
    from pandiff.io import write_json

    with pytest.raises(ValueError, match="NaN or infinite"):
        write_json(tmp_path / "x.json", {"a": float("nan")})
    assert not (tmp_path / "x.json").exists()


# -- COCO panoptic input: one validator for generate --map and prepare ------------------------------
def _map_json_cases():
    seg = {"id": 1, "category_id": 1, "iscrowd": 0}
    ann = {"file_name": "m.png", "image_id": 1}
    return [
        ([ann], "not a COCO panoptic JSON"),
        ({"annotations": "m.png"}, "not a COCO panoptic JSON"),
        ({"annotations": [3]}, "not a COCO panoptic JSON"),
        ({"annotations": [ann]}, "segments_info must be a list"),
        ({"annotations": [{**ann, "segments_info": {"id": 1}}]}, "segments_info must be a list"),
        ({"annotations": [{**ann, "segments_info": [seg, dict(seg, category_id=2)]}]}, "segment id twice"),
        ({"annotations": [{**ann, "segments_info": [dict(seg, category_id="1")]}]}, "must be an integer"),
        ({"annotations": [{**ann, "segments_info": [dict(seg, category_id=None)]}]}, "must be an integer"),
        ({"annotations": [{**ann, "segments_info": [dict(seg, iscrowd=0.5)]}]}, "iscrowd"),
        ({"annotations": [{**ann, "segments_info": [dict(seg, category_id=999)]}]}, "unknown category"),
    ]


@pytest.mark.parametrize("index", range(10))
def test_map_json_is_validated(index, tiny_pipeline_dir, tmp_path, capsys):
    import json

    import numpy as np
    from PIL import Image

    data, message = _map_json_cases()[index]
    rgb = np.zeros((16, 16, 3), np.uint8)
    rgb[:8, :, 0] = 1  # segment id 1
    Image.fromarray(rgb).save(tmp_path / "m.png")
    (tmp_path / "panoptic.json").write_text(json.dumps(data))
    out = tmp_path / "out"
    argv = [*GEN, "--model", tiny_pipeline_dir, "--map", tmp_path / "m.png", "--out", out]
    code, err = run_cli(argv, capsys)
    assert code == 2 and message in err and "Traceback" not in err
    assert not out.exists()


def test_map_bomb_png_is_refused(tiny_pipeline_dir, tmp_path, capsys):
    import json

    bomb_png(tmp_path / "m.png")
    (tmp_path / "panoptic.json").write_text(
        json.dumps({"annotations": [{"file_name": "m.png", "segments_info": []}]})
    )
    argv = [*GEN, "--model", tiny_pipeline_dir, "--map", tmp_path / "m.png", "--out", tmp_path / "out"]
    code, err = run_cli(argv, capsys)
    assert code == 2 and "decompression bomb" in err


@pytest.mark.parametrize("prompt", ["zzqx blorf", "x" * 100_000, "qwertyuiop asdfgh"])
def test_a_prompt_without_a_known_word_warns(pipe, prompt):
    pipe.text_encoder.max_length, before = 10**6, pipe.text_encoder.max_length  # length is not the point
    try:
        with pytest.warns(UserWarning, match="no word of the prompt"):
            pipe.check_prompts(prompt)
    finally:
        pipe.text_encoder.max_length = before


def test_a_prompt_with_known_words_does_not_warn(pipe):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pipe.check_prompts("two red circles on the grass")


def test_a_full_disk_leaves_the_previous_world_whole(tmp_path, capsys, monkeypatch):
    from pandiff.world import generator as world

    out = tmp_path / "w"
    assert run_cli(["make-world", "--out", out, "--n", "3", "--workers", "1"], capsys)[0] == 0
    (out / "notes.txt").write_text("mine")
    before = snapshot(out)

    def full(*args):
        raise OSError(errno.ENOSPC, "No space left on device", str(out / "annotations"))

    monkeypatch.setattr(world, "_write_split_jsons", full)
    code, err = run_cli(["make-world", "--out", out, "--n", "5", "--workers", "1", "--overwrite"], capsys)
    assert code == 1 and "disk is full" in err and len(err.strip().splitlines()) == 1
    assert snapshot(out) == before and sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == []


def test_evaluate_out_is_checked_before_sampling(tmp_path, capsys, tripwire):
    (tmp_path / "report.json").mkdir()
    code, err = run_cli(["evaluate", "--data", tmp_path, "--out", tmp_path / "report.json"], capsys)
    assert code == 2 and "is a folder" in err
    (tmp_path / "notes.txt").write_text("x")
    code, err = run_cli(["evaluate", "--data", tmp_path, "--out", tmp_path / "notes.txt" / "r.json"], capsys)
    assert code == 2 and "is not a folder" in err


def test_a_pickled_text_encoder_is_refused_and_never_run(tmp_path, monkeypatch):
    import pickle
    import shutil

    from pandiff.encoders.text import load_text_encoder, minilm_path
    from pandiff.errors import WeightsError

    folder = tmp_path / "encoder"
    shutil.copytree(minilm_path(), folder)
    for weights in folder.glob("*.safetensors"):
        weights.unlink()
    ran = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (open, (str(ran), "w"))  # unpickling this would create the file

    (folder / "pytorch_model.bin").write_bytes(pickle.dumps({"weight": Payload()}))
    with pytest.raises(WeightsError, match="refuses to unpickle"):
        load_text_encoder(str(folder))
    assert not ran.exists()


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has CUDA")
@pytest.mark.parametrize(
    "command", [GEN, [*CODEC, "--out", "C"], ["prepare", "--data", "D", "--out", "O", "--codec", "identity"]]
)
def test_cuda_without_a_gpu_is_a_clear_error(command, tmp_path, capsys, monkeypatch, tripwire):
    monkeypatch.chdir(tmp_path)
    code, err = run_cli([*command, "--device", "cuda"], capsys)
    assert code == 2 and "no usable CUDA GPU" in err


def test_codec_and_judge_with_nan_weights_are_neither_saved_nor_loaded(tmp_path):
    import torch

    from pandiff.encoders.codec import VaeCodec, load_codec
    from pandiff.errors import WeightsError
    from pandiff.world.judge import Judge, JudgeConfig, load_judge, save_judge

    codec = VaeCodec.from_config()
    codec.save_pretrained(tmp_path / "codec")
    with torch.no_grad():
        next(codec.vae.parameters()).fill_(float("nan"))
    with pytest.raises(WeightsError, match="NaN or infinite"):
        codec.save_pretrained(tmp_path / "codec")
    assert load_codec(str(tmp_path / "codec")) is not None  # the earlier, finite one is still there
    codec.vae.save_pretrained(tmp_path / "codec")  # diffusers' own writer has no such check
    with pytest.raises(WeightsError, match="NaN or infinite"):
        load_codec(str(tmp_path / "codec"))

    from pandiff.world.generator import world_category_table

    judge = Judge(JudgeConfig(image_size=32, width=8, categories=world_category_table().to_coco()))
    with torch.no_grad():
        next(judge.parameters()).fill_(float("inf"))
    with pytest.raises(WeightsError, match="NaN or infinite"):
        save_judge(judge, tmp_path / "judge", {"val_miou": 1.0})
    assert not (tmp_path / "judge").exists()
    with pytest.raises(WeightsError, match="no judge folder|is not a judge folder"):
        load_judge(tmp_path / "judge")


def test_deeply_nested_map_json_is_a_clear_error(tiny_pipeline_dir, tmp_path, capsys):
    import numpy as np
    from PIL import Image

    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / "m.png")
    (tmp_path / "panoptic.json").write_text("[" * 200_000 + "]" * 200_000)
    argv = [*GEN, "--model", tiny_pipeline_dir, "--map", tmp_path / "m.png", "--out", tmp_path / "out"]
    code, err = run_cli(argv, capsys)
    assert code == 2 and "not valid JSON" in err and "Traceback" not in err


def test_a_read_only_parent_is_refused_before_any_work(tmp_path, capsys, monkeypatch, tripwire):
    """Root may write anywhere, so the permission answer is simulated: the check must ask it."""
    import pandiff.io

    real = os.access
    monkeypatch.setattr(pandiff.io.os, "access", lambda p, mode: real(p, mode) and Path(p) != tmp_path)
    for argv in (
        [*GEN, "--out", tmp_path / "new" / "gen"],
        ["evaluate", "--data", "D", "--out", tmp_path / "r.json"],
    ):
        code, err = run_cli(argv, capsys)
        assert code == 2 and "permission denied" in err
    assert list(tmp_path.iterdir()) == []
