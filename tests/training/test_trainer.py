"""The training loop: the loss falls, a resumed run repeats the uninterrupted one exactly,
checkpoints are kept and exported, the NaN guard stops a diverging run."""

from __future__ import annotations

import json

import pytest
import torch

from pandiff.errors import ConfigError
from pandiff.model import load_pdm
from pandiff.training import checkpoint as ckpt
from pandiff.training.metrics import read_metrics
from pandiff.training.trainer import NonFiniteLossError, Trainer


def run(config, resume: bool = False) -> tuple[Trainer, list[dict]]:
    trainer = Trainer(config, resume=resume, progress=False)
    try:
        history = trainer.fit()
    finally:
        trainer.close()
    return trainer, history


def test_loss_falls_and_run_folder_is_complete(tmp_path, tiny_features, tiny_config):
    config = tiny_config(tmp_path / "run", tiny_features, "train.steps=40", "sample.every=40")
    trainer, history = run(config)
    losses = [h["loss"] for h in history]
    assert len(losses) == 40
    first, last = sum(losses[:8]) / 8, sum(losses[-8:]) / 8
    assert last < 0.8 * first, (first, last)

    # keep_checkpoints=2 of the checkpoints at 10, 20, 30, 40
    assert [p.name for p in ckpt.list_checkpoints(tmp_path / "run")] == [
        "checkpoint-00000030",
        "checkpoint-00000040",
    ]
    rows = read_metrics(tmp_path / "run")
    assert [r["step"] for r in rows] == [5, 10, 15, 20, 25, 30, 35, 40]
    assert rows[-1]["loss"] == pytest.approx(sum(losses[-5:]) / 5, rel=1e-4)
    assert rows[0]["samples_per_s"] > 0 and rows[-1]["lr"] == pytest.approx(2e-3)
    assert (tmp_path / "run" / "samples" / "step-00000040.png").is_file()

    out = trainer.export(tmp_path / "export")
    spec = json.loads((out / "pandiff_pipeline.json").read_text())
    assert spec["codec"] == "identity" and spec["instance_bits"] == 3 and len(spec["categories"]) == 11
    assert spec["schedule"]["map_noise_scale"] == 2.0 and spec["trained_steps"] == 40
    exported = load_pdm(out / "model")
    ema = ckpt.load_checkpoint(tmp_path / "run" / "checkpoint-00000040")[1]
    for name, value in exported.state_dict().items():
        assert torch.equal(value, ema[name]), name  # the export holds the EMA weights


def test_resume_repeats_the_uninterrupted_losses(tmp_path, tiny_features, tiny_config, monkeypatch):
    steps = ["train.steps=24", "train.checkpoint_every=5", "train.grad_accum=2"]
    _, reference = run(tiny_config(tmp_path / "a", tiny_features, *steps))

    config = tiny_config(tmp_path / "b", tiny_features, *steps)
    end_step = Trainer._end_step

    def crash_at_13(self, sums):
        end_step(self, sums)
        if self.state.step == 13:
            raise KeyboardInterrupt  # a kill between checkpoints 10 and 15

    monkeypatch.setattr(Trainer, "_end_step", crash_at_13)
    with pytest.raises(KeyboardInterrupt):
        run(config)
    monkeypatch.setattr(Trainer, "_end_step", end_step)
    assert ckpt.latest_checkpoint(tmp_path / "b").name == "checkpoint-00000010"

    with pytest.raises(ConfigError, match="--resume"):
        Trainer(config, progress=False)  # an existing run is never overwritten silently
    _, resumed = run(config, resume=True)
    assert [h["step"] for h in resumed] == list(range(11, 25))
    assert resumed == reference[10:]  # bit-identical losses
    a = ckpt.load_checkpoint(tmp_path / "a" / "checkpoint-00000024")
    b = ckpt.load_checkpoint(tmp_path / "b" / "checkpoint-00000024")
    for x, y in zip(a[:2], b[:2]):
        assert all(torch.equal(x[k], y[k]) for k in x)
    assert [r["step"] for r in read_metrics(tmp_path / "b")] == [5, 10, 15, 20, 24]


def test_nan_loss_stops_the_run_and_keeps_the_last_checkpoint(
    tmp_path, tiny_features, tiny_config, poison_map_loss
):
    poison_map_loss(14)
    config = tiny_config(tmp_path / "run", tiny_features)
    with pytest.raises(NonFiniteLossError, match=r"step 14: map_loss is not finite.*checkpoint-00000010"):
        run(config)
    assert [p.name for p in ckpt.list_checkpoints(tmp_path / "run")] == ["checkpoint-00000010"]
    state = ckpt.load_checkpoint(tmp_path / "run" / "checkpoint-00000010")[2]
    assert state["step"] == 10


