"""A `pandiff train` process killed with SIGKILL loses at most one checkpoint interval, and the
run resumed from its newest checkpoint repeats the uninterrupted losses."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from pandiff.training import checkpoint as ckpt
from pandiff.training.trainer import Trainer


@pytest.mark.slow  # a separate `pandiff train` process, killed mid-run
def test_sigkill_loses_at_most_one_interval(tmp_path, tiny_features, tiny_config):
    sets = ["train.checkpoint_every=5", "train.keep_checkpoints=2"]
    config = tiny_config(tmp_path / "run", tiny_features, "train.steps=100000", *sets)
    (tmp_path / "config.yaml").write_text(config.to_yaml())
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pandiff.cli",
            "train",
            "--config",
            str(tmp_path / "config.yaml"),
            "--no-progress",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.time() + 120
        while time.time() < deadline and ckpt.latest_checkpoint(tmp_path / "run") is None:
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            time.sleep(0.05)
        time.sleep(0.3)  # somewhere inside the next interval, possibly mid-save
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    last = ckpt.latest_checkpoint(tmp_path / "run")
    assert last is not None
    killed_at = int(last.name.split("-")[1])
    ckpt.load_checkpoint(last)  # complete and readable

    steps = killed_at + 8
    reference = Trainer(
        tiny_config(tmp_path / "ref", tiny_features, f"train.steps={steps}", *sets), progress=False
    )
    expected = reference.fit()
    reference.close()
    resumed = Trainer(
        tiny_config(tmp_path / "run", tiny_features, f"train.steps={steps}", *sets),
        resume=True,
        progress=False,
    )
    assert resumed.state.step == killed_at
    assert not list((tmp_path / "run").glob(".checkpoint-*"))  # half-written folders are cleared
    history = resumed.fit()
    resumed.close()
    assert history == expected[killed_at:]
