"""The ``pandiff`` command line: one subcommand per job, each implemented in its own module.

Every subcommand module exposes ``add_arguments(parser)`` and ``run(args) -> int``; modules are
imported only when their subcommand runs, so ``pandiff --help`` is instant.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

# name -> (module, one-line help). Order is the data flow of the paper's pipeline.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "make-world": ("pandiff.data.world_cli", "write a built-in synthetic world in COCO panoptic format"),
    "train-codec": ("pandiff.encoders.train_codec", "train the small image autoencoder for the built-in world"),
    "prepare": ("pandiff.data.prepare_cli", "encode a dataset once into feature shards for training"),
    "train": ("pandiff.training.train_cli", "train a PDM model (Accelerate; resumable checkpoints; EMA export)"),
    "generate": ("pandiff.generate_cli", "generate image + panoptic map pairs from a prompt (or an image for a map)"),
    "synthesize": ("pandiff.synthesize_cli", "generate a whole panoptic dataset (COCO layout; resumable, multi-process)"),
    "segment": ("pandiff.segment_cli", "draw the panoptic map of a given image with the same model"),
    "train-judge": ("pandiff.evaluation.train_judge_cli", "train the built-in world's judge segmentation network"),
    "evaluate": ("pandiff.evaluation.evaluate_cli", "sample a model on a dataset and write a metrics report"),
    "demo": ("pandiff.demo_cli", "serve the web demo on 127.0.0.1"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pandiff",
        description="Panoptic Diffusion Models: generate an image and its panoptic map from a prompt.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=module)
        importlib.import_module(module).add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    from pandiff.errors import PandiffError, describe_environment_error

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    debug = os.environ.get("PANDIFF_DEBUG", "") not in ("", "0")
    try:
        return int(importlib.import_module(args._module).run(args) or 0)
    except PandiffError as exc:
        if debug:
            raise
        print(f"pandiff {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"pandiff {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a full disk, a permission, memory: one line, not a traceback
        message = describe_environment_error(exc)
        if message is None or debug:
            raise
        print(f"pandiff {args.command}: error: {message} (PANDIFF_DEBUG=1 shows where)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
