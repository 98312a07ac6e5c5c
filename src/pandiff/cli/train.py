"""``pandiff train``: train a PDM model from a YAML preset, then export its EMA weights.

Single process: ``pandiff train --config configs/world-s.yaml``. Several processes: the same
command under ``torchrun --nproc_per_node N -m pandiff.cli train ...`` (CPU or GPU) or
``accelerate launch -m pandiff.cli train ...`` (GPUs).
"""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config",
        default=None,
        help="a shipped preset's name (world-s-pixel, world-s, coco256-uvit-s2, ...) or a YAML file "
        "(default: the built-in defaults)",
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override a config value (repeatable), e.g. --set train.lr=1e-4 --set data.features=features/world",
    )
    p.add_argument("--run-dir", default=None, help="shortcut for --set run.dir=DIR")
    p.add_argument(
        "--resume", action="store_true", help="continue from the newest checkpoint in the run folder"
    )
    p.add_argument(
        "--export", default=None, metavar="DIR", help="pipeline folder for the EMA model (default RUN/final)"
    )
    p.add_argument(
        "--no-progress", action="store_true", help="no progress bar (logs still go to metrics.csv)"
    )
    p.add_argument(
        "--print-config", action="store_true", help="print the resolved config and its hash, then exit"
    )


def run(args: argparse.Namespace) -> int:
    from pandiff.training.config import load_config
    from pandiff.training.run import train

    overrides = list(args.overrides)
    if args.run_dir is not None:
        overrides.append(f"run.dir={args.run_dir}")
    config = load_config(args.config, overrides)
    if args.print_config:
        print(config.to_yaml(), end="")
        print(f"# config hash {config.hash()}")
        return 0
    return train(config, resume=args.resume, export=args.export, progress=not args.no_progress)
