"""The world codec's training budget (issue #3): step rate by batch and memory layout, and what
finished ``pandiff train-codec`` runs reached.

Usage::

    python benchmarks/bench_codec.py [--batches 8 16] [--channels 24,48,96] [--steps 20]
        [--warmup 5] [--precision bf16|fp32] [--runs DIR [DIR ...]] [--no-append] [--note TEXT]

* **step rate**: ``codec_training.optimizer_step`` (encode, posterior sample, decode, MSE + KL,
  backward, Adam) on a random in-memory batch of 64 px images, for each ``--batches`` size, with the
  model and batch in channels_last (what ``train-codec`` uses) and in the standard layout. Every
  rate is the median step time after ``--warmup`` untimed steps. Images per minute is what the
  20-minute budget buys; steps per minute is how many updates it buys.
* **runs** (``--runs``): one row per ``train-codec`` output folder from its ``training.json``:
  batch, learning rate, widths, steps, minutes, the periodic validation PSNR (first 256 val
  images) after 5 / 10 / 15 minutes and at the end, and the final PSNR over all val images
  (``~``: a record from before the history held times, times estimated at the mean step rate).

Tables are printed as Markdown and appended to ``benchmarks/RESULTS.md`` with the machine's
description unless ``--no-append``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from bench_common import machine_description, publish

from pandiff.cli.train_codec import channel_list
from pandiff.world import codec_training


def step_seconds(
    batch: int, channels: list[int], channels_last: bool, bf16: bool, steps: int, warmup: int
) -> float:
    """Median seconds of one ``optimizer_step`` at ``batch`` 64 px images."""
    vae = codec_training.make_codec(channels, 64, "cpu")
    x = torch.rand(batch, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    else:
        vae = vae.to(memory_format=torch.contiguous_format)
    optimizer = codec_training.make_optimizer(vae, 1e-3)
    seconds = []
    for i in range(warmup + steps):
        start = time.perf_counter()
        codec_training.optimizer_step(vae, optimizer, x, 1e-6, bf16)
        if i >= warmup:
            seconds.append(time.perf_counter() - start)
    return statistics.median(seconds)


def psnr_at(record: dict, seconds: float) -> str:
    """The last periodic val PSNR recorded by ``seconds`` into the run ('-' if none). Records
    written before the history held ``elapsed_s`` get it estimated from the step at the run's
    mean step rate (marked ``~``)."""
    rate = record["wall_time_s"] / record["steps"]
    checks = [(h.get("elapsed_s", h["step"] * rate), h["val_psnr_db"]) for h in record["history"]]
    timed = [psnr for elapsed, psnr in checks if elapsed <= seconds]
    mark = "" if all("elapsed_s" in h for h in record["history"]) else "~"
    return f"{mark}{timed[-1]:.2f}" if timed else "-"


def run_rows(folders: list[Path]) -> list[str]:
    lines = [
        "| run | batch | lr | widths | steps | minutes | PSNR @5 min | @10 min | @15 min | last check | final (all val) |",
        "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for folder in folders:
        record_path = folder / "training.json"
        if not record_path.is_file():
            raise SystemExit(
                f"bench_codec: {str(record_path)!r} not found; --runs takes train-codec output folders"
            )
        record = json.loads(record_path.read_text())
        history = record["history"]
        lines.append(
            f"| {folder.name} | {record['batch']} | {record['lr']:g} | {','.join(map(str, record['channels']))} "
            f"| {record['steps']} | {record['wall_time_s'] / 60:.1f} | {psnr_at(record, 300)} "
            f"| {psnr_at(record, 600)} | {psnr_at(record, 900)} | {history[-1]['val_psnr_db']:.2f} "
            f"| {record['val_psnr_db']:.2f} |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[8, 16])
    parser.add_argument("--channels", type=channel_list, default=codec_training.WORLD_CODEC_CHANNELS)
    parser.add_argument("--steps", type=int, default=20, help="timed steps per setting")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first")
    parser.add_argument("--precision", choices=["bf16", "fp32"], default="bf16")
    parser.add_argument(
        "--runs", type=Path, nargs="*", default=[], help="train-codec output folders to tabulate"
    )
    parser.add_argument("--no-append", action="store_true", help="print only; leave RESULTS.md alone")
    parser.add_argument("--note", default="", help="a line stored under the tables in RESULTS.md")
    args = parser.parse_args()

    print(f"Machine: {machine_description()}", flush=True)
    lines = [
        f"Step rate, widths {','.join(map(str, args.channels))}, {args.precision}, 64 px, median of {args.steps}:",
        "",
        "| batch | layout | ms/step | steps/min | images/min |",
        "|---:|---|---:|---:|---:|",
    ]
    for batch in args.batches:
        for channels_last in (True, False):
            seconds = step_seconds(
                batch, args.channels, channels_last, args.precision == "bf16", args.steps, args.warmup
            )
            layout = "channels_last" if channels_last else "standard"
            lines.append(
                f"| {batch} | {layout} | {seconds * 1000:.0f} | {60 / seconds:.0f} | {60 * batch / seconds:.0f} |"
            )
            print(lines[-1], flush=True)
    if args.runs:
        lines += ["", "Finished runs (val PSNR in dB):", "", *run_rows(args.runs)]
    publish("bench_codec.py: world codec step rate and runs", lines, not args.no_append, args.note)


if __name__ == "__main__":
    main()
