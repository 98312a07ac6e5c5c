"""``pandiff train-codec``: train the built-in world's small image autoencoder; the work is
:func:`pandiff.world.codec_training.train_codec`."""

from __future__ import annotations

import argparse
from dataclasses import fields
from pathlib import Path

from pandiff.checks import finite_float
from pandiff.world.codec_training import BATCH, WORLD_CODEC_CHANNELS


def channel_list(text: str) -> list[int]:
    """``"16,32,64"`` -> ``[16, 32, 64]`` (the ``--channels`` option)."""
    return [int(c) for c in text.split(",")]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data", required=True, type=Path, help="world folder (images in train2017/, val2017/)"
    )
    parser.add_argument("--out", required=True, type=Path, help="folder to write the trained codec to")
    parser.add_argument(
        "--steps",
        type=int,
        default=8000,
        help="optimizer steps (default 8000; a --max-minutes 20 run on 2 CPU cores stops by time at ~6000)",
    )
    parser.add_argument(
        "--batch",
        type=int,
        default=BATCH,
        help=f"images per step (default {BATCH}: more, noisier steps beat fewer, cleaner ones in a time budget)",
    )
    parser.add_argument(
        "--lr", type=finite_float, default=2e-3, help="peak Adam learning rate (default 2e-3)"
    )
    parser.add_argument(
        "--kl-weight",
        type=finite_float,
        default=1e-6,
        help="KL weight relative to the per-image sum of reconstruction errors, as in Stable Diffusion "
        "(default 1e-6)",
    )
    parser.add_argument(
        "--channels",
        type=channel_list,
        default=WORLD_CODEC_CHANNELS,
        help="channels of each encoder/decoder level, comma-separated; n levels downsample by 2^(n-1) "
        f"(default {','.join(map(str, WORLD_CODEC_CHANNELS))})",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the initial weights and the batches")
    parser.add_argument(
        "--bf16",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="bf16 autocast for the forward pass (default on: 1.4-1.8x faster steps on a bf16-capable CPU)",
    )
    parser.add_argument("--eval-every", type=int, default=250, help="steps between validation PSNR checks")
    parser.add_argument(
        "--max-minutes",
        type=finite_float,
        default=None,
        help="stop (and save) after this long; the learning rate decays to zero by then",
    )
    parser.add_argument("--device", default=None, help="torch device (default cuda when available, else cpu)")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")


def run(args: argparse.Namespace) -> int:
    from pandiff.world.codec_training import CodecTrainingOptions, train_codec

    opts = CodecTrainingOptions(**{f.name: getattr(args, f.name) for f in fields(CodecTrainingOptions)})
    report = train_codec(opts)
    print(
        f"train-codec: {report['steps']} steps in {report['wall_time_s'] / 60:.1f} min, val PSNR "
        f"{report['val_psnr_db']:.2f} dB (mean over {report['val_images']} val images), scaling factor "
        f"{report['scaling_factor']:.5f} -> {args.out}"
    )
    return 0
