"""A diverging run never saves or exports non-finite weights, the checkpoint called "last good"
is one, and a resume skips a corrupt or refused newest checkpoint (issue 18)."""

from __future__ import annotations

import pickle

import pytest
import torch

from pandiff.errors import WeightsError
from pandiff.training import checkpoint as ckpt
from pandiff.training.run import train
from pandiff.training.trainer import NonFiniteLossError, Trainer


def test_an_overflowing_update_is_neither_saved_nor_exported(tmp_path, tiny_features, tiny_config):
    # lr 1e39 is a finite float, but the float32 update overflows to inf: the loss of that step
    # was still finite, so only the weight check can catch it.
    config = tiny_config(
        tmp_path / "run", tiny_features, "train.lr=1e39", "train.steps=1", "train.warmup_steps=0"
    )
    with pytest.raises(NonFiniteLossError, match="NaN or infinite weights.*none \\(no checkpoint"):
        train(config, export=str(tmp_path / "export"), progress=False)
    assert ckpt.list_checkpoints(tmp_path / "run") == []
    assert not (tmp_path / "export").exists() and not (tmp_path / "run" / "final").exists()


def test_weights_that_diverge_are_set_aside_and_resume_skips_them(tmp_path, tiny_features, tiny_config):
    # lr 1e30: step 1 leaves finite but huge weights (checkpointed), whose loss at step 2 is not finite.
    over = ("train.lr=1e30", "train.steps=3", "train.warmup_steps=0", "train.checkpoint_every=1")
    config = tiny_config(tmp_path / "run", tiny_features, *over)
    with pytest.raises(NonFiniteLossError, match="checkpoint-00000001 gave it.*last good checkpoint is none"):
        train(config, progress=False)
    assert ckpt.list_checkpoints(tmp_path / "run") == []
    assert (tmp_path / "run" / "diverged-checkpoint-00000001" / "model.safetensors").is_file()  # kept aside


def _run(config, resume=False):
    trainer = Trainer(config, resume=resume, progress=False)
    try:
        trainer.fit()
    finally:
        trainer.close()
    return trainer


@pytest.mark.parametrize("damage", ["truncated", "pickle", "nan"])
def test_resume_falls_back_past_a_bad_newest_checkpoint(damage, tmp_path, tiny_features, tiny_config):
    config = tiny_config(tmp_path / "run", tiny_features, "train.steps=20")
    _run(config)
    newest = ckpt.checkpoint_path(tmp_path / "run", 20)
    if damage == "truncated":
        data = (newest / "model.safetensors").read_bytes()
        (newest / "model.safetensors").write_bytes(data[: len(data) // 2])
    elif damage == "pickle":
        (newest / "training_state.pt").write_bytes(pickle.dumps(Exception("arbitrary object")))
    else:
        from safetensors.torch import load_file, save_file

        state = load_file(newest / "ema.safetensors")
        next(iter(state.values())).fill_(float("nan"))
        save_file(state, newest / "ema.safetensors")
    message = {"truncated": "unreadable", "pickle": "refuses to unpickle", "nan": "NaN or infinite"}[damage]
    with pytest.raises(WeightsError, match=message):
        ckpt.load_checkpoint(newest)
    with pytest.warns(UserWarning, match=f"skipping checkpoint .*checkpoint-00000020.*{message}"):
        trainer = Trainer(config, resume=True, progress=False)
    assert trainer.state.step == 10
    trainer.fit()
    trainer.close()
    assert trainer.state.step == 20
    _, ema, _ = ckpt.load_checkpoint(newest)  # rewritten whole
    assert all(torch.isfinite(v).all() for v in ema.values())
