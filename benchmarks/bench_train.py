"""Training throughput of the world-s preset: steps/s and samples/s, fp32 against bf16 autocast,
with the data pipeline (shard reads, latent draws from moments) included or excluded.

Usage::

    python benchmarks/bench_train.py [--batch 64] [--steps 10] [--warmup 3] [--n 160] [--codec DIR]

It makes a small built-in world (``--n`` scenes, 64 px), encodes it with ``pandiff prepare``'s
code (MiniLM text; ``--codec`` or a random-initialised tiny VAE, which costs the same), then per
precision builds the world-s trainer from ``configs/world-s.yaml`` and times:

* ``data included``: ``Trainer.fit`` itself, from its per-step metrics;
* ``data excluded``: the same optimizer steps (forward, backward, clip, AdamW, EMA) on one batch
  held in memory.

Each rate is the median step after the warm-up (a busy machine disturbs a median less than a mean).

The table is printed and appended to ``benchmarks/RESULTS.md`` with the machine (platform, CPU
count, load average at the start, torch version and threads). Wall-clock rates depend on what
else runs on the machine; the load average says how busy it was.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from bench_common import RESULTS, machine_description

from pandiff.training.config import load_config
from pandiff.training.metrics import read_metrics
from pandiff.training.trainer import Trainer

ROOT = Path(__file__).resolve().parents[1]


def make_features(folder: Path, n: int, codec_dir: str | None) -> Path:
    from pandiff.data.prepare_cli import prepare_features
    from pandiff.data.world import generate_world
    from pandiff.encoders.codec import VaeCodec, load_codec
    from pandiff.encoders.text import load_text_encoder

    generate_world(folder / "world", n=n, size=64, seed=0)
    if codec_dir is None:
        codec_dir = str(folder / "codec")
        VaeCodec.from_config().save_pretrained(codec_dir)
    out = folder / "features"
    start = time.perf_counter()
    prepare_features(
        folder / "world",
        out,
        load_codec(codec_dir),
        codec_dir,
        load_text_encoder("minilm"),
        splits=["train", "val"],
        image_size=64,
        map_size=64,
        shard_size=64,
        batch_size=32,
        progress=False,
    )
    print(f"prepared {n} images in {time.perf_counter() - start:.1f} s")
    return out


def time_fit(config, warmup: int) -> float:
    """Steps/s of ``Trainer.fit`` (its own per-step metrics, data loading included): the median
    step after the warm-up, which a busy machine disturbs less than the mean."""
    trainer = Trainer(config, progress=False)
    trainer.fit()
    trainer.close()
    rows = read_metrics(config.run.dir)[warmup:]
    return 1.0 / statistics.median(1.0 / row["steps_per_s"] for row in rows)


def time_compute(config, steps: int, warmup: int) -> float:
    """Steps/s of the optimizer steps alone on one batch kept in memory (median step)."""
    trainer = Trainer(config, progress=False)
    batch = next(iter(trainer.loader))
    seconds = []
    for i in range(warmup + steps):
        start = time.perf_counter()
        trainer._end_step(trainer._micro_step(batch))
        if i >= warmup:
            seconds.append(time.perf_counter() - start)
    trainer.close()
    return 1.0 / statistics.median(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64, help="batch size (world-s: 64)")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per measurement")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    parser.add_argument("--n", type=int, default=160, help="scenes in the benchmark world")
    parser.add_argument("--codec", default=None, help="codec folder (default: a random tiny VAE)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--note", default="", help="a remark stored with the results")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    header = machine_description()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        features = make_features(Path(tmp), args.n, args.codec)
        for precision in ("fp32", "bf16"):
            sets = [
                f"data.features={features}",
                f"train.batch_size={args.batch}",
                "sample.every=0",
                f"train.mixed_precision={precision}",
                "train.checkpoint_every=1000000",
            ]
            fit_cfg = load_config(
                ROOT / "configs" / "world-s.yaml",
                sets
                + [
                    f"run.dir={tmp}/run-{precision}",
                    f"train.steps={args.warmup + args.steps}",
                    "train.log_every=1",
                ],
            )
            compute_cfg = load_config(
                ROOT / "configs" / "world-s.yaml", sets + [f"run.dir={tmp}/mem-{precision}"]
            )
            for data, rate in (
                ("included", time_fit(fit_cfg, args.warmup)),
                ("excluded", time_compute(compute_cfg, args.steps, args.warmup)),
            ):
                rows.append((precision, data, rate, rate * args.batch))
                print(f"{precision:5s} data {data:8s}: {rate:.3f} steps/s, {rate * args.batch:.1f} samples/s")

    table = [
        f"\n## bench_train.py ({time.strftime('%Y-%m-%d %H:%M')})\n",
        f"Machine: {header}\n",
        f"world-s preset (U-ViT D=192, 8 blocks; latents 4x16x16, maps 64x64 x 7 bits, MiniLM 24x384), "
        f"batch {args.batch}, median of {args.steps} steps after {args.warmup} warm-up steps, one process."
        + (f" Note: {args.note}" if args.note else "")
        + "\n",
        "| precision | data loading | steps/s | samples/s |",
        "|---|---|---|---|",
    ]
    table += [f"| {p} | {d} | {r:.3f} | {s:.1f} |" for p, d, r, s in rows]
    text = "\n".join(table) + "\n"
    print(text)
    with open(RESULTS, "a") as fh:
        fh.write(text)


if __name__ == "__main__":
    main()
