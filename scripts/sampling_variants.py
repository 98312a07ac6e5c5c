"""Sampling variants that ship no switch, judged like `pandiff evaluate --mode cogen`.

The README's sampler experiments (session 16) ran these; each is a change to how the bundled
folder samples, kept here so the figures can be replayed:

* ``--redraw-guidance R``: co-generation at the text guidance of ``--guidance`` (default: the
  folder's), the redraw (map -> image for the co-generated map) at ``R``;
* ``--grid-power Q``: both samplers step through ``t_i = 999 (1 - (i / N)^Q)``, i = 0..N-1, instead of
  DPM-Solver++'s evenly spaced grid (Q = 1); Q > 1 spends more of the N steps at high noise, where
  the layout is drawn, Q < 1 more at low noise.

Example (200 val prompts, about 5 CPU minutes each):
    python scripts/sampling_variants.py --data data/world-20k --judge JUDGE --n 200 --grid-power 1.4 --out r.json
"""

from __future__ import annotations

import argparse

import numpy as np

import pandiff.diffusion.sampler as sampler_module
from pandiff.evaluation.evaluate import EvaluationOptions, evaluate
from pandiff.pipeline import PanopticDiffusionPipeline


def power_grid(steps: int, power: float, last: int = 999) -> list[int]:
    """``round(last * (1 - (i / steps) ** power))`` for i = 0..steps-1; refuses a grid with repeats."""
    grid = np.round(last * (1 - (np.arange(steps) / steps) ** power)).astype(int).tolist()
    if len(set(grid)) != steps:
        raise SystemExit(f"--grid-power {power} repeats timesteps at {steps} steps: {grid}")
    return grid


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True)
    p.add_argument("--judge", required=True)
    p.add_argument("--model", default=None, help="pipeline folder (default: bundled model)")
    p.add_argument("--n", type=int, default=200)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--batch", type=int, default=25)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--guidance", type=float, default=None, help="co-generation's text guidance")
    p.add_argument("--redraw-guidance", type=float, default=None, help="the redraw's text guidance")
    p.add_argument("--grid-power", type=float, default=None, help="Q of the timestep grid (1: even)")
    p.add_argument("--out", required=True)
    args = p.parse_args()

    pipe = PanopticDiffusionPipeline.from_pretrained(args.model)
    if args.redraw_guidance is not None:
        redraw = pipe.redraw

        def redraw_at(text, empty, maps, settings, generator=None, progress=False):
            return redraw(
                text, empty, maps, {**settings, "guidance_scale": args.redraw_guidance}, generator, progress
            )

        pipe.redraw = redraw_at
    if args.grid_power is not None:

        def grid(image_sched, map_sched, steps, device):
            for sched in (image_sched, map_sched):
                sched.set_timesteps(timesteps=power_grid(steps, args.grid_power), device=device)

        sampler_module.lockstep_timesteps = grid
    opts = EvaluationOptions(
        model=args.model, data=args.data, judge=args.judge, n=args.n, steps=args.steps, batch=args.batch,
        mode="cogen", guidance=args.guidance, seed=args.seed, out=args.out, progress=False,
    )  # fmt: skip
    evaluate(opts, pipe=pipe)


if __name__ == "__main__":
    main()
