"""A real 2-process CPU run (torchrun, gloo): gradients are averaged across the ranks, so their
weights stay equal while they see different data, and one checkpoint is written."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from pandiff.training import checkpoint as ckpt


@pytest.mark.slow  # two fresh Python processes importing torch: ~20 s on the shared test machine
@pytest.mark.skipif(shutil.which("torchrun") is None, reason="torchrun is not installed")
def test_two_cpu_processes_train_in_sync(tmp_path, tiny_features, tiny_config):
    config = tiny_config(
        tmp_path / "run", tiny_features, "train.steps=6", "train.checkpoint_every=100", "train.batch_size=4"
    )
    config_path = tmp_path / "config.yaml"
    config_path.write_text(config.to_yaml())
    out = tmp_path / "out"
    out.mkdir()
    env = dict(os.environ, OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    script = Path(__file__).with_name("_ddp_train.py")
    result = subprocess.run(
        ["torchrun", "--standalone", "--nproc_per_node", "2", str(script), str(config_path), str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]

    infos = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert all(i["world_size"] == 2 and i["distributed_type"] == "DistributedType.MULTI_CPU" for i in infos)
    assert [h["step"] for h in infos[0]["history"]] == list(range(1, 7))
    # The ranks see different batches (different losses) yet end with identical weights.
    assert infos[0]["history"] != infos[1]["history"]
    a, b = load_file(str(out / "rank0.safetensors")), load_file(str(out / "rank1.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    saved = ckpt.list_checkpoints(tmp_path / "run")
    assert [p.name for p in saved] == ["checkpoint-00000006"]
    model_state, _, state = ckpt.load_checkpoint(saved[0])
    assert all(torch.equal(model_state[k], a[k]) for k in a)
    assert len(state["rng"]) == 2 and state["samples_seen"] == 6 * 4 * 2
