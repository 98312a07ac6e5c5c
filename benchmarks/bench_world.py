"""Speed of ``pandiff make-world``: scenes per second for a few world sizes.

Usage::

    python benchmarks/bench_world.py [--n 2000 20000] [--size 64] [--workers W]

Each run writes a complete world (PNGs and JSON files) to a temporary folder that is deleted
afterwards. The table is printed and appended to ``benchmarks/RESULTS.md`` together with the
machine (platform, CPU count, load average at the start, torch version). Wall time depends on
what else runs; the CPU column (this process and its workers, user + system) does not. The target of issue 2 is
20k scenes at 64x64 in under 2 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

from bench_common import RESULTS, machine_description

from pandiff.data.world import generate_world


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
    parser.add_argument("--note", default="", help="a remark stored with the results (e.g. other load)")
    args = parser.parse_args()

    header = machine_description()
    rows = []
    for n in args.n:
        with tempfile.TemporaryDirectory(prefix="bench-world-") as tmp:
            start, cpu_start = time.perf_counter(), _cpu_seconds()
            summary = generate_world(Path(tmp) / "world", n, size=args.size, seed=0, workers=args.workers)
            seconds, cpu = time.perf_counter() - start, _cpu_seconds() - cpu_start
            disk = sum(p.stat().st_size for p in Path(tmp).rglob("*") if p.is_file()) / 2**20
        rows.append(
            f"| {n} | {args.size} | {summary['workers']} | {seconds:.1f} | {n / seconds:.0f} | "
            f"{seconds * 20000 / n:.0f} | {cpu:.1f} | {disk:.1f} |"
        )
        print(rows[-1], flush=True)
    table = "\n".join(
        [
            f"## make-world ({time.strftime('%Y-%m-%d')})",
            "",
            f"Machine: {header}",
            "",
            "| scenes | size | workers | seconds | scenes/s | s per 20k (extrapolated) | CPU s | MiB written |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|",
            *rows,
            "",
            *([args.note, ""] if args.note else []),
        ]
    )
    print(table)
    # One appending write: other benchmarks may append to the same file.
    with open(RESULTS, "a") as fh:
        fh.write("\n" + table)


if __name__ == "__main__":
    main()
