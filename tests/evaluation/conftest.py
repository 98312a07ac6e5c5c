"""Shared fixtures of the evaluation tests: a tiny built-in world (32 px), a tiny random
pipeline folder for it (pixel-space identity codec, tiny random CLIP text tower) and a judge
trained for a few steps on that world (weak: tests pass ``min_judge_miou=0``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

# 32 px pixel-space images -> 3 x 32 x 32 "latents" in 64 tokens of patch 4; 32 x 32 maps in 64
# tokens; the world preset's text: MiniLM's 24 tokens of width 384 (world captions fit in them).
TINY_MODEL = {
    "latent_channels": 3,
    "latent_size": 32,
    "patch_size": 4,
    "patch_factor": 1,
    "embed_dim": 32,
    "depth": 2,
    "num_heads": 2,
}


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread: tiny tensors gain nothing from more, and the test machine is shared."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory) -> Path:
    from pandiff.data.world import generate_world

    out = tmp_path_factory.mktemp("eval-world") / "world"
    generate_world(out, n=60, size=32, seed=3, val_fraction=0.2, workers=1)
    return out


@pytest.fixture(scope="session")
def tiny_pipeline_dir(tmp_path_factory) -> Path:
    """A pipeline folder as ``PanopticDiffusionPipeline.from_pretrained`` reads it, random weights."""
    from pandiff.data.analog_bits import MapBitCodec
    from pandiff.data.world import world_category_table
    from pandiff.model.presets import pdm_from_preset

    folder = tmp_path_factory.mktemp("eval-model")
    table = world_category_table()
    torch.manual_seed(0)
    model = pdm_from_preset("world-s", map_bits=MapBitCodec.for_table(table, 3).num_bits, **TINY_MODEL)
    model.save_pretrained(folder / "pipe" / "model", safe_serialization=True)
    spec = {
        "model": "model",
        "codec": "identity",
        "text_encoder": "minilm",
        "schedule": {},
        "instance_bits": 3,
        "categories": table.to_coco(),
        "image_size": 32,
        "guidance_scale": 2.0,
        "map_guidance_scale": 1.0,
    }
    (folder / "pipe" / "pandiff_pipeline.json").write_text(json.dumps(spec))
    return folder / "pipe"


@pytest.fixture(scope="session")
def tiny_judge_run(tiny_world, tmp_path_factory) -> dict:
    """``pandiff train-judge`` on the tiny world for a few steps: ``{"dir", "exit_code"}``."""
    from pandiff.cli import main

    out = tmp_path_factory.mktemp("eval-judge") / "judge"
    args = ["train-judge", "--data", str(tiny_world), "--out", str(out), "--steps", "40", "--batch", "4"]
    code = main(args + ["--thing-steps", "15", "--width", "8"])
    return {"dir": out, "exit_code": code}


@pytest.fixture(scope="session")
def tiny_judge_dir(tiny_judge_run) -> Path:
    return tiny_judge_run["dir"]
