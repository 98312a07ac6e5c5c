"""Run by ``torchrun --nproc_per_node 2`` from test_distributed.py: train a tiny config, then
write this rank's weights and losses so the test can compare the ranks."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

from pandiff.training.config import load_config
from pandiff.training.trainer import Trainer


def main(config_path: str, out: str) -> None:
    torch.set_num_threads(1)
    trainer = Trainer(load_config(config_path), progress=False)
    history = trainer.fit()
    trainer.close()
    rank = trainer.accelerator.process_index
    state = {k: v.contiguous() for k, v in trainer.model.state_dict().items()}
    save_file(state, str(Path(out) / f"rank{rank}.safetensors"))
    info = {
        "world_size": trainer.accelerator.num_processes,
        "distributed_type": str(trainer.accelerator.distributed_type),
        "history": history,
        "batches_per_epoch": trainer.data.stream.batches_per_epoch,
    }
    (Path(out) / f"rank{rank}.json").write_text(json.dumps(info))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
