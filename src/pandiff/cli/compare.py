"""``pandiff compare BASE.json NEW.json``: two judged cogen reports of the same scenes, paired scene
by scene (wins, losses and the exact McNemar test per criterion and bucket)."""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "base", help="the reference report (pandiff evaluate --mode cogen --judge ... --out BASE.json)"
    )
    p.add_argument("new", help="the report of the changed model or settings, on the same scenes and prompts")
    p.add_argument(
        "--out",
        default=None,
        help="also write the comparison as JSON here, its Markdown table beside it (default: print only)",
    )


def run(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from pandiff.errors import ConfigError
    from pandiff.evaluation import paired
    from pandiff.io import atomic_write_text, check_output_file

    if args.out is not None:
        check_output_file(args.out)
        if Path(args.out).suffix != ".json":
            raise ConfigError(
                f"--out must name a .json file (the Markdown table goes beside it), got {args.out}"
            )
    base, new = paired.load_report(args.base), paired.load_report(args.new)
    result = paired.compare(base, new)
    table = paired.markdown(result, Path(args.base).stem, Path(args.new).stem)
    print(table, end="")
    if args.out is not None:
        atomic_write_text(Path(args.out), json.dumps(result, indent=1) + "\n")
        atomic_write_text(Path(args.out).with_suffix(".md"), table)
        print(f"wrote {args.out} and its Markdown table")
    return 0
