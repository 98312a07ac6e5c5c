"""``pandiff evaluate``: sample a model on a dataset's scenes and write a JSON + Markdown report."""

from __future__ import annotations

import argparse

from pandiff import checks
from pandiff.checks import finite_float
from pandiff.cli import (
    add_image_map_guidance_argument,
    add_one_piece_argument,
    add_redraw_argument,
    add_scheduler_argument,
    add_self_check_arguments,
    check_self_check_arguments,
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model", default=None, help="pipeline folder (default: the bundled built-in-world model)"
    )
    p.add_argument("--data", required=True, help="built-in world or COCO folder (COCO 2017 panoptic layout)")
    p.add_argument("--out", default="report.json", help="JSON report path; report.md goes beside it")
    p.add_argument(
        "--mode",
        default="cogen",
        choices=["cogen", "map2image", "image2map", "downstream"],
        help="what to sample: prompt -> image+map (default), map -> image, image -> map, or the downstream proof",
    )
    p.add_argument("--n", type=int, default=500, help="scenes to evaluate (default 500)")
    p.add_argument("--steps", type=int, default=None, help="sampler steps (default: the model's, 20)")
    p.add_argument("--split", default="val", choices=["train", "val"], help="dataset split (default val)")
    p.add_argument(
        "--guidance", type=finite_float, default=None, help="text guidance scale (default: the model's)"
    )
    p.add_argument(
        "--map-guidance", type=finite_float, default=None, help="map guidance scale (default: the model's)"
    )
    p.add_argument(
        "--map-cleanup",
        type=int,
        default=None,
        help="generated maps (cogen, image2map): pieces of a segment without a NxN block of their own pixels (bit-threshold "
        "rims between segments) join their nearest neighbour; 0 keeps the thresholded bits as they are "
        "(default: the model's, 3)",
    )
    p.add_argument("--batch", type=int, default=16, help="scenes per sampling call (default 16)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument(
        "--generators",
        default="shared",
        choices=["shared", "per-sample"],
        help="shared (default): one generator for the whole run, as in the reports so far; per-sample: "
        "one per scene, seeded from (--seed, its index), so a scene's sample depends on nothing else "
        "(batch, other scenes' redraws) and two runs differ only where their settings act: the "
        "sharpest pairing for pandiff compare (not used by --mode downstream)",
    )
    add_one_piece_argument(p)
    add_scheduler_argument(p)
    add_redraw_argument(p)
    add_self_check_arguments(p)
    add_image_map_guidance_argument(p)
    p.add_argument(
        "--judge", default=None, help="judge folder (pandiff train-judge) for the world's judge metrics"
    )
    p.add_argument(
        "--allow-weak-judge",
        action="store_true",
        help="use a judge below the 0.95 validation mIoU a trustworthy judge needs (for smoke tests only)",
    )
    p.add_argument(
        "--judge-steps",
        type=int,
        default=1200,
        help="downstream mode: RegionNet steps of each judge trained (ThingNet: half; default 1200)",
    )
    p.add_argument("--inception", default=None, help="Inception weight file for FID/KID (torch-fidelity's)")
    p.add_argument("--clip", default=None, help="CLIP folder or cached hub id for the CLIP score")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")


def run(args: argparse.Namespace) -> int:
    from pandiff.evaluation.evaluate import EvaluationOptions, evaluate
    from pandiff.io import check_output_file
    from pandiff.world.judge import MIN_JUDGE_MIOU

    # Before any sampling: a bad --out or number used to fail only after all of it.
    check_output_file(args.out)
    checks.seed(args.seed)
    checks.device(args.device)
    check_self_check_arguments(args)
    for name in ("guidance", "map_guidance", "image_map_guidance"):
        if getattr(args, name) is not None:
            checks.guidance(getattr(args, name), f"--{name.replace('_', '-')}")
    opts = EvaluationOptions(
        model=args.model,
        data=args.data,
        out=args.out,
        mode=args.mode,
        n=args.n,
        steps=args.steps,
        split=args.split,
        guidance=args.guidance,
        map_guidance=args.map_guidance,
        map_cleanup=args.map_cleanup,
        one_piece_instances=args.one_piece_instances,
        redraw_image=args.redraw_image,
        self_check=args.self_check,
        best_of=args.best_of,
        avoid_touching=args.avoid_touching,
        separate_touching=args.separate_touching,
        colour_split=args.colour_split,
        misshapen=args.misshapen,
        picture_match=args.picture_match,
        restarts=args.restarts,
        colour_check=args.colour_check,
        snap_shapes=args.snap_shapes,
        spread_things=args.spread_things,
        cogen_steps=args.cogen_steps,
        image_map_guidance=args.image_map_guidance,
        batch=args.batch,
        seed=args.seed,
        generators=args.generators,
        scheduler=args.scheduler,
        map_scheduler=args.map_scheduler,
        judge=args.judge,
        min_judge_miou=0.0 if args.allow_weak_judge else MIN_JUDGE_MIOU,
        judge_steps=args.judge_steps,
        inception=args.inception,
        clip=args.clip,
        device=args.device,
    )
    report = evaluate(opts)
    for name, metric in report["metrics"].items():
        value = metric["value"]
        print(f"{name}: {'n/a' if value is None else f'{value:.4f}'}")
    for name, why in report["skipped"].items():
        print(f"skipped {name}: {why}")
    print(f"wrote {args.out} and its Markdown table")
    return 0
