"""The ``pandiff`` command line: one subcommand per job, each a module of this package
(``pandiff.cli.generate`` for ``pandiff generate``, ...).

Every subcommand module exposes ``add_arguments(parser)`` and ``run(args) -> int``, parses and
checks its options and calls library functions; library code never imports from here. Heavy
modules are imported only when a subcommand runs, so ``pandiff --help`` is instant.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

# name -> (module, one-line help). Order is the data flow of the paper's pipeline.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "make-world": ("pandiff.cli.make_world", "write a built-in synthetic world in COCO panoptic format"),
    "train-codec": ("pandiff.cli.train_codec", "train the small image autoencoder for the built-in world"),
    "prepare": ("pandiff.cli.prepare", "encode a dataset once into feature shards for training"),
    "train": ("pandiff.cli.train", "train a PDM model (Accelerate; resumable checkpoints; EMA export)"),
    "generate": (
        "pandiff.cli.generate",
        "generate image + panoptic map pairs from a prompt (or an image for a map)",
    ),
    "synthesize": (
        "pandiff.cli.synthesize",
        "generate a whole panoptic dataset (COCO layout; resumable, multi-process)",
    ),
    "segment": ("pandiff.cli.segment", "draw the panoptic map of a given image with the same model"),
    "train-judge": ("pandiff.cli.train_judge", "train the built-in world's judge segmentation network"),
    "evaluate": ("pandiff.cli.evaluate", "sample a model on a dataset and write a metrics report"),
    "compare": (
        "pandiff.cli.compare",
        "pair two judged cogen reports scene by scene (wins, losses, McNemar p)",
    ),
    "demo": ("pandiff.cli.demo", "serve the web demo on 127.0.0.1"),
}


# Each command's --help ends with these (shell lines, shown as written).
EXAMPLES: dict[str, str] = {
    "make-world": """\
  pandiff make-world --out data/world-2k --n 2000              # a small world to try training on
  pandiff make-world --out data/world-20k --n 20000 --seed 0   # the bundled model's first world""",
    "train-codec": """\
  pandiff train-codec --data data/world-20k --out weights/world-codec --max-minutes 20
  pandiff train-codec --data data/world-2k --out weights/codec-smoke --steps 50 --eval-every 25""",
    "prepare": """\
  pandiff prepare --data data/world-2k --out features/world-2k     # a built-in world: identity codec
  pandiff prepare --data data/world-2k --out features/world-2k-vae --codec weights/world-codec
  pandiff prepare --data data/coco --out features/coco256 --codec weights/sd-vae \\
      --text-encoder weights/clip-l14 --image-size 256 --map-size 64 --device cuda""",
    "train": """\
  pandiff train --config world-s-pixel --set data.features=features/world-2k --run-dir runs/mine
  pandiff train --config world-s-pixel --set data.features=features/world-2k --run-dir runs/mine --resume
  pandiff train --config configs/coco256-uvit-s2.yaml --print-config   # a preset name or a YAML path""",
    "generate": """\
  pandiff generate "two red circles and a blue square on the grass" --out outputs/demo
  pandiff generate "a green triangle to the left of a pink cross on the water" --n 8 --model runs/mine
  pandiff generate "two red circles on the grass" --map outputs/demo/panoptic/000.png --out outputs/m2i""",
    "synthesize": """\
  pandiff synthesize --out data/synth-1k --prompts prompts.txt --n 1000 --per-prompt 4
  pandiff synthesize --out data/synth-1k --prompts prompts.txt --n 1000 --per-prompt 4 --resume""",
    "segment": """\
  pandiff segment photo.png                            # the map of photo.png (64 x 64; --resize others)
  pandiff segment scene.png "two red circles on the grass" --n 4 --out outputs/seg""",
    "train-judge": """\
  pandiff train-judge --data data/world-20k --out weights/judge
  pandiff train-judge --data data/world-2k --out weights/judge-smoke --steps 50 --thing-steps 20""",
    "evaluate": """\
  pandiff evaluate --data data/world-20k --judge weights/judge --n 500 --out report.json
  pandiff evaluate --data data/world-20k --mode image2map --n 100 --out image2map.json
  pandiff evaluate --data data/world-2k --judge weights/judge-smoke --allow-weak-judge --n 8 --steps 5""",
    "compare": """\
  pandiff compare base.json new.json    # reports of pandiff evaluate ... --generators per-sample --out X.json
  pandiff compare base.json new.json --out new-vs-base.json""",
    "demo": """\
  pandiff demo                                   # the bundled model on http://127.0.0.1:7860
  pandiff demo --model runs/mine/final --port 8000""",
}