def test_two_stream_training_leaves_the_image_stream_untouched(
    tmp_path, tiny_features, tiny_config, tiny_model
):
    from pandiff.model import pdm_from_preset

    image_fields = {k: v for k, v in tiny_model.items() if k != "patch_factor"}
    uvit = pdm_from_preset("world-s", "image-only", **image_fields)  # stands in for a pretrained U-ViT
    uvit.save_pretrained(tmp_path / "uvit")
    config = tiny_config(
        tmp_path / "run",
        tiny_features,
        "train.steps=6",
        f"model.image_stream={tmp_path / 'uvit'}",
        variant="two-stream",
    )
    trainer = Trainer(config, progress=False)
    before = {k: v.clone() for k, v in trainer.model.image_stream.state_dict().items()}
    assert all(torch.equal(v, uvit.state_dict()[k]) for k, v in before.items())
    trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    in_optimizer = sum(p.numel() for g in trainer.optimizer.param_groups for p in g["params"])
    assert in_optimizer == trainable < sum(p.numel() for p in trainer.model.parameters())
    trainer.fit()
    trainer.close()
    after = trainer.model.image_stream.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # bit-identical
    assert len(trainer.optimizer.state) == len(trainer.params)  # no optimizer state for frozen weights
    trained = [n for n, p in trainer.model.named_parameters() if p.requires_grad]
    assert trained and not any(n.startswith("image_stream.") for n in trained)
    zero_proj = trainer.model.zero_projs[0].weight
    assert zero_proj.abs().sum() > 0  # the map stream did learn


def test_train_command_trains_resumes_and_exports(tmp_path, tiny_features, tiny_config, capsys):
    from pandiff.cli import main

    config = tiny_config(tmp_path / "run", tiny_features, "train.steps=4", "train.checkpoint_every=2")
    (tmp_path / "config.yaml").write_text(config.to_yaml())
    base = ["train", "--config", str(tmp_path / "config.yaml"), "--no-progress"]
    assert main([*base, "--export", str(tmp_path / "pipe")]) == 0
    assert "trained to step 4" in capsys.readouterr().out
    assert (tmp_path / "pipe" / "model" / "config.json").is_file()
    assert main(base) == 2  # the run folder holds checkpoints: refused without --resume
    assert "pass --resume" in capsys.readouterr().err
    first = json.loads((tmp_path / "pipe" / "pandiff_pipeline.json").read_text())
    assert first["redraw_image"] is False and first["one_piece_instances"] is False
    more = [
        "--set",
        "train.steps=6",
        "--set",
        "sample.redraw_image=true",
        "--set",
        "sample.one_piece_instances=true",
    ]
    assert main([*base, "--resume", *more]) == 0
    exported = json.loads((tmp_path / "run" / "final" / "pandiff_pipeline.json").read_text())
    assert exported["trained_steps"] == 6 and exported["redraw_image"] is True  # the folder's default
    assert exported["one_piece_instances"] is True
    assert [p.name for p in ckpt.list_checkpoints(tmp_path / "run")] == [
        "checkpoint-00000004",
        "checkpoint-00000006",
    ]


def test_image_only_stream_then_two_stream(tmp_path, tiny_features, tiny_config, tiny_model):
    """The two-stream recipe: a text-to-image U-ViT trained first (image loss only), exported,
    then taken as the frozen image stream of a two-stream model."""
    from pandiff.errors import WeightsError
    from pandiff.model import UViT
    from pandiff.pipeline import PanopticDiffusionPipeline
    from pandiff.training.config import ModelConfig
    from pandiff.training.setup import build_model

    config = tiny_config(
        tmp_path / "uvit", tiny_features, "train.steps=40", "sample.every=40", variant="image-only"
    )
    trainer, history = run(config)
    assert isinstance(trainer.model, UViT)
    losses = [h["image_loss"] for h in history]
    assert sum(losses[-8:]) / 8 < 0.8 * sum(losses[:8]) / 8
    assert all(h["map_loss"] == 0 for h in history)
    assert (tmp_path / "uvit" / "samples" / "step-00000040.png").is_file()
    out = trainer.export(tmp_path / "uvit-export")
    with pytest.raises(WeightsError, match="image-only"):
        PanopticDiffusionPipeline.from_pretrained(out)

    cfg = ModelConfig("world-s", "two-stream", dict(tiny_model), image_stream=str(out / "model"))
    two_stream = build_model(cfg, seed=0)
    stream = load_pdm(out / "model")
    for name, value in two_stream.image_stream.state_dict().items():
        assert torch.equal(value, stream.state_dict()[name]), name


def test_image_only_run_can_start_from_a_unified_model(tmp_path, tiny_model):
    """model.init of an image-only run may name a unified PDM: its image side is the U-ViT."""
    from pandiff.model import UViT, pdm_from_preset
    from pandiff.training.config import ModelConfig
    from pandiff.training.setup import build_model

    torch.manual_seed(0)
    unified = pdm_from_preset("world-s", **tiny_model)
    with torch.no_grad():
        for p in unified.parameters():
            p.add_(0.05 * torch.randn_like(p))
    unified.save_pretrained(tmp_path / "unified")
    uvit = build_model(
        ModelConfig("world-s", "image-only", dict(tiny_model), init=str(tmp_path / "unified")), 0
    )
    assert isinstance(uvit, UViT)
    x, text = torch.randn(2, 3, 16, 16), torch.randn(2, 16, 32)
    t = torch.tensor([10, 700])
    with torch.no_grad():
        expected = unified.eval()(x, t, text).image  # no map tokens: the unified model's U-ViT pass
        torch.testing.assert_close(uvit.eval()(x, t, text).image, expected)


