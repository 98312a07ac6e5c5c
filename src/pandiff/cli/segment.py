"""``pandiff segment IMAGE "prompt"``: the model's map for a given image (image -> map)."""

from pandiff.cli.generate import add_segment_arguments as add_arguments
from pandiff.cli.generate import run_segment as run

__all__ = ["add_arguments", "run"]