# What an option left at None means, for the help of options whose own text does not say.
NO_DEFAULT: dict[str, str] = {
    "max_minutes": "no time limit, --steps decides",
    "scaling_factor": "the codec's own",
    "run_dir": "the config's run.dir",
    "map": "none, prompt -> image + map",
    "map_json": "a panoptic.json beside or above the PNG",
    "prompts": "none; give --prompts or --captions",
    "captions": "none; give --prompts or --captions",
    "judge": "none, the judge metrics are skipped",
    "inception": "a weight file torch-fidelity cached, else FID/KID are skipped",
    "clip": "none, the CLIP score is skipped",
}


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Examples and descriptions kept as written; every option's help ends with its default
    (unless it names the default itself, or it is a flag that is off unless given)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        unset = NO_DEFAULT.get(action.dest) if action.default is None else None
        if unset and "default" not in text:
            return f"{text} (default: {unset})"
        if (
            "default" in text
            or not action.option_strings
            or any(action.default is v for v in (None, False, argparse.SUPPRESS))
            or action.required
        ):
            return text
        default = " ".join(map(str, action.default)) if isinstance(action.default, list) else "%(default)s"
        return f"{text} (default {default})"


def add_scheduler_argument(p: argparse.ArgumentParser) -> None:
    """``--scheduler`` and ``--map-scheduler`` as every sampling command takes them: None means
    the model folder's."""
    from pandiff.pipeline_config import SCHEDULER_NAMES

    p.add_argument(
        "--scheduler",
        default=None,
        choices=SCHEDULER_NAMES,
        help="sampler of image and map (default: the model folder's)",
    )
    p.add_argument(
        "--map-scheduler",
        default=None,
        choices=SCHEDULER_NAMES,
        help="the map's own sampler, when it should differ from the image's (default: --scheduler, "
        "else the model folder's)",
    )


def _add_folder_switch(p: argparse.ArgumentParser, flag: str, help: str) -> None:
    """``--FLAG`` / ``--no-FLAG`` for a model folder's on/off setting: None (neither) means the folder's."""
    p.add_argument(flag, default=None, action=argparse.BooleanOptionalAction, help=help)


def add_redraw_argument(p: argparse.ArgumentParser) -> None:
    """``--redraw-image`` / ``--no-redraw-image`` for prompt -> image + map."""
    _add_folder_switch(
        p,
        "--redraw-image",
        "prompt -> image + map: draw each image once more for its co-generated map, so the picture "
        "follows the map (default: the model's; the bundled model does)",
    )


def add_self_check_arguments(p: argparse.ArgumentParser) -> None:
    """``--self-check N`` and ``--best-of K`` (beyond the paper); None means the folder's."""
    from pandiff.checks import finite_float

    p.add_argument(
        "--self-check",
        type=int,
        default=None,
        metavar="N",
        help="prompt -> image + map: draw a sample that fails its own checks (its map against what the "
        "prompt names: counts, stuff, relation; its picture against its map, by the model's own "
        "segmentation) again, up to N more times (beyond the paper; 0 = off; default: the model's)",
    )
    p.add_argument(
        "--best-of",
        type=int,
        default=None,
        metavar="K",
        help="prompt -> image + map: draw K whole samples per prompt and keep the one the model's own "
        "checks rank best (its map against the prompt, then how well its picture shows its map); "
        "costs K times the sampling and replaces --self-check (beyond the paper; 1 = off; default: "
        "the model's)",
    )
    _add_folder_switch(
        p,
        "--avoid-touching",
        "prompt -> image + map, with --self-check or --best-of: a map where two things touch or overlap "
        "counts as failing too (below any failure against the prompt), so kept samples have their things "
        "apart when a draw has them so (beyond the paper; default: the model's)",
    )
    p.add_argument(
        "--separate-touching",
        type=int,
        default=None,
        metavar="PX",
        help="prompt -> image + map with the redraw: bite things that still touch in the co-generated map "
        "PX map pixels apart before the picture is drawn for it, where that leaves the map no worse "
        "against the prompt (beyond the paper; 0 = off; default: the model's)",
    )
    _add_folder_switch(
        p,
        "--snap-shapes",
        "prompt -> image + map with the redraw, for the built-in world's shapes: redraw each thing of the "
        "co-generated map as the world shape of its category that fits it best before the picture is drawn "
        "for it, where that leaves the map no worse against the prompt (beyond the paper; default: the model's)",
    )
    p.add_argument(
        "--spread-things",
        type=int,
        default=None,
        metavar="PX",
        help="prompt -> image + map with the redraw, for the built-in world's shapes: move things of the "
        "co-generated map that come within PX map pixels of another apart, each whole as the world shape that "
        "fits it best, before the picture is drawn for it, where that leaves the map no worse against the "
        "prompt (beyond the paper; 0 = off; default: the model's)",
    )
    p.add_argument(
        "--cogen-steps",
        type=int,
        default=None,
        metavar="N",
        help="prompt -> image + map with the redraw: run the co-generation pass, whose picture the redraw "
        "replaces and whose map it keeps, at N sampler steps, and the redraw at --steps (beyond the paper; "
        "0 = off, both at --steps; a call asking fewer steps runs both at those; default: the model's)",
    )
    p.add_argument(
        "--colour-split",
        type=finite_float,
        default=None,
        metavar="SHARE",
        help="prompt -> image + map, with --self-check or --best-of, for flat-coloured worlds: a picture "
        "that paints a thing of its map in two colours (more than SHARE of the thing's inside further "
        "than 60 RGB from its median colour) fails its check against the map too, so it is drawn "
        "again (beyond the paper; 0 = off; default: the model's; the bundled model: 0.15)",
    )
    p.add_argument(
        "--misshapen",
        type=finite_float,
        default=None,
        metavar="RATIO",
        help="prompt -> image + map, with --self-check or --best-of, for the built-in world's shapes: a "
        "co-generated map holding a thing whose solidity (area over convex hull) is below RATIO times the "
        "least, or above the most over RATIO, of single world shapes of its category (two shapes fused "
        "into one, a cross drawn as a blob) fails its check and is drawn again (beyond the paper; 0 = "
        "off; default: the model's)",
    )
    p.add_argument(
        "--picture-match",
        type=finite_float,
        default=None,
        metavar="IOU",
        help="prompt -> image + map, with --self-check: the picture check also fails a picture whose own "
        "one-forward segmentation matches some thing of its map below this IoU, so it is drawn again for the "
        "map (beyond the paper; 0 = off; default: the model's)",
    )
    p.add_argument(
        "--restarts",
        type=int,
        default=None,
        metavar="N",
        help="prompt -> image + map, with --self-check: a sample that still fails its checks after its tries "
        "is drawn again whole (map and picture), up to N more times, keeping the one that fails least "
        "(beyond the paper; 0 = off; default: the model's)",
    )
    _add_folder_switch(
        p,
        "--colour-check",
        "prompt -> image + map, with --self-check or --best-of, for the built-in world: a picture that paints "
        "a thing in another colour than the prompt gives it, or a pair the prompt relates by colour ('a green "
        "circle above an orange circle') the wrong way round, fails its check and is drawn again (beyond the "
        "paper; default: the model's)",
    )


