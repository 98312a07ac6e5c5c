"""Draw the README's picture grid: for each prompt, the generated image, its map and the overlay.

    python scripts/readme_grid.py --out docs/bundled-grid.png [--model FOLDER] [--steps 20] \
        [--judge JUDGE]

The first four rows are four samples of the README's own example prompt; with ``--judge`` each of
them is judged on the **image** (the judge's segmentation of the picture against the prompt's
counts, colours and stuff) and the verdict is written beside it. Then one row per other prompt.
Tiles are upscaled by nearest neighbour so that the 64 px outputs stay crisp. Fixed seed: the grid
is reproducible.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from PIL import Image, ImageDraw

from pandiff.io import atomic_path
from pandiff.pipeline import PanopticDiffusionPipeline

EXAMPLE = "two red circles and a blue square on the grass"  # the README's main command
# What the example asks for, in the world's scene-spec form (pandiff.world.generator).
EXAMPLE_SPEC = {
    "image_id": 0,
    "things": [
        {"category": "circle", "color": "red"},
        {"category": "circle", "color": "red"},
        {"category": "square", "color": "blue"},
    ],
    "stuff": [{"category": "grass"}],
    "relations": [],
}
PROMPTS = [
    EXAMPLE,
    EXAMPLE,
    EXAMPLE,
    EXAMPLE,
    "a yellow star on the water under a blue sky",
    "a green triangle on the sand",
    "three pink squares in front of a brick wall",
    "a white cross on a wooden floor",
    "an orange circle and a purple triangle on the grass",
]
SCALE = 3
TEXT_WIDTH = 300


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="docs/bundled-grid.png")
    parser.add_argument("--model", default=None, help="pipeline folder (default: the bundled model)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--judge", default=None, help="judge folder: write each example sample's verdict")
    args = parser.parse_args()

    pipe = PanopticDiffusionPipeline.from_pretrained(args.model)
    out = pipe(PROMPTS, num_inference_steps=args.steps, generator=torch.Generator().manual_seed(args.seed))
    side = pipe.image_size * SCALE
    gap = 4
    width = TEXT_WIDTH + 3 * (side + gap)
    verdicts = judge_examples(args.judge, out) if args.judge else {}
    canvas = Image.new("RGB", (width, len(PROMPTS) * (side + gap) + gap), "white")
    draw = ImageDraw.Draw(canvas)
    for row, (prompt, image, pmap, over) in enumerate(
        zip(out.prompts, out.images, out.map_images(), out.overlays)
    ):
        y = gap + row * (side + gap)
        words, lines = prompt.split(), [""]
        for word in words:  # wrap the prompt to the text column
            if len(lines[-1]) + len(word) > 34:
                lines.append("")
            lines[-1] = f"{lines[-1]} {word}".strip()
        if row in verdicts:
            lines += ["", f"sample {row + 1}: {verdicts[row]}"]
        draw.multiline_text((6, y + side // 2 - 8 * len(lines)), "\n".join(lines), fill="black", spacing=4)
        for col, picture in enumerate((image, pmap, over)):
            tile = picture.convert("RGB").resize((side, side), Image.NEAREST)
            canvas.paste(tile, (TEXT_WIDTH + col * (side + gap), y))
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        canvas.save(tmp, format="PNG")
    right = sum(v.startswith("right") for v in verdicts.values())
    judged = f"; example right on the image in {right} of {len(verdicts)}" if verdicts else ""
    print(f"wrote {path} ({len(PROMPTS)} prompts, {args.steps} steps, seed {args.seed}{judged})")


def judge_examples(folder: str, out) -> dict[int, str]:
    """Verdicts, judged on the image, of the rows that show the README example."""
    import numpy as np

    from pandiff.world.judge import load_judge, segment_images
    from pandiff.world.judged import judge_sample

    judge, _ = load_judge(folder)
    rows = [i for i, p in enumerate(PROMPTS) if p == EXAMPLE]
    pictures = np.stack([np.asarray(out.images[i].convert("RGB")) for i in rows])
    judged = segment_images(judge, torch.from_numpy(pictures).permute(0, 3, 1, 2).contiguous())
    verdicts = {}
    for i, jmap, picture in zip(rows, judged, pictures):
        v = judge_sample(jmap, EXAMPLE_SPEC, picture, out.maps[i])
        right, judged_colours = v["colour"]
        ok = v["adherence"] and right == judged_colours
        verdicts[i] = ("right" if ok else "wrong") + f" on the image (colours {right}/{judged_colours})"
    return verdicts


if __name__ == "__main__":
    main()
