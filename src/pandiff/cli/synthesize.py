"""``pandiff synthesize``: argument parsing only; the work is :func:`pandiff.synthesize.synthesize`."""

from __future__ import annotations

import argparse

from pandiff.cli import (
    add_image_map_guidance_argument,
    add_one_piece_argument,
    add_redraw_argument,
    add_scheduler_argument,
    add_self_check_arguments,
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--out", required=True, help="dataset folder (COCO 2017 panoptic layout); must be new or empty"
    )
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--prompts", help="text file, one prompt per line (blank lines skipped)")
    source.add_argument(
        "--captions",
        help="COCO captions JSON; every caption is a prompt, ordered by image id, then caption id",
    )
    p.add_argument("--n", type=int, required=True, help="pairs to generate")
    p.add_argument(
        "--per-prompt", type=int, default=1,
        help="pairs per prompt; pair i draws prompt (i // K) mod len(prompts) (default 1)",
    )  # fmt: skip
    p.add_argument("--batch", type=int, default=16, help="pairs sampled at once; bounds memory (default 16)")
    p.add_argument("--steps", type=int, default=None, help="sampler steps (default: the model's, 20)")
    p.add_argument("--seed", type=int, default=0, help="pair i depends only on (seed, i) (default 0)")
    p.add_argument(
        "--model", default=None, help="pipeline folder (default: the bundled built-in-world model)"
    )
    p.add_argument(
        "--device", default="cpu",
        help="torch device (default cpu); with several CUDA processes each uses its own GPU",
    )  # fmt: skip
    p.add_argument(
        "--precision", default="auto", choices=["auto", "bf16", "fp32"],
        help="model forwards in bf16 autocast or fp32 (auto: bf16 on GPUs and on CPUs with native bf16)",
    )  # fmt: skip
    p.add_argument(
        "--resume", action="store_true", help="continue an interrupted run in --out (same settings)"
    )
    p.add_argument("--guidance", type=float, default=None, help="text guidance scale (default: the model's)")
    p.add_argument(
        "--map-guidance", type=float, default=None, help="map guidance scale (default: the model's)"
    )
    p.add_argument(
        "--map-cleanup", type=int, default=None,
        help="sliver size of the generated maps' clean-up, 0 = off (default: the model's, 3)",
    )  # fmt: skip
    add_one_piece_argument(p)
    add_scheduler_argument(p)
    add_redraw_argument(p)
    add_self_check_arguments(p)
    add_image_map_guidance_argument(p)
    p.add_argument(
        "--split", default="train", choices=["train", "val"], help="split name of the layout (default train)"
    )
    p.add_argument(
        "--shard-size",
        type=int,
        default=None,
        help="pairs per shard, the unit of resumption (default: 256 rounded up to a multiple of --batch)",
    )
    p.add_argument(
        "--workers", type=int, default=None,
        help="processes decoding maps and writing PNGs while the device samples (default 0 on a CPU, up to 8 on a GPU)",
    )  # fmt: skip
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from pandiff.synthesize import SynthesizeOptions, default_workers, synthesize

    opts = SynthesizeOptions(
        out=args.out, n=args.n, prompts=args.prompts, captions=args.captions, per_prompt=args.per_prompt,
        batch=args.batch, steps=args.steps, seed=args.seed, model=args.model, device=args.device,
        precision=args.precision, resume=args.resume, guidance=args.guidance, map_guidance=args.map_guidance,
        map_cleanup=args.map_cleanup, one_piece_instances=args.one_piece_instances,
        redraw_image=args.redraw_image, image_map_guidance=args.image_map_guidance, self_check=args.self_check, best_of=args.best_of,
        avoid_touching=args.avoid_touching, separate_touching=args.separate_touching,
        colour_split=args.colour_split,
        misshapen=args.misshapen,
        picture_match=args.picture_match,
        restarts=args.restarts,
        colour_check=args.colour_check,
        snap_shapes=args.snap_shapes,
        spread_things=args.spread_things,
        cogen_steps=args.cogen_steps,
        scheduler=args.scheduler, map_scheduler=args.map_scheduler, split=args.split, shard_size=args.shard_size,
        workers=default_workers(args.device) if args.workers is None else args.workers,
        progress=not args.no_progress,
    )  # fmt: skip
    summary = synthesize(opts)
    if summary["main"]:
        print(
            f"{summary['out']}: {summary['n']} pairs ({summary['written']} written now by this process, "
            f"{summary['resumed_shards']} shard(s) kept from before; {summary['pairs_per_second']} pairs/s "
            f"over {summary['processes']} process(es))"
        )
    return 0
