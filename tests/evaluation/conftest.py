"""Shared fixtures of the evaluation tests: a tiny built-in world (32 px), a tiny random
pipeline folder for it (pixel-space identity codec, tiny random CLIP text tower) and a judge
trained for a few steps on that world (weak: tests pass ``min_judge_miou=0``)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory) -> Path:
    from pandiff.world.generator import generate_world

    out = tmp_path_factory.mktemp("eval-world") / "world"
    generate_world(out, n=60, size=32, seed=3, val_fraction=0.2, workers=1)
    return out


@pytest.fixture(scope="session")
def tiny_pipeline_dir(make_tiny_pipeline) -> Path:
    """A 32 px tiny random pipeline for the 32 px evaluation world."""
    return make_tiny_pipeline(32)


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
