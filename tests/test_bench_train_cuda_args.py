"""benchmarks/bench_train.py's device benchmark (issue #22), rehearsed on the CPU with tiny sizes:
the command line, the synthetic feature shards read through the trainer's real data stream, the
trainer-based rows, the profiler table, and that a failing row or a spent budget costs no others."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import bench_train as bt

# A tiny uvit-s2 (D 32, depth 2) on 4x4 latents, 8x8 maps (patch factor 2, 133 categories ->
# 11 bits as the real one) and 4 x 16 text: shards and model overrides that match.
TINY_SHAPES = {"latent_size": 4, "map_size": 8, "text_len": 4, "text_dim": 16}
TINY_OVERRIDES = [
    "model.overrides.embed_dim=32",
    "model.overrides.depth=2",
    "model.overrides.num_heads=2",
    "model.overrides.latent_size=4",
    "model.overrides.text_dim=16",
    "model.overrides.text_len=4",
]


def test_cpu_defaults_are_unchanged_and_cuda_gets_issue_22s_sizes():
    cpu = bt.parse_args([])
    assert cpu.device == "cpu"
    assert (cpu.batch, cpu.uvit_batch, cpu.steps, cpu.warmup, cpu.uvit_steps, cpu.uvit_warmup, cpu.n) == (
        32,
        8,
        10,
        3,
        5,
        2,
        160,
    )
    assert not cpu.profile and not cpu.skip_compiled and cpu.features is None
    cuda = bt.parse_args(["--device", "cuda", "--features", "/feat", "--profile"])
    assert (cuda.batch, cuda.uvit_batch, cuda.workers, cuda.max_seconds) == (1024, 128, 4, 140.0)
    assert cuda.features == "/feat" and cuda.profile
    assert bt.parse_args(["--device", "cuda", "--batch", "64", "--max-seconds", "0"]).batch == 64
    with pytest.raises(SystemExit):
        bt.parse_args(["--device", "cuda", "--warmup", "0"])  # the timed region starts after a step


def test_uvit_shards_have_cocos_shapes_and_stream_through_the_shard_stream(tmp_path):
    from pandiff.data.shards import FeatureManifest
    from pandiff.data.streams import ShardStream
    from pandiff.encoders.codec import load_codec

    folder = bt.write_feature_shards(tmp_path, 10, shard_size=4, **TINY_SHAPES)
    manifest = FeatureManifest.read(folder)
    spec = manifest.spec
    assert [c for _, c in manifest.shard_files("train")] == [4, 4, 2]
    assert (spec.latent_channels, spec.latent_size, spec.downsample, spec.map_size) == (4, 4, 8, 8)
    assert len(spec.categories) == bt.COCO_CATEGORIES and spec.instance_bits == 3  # 8 + 3 = 11 bits
    codec = load_codec(spec.codec)  # the tiny VAE saved next to the shards loads as the trainer loads it
    assert (codec.latent_channels, codec.downsample) == (4, 8)
    batch = next(iter(ShardStream(manifest, "train", batch_size=3)))
    assert batch["moments"].shape == (3, 8, 4, 4) and batch["moments"].dtype == torch.float16
    assert batch["text"].shape == (3, 4, 16)
    assert batch["category"].shape == (3, 8, 8) and int(batch["category"].max()) <= bt.COCO_CATEGORIES
    assert int(batch["instance"].max()) <= 7
    latents = codec.latents_from_moments(batch["moments"].float())
    assert latents.shape == (3, 4, 4, 4) and torch.isfinite(latents).all()


def test_the_device_benchmark_runs_on_the_cpu_with_tiny_sizes(tmp_path):
    args = bt.parse_args(
        [
            "--models",
            "uvit-s2",
            "uvit-s2-two-stream",
            "--uvit-batch",
            "2",
            "--uvit-steps",
            "2",
            "--uvit-warmup",
            "1",
            "--workers",
            "1",
            "--skip-compiled",
            "--profile",
            "--no-append",
            "--tmp",
            str(tmp_path),
        ]
    )
    lines = bt.run_gpu(args, torch.device("cpu"), uvit_overrides=TINY_OVERRIDES, uvit_shapes=TINY_SHAPES)
    text = "\n".join(lines)
    rows = [line for line in lines if line.startswith("| uvit-s2")]
    for model in ("uvit-s2", "uvit-s2-two-stream"):
        for data in ("shards, 1 workers", "in memory"):
            row = next(r for r in rows if r.startswith(f"| {model} | eager | {data} | 2 |"))
            assert "failed" not in row and "stopped" not in row
    # The FLOP table: two-stream's frozen image stream counted forward only gives fewer FLOPs than
    # autograd's count; for the unified model both counts agree.
    flop_rows = {r.split(" | ")[0][2:]: r.split(" | ") for r in rows if " / " in r.split(" | ")[1]}
    training, frozen = (float(x.strip(" |")) for x in flop_rows["uvit-s2-two-stream"][4:6])
    assert frozen < training
    training, frozen = (float(x.strip(" |")) for x in flop_rows["uvit-s2"][4:6])
    assert frozen == training
    assert "torch.profiler, uvit-s2 unified eager" in text and "aten::" in text
    assert list(tmp_path.iterdir()) == []  # the shards were temporary


def test_a_failing_row_is_a_note_and_the_next_group_still_runs(tmp_path, monkeypatch):
    folder = bt.write_feature_shards(tmp_path / "f", 8, **TINY_SHAPES)
    config = bt.uvit_config(folder, tmp_path / "run", "unified", 2, False, 0, 2, *TINY_OVERRIDES)
    counts = (bt.FlopCount(1, 3, 1, 2), bt.FlopCount(1, 2, 1, 2), (1, 1))

    def broken(trainer, warmup, steps):
        from torch._dynamo.exc import TorchRuntimeError

        raise TorchRuntimeError("inductor said no\nsecond line")

    monkeypatch.setattr(bt, "time_loop", broken)
    parts = [("shards", "loop"), ("in memory", "memory")]
    rows = bt.run_trainer_rows(config, "uvit-s2", "compiled", parts, 1, 1, counts, bt.Budget(0))
    assert [r.rate for r in rows] == [None, None]
    assert rows[0].note == "compile failed: TorchRuntimeError: inductor said no"
    monkeypatch.undo()
    config = bt.uvit_config(folder, tmp_path / "run2", "unified", 2, False, 0, 2, *TINY_OVERRIDES)
    rows = bt.run_trainer_rows(config, "uvit-s2", "eager", parts, 1, 1, counts, bt.Budget(0))
    assert all(r.rate and r.rate > 0 for r in rows)


def test_the_budget_interrupts_a_running_row_and_skips_the_rest():
    budget = bt.Budget(0.3)
    start = time.perf_counter()
    with pytest.raises(bt.BudgetExceeded), budget.guard():
        while time.perf_counter() - start < 5:
            pass
    assert time.perf_counter() - start < 2
    with pytest.raises(bt.BudgetExceeded), budget.guard():
        pass
    assert bt.Budget(0).left() == float("inf")


def test_describe_error_names_the_compile_error_not_its_wrapper():
    from pandiff.errors import ConfigError

    try:
        try:
            raise RuntimeError("triton | broke\nmore")
        except RuntimeError as inner:
            raise ConfigError("train.compile=true: torch.compile could not compile") from inner
    except ConfigError as exc:
        assert bt.describe_error(exc) == "RuntimeError: triton / broke"
        assert bt.error_note(exc).startswith("compile failed: RuntimeError")
    assert bt.error_note(ValueError("x")) == "failed: ValueError: x"


def test_the_cuda_path_refuses_politely_without_a_gpu(monkeypatch):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    monkeypatch.setattr(sys, "argv", ["bench_train.py", "--device", "cuda", "--no-append"])
    with pytest.raises(SystemExit, match="no CUDA device"):
        bt.main()
