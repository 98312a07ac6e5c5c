"""Shared fixtures of the training tests: a tiny built-in world, its feature shards (identity
codec, a tiny random CLIP text encoder) and a tiny model config that trains in seconds."""

from __future__ import annotations

from pathlib import Path

import pytest

from pandiff.training.config import Config, apply_override, config_from_dict

# Sizes of the tiny model: 16 px pixel-space images (identity codec) -> 3 x 16 x 16 "latents" in
# 16 tokens of patch 4; 16 x 16 maps in 16 tokens; 16 text tokens of width 32.
TINY_MODEL = {
    "latent_channels": 3,
    "latent_size": 16,
    "patch_size": 4,
    "patch_factor": 1,
    "embed_dim": 32,
    "depth": 2,
    "num_heads": 2,
    "text_dim": 32,
    "text_len": 16,
}


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory) -> Path:
    from pandiff.world.generator import generate_world

    out = tmp_path_factory.mktemp("world") / "world"
    generate_world(out, n=48, size=32, seed=0, workers=1)
    return out


@pytest.fixture(scope="session")
def tiny_text_encoder_dir(tmp_path_factory) -> Path:
    from pandiff.encoders.text import save_tiny_clip_text_encoder

    return save_tiny_clip_text_encoder(tmp_path_factory.mktemp("clip") / "clip", hidden_size=32, num_layers=1)


def make_features(
    world: Path,
    out: Path,
    text_dir: Path,
    shard_size: int = 16,
    splits=("train", "val"),
    batch_size: int = 16,
    num_workers: int = 0,
):
    from pandiff.data.prepare import prepare_features
    from pandiff.encoders.codec import load_codec
    from pandiff.encoders.text import load_text_encoder

    return prepare_features(
        world,
        out,
        load_codec("identity"),
        "identity",
        load_text_encoder(str(text_dir), max_length=16),
        splits=list(splits),
        image_size=16,
        map_size=16,
        shard_size=shard_size,
        max_captions=5,
        batch_size=batch_size,
        num_workers=num_workers,
        progress=False,
    )


@pytest.fixture(scope="session")
def features_of():
    """``make_features`` for tests that prepare with other settings."""
    return make_features


@pytest.fixture(scope="session")
def tiny_features(tiny_world, tiny_text_encoder_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("features") / "features"
    make_features(tiny_world, out, tiny_text_encoder_dir)
    return out


def _tiny_config(run_dir: Path, features: Path, *overrides: str, variant: str = "unified") -> Config:
    """A tiny, fast config: lr 2e-3, batch 8, no sample grids unless overridden."""
    data = {
        "run": {"dir": str(run_dir), "seed": 0},
        "data": {"features": str(features), "shuffle_buffer": 8},
        "model": {"preset": "world-s", "variant": variant, "overrides": dict(TINY_MODEL)},
        "train": {
            "steps": 30,
            "batch_size": 8,
            "lr": 2e-3,
            "warmup_steps": 3,
            "checkpoint_every": 10,
            "keep_checkpoints": 2,
            "log_every": 5,
        },
        "sample": {"every": 0, "num": 2, "steps": 2},
    }
    for item in overrides:
        apply_override(data, item)
    return config_from_dict(data)


@pytest.fixture
def tiny_config():
    """``tiny_config(run_dir, features, "section.key=value", ..., variant="unified") -> Config``."""
    return _tiny_config


@pytest.fixture
def tiny_model() -> dict:
    """The tiny model's ``model.overrides``."""
    return dict(TINY_MODEL)


@pytest.fixture
def poison_map_loss(monkeypatch):
    """``poison_map_loss(n)``: the n-th call of the trainer's joint loss returns a NaN map loss."""

    def poison(at_call: int) -> None:
        import torch

        import pandiff.training.trainer as trainer_module

        real_loss = trainer_module.joint_loss
        calls = {"n": 0}

        def poisoned(*args, **kwargs):
            out = real_loss(*args, **kwargs)
            calls["n"] += 1
            if calls["n"] == at_call:
                out.map_loss = torch.tensor(float("nan"))
            return out

        monkeypatch.setattr(trainer_module, "joint_loss", poisoned)

    return poison
