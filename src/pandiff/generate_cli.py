"""``pandiff generate`` (prompt -> image + map, or map -> image) and ``pandiff segment`` (image -> map)."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from pandiff.data.categories import CategoryTable
from pandiff.data.panoptic_map import PanopticMap
from pandiff.errors import ConfigError, DataError


def add_common(p: argparse.ArgumentParser, default_n: int) -> None:
    p.add_argument("prompt", help="text prompt describing the scene")
    p.add_argument(
        "--model", default=None, help="pipeline folder (default: the bundled built-in-world model)"
    )
    p.add_argument("--n", type=int, default=default_n, help=f"samples to draw (default {default_n})")
    p.add_argument("--steps", type=int, default=20, help="sampler steps (default 20)")
    p.add_argument(
        "--seed", type=int, default=0, help="random seed; equal seeds give equal outputs (default 0)"
    )
    p.add_argument("--guidance", type=float, default=None, help="text guidance scale (default: the model's)")
    p.add_argument(
        "--map-guidance",
        type=float,
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
    p.add_argument(
        "--scheduler", default="dpmsolver++", choices=["dpmsolver++", "ddim", "ddpm"], help="sampler"
    )
    p.add_argument("--out", default="outputs/generate", help="output folder (default outputs/generate)")
    p.add_argument("--overwrite", action="store_true", help="replace the output folder if it exists")
    p.add_argument("--resize", action="store_true", help="allow lossy resizing of a given map or image")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_common(p, default_n=4)
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
    add_common(p, default_n=1)


def read_panoptic_png(png: str | Path, json_path: str | Path | None, table: CategoryTable) -> PanopticMap:
    """Read a COCO panoptic PNG and its ``segments_info`` into a map over ``table``."""
    png = Path(png)
    if not png.is_file():
        raise DataError(f"map file {png} does not exist")
    candidates = (
        [Path(json_path)]
        if json_path
        else [png.parent / "panoptic.json", png.parent.parent / "panoptic.json"]
    )
    found = next((c for c in candidates if c.is_file()), None)
    if found is None:
        raise DataError(
            f"no segments_info for {png}: pass --map-json with the COCO panoptic JSON "
            f"(looked for {', '.join(str(c) for c in candidates)})"
        )
    try:
        data = json.loads(found.read_text())
    except json.JSONDecodeError as exc:
        raise DataError(f"{found} is not valid JSON: {exc}") from None
    entry = next((a for a in data.get("annotations", []) if a.get("file_name") == png.name), None)
    if entry is None:
        raise DataError(f"{found} has no annotation whose file_name is {png.name}")
    try:
        rgb = np.asarray(Image.open(png).convert("RGB"))
    except (UnidentifiedImageError, OSError) as exc:
        raise DataError(f"cannot read the map {png}: {exc}") from None
    pmap, _ = PanopticMap.from_coco(rgb, entry["segments_info"], table)
    return pmap


def read_image(path: str | Path) -> Image.Image:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"image file {path} does not exist")
    try:
        return Image.open(path).convert("RGB")
    except (UnidentifiedImageError, OSError) as exc:
        raise DataError(f"cannot read the image {path}: {exc}") from None


def _check_args(args) -> None:
    if args.steps < 1:
        raise ConfigError(f"--steps must be >= 1, got {args.steps}")
    if args.n < 1:
        raise ConfigError(f"--n must be >= 1, got {args.n}")
    for name in ("guidance", "map_guidance", "map_cleanup"):
        value = getattr(args, name)
        if value is not None and value < 0:
            raise ConfigError(f"--{name.replace('_', '-')} must be >= 0, got {value}")


def _run(args, image: Image.Image | None = None) -> int:
    import torch

    from pandiff.export import check_output_dir, write_export
    from pandiff.pipeline import PanopticDiffusionPipeline

    _check_args(args)
    check_output_dir(args.out, args.overwrite)
    start = time.perf_counter()
    pipe = PanopticDiffusionPipeline.from_pretrained(args.model, device=args.device, scheduler=args.scheduler)
    pmap = read_panoptic_png(args.map, args.map_json, pipe.table) if getattr(args, "map", None) else None
    pipe.check_prompts(args.prompt)
    loaded = time.perf_counter()
    scales = pipe.default_scales(args.guidance, args.map_guidance)
    out = pipe(
        args.prompt,
        num_inference_steps=args.steps,
        num_images=args.n,
        generator=torch.Generator().manual_seed(args.seed),
        map=pmap,
        image=image,
        resize=args.resize,
        progress=True,
        map_cleanup=args.map_cleanup,
        **scales,
    )
    done = time.perf_counter()
    info = {
        "model": str(args.model or "bundled world-s"),
        "sampler": args.scheduler,
        "steps": args.steps,
        "seed": args.seed,
        **scales,
        "map_cleanup": pipe.cleanup_size(args.map_cleanup),
    }
    path = write_export(args.out, out.prompts, out.images, out.maps, pipe.table, args.overwrite, info)
    print(
        f"wrote {len(out.images)} image+map pair(s) to {path} "
        f"(load {loaded - start:.1f} s, sampling {done - loaded:.1f} s, {args.steps} {args.scheduler} steps, "
        f"guidance {scales['guidance_scale']}, map guidance {scales['map_guidance_scale']})"
    )
    return 0


def run(args) -> int:
    return _run(args)


def run_segment(args) -> int:
    return _run(args, image=read_image(args.image))
