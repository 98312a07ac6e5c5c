"""``pandiff generate`` (prompt -> image + map, or map -> image) and ``pandiff segment`` (image -> map)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from PIL import Image

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
from pandiff.data.categories import CategoryTable
from pandiff.data.readers import read_image, read_panoptic_png
from pandiff.io import check_output_dir
from pandiff.pipeline_config import DEFAULT_MODEL_DIR, PipelineConfig, resolve_model_dir


def add_common(p: argparse.ArgumentParser, default_n: int, out: str = "outputs/generate") -> None:
    p.add_argument(
        "--model", default=None, help="pipeline folder (default: the bundled built-in-world model)"
    )
    p.add_argument("--n", type=int, default=default_n, help=f"samples to draw (default {default_n})")
    p.add_argument("--steps", type=int, default=None, help="sampler steps (default: the model's, 20)")
    p.add_argument(
        "--seed", type=int, default=0, help="random seed; equal seeds give equal outputs (default 0)"
    )
    p.add_argument(
        "--guidance", type=finite_float, default=None, help="text guidance scale (default: the model's)"
    )
    p.add_argument(
        "--map-guidance",
        type=finite_float,
        default=None,
        help="classifier-free map guidance scale (default: the model's)",
    )
    p.add_argument(
        "--map-cleanup",
        type=int,
        default=None,
        help="generated maps: pieces of a segment without a NxN block of their own pixels (bit-threshold "
        "rims between segments) join their nearest neighbour; 0 keeps the thresholded bits as they are "
        "(default: the model's, 3)",
    )
    add_one_piece_argument(p)
    add_scheduler_argument(p)
    p.add_argument("--out", default=out, help=f"output folder (default {out})")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an earlier output of pandiff at --out (never a folder or file pandiff did not write)",
    )
    p.add_argument(
        "--batch", type=int, default=16, help="samples per model call; bounds memory for any --n (default 16)"
    )
    p.add_argument("--resize", action="store_true", help="allow lossy resizing of a given map or image")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("prompt", help="text prompt describing the scene (the words it knows: below)")
    add_common(p, default_n=4)
    add_redraw_argument(p)
    add_self_check_arguments(p)
    add_image_map_guidance_argument(p)
    p.add_argument(
        "--map",
        default=None,
        help="COCO panoptic PNG to draw the image for (map -> image); its segments_info is read from "
        "--map-json, or from a panoptic.json beside or above the PNG",
    )
    p.add_argument(
        "--map-json", default=None, help="COCO panoptic JSON holding the --map PNG's segments_info"
    )


def add_segment_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("image", help="RGB image to segment (image -> map)")
    p.add_argument(
        "prompt",
        nargs="?",
        default="",
        help="what the image shows (optional: without it the map follows the image alone, through the "
        "empty prompt the model was trained on for 10%% of its steps)",
    )
    add_common(p, default_n=1, out="outputs/segment")


def _check_args(args) -> None:
    """Every option, before the model loads or anything is written (sampler steps are bounded
    by the model's schedule when it has loaded)."""
    if args.steps is not None:
        checks.number(args.steps, "--steps", 1, integer=True)
    checks.number(args.n, "--n", 1, 1_000_000, integer=True)
    checks.number(args.batch, "--batch", 1, 4096, integer=True)
    checks.seed(args.seed)
    for name in ("guidance", "map_guidance", "image_map_guidance"):
        if getattr(args, name, None) is not None:
            checks.guidance(getattr(args, name), f"--{name.replace('_', '-')}")
    if args.map_cleanup is not None:
        checks.number(args.map_cleanup, "--map-cleanup", 0, integer=True)
    check_self_check_arguments(args)
    checks.device(args.device)
    model = Path(args.model) if args.model else DEFAULT_MODEL_DIR
    check_output_dir(args.out, args.overwrite, protect=[model])


def _run(args, image: Image.Image | None = None) -> int:
    import torch

    from pandiff.coco_export import write_export
    from pandiff.pipeline import PanopticDiffusionPipeline, PipelineOutput

    start = time.perf_counter()
    model_dir = resolve_model_dir(args.model)  # a training run's folder: its export RUN/final
    pmap = None
    if getattr(args, "map", None):  # the given map first: a wrong file fails before the weights load
        table = CategoryTable.from_coco(PipelineConfig.from_pretrained(model_dir).categories)
        pmap = read_panoptic_png(args.map, args.map_json, table)
    pipe = PanopticDiffusionPipeline.from_pretrained(
        model_dir, device=args.device, scheduler=args.scheduler, map_scheduler=args.map_scheduler
    )
    pipe.check_prompts(args.prompt, allow_empty=image is not None)
    loaded = time.perf_counter()
    image_map_guidance = getattr(args, "image_map_guidance", None)  # segment has no such option
    settings = pipe.call_settings(
        args.guidance, args.map_guidance, args.steps, args.map_cleanup, image_map_guidance,
        args.one_piece_instances,
    )  # fmt: skip
    generator = torch.Generator().manual_seed(args.seed)
    out = PipelineOutput([], [], [], [])
    for first in range(0, args.n, args.batch):  # batches of --batch keep memory bounded for any --n
        part = pipe(
            args.prompt,
            num_inference_steps=args.steps,  # None: the model folder's (the pipeline resolves it)
            guidance_scale=args.guidance,
            map_guidance_scale=args.map_guidance,
            num_images=min(args.batch, args.n - first),
            generator=generator,
            map=pmap,
            image=image,
            resize=args.resize,
            progress=True,
            map_cleanup=args.map_cleanup,
            one_piece_instances=args.one_piece_instances,
            redraw_image=getattr(args, "redraw_image", None),
            image_map_guidance_scale=image_map_guidance,
            self_check=getattr(args, "self_check", None),
            best_of=getattr(args, "best_of", None),
            avoid_touching=getattr(args, "avoid_touching", None),
            separate_touching=getattr(args, "separate_touching", None),
            colour_split=getattr(args, "colour_split", None),
            misshapen=getattr(args, "misshapen", None),
            picture_match=getattr(args, "picture_match", None),
            restarts=getattr(args, "restarts", None),
            colour_check=getattr(args, "colour_check", None),
            snap_shapes=getattr(args, "snap_shapes", None),
            spread_things=getattr(args, "spread_things", None),
            cogen_steps=getattr(args, "cogen_steps", None),
        )
        for key in ("prompts", "images", "maps", "overlays"):
            getattr(out, key).extend(getattr(part, key))
    done = time.perf_counter()
    info = {
        "model": str(args.model or "bundled world-s"),
        "weights": pipe.weights_fingerprint(),
        "sampler": pipe.scheduler,
        "map_sampler": pipe.map_scheduler,
        "steps": settings["num_inference_steps"],
        "seed": args.seed,
        "guidance_scale": settings["guidance_scale"],
        "map_guidance_scale": settings["map_guidance_scale"],
        "map_cleanup": settings["map_cleanup"],
        "one_piece_instances": settings["one_piece_instances"],
    }
    if pmap is None and image is None:
        info["redraw_image"] = pipe.redraws(getattr(args, "redraw_image", None))
        info["self_check"] = pipe.self_checks(getattr(args, "self_check", None))
        info["best_of"] = pipe.best_ofs(getattr(args, "best_of", None))
        info["avoid_touching"] = pipe.keeps_apart(  # recorded as it acted
            getattr(args, "avoid_touching", None),
            getattr(args, "self_check", None),
            getattr(args, "best_of", None),
        )
        info["separate_touching"] = pipe.separates(
            getattr(args, "separate_touching", None), info["redraw_image"]
        )
        info["snap_shapes"] = pipe.snaps(getattr(args, "snap_shapes", None), info["redraw_image"])
        info["spread_things"] = pipe.spreads(getattr(args, "spread_things", None), info["redraw_image"])
        info["cogen_steps"] = pipe.cogen_steps_of(
            getattr(args, "cogen_steps", None), info["steps"], info["redraw_image"]
        )
        info.update(  # recorded as they acted
            pipe.checks_as_acting(
                info["self_check"],
                info["best_of"],
                **{k: getattr(args, k, None) for k in pipe.CHECK_SETTINGS},
            )
        )
    if image is None and (pmap is not None or info.get("redraw_image")):
        info["image_map_guidance_scale"] = settings["image_map_guidance_scale"]
    path = write_export(args.out, out.prompts, out.images, out.maps, pipe.table, args.overwrite, info)
    what = (
        f"segmented {len(out.images)} image(s)"
        if image is not None
        else f"wrote {len(out.images)} image+map pair(s)"
    )
    print(
        f"{what} to {path} "
        f"(load {loaded - start:.1f} s, sampling {done - loaded:.1f} s, {info['steps']} {pipe.scheduler} steps, "
        f"guidance {info['guidance_scale']}, map guidance {info['map_guidance_scale']})"
    )
    return 0


def run(args) -> int:
    _check_args(args)
    return _run(args)


def run_segment(args) -> int:
    _check_args(args)
    return _run(args, image=read_image(args.image))
