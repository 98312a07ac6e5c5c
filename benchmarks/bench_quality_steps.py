"""Quality per sampling step: image-judged adherence and MCD of a model at several step counts and samplers.

    python benchmarks/bench_quality_steps.py --data WORLD --judge JUDGE [--model FOLDER] [--n 200] \
        [--steps 5 10 20 50] [--schedulers dpmsolver++ ddim] [--map-cleanup N] \
        [--plot benchmarks/quality_steps.png]

Each (sampler, steps) cell runs ``pandiff evaluate`` in co-generation mode on the same held-out
world prompts with the same seed, so cells differ only in the sampler. Prints a table, appends
it to ``benchmarks/RESULTS.md`` and draws adherence and MCD against steps to a PNG (matplotlib,
from the ``bench`` extra: ``pip install -e ".[bench]"``).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from bench_common import append_results, log_x_panel, pyplot, save_figure


def measure(args) -> list[dict]:
    from pandiff.evaluation.evaluate import EvaluationOptions, evaluate
    from pandiff.pipeline import PanopticDiffusionPipeline

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for scheduler in args.schedulers:
            pipe = PanopticDiffusionPipeline.from_pretrained(args.model, scheduler=scheduler)
            for steps in args.steps:
                opts = EvaluationOptions(
                    model=args.model,
                    data=args.data,
                    out=str(Path(tmp) / f"{scheduler}-{steps}.json"),
                    n=args.n,
                    steps=steps,
                    batch=args.batch,
                    scheduler=scheduler,
                    map_cleanup=args.map_cleanup,
                    judge=args.judge,
                    progress=False,
                )
                start = time.perf_counter()
                report = evaluate(opts, pipe=pipe)
                seconds = time.perf_counter() - start
                metrics = report["metrics"]
                rows.append(
                    {
                        "scheduler": scheduler,
                        "steps": steps,
                        "adherence": metrics["image_adherence"]["value"],
                        "map_adherence": metrics["map_adherence"]["value"],
                        "colour": metrics["image_colour_accuracy"]["value"],
                        "mcd": metrics["mcd"]["value"],
                        "seconds": seconds,
                    }
                )
                print(rows[-1], flush=True)
    return rows


def plot(rows: list[dict], path: Path, title: str) -> None:
    plt = pyplot()
    if plt is None:
        return
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for scheduler in dict.fromkeys(r["scheduler"] for r in rows):
        mine = [r for r in rows if r["scheduler"] == scheduler]
        steps = [r["steps"] for r in mine]
        axes[0].plot(steps, [100 * r["adherence"] for r in mine], marker="o", label=scheduler)
        axes[1].plot(steps, [r["mcd"] for r in mine], marker="o", label=scheduler)
    for ax, label in zip(axes, ("category + count adherence on the image (%)", "MCD (lower is better)")):
        log_x_panel(ax, sorted({r["steps"] for r in rows}), "sampling steps", label)
    save_figure(fig, path, title)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="built-in world folder (held-out val split)")
    parser.add_argument("--model", default=None, help="pipeline folder (default: the bundled model)")
    parser.add_argument(
        "--judge", required=True, help="judge folder (pandiff train-judge): figures are judged on the image"
    )
    parser.add_argument("--n", type=int, default=200, help="prompts per cell (default 200)")
    parser.add_argument("--batch", type=int, default=25)
    parser.add_argument("--steps", type=int, nargs="+", default=[5, 10, 20, 50])
    parser.add_argument("--schedulers", nargs="+", default=["dpmsolver++", "ddim"])
    parser.add_argument(
        "--map-cleanup", type=int, default=None, help="map clean-up (default: the model's; 0 = raw bits)"
    )
    parser.add_argument("--plot", default=str(Path(__file__).with_name("quality_steps.png")))
    parser.add_argument("--no-append", action="store_true", help="do not append to RESULTS.md")
    args = parser.parse_args()

    rows = measure(args)
    lines = [
        "| scheduler | steps | adherence (image) | adherence (map) | colour (image) | MCD | seconds |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['scheduler']} | {r['steps']} | {100 * r['adherence']:.1f}% | {100 * r['map_adherence']:.1f}% "
            f"| {100 * r['colour']:.1f}% "
            f"| {r['mcd']:.3f} | {r['seconds']:.0f} |"
        )
    print("\n".join(lines))
    model = args.model or "bundled model"
    if args.map_cleanup is not None:
        model += f", map clean-up {args.map_cleanup}"
    plot(rows, Path(args.plot), f"{model}, {args.n} held-out world prompts, text guidance from the model")
    if not args.no_append:
        command = "python " + " ".join(sys.argv)
        append_results(f"Quality per step ({model})", command, lines, f"Plot: `{Path(args.plot).name}`.")


if __name__ == "__main__":
    main()
