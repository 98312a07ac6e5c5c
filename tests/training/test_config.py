"""Training config: YAML presets, typed --set overrides, validation messages, the hash."""

from __future__ import annotations

from pathlib import Path

import pytest

from pandiff.errors import ConfigError
from pandiff.training.config import config_from_dict, load_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.mark.parametrize("name", ["world-s", "coco256-uvit-s2", "coco256-two-stream"])
def test_presets_load_with_the_paper_optimizer(name):
    config = load_config(CONFIGS / f"{name}.yaml")
    t = config.train
    assert (t.lr, t.weight_decay, t.betas) == (2e-4, 0.03, [0.9, 0.9])
    assert config.schedule.map_noise_scale == 2.0 and config.loss.text_dropout == 0.1
    assert config.data.features is not None and config.data.root is None


def test_preset_specifics():
    world = load_config(CONFIGS / "world-s.yaml")
    assert (world.model.preset, world.train.mixed_precision, world.train.batch_size) == (
        "world-s",
        "bf16",
        64,
    )
    coco = load_config(CONFIGS / "coco256-uvit-s2.yaml")
    assert (
        coco.model.preset == "uvit-s2"
        and coco.train.batch_size * 8 == 256
        and coco.train.warmup_steps == 5000
    )
    two = load_config(CONFIGS / "coco256-two-stream.yaml")
    assert two.model.variant == "two-stream" and two.model.image_stream.endswith("mscoco_uvit_small.pth")


def test_set_overrides_are_parsed_as_yaml():
    config = load_config(
        CONFIGS / "world-s.yaml",
        [
            "train.lr=1e-4",
            "train.steps=7",
            "train.betas=[0.9, 0.99]",
            "data.features=null",
            "data.root=data/world",
            "model.overrides.depth=4",
            "sample.every=0",
        ],
    )
    assert config.train.lr == 1e-4 and config.train.steps == 7 and config.train.betas == [0.9, 0.99]
    assert config.data.features is None and config.data.root == "data/world"
    assert config.model.overrides == {"depth": 4} and config.sample.every == 0


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["train.lrr=1"], r"unknown config key\(s\) train.lrr; valid keys of train: steps"),
        (["train.steps=many"], "train.steps must be int"),
        (["train.mixed_precision=no"], "quote the value"),
        (["train.batch_size=true"], "train.batch_size must be int"),
        (["train.mixed_precision=fp8"], "mixed_precision must be one of fp32, bf16, fp16"),
        (["data.root=x"], "set exactly one of data.features"),
        (["loss.p_clean_map=0.7", "loss.p_clean_image=0.7"], "must not exceed 1"),
        (["train"], "expects section.key=value"),
        (["train.lr.x=1"], "'lr' is a value, not a section"),
        (["sample.redraw_image=3"], "sample.redraw_image must be bool"),
        (["sample.one_piece_instances=3"], "sample.one_piece_instances must be bool"),
    ],
)
def test_bad_values_are_refused_with_the_key(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(CONFIGS / "world-s.yaml", overrides)


def test_hash_is_stable_and_sensitive(tmp_path):
    a = load_config(CONFIGS / "world-s.yaml")
    b = config_from_dict(a.to_dict())
    assert a.hash() == b.hash() and len(a.hash()) == 16
    c = load_config(CONFIGS / "world-s.yaml", ["train.lr=1e-3"])
    assert c.hash() != a.hash() and c.hash(("model",)) == a.hash(("model",))
    (tmp_path / "round.yaml").write_text(a.to_yaml())
    assert load_config(tmp_path / "round.yaml").hash() == a.hash()
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")


def test_world_recipes_of_the_bundled_model_and_its_two_stream_twin():
    """The three built-in-world recipes share schedule and loss; they differ in the variant."""
    recipes = {
        n: load_config(CONFIGS / f"{n}.yaml") for n in ("world-s-pixel", "world-s-t2i", "world-s-two-stream")
    }
    assert [c.model.variant for c in recipes.values()] == ["unified", "image-only", "two-stream"]
    for config in recipes.values():
        assert config.model.preset == "world-s-pixel"
        assert config.schedule.beta_schedule == "squaredcos_cap_v2"
        assert config.schedule.image_prediction == "sample" and config.loss.x0_weight_cap == 5.0
    assert recipes["world-s-two-stream"].model.image_stream == "runs/world-s-t2i/final/model"


def test_a_preset_name_or_a_path_selects_the_shipped_yaml(tmp_path, monkeypatch):
    """--config takes a shipped preset by name from any folder (the presets are package data)."""
    from pandiff.training.config import PRESETS_DIR, presets, resolve_config

    assert CONFIGS.resolve() == PRESETS_DIR  # one source of truth: configs/ is a link to it
    assert {"world-s-pixel", "world-s", "coco256-uvit-s2"} <= set(presets())
    monkeypatch.chdir(tmp_path)
    for name in ("world-s-pixel", "world-s-pixel.yaml", "configs/world-s-pixel.yaml"):
        assert resolve_config(name) == PRESETS_DIR / "world-s-pixel.yaml"
    assert load_config("world-s-pixel").model.preset == "world-s-pixel"
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "world-s-pixel.yaml").write_text(
        "model:\n  preset: world-s\ndata:\n  features: f\n"
    )
    assert load_config("configs/world-s-pixel.yaml").model.preset == "world-s"  # a file wins
    with pytest.raises(ConfigError, match="names no preset; the presets are .*world-s-pixel"):
        load_config("world-s-pixle")
    with pytest.raises(ConfigError, match="is a folder"):
        load_config("configs")
