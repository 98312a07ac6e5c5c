"""``pandiff prepare``: encode a COCO-format dataset once into feature shards for training.

The work is :func:`pandiff.data.prepare.prepare_features`; this module only parses the command,
so that ``pandiff prepare --help`` does not load torch.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pandiff import checks
from pandiff.checks import finite_float


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data", required=True, help="COCO-format folder (COCO 2017 or `pandiff make-world` output)"
    )
    p.add_argument("--out", required=True, help="feature folder to write (resumed when it exists)")
    p.add_argument(
        "--codec",
        default=None,
        help="image codec folder, hub id, or 'identity' (pixel space) (default: identity for a built-in "
        "world, which the world-s-pixel preset trains on; required for any other dataset)",
    )
    p.add_argument(
        "--scaling-factor", type=finite_float, default=None, help="override the codec's latent scale"
    )
    p.add_argument("--text-encoder", default="minilm", help="'minilm' (bundled), a folder or a hub id")
    p.add_argument(
        "--text-max-length", type=int, default=None, help="tokens per caption (default: encoder's)"
    )
    p.add_argument(
        "--splits", nargs="+", default=["train", "val"], help="splits to encode (default train val)"
    )
    p.add_argument("--image-size", type=int, default=64, help="image side in pixels (default 64)")
    p.add_argument("--map-size", type=int, default=64, help="map side in pixels (default 64)")
    p.add_argument(
        "--instance-bits", type=int, default=3, help="instance bits per pixel (default 3: 7 instances)"
    )
    p.add_argument("--shard-size", type=int, default=1024, help="items per shard (default 1024)")
    p.add_argument("--max-captions", type=int, default=5, help="captions kept per image (default 5)")
    p.add_argument("--batch-size", type=int, default=32, help="images encoded at once (default 32)")
    p.add_argument("--workers", type=int, default=0, help="DataLoader workers decoding images (default 0)")
    p.add_argument("--device", default="cpu", help="torch device for the encoders (default cpu)")


def _check_out(out: str, data: str) -> None:
    """Before any encoding: ``--out`` is a feature folder of an earlier ``prepare`` (resumed), or a
    place a new one may go (absent or empty; never a file, a foreign folder or the data itself)."""
    from pandiff.data.shards import MANIFEST
    from pandiff.io import check_output_dir

    path = Path(out)
    if path.is_dir() and not path.is_symlink() and (path / MANIFEST).is_file():
        return  # resumed; the manifest is checked against these settings when it is read
    check_output_dir(path, overwrite=False, option="--out", protect=[data])


def run(args: argparse.Namespace) -> int:
    from pandiff.data.prepare import prepare_features
    from pandiff.encoders.codec import load_codec
    from pandiff.encoders.text import load_text_encoder

    # Upper bounds: a 100000 px map asks for tens of GiB per item before anything is written.
    bounds = {
        "image_size": 4096,
        "map_size": 4096,
        "shard_size": 1 << 20,
        "max_captions": 100,
        "batch_size": 4096,
    }
    for name, hi in bounds.items():
        checks.number(getattr(args, name), f"--{name.replace('_', '-')}", 1, hi, integer=True)
    checks.number(args.workers, "--workers", 0, 256, integer=True)
    checks.number(args.instance_bits, "--instance-bits", 0, 16, integer=True)
    if args.scaling_factor is not None:
        checks.positive_float(args.scaling_factor, "--scaling-factor")
    checks.device(args.device)
    _check_out(args.out, args.data)
    if args.codec is None:
        args.codec = default_codec(args.data)
    codec = load_codec(args.codec, scaling_factor=args.scaling_factor, device=args.device)
    text_encoder = load_text_encoder(args.text_encoder, max_length=args.text_max_length, device=args.device)
    manifest = prepare_features(
        args.data,
        args.out,
        codec,
        args.codec,
        text_encoder,
        splits=args.splits,
        image_size=args.image_size,
        map_size=args.map_size,
        instance_bits=args.instance_bits,
        shard_size=args.shard_size,
        max_captions=args.max_captions,
        batch_size=args.batch_size,
        num_workers=args.workers,
    )
    for split in args.splits:
        entry = manifest.split(split)
        print(f"{split}: {entry['num_items']} items in {len(entry['shards'])} shards")
    print(f"features written to {args.out} (config hash {manifest.config_hash})")
    return 0


def default_codec(data: str) -> str:
    """``identity`` for a built-in world (its ``annotations/world_specs_*.json``), else a
    ConfigError saying which codec to pass."""
    from pathlib import Path

    from pandiff.errors import ConfigError

    if not Path(data).is_dir():
        return "identity"  # prepare_features says what is wrong with --data
    if any((Path(data) / "annotations").glob("world_specs_*2017.json")):
        print("pandiff prepare: --codec not given: a built-in world, so the identity codec (pixel space)")
        return "identity"
    raise ConfigError(
        f"{data} is not a built-in world: pass --codec (e.g. --codec weights/sd-vae, a folder of "
        "stabilityai/sd-vae-ft-mse, for COCO; --codec identity for pixel space)"
    )
