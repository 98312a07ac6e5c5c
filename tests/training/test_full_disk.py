"""A full disk (ENOSPC) in the middle of training or of ``prepare``: one clear line, nothing half
written left behind, the earlier work intact, and ``--resume`` (or the same command) finishes."""

from __future__ import annotations

import errno

from safetensors.torch import save_file as real_save_file

from pandiff.cli import main
from pandiff.data import shards
from pandiff.training import checkpoint as ckpt


def disk_full_on(calls: list, when: int):
    """A ``save_file`` stand-in that fails with ENOSPC on its ``when``-th call (0-based)."""

    def save_file(tensors, path, *args, **kwargs):
        calls.append(path)
        if len(calls) - 1 == when:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real_save_file(tensors, path, *args, **kwargs)

    return save_file


def one_line(err: str) -> bool:
    """One error line that names the full disk, and no traceback (a progress bar may share stderr)."""
    errors = [line for line in err.replace("\r", "\n").splitlines() if "error:" in line]
    return len(errors) == 1 and "No space left on device" in errors[0] and "Traceback" not in err


def test_full_disk_at_a_checkpoint_keeps_the_last_one_and_resumes(
    tmp_path, tiny_features, tiny_config, capsys, monkeypatch
):
    config = tiny_config(tmp_path / "run", tiny_features, "train.steps=4", "train.checkpoint_every=2")
    (tmp_path / "config.yaml").write_text(config.to_yaml())
    base = ["train", "--config", str(tmp_path / "config.yaml"), "--no-progress"]
    calls: list = []
    monkeypatch.setattr(ckpt, "save_file", disk_full_on(calls, when=2))  # checkpoint 4's model weights
    assert main(base) == 1
    assert one_line(capsys.readouterr().err)
    run = tmp_path / "run"
    assert [p.name for p in ckpt.list_checkpoints(run)] == ["checkpoint-00000002"]
    assert ckpt.load_checkpoint(ckpt.latest_checkpoint(run))  # the kept checkpoint is whole
    assert not [p for p in run.iterdir() if p.name.startswith(".")]  # no half-written folder left
    monkeypatch.setattr(ckpt, "save_file", real_save_file)  # space again
    assert main([*base, "--resume"]) == 0
    assert "trained to step 4" in capsys.readouterr().out


def test_full_disk_in_prepare_leaves_whole_shards_and_the_same_command_finishes(
    tmp_path, tiny_world, tiny_text_encoder_dir, capsys, monkeypatch
):
    out = tmp_path / "features"
    args = ["prepare", "--data", str(tiny_world), "--out", str(out), "--codec", "identity", "--text-encoder",
            str(tiny_text_encoder_dir), "--text-max-length", "16", "--image-size", "16", "--map-size", "16",
            "--shard-size", "16"]  # fmt: skip
    calls: list = []
    monkeypatch.setattr(
        shards, "save_file", disk_full_on(calls, when=2)
    )  # after the empty prompt and one shard
    assert main(args) == 1
    assert one_line(capsys.readouterr().err)
    assert not list(out.rglob("*.tmp"))  # no half-written shard (atomic writes use .*.tmp names)
    assert sorted(p.name for p in out.glob("train-*.safetensors")) == ["train-00000.safetensors"]
    monkeypatch.setattr(shards, "save_file", real_save_file)
    assert main(args) == 0
    manifest = shards.FeatureManifest.read(out)
    assert sum(count for _, count in manifest.shard_files("train")) > 16