def test_compile_option_reaches_accelerate():
    from accelerate.utils import DynamoBackend

    from pandiff.training.setup import make_accelerator

    assert make_accelerator("fp32", 1, compile=True).state.dynamo_plugin.backend == DynamoBackend.INDUCTOR
    assert make_accelerator("fp32", 1).state.dynamo_plugin.backend == DynamoBackend.NO


@pytest.mark.slow
def test_compiled_training_repeats_the_eager_losses_and_saves_plain_weights(
    tmp_path, tiny_features, tiny_config
):
    """train.compile=true (torch.compile through Accelerate): same losses as eager up to kernel
    rounding, and the checkpoint keeps the plain module's parameter names."""
    eager = [h["loss"] for h in run(tiny_config(tmp_path / "eager", tiny_features, "train.steps=6"))[1]]
    trainer, history = run(
        tiny_config(tmp_path / "jit", tiny_features, "train.steps=6", "train.compile=true")
    )
    assert trainer.ddp_model is not trainer.model  # the compiled wrapper ran the steps
    assert [h["loss"] for h in history] == pytest.approx(eager, rel=1e-3)
    saved = ckpt.load_checkpoint(tmp_path / "jit" / "checkpoint-00000006")[0]
    assert set(saved) == set(trainer.model.state_dict())


def test_a_model_that_cannot_be_compiled_stops_with_a_clear_message(
    tmp_path, tiny_features, tiny_config, monkeypatch
):
    from torch._dynamo.exc import TorchDynamoException

    from pandiff.training import trainer as trainer_module

    def fail(*args, **kwargs):
        raise TorchDynamoException("InvalidCxxCompiler: No working C++ compiler found")

    monkeypatch.setattr(trainer_module, "joint_loss", fail)
    config = tiny_config(tmp_path / "run", tiny_features, "train.steps=2", "train.compile=true")
    with pytest.raises(
        ConfigError, match=r"train.compile=true.*No working C\+\+ compiler.*train.compile=false"
    ):
        run(config)


def test_resident_features_train_exactly_as_the_shard_stream(tmp_path, tiny_features, tiny_config):
    """data.resident (the split held in the device's memory) feeds the same batches: identical losses."""
    steps = ["train.steps=6", "sample.every=0"]
    _, streamed = run(tiny_config(tmp_path / "a", tiny_features, *steps))
    trainer, resident = run(tiny_config(tmp_path / "b", tiny_features, *steps, "data.resident=true"))
    assert type(trainer.data.stream).__name__ == "ResidentStream"
    assert resident == streamed
    with pytest.raises(ConfigError, match="data.resident"):
        tiny_config(tmp_path / "c", tiny_features, "data.resident=true", "data.num_workers=2")


def test_warm_start_carries_the_transformer_from_pixel_to_latent_space(tmp_path, tiny_model):
    """model.warm_start: a latent-space model takes every matching weight of a pixel-space one (the
    whole transformer, text and map parts); only the image patch embedding and head start afresh."""
    from pandiff.model import pdm_from_preset
    from pandiff.training.config import ModelConfig
    from pandiff.training.setup import build_model

    # 16 px pixels in 4x4 patches and 4x4x4 latents in 1x1 patches: 16 image + 16 map tokens each.
    latent_fields = {**tiny_model, "latent_channels": 4, "latent_size": 4, "patch_size": 1, "patch_factor": 4}
    torch.manual_seed(0)
    pixel = pdm_from_preset("world-s", **tiny_model)
    pixel.save_pretrained(tmp_path / "pixel")
    warm = ModelConfig("world-s", "unified", latent_fields, warm_start=str(tmp_path / "pixel"))
    latent = build_model(warm, 0)
    scratch = build_model(ModelConfig("world-s", "unified", latent_fields), 0)
    source, ours, cold = pixel.state_dict(), latent.state_dict(), scratch.state_dict()
    fresh = {k for k in ours if k not in source or source[k].shape != ours[k].shape}
    assert {k.split(".")[0] for k in fresh} == {"patch_embed", "decoder_pred", "final_layer"}
    for k in ours:
        assert torch.equal(ours[k], cold[k] if k in fresh else source[k]), k
    deeper = ModelConfig(
        "world-s", "unified", {**latent_fields, "depth": 4}, warm_start=str(tmp_path / "pixel")
    )
    with pytest.raises(ConfigError, match="warm_start"):
        build_model(deeper, 0)
