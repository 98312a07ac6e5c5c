"""``model.trainable``: train a new pixel refiner on a trained model while the rest stays frozen, so
the map (and every other prediction but the refined image) is exactly the trained model's."""

from __future__ import annotations

import pytest
import torch

from pandiff.errors import ConfigError
from pandiff.model import load_pdm
from pandiff.training.run import train


def test_only_the_named_parameters_train_and_the_export_keeps_the_rest(tmp_path, tiny_features, tiny_config):
    train(
        tiny_config(tmp_path / "base", tiny_features, "train.steps=4"),
        export=str(tmp_path / "base-out"),
        progress=False,
    )
    base = load_pdm(tmp_path / "base-out" / "model")
    config = tiny_config(
        tmp_path / "head",
        tiny_features,
        "train.steps=6",
        "model.overrides.refine_channels=4",
        f"model.warm_start={tmp_path / 'base-out' / 'model'}",
        "model.trainable=[refiner.]",
    )
    train(config, export=str(tmp_path / "head-out"), progress=False)
    head = load_pdm(tmp_path / "head-out" / "model")
    own = head.state_dict()
    for name, value in base.state_dict().items():
        assert torch.equal(own[name], value), name  # frozen: bit for bit the base model's
    changed = [n for n in own if n.startswith("refiner.") and n not in base.state_dict()]
    assert changed and torch.count_nonzero(own["refiner.conv_out.weight"]) > 0  # it trained


@pytest.mark.parametrize(
    ("value", "message"),
    [("[nothing.]", "name no parameter"), ("[]", "non-empty list"), ("[3]", "non-empty list")],
)
def test_bad_trainable_prefixes(tmp_path, tiny_features, tiny_config, value, message):
    config = tiny_config(tmp_path / "run", tiny_features, "train.steps=1", f"model.trainable={value}")
    with pytest.raises(ConfigError, match=message):
        train(config, progress=False)
