"""``train.finite_checks=log`` (the default on accelerators): the divergence checks stay on the
device, so a training step makes no host sync; a non-finite step's update is skipped by the fused
AdamW and the run stops at the next log step, before any save (issue #22). Exercised on the CPU,
where ``auto`` keeps the per-step checks."""

from __future__ import annotations

import pytest
import torch

from pandiff.training import checkpoint as ckpt
from pandiff.training.trainer import NonFiniteLossError, Trainer


def _fit(config):
    trainer = Trainer(config, progress=False)
    try:
        trainer.fit()
    finally:
        trainer.close()
    return trainer


def test_deferred_checks_train_exactly_like_per_step_checks(tmp_path, tiny_features, tiny_config):
    runs = {}
    for mode in ("step", "log"):
        config = tiny_config(tmp_path / mode, tiny_features, "train.steps=12", f"train.finite_checks={mode}")
        trainer = _fit(config)
        assert trainer._defer is (mode == "log")
        runs[mode] = trainer
    assert runs["log"].history == runs["step"].history and len(runs["log"].history) == 12
    for p, q in zip(runs["log"].params, runs["step"].params):
        assert torch.equal(p, q)


def test_auto_keeps_per_step_checks_on_the_cpu(tmp_path, tiny_features, tiny_config):
    config = tiny_config(tmp_path / "run", tiny_features, "train.steps=1")
    assert config.train.finite_checks == "auto"
    assert _fit(config)._defer is False


def test_a_deferred_step_makes_no_host_sync(tmp_path, tiny_features, tiny_config, monkeypatch):
    """Host reads (``item``/``tolist``) during 12 steps logged once: per-step checks need at least
    one a step, deferred ones only the log step's."""
    counts = {}
    for mode in ("step", "log"):
        config = tiny_config(
            tmp_path / mode,
            tiny_features,
            "train.steps=12",
            "train.log_every=12",
            "train.checkpoint_every=100",
            f"train.finite_checks={mode}",
        )
        trainer = Trainer(config, progress=False)
        n = {"reads": 0}
        for name in ("item", "tolist"):
            real = getattr(torch.Tensor, name)

            def counting(self, *a, _real=real, _n=n, **k):
                _n["reads"] += 1
                return _real(self, *a, **k)

            monkeypatch.setattr(torch.Tensor, name, counting)
        try:
            trainer.fit()
        finally:
            monkeypatch.undo()
            trainer.close()
        counts[mode] = n["reads"]
    assert counts["step"] >= 12, counts
    assert counts["log"] < 12, counts


def test_a_non_finite_step_is_skipped_and_stops_the_run_at_the_log_step(
    tmp_path, tiny_features, tiny_config, poison_map_loss
):
    poison_map_loss(3)
    config = tiny_config(
        tmp_path / "run",
        tiny_features,
        "train.steps=8",
        "train.log_every=4",
        "train.checkpoint_every=100",
        "train.finite_checks=log",
    )
    trainer = Trainer(config, progress=False)
    with pytest.raises(
        NonFiniteLossError,
        match=r"step 3: the loss or gradient norm was not finite.*"
        r"skipped.*stopped at step 4.*last good checkpoint is none",
    ):
        trainer.fit()
    trainer.close()
    # four optimizer steps ran, three updates were applied: the fused kernel undid step 3's count
    steps = {int(s["step"]) for s in trainer._raw_optimizer.state.values()}
    assert steps == {3}
    assert all(torch.isfinite(p).all() for p in trainer.params)
    assert ckpt.list_checkpoints(tmp_path / "run") == []
