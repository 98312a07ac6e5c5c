"""Speed of ``pandiff make-world`` and ``pandiff prepare``: scenes per second.

Usage::

    python benchmarks/bench_world.py [--n 2000 20000] [--size 64] [--workers W]
        [--prepare N] [--prepare-only] [--device cpu] [--batch 32] [--decode-workers 0]

``--prepare N`` also times feature preparation (the bundled model's settings: identity codec,
MiniLM text, 64 px images and maps, 3 captions per scene) of a fresh world of ``N`` scenes (its
generation is not timed), train and val splits together; ``--prepare-only`` skips the
make-world rows.

Each run writes a complete world (PNGs and JSON files) to a temporary folder that is deleted
afterwards. The table is printed and appended to ``benchmarks/RESULTS.md`` together with the
machine (platform, CPU count, load average at the start, torch version). Wall time depends on
what else runs; the CPU column (this process and its workers, user + system) does not. The target of issue 2 is
20k scenes at 64x64 in under 2 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

from bench_common import append_results

from pandiff.world.generator import generate_world


def _cpu_seconds() -> float:
    """User + system CPU time of this process and its finished children (the pool's workers):
    the cost of a run independent of what else the machine is doing."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, nargs="+", default=[2000, 20000], help="world sizes to time")
    parser.add_argument("--size", type=int, default=64, help="picture side in pixels")
    parser.add_argument("--workers", type=int, default=None, help="processes (default: all CPUs)")
    parser.add_argument("--prepare", type=int, default=0, metavar="N", help="also time prepare on N scenes")
    parser.add_argument("--prepare-only", action="store_true", help="skip the make-world rows")
    parser.add_argument("--device", default="cpu", help="torch device of the encoders for --prepare")
    parser.add_argument("--batch", type=int, default=32, help="prepare's --batch-size")
    parser.add_argument("--decode-workers", type=int, default=0, help="prepare's --workers (image decoding)")
    parser.add_argument("--note", default="", help="a remark stored with the results (e.g. other load)")
    parser.add_argument("--no-append", action="store_true", help="print only; do not append to RESULTS.md")
    args = parser.parse_args()

    command = "python benchmarks/bench_world.py " + " ".join(sys.argv[1:])
    if not args.prepare_only:
        _bench_make_world(args, command)
    if args.prepare:
        _bench_prepare(args, command)


def _mib(folder: Path) -> float:
    """Size of the files under ``folder`` in MiB."""
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 2**20


def _report(title: str, command: str, lines: list[str], args) -> None:
    print("\n".join(lines))
    if not args.no_append:
        append_results(title, command, lines, args.note)


def _bench_make_world(args, command: str) -> None:
    rows = []
    for n in args.n:
        with tempfile.TemporaryDirectory(prefix="bench-world-") as tmp:
            start, cpu_start = time.perf_counter(), _cpu_seconds()
            summary = generate_world(Path(tmp) / "world", n, size=args.size, seed=0, workers=args.workers)
            seconds, cpu = time.perf_counter() - start, _cpu_seconds() - cpu_start
            disk = _mib(Path(tmp))
        rows.append(
            f"| {n} | {args.size} | {summary['workers']} | {seconds:.1f} | {n / seconds:.0f} | "
            f"{seconds * 20000 / n:.0f} | {cpu:.1f} | {disk:.1f} |"
        )
        print(rows[-1], flush=True)
    header = (
        "| scenes | size | workers | seconds | scenes/s | s per 20k (extrapolated) | CPU s | MiB written |"
    )
    _report("make-world", command, [header, "|---:|---:|---:|---:|---:|---:|---:|---:|", *rows], args)


def _bench_prepare(args, command: str) -> None:
    from pandiff.data.prepare import prepare_features
    from pandiff.encoders.codec import load_codec
    from pandiff.encoders.text import MINILM, load_text_encoder

    n, captions = args.prepare, 3
    codec = load_codec("identity", device=args.device)
    text_encoder = load_text_encoder(MINILM, device=args.device)
    with tempfile.TemporaryDirectory(prefix="bench-prepare-") as tmp:
        generate_world(Path(tmp) / "world", n, size=args.size, seed=0, workers=args.workers)
        start, cpu_start = time.perf_counter(), _cpu_seconds()
        prepare_features(
            Path(tmp) / "world",
            Path(tmp) / "features",
            codec,
            "identity",
            text_encoder,
            splits=["train", "val"],
            image_size=args.size,
            map_size=args.size,
            max_captions=captions,
            batch_size=args.batch,
            num_workers=args.decode_workers,
            progress=False,
        )
        seconds, cpu = time.perf_counter() - start, _cpu_seconds() - cpu_start
        disk = _mib(Path(tmp) / "features")
    lines = [
        "Identity codec (pixels), MiniLM text (24 tokens), 3 captions per scene, 64 px images and maps.",
        "",
        "| scenes | device | batch | decode workers | seconds | scenes/s | captions/s | CPU s | MiB written |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|",
        f"| {n} | {args.device} | {args.batch} | {args.decode_workers} | {seconds:.1f} | {n / seconds:.0f} | "
        + f"{n * captions / seconds:.0f} | {cpu:.1f} | {disk:.1f} |",
    ]
    _report("prepare", command, lines, args)


if __name__ == "__main__":
    main()