def check_self_check_arguments(args: argparse.Namespace) -> None:
    """Early, clear errors for the values :func:`add_self_check_arguments` read (absent: fine)."""
    from pandiff import checks

    if getattr(args, "self_check", None) is not None:
        checks.self_check(args.self_check, "--self-check")
    if getattr(args, "best_of", None) is not None:
        checks.best_of(args.best_of, "--best-of")
    if getattr(args, "separate_touching", None) is not None:
        checks.separate_touching(args.separate_touching, "--separate-touching")
    if getattr(args, "colour_split", None) is not None:
        checks.colour_split(args.colour_split, "--colour-split")
    if getattr(args, "misshapen", None) is not None:
        checks.misshapen(args.misshapen, "--misshapen")
    if getattr(args, "picture_match", None) is not None:
        checks.picture_match(args.picture_match, "--picture-match")
    if getattr(args, "restarts", None) is not None:
        checks.restarts(args.restarts, "--restarts")


def add_one_piece_argument(p: argparse.ArgumentParser) -> None:
    """``--one-piece-instances`` / ``--no-one-piece-instances``."""
    _add_folder_switch(
        p,
        "--one-piece-instances",
        "generated maps: a thing instance in several separate pieces keeps its largest, the others "
        "join their nearest segment, so a redrawn picture shows as many shapes as the map has instances "
        "(default: the model's; the bundled model does)",
    )


def add_image_map_guidance_argument(p: argparse.ArgumentParser) -> None:
    """``--image-map-guidance``: None means the folder's."""
    from pandiff.checks import finite_float

    p.add_argument(
        "--image-map-guidance",
        type=finite_float,
        default=None,
        help="map -> image and the redraw: how hard the image is pushed towards its given map "
        "(beyond the paper; 0 = off; default: the model's)",
    )


def epilog(name: str) -> str:
    """The end of ``pandiff NAME --help``: examples, and for generate the bundled model's words."""
    text = f"examples:\n{EXAMPLES[name]}"
    if name == "generate":
        from pandiff.world.generator import vocabulary_text

        words = "\n".join("  " + line for line in vocabulary_text(96).splitlines())
        text += f"\n\nwhat the bundled model knows (the built-in world's words):\n{words}"
    return text


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pandiff",
        description="Panoptic Diffusion Models: generate an image and its panoptic map from a prompt.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in SUBCOMMANDS.items():
        p = sub.add_parser(
            name, help=help_text, description=help_text, epilog=epilog(name), formatter_class=HelpFormatter
        )
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
    _show_own_warnings_as_lines(args.command)
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


def _show_own_warnings_as_lines(command: str) -> None:
    """pandiff's own warnings (an unknown prompt word, ...) as ``pandiff CMD: warning: ...`` lines;
    other libraries' warnings keep Python's format."""
    import warnings

    default = getattr(warnings.showwarning, "pandiff_default", warnings.showwarning)  # no chain
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # pandiff/, not pandiff/cli/

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, UserWarning) and os.path.abspath(filename).startswith(package):
            print(f"pandiff {command}: warning: {message}", file=file or sys.stderr)
        else:
            default(message, category, filename, lineno, file, line)

    show.pandiff_default = default
    warnings.showwarning = show


if __name__ == "__main__":
    sys.exit(main())
