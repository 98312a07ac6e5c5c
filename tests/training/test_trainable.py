"""``model.trainable``: train a new pixel refiner on a trained model while the rest stays frozen, so
the map (and every other prediction but the refined image) is exactly the trained model's."""

from __future__ import annotations

import pytest
import torch

from pandiff.errors import ConfigError
from pandiff.model import load_pdm
from pandiff.training.run import train


def _base_and_head(tmp_path, tiny_features, tiny_config, *head_overrides):
    """Train a small base model, then a refiner on it (warm start, only ``refiner.`` trainable)."""
    train(
        tiny_config(tmp_path / "base", tiny_features, "train.steps=4"),
        export=str(tmp_path / "base-out"),
        progress=False,
    )
    config = tiny_config(
        tmp_path / "head",
        tiny_features,
        "model.overrides.refine_channels=4",
        f"model.warm_start={tmp_path / 'base-out' / 'model'}",
        "model.trainable=[refiner.]",
        *head_overrides,
    )
    train(config, export=str(tmp_path / "head-out"), progress=False)
    return load_pdm(tmp_path / "base-out" / "model"), load_pdm(tmp_path / "head-out" / "model")


def test_only_the_named_parameters_train_and_the_export_keeps_the_rest(tmp_path, tiny_features, tiny_config):
    base, head = _base_and_head(tmp_path, tiny_features, tiny_config, "train.steps=6")
    own = head.state_dict()
    for name, value in base.state_dict().items():
        assert torch.equal(own[name], value), name  # frozen: bit for bit the base model's
    changed = [n for n in own if n.startswith("refiner.") and n not in base.state_dict()]
    assert changed and torch.count_nonzero(own["refiner.conv_out.weight"]) > 0  # it trained


def test_a_map_reading_refiner_trains_its_map_convolution(tmp_path, tiny_features, tiny_config):
    """``refine_map`` through the training loop: the map reaches the refiner in the loss's forwards
    (half the samples with the map clean), so its zero-initialised map convolution learns, while
    everything outside the refiner stays the base model's."""
    base, head = _base_and_head(
        tmp_path,
        tiny_features,
        tiny_config,
        "train.steps=8",
        "model.overrides.refine_map=true",
        "loss.p_clean_map=0.5",
    )
    assert head.config.refine_map is True
    own = head.state_dict()
    for name, value in base.state_dict().items():
        assert torch.equal(own[name], value), name
    assert torch.count_nonzero(own["refiner.map_in.weight"]) > 0  # started at zero: it trained


def test_a_map_refiner_trains_alone_and_the_map_changes(tmp_path, tiny_features, tiny_config):
    """``map_refine_channels`` with only ``map_refiner.`` trainable: its zero-initialised output
    convolution learns from the map loss; every base weight stays bit for bit, and the image
    refiner, frozen too, keeps adding nothing."""
    base, head = _base_and_head(
        tmp_path,
        tiny_features,
        tiny_config,
        "train.steps=6",
        "model.overrides.map_refine_channels=4",
        "model.trainable=[map_refiner.]",
    )
    assert head.config.map_refine_channels == 4
    own = head.state_dict()
    for name, value in base.state_dict().items():
        assert torch.equal(own[name], value), name
    assert torch.count_nonzero(own["map_refiner.conv_out.weight"]) > 0  # started at zero: it trained
    assert torch.count_nonzero(own["refiner.conv_out.weight"]) == 0  # frozen at its zero start


def test_a_dilated_map_refiner_trains_from_the_command_line(tmp_path, tiny_features, tiny_config):
    """``map_refine_dilations`` given as a list override: the residual dilated convolutions start at
    zero and learn once the output convolution passes the loss back to them."""
    _, head = _base_and_head(
        tmp_path,
        tiny_features,
        tiny_config,
        "train.steps=6",
        "model.overrides.map_refine_channels=4",
        "model.overrides.map_refine_dilations=[2, 4]",
        "model.trainable=[map_refiner.]",
    )
    assert list(head.config.map_refine_dilations) == [2, 4]
    for conv in head.map_refiner.conv_wide:
        assert torch.count_nonzero(conv.weight) > 0


@pytest.mark.parametrize(
    ("value", "message"),
    [("[nothing.]", "name no parameter"), ("[]", "non-empty list"), ("[3]", "non-empty list")],
)
def test_bad_trainable_prefixes(tmp_path, tiny_features, tiny_config, value, message):
    config = tiny_config(tmp_path / "run", tiny_features, "train.steps=1", f"model.trainable={value}")
    with pytest.raises(ConfigError, match=message):
        train(config, progress=False)
