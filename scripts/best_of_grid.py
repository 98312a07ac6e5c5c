"""The README's sampling grids: four samples of four prompts with the bundled folder's sampling of
sessions 18-20 (self check 2) on the left and another sampling on the right (``best_of=4`` unless
told), the same generators, each marked green where the judge's segmentation of the picture shows
what the prompt names (counts, stuff, relation).

    python scripts/best_of_grid.py --judge data/judge-20k --out docs/best-of-grid.png
    python scripts/best_of_grid.py --judge data/judge-20k --best-of 1 --self-check 4 --avoid-touching \
        --out docs/apart-grid.png
    python scripts/best_of_grid.py --judge data/judge-20k --left folder --separate-touching 2 \
        --out docs/bite-grid.png
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from PIL import Image, ImageDraw

from pandiff.pipeline import PanopticDiffusionPipeline
from pandiff.self_check import map_failures, parse_prompt
from pandiff.world.judge import load_judge, segment_images

PROMPTS = (
    "two red circles and a blue square on the grass",
    "three yellow stars and a blue circle on the grass",
    "two green squares and two pink triangles on the floor",
    "a purple star to the left of a white cross on the sand",
)
SAMPLES, TILE = 4, 128


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--judge", required=True, help="judge folder (pandiff train-judge)")
    p.add_argument("--out", default="docs/best-of-grid.png")
    p.add_argument("--best-of", type=int, default=4, help="the right side's best of K (1: the self check)")
    p.add_argument(
        "--self-check", type=int, default=2, help="the right side's self check when --best-of is 1"
    )
    p.add_argument("--avoid-touching", action="store_true", help="the right side avoids touching things")
    p.add_argument(
        "--separate-touching",
        type=int,
        default=None,
        metavar="PX",
        help="the right side bites touching things PX pixels apart before the redraw (default: the folder's)",
    )
    p.add_argument(
        "--left",
        choices=("self-check-2", "folder"),
        default="self-check-2",
        help="the left side: session 18's self check 2 (default), or the folder's own sampling with nothing bitten",
    )
    args = p.parse_args()
    if args.best_of > 1:
        name, kwargs = f"best of {args.best_of}", {"best_of": args.best_of}
    else:
        name, kwargs = f"self check {args.self_check}", {"self_check": args.self_check, "best_of": 1}
    if args.avoid_touching:
        name, kwargs = f"{name}, things apart", {**kwargs, "avoid_touching": True}
    pipe = PanopticDiffusionPipeline.from_pretrained()
    if args.left == "folder":  # the folder's sampling on the left, the right side as told on top
        left_name, left = "the folder's sampling, nothing bitten", {"separate_touching": 0}
        name, kwargs = "folder", {"separate_touching": args.separate_touching}
        if args.separate_touching:
            name = f"folder, things bitten {args.separate_touching} px apart"
    else:
        left_name, left = (
            "self check 2 (session 18)",
            {"self_check": 2, "best_of": 1, "avoid_touching": False},
        )
        if args.separate_touching is not None:
            kwargs["separate_touching"] = args.separate_touching
    judge, _ = load_judge(args.judge)
    grid = Image.new("RGB", (TILE * 2 * SAMPLES + 20, (TILE + 14) * len(PROMPTS)), "white")
    draw = ImageDraw.Draw(grid)
    right = {left_name: 0, name: 0}
    for r, prompt in enumerate(PROMPTS):
        spec = parse_prompt(prompt, pipe.table)
        for k, (side, kw) in enumerate(zip(right, (left, kwargs))):
            gens = [torch.Generator().manual_seed(10 * r + i) for i in range(SAMPLES)]
            out = pipe([prompt] * SAMPLES, generator=gens, **kw)
            pixels = torch.stack([torch.from_numpy(np.array(im)).permute(2, 0, 1) for im in out.images])
            for i, (im, seen) in enumerate(zip(out.images, segment_images(judge, pixels))):
                ok = map_failures(seen, spec) == 0
                right[side] += ok
                x, y = k * (TILE * SAMPLES + 20) + i * TILE, r * (TILE + 14) + 14
                grid.paste(im.resize((TILE, TILE), Image.NEAREST), (x, y))
                draw.rectangle([x, y, x + 10, y + 10], fill=(0, 200, 0) if ok else (220, 0, 0))
        draw.text(
            (2, r * (TILE + 14)),
            f"{prompt}   [left: {left_name} | right: {name}]",
            fill="black",
        )
    grid.save(args.out)
    print(f"judged right of {SAMPLES * len(PROMPTS)}:", right)


if __name__ == "__main__":
    main()
