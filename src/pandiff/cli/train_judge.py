"""``pandiff train-judge``: train the built-in world's judge network and report its validation mIoU."""

from __future__ import annotations

import argparse
import sys

from pandiff import checks
from pandiff.checks import finite_float


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, help="built-in world folder (pandiff make-world)")
    p.add_argument(
        "--out", required=True, help="judge folder to write (config.json, judge.safetensors, metrics.json)"
    )
    p.add_argument("--steps", type=int, default=1200, help="RegionNet steps (default 1200)")
    p.add_argument("--batch", type=int, default=8, help="images per RegionNet step (default 8)")
    p.add_argument("--thing-steps", type=int, default=600, help="ThingNet steps (default 600)")
    p.add_argument("--lr", type=finite_float, default=3e-3, help="peak learning rate (default 3e-3)")
    p.add_argument("--width", type=int, default=16, help="channels of RegionNet's first stage (default 16)")
    p.add_argument("--limit", type=int, default=None, help="train on at most this many scenes (default: all)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")


def run(args: argparse.Namespace) -> int:
    from pandiff.io import check_output_dir
    from pandiff.world.judge import MIN_JUDGE_MIOU
    from pandiff.world.judge_training import train_judge

    for name in ("steps", "batch", "thing_steps", "width"):
        checks.number(getattr(args, name), f"--{name.replace('_', '-')}", 1, 1_000_000, integer=True)
    if args.limit is not None:
        checks.number(args.limit, "--limit", 2, integer=True, hint=" (a train and a val scene at least)")
    checks.number(args.lr, "--lr", 0.0, 1.0, lo_open=True)
    checks.seed(args.seed)
    # Before training: the judge folder replaces only an earlier judge (or pandiff output).
    check_output_dir(args.out, overwrite=True, protect=[args.data])
    metrics = train_judge(
        args.data,
        args.out,
        limit=args.limit,
        steps=args.steps,
        batch=args.batch,
        thing_steps=args.thing_steps,
        lr=args.lr,
        width=args.width,
        seed=args.seed,
    )
    print(
        f"judge: validation mIoU {metrics['val_miou']:.4f}, PQ {metrics['val_pq']:.4f} on {metrics['val_images']} "
        f"images (majority-class baseline mIoU {metrics['majority_baseline_miou']:.4f}); trained on "
        f"{metrics['train_images']} images in {metrics['seconds']:.0f} s; saved to {args.out}"
    )
    if not metrics["usable"]:
        print(
            f"pandiff train-judge: the judge is below the {MIN_JUDGE_MIOU} validation mIoU a judge needs; "
            "pandiff evaluate will refuse it. Train longer (--steps, --thing-steps) or on a larger world",
            file=sys.stderr,
        )
        return 1
    return 0
