"""Draw the README's picture grid: for each prompt, the generated image, its map and the overlay.

    python scripts/readme_grid.py --out docs/bundled-grid.png [--model FOLDER] [--steps 20]

One row per prompt (prompt text, image, map, overlay), upscaled by nearest neighbour so that the
64 px outputs stay crisp. Fixed seed: the grid is reproducible.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from PIL import Image, ImageDraw

from pandiff.io import atomic_path
from pandiff.pipeline import PanopticDiffusionPipeline

PROMPTS = [
    "two red circles and a blue square on the grass",
    "a yellow star in the sky above the sea",
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
    args = parser.parse_args()

    pipe = PanopticDiffusionPipeline.from_pretrained(args.model)
    out = pipe(PROMPTS, num_inference_steps=args.steps, generator=torch.Generator().manual_seed(args.seed))
    side = pipe.image_size * SCALE
    gap = 4
    width = TEXT_WIDTH + 3 * (side + gap)
    canvas = Image.new("RGB", (width, len(PROMPTS) * (side + gap) + gap), "white")
    draw = ImageDraw.Draw(canvas)
    for row, (prompt, image, pmap, over) in enumerate(zip(out.prompts, out.images, out.map_images(), out.overlays)):
        y = gap + row * (side + gap)
        words, lines = prompt.split(), [""]
        for word in words:  # wrap the prompt to the text column
            if len(lines[-1]) + len(word) > 34:
                lines.append("")
            lines[-1] = f"{lines[-1]} {word}".strip()
        draw.multiline_text((6, y + side // 2 - 8 * len(lines)), "\n".join(lines), fill="black", spacing=4)
        for col, picture in enumerate((image, pmap, over)):
            tile = picture.convert("RGB").resize((side, side), Image.NEAREST)
            canvas.paste(tile, (TEXT_WIDTH + col * (side + gap), y))
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        canvas.save(tmp, format="PNG")
    print(f"wrote {path} ({len(PROMPTS)} prompts, {args.steps} steps, seed {args.seed})")


if __name__ == "__main__":
    main()
