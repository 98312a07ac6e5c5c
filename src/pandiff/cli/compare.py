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
    from pathlib import Path

    from pandiff.evaluation import paired
    from pandiff.evaluation.report import check_json_path, write_json_and_markdown
    from pandiff.io import check_output_file

    if args.out is not None:
        check_output_file(args.out)
        check_json_path(args.out)
    base, new = paired.load_report(args.base), paired.load_report(args.new)
    result = paired.compare(base, new)
    table = paired.markdown(result, Path(args.base).stem, Path(args.new).stem)
    print(table, end="")
    if args.out is not None:
        write_json_and_markdown(args.out, result, table)
        print(f"wrote {args.out} and its Markdown table")
    return 0
