"""The README's "Train your own on the built-in world" path, end to end at tiny sizes:
make-world -> prepare (no --codec: identity for a world) -> train --config world-s-pixel (a preset
name, from any folder) -> generate --model RUN (the run folder: its export RUN/final)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from pandiff.cli import main

README = Path(__file__).resolve().parents[1] / "README.md"


def test_the_readme_quickstart_runs_end_to_end(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # the preset is package data, not a path relative to the repository
    assert main(["make-world", "--out", "data/world", "--n", "12", "--workers", "1"]) == 0
    assert main(["prepare", "--data", "data/world", "--out", "features/world", "--batch-size", "8"]) == 0
    assert "identity codec" in capsys.readouterr().out
    manifest = json.loads(next(Path("features/world").rglob("manifest.json")).read_text())
    assert "identity" in json.dumps(manifest)
    tiny = [
        "train.steps=2", "train.batch_size=4", "train.compile=false", "train.warmup_steps=1",
        "train.checkpoint_every=2", "sample.every=0", "data.shuffle_buffer=8",
    ]  # fmt: skip
    sets = [arg for item in tiny for arg in ("--set", item)]
    argv = ["train", "--config", "world-s-pixel", "--set", "data.features=features/world"]
    assert main([*argv, "--run-dir", "runs/mine", *sets, "--no-progress"]) == 0
    assert (tmp_path / "runs/mine/final/pandiff_pipeline.json").is_file()
    capsys.readouterr()
    argv = ["generate", "two red circles on the grass", "--model", "runs/mine", "--n", "1", "--steps", "2"]
    assert main([*argv, "--out", "out"]) == 0
    done = capsys.readouterr()
    assert "runs/mine is a training run, not a pipeline folder; using its export runs/mine/final" in done.err
    assert "wrote 1 image+map pair(s) to out" in done.out
    assert (tmp_path / "out/000_image.png").is_file()


def test_the_readme_shows_the_quickstart_commands_and_the_vocabulary():
    from pandiff.world.generator import world_vocabulary

    text = README.read_text(encoding="utf-8")
    quickstart = text.split("## Train your own on the built-in world", 1)[1].split("\n## ", 1)[0]
    for command in ("pandiff make-world", "pandiff prepare", "--config world-s-pixel", "--model runs/"):
        assert command in quickstart
    assert "--codec" not in re.sub(r"#.*", "", quickstart.split("```")[1])  # prepare needs none
    known = text.split("## What the bundled model knows", 1)[1].split("\n## ", 1)[0]
    vocab = world_vocabulary()
    for word in vocab["shapes"] + vocab["colors"] + vocab["sizes"] + vocab["stuff"] + ["four"]:
        assert word in known, word
    for phrase in vocab["relations"]:
        assert phrase in known
