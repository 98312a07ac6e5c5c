"""Checks of user-given numbers and Python API arguments, one function per kind of value.

Every number pandiff takes from a user (CLI option, config value, API argument, JSON field) goes
through :func:`number`, so NaN, infinities, bools posing as numbers and out-of-range values are
refused with a message naming the option, instead of silently turning a feature off or producing
black images.
"""

from __future__ import annotations

import math
from numbers import Integral, Real
from typing import Any

from pandiff.errors import ConfigError

# torch.Generator.manual_seed takes seeds below 2**64; the upper half is refused by numpy's
# generators, so seeds stay within the signed 64-bit range everywhere.
MAX_SEED = 2**63 - 1


def number(
    value: Any,
    name: str,
    lo: float | None = None,
    hi: float | None = None,
    *,
    integer: bool = False,
    lo_open: bool = False,
    hint: str = "",
    error: type[Exception] = ConfigError,
) -> Any:
    """Return ``value`` if it is a finite (integer, when ``integer``) number within ``[lo, hi]``
    (``(lo, hi]`` when ``lo_open``); otherwise raise ``error`` naming ``name``."""
    kind = "an integer" if integer else "a number"
    ok_type = isinstance(value, Integral) if integer else isinstance(value, Real)
    if isinstance(value, bool) or not ok_type:
        raise error(f"{name} must be {kind}, got {value!r} ({type(value).__name__}){hint}")
    if not math.isfinite(value):
        raise error(f"{name} must be a finite number, got {value}{hint}")
    below = lo is not None and (value <= lo if lo_open else value < lo)
    if below or (hi is not None and value > hi):
        low = "" if lo is None else f"{'>' if lo_open else '>='} {lo:g}"
        high = "" if hi is None else f"<= {hi:g}"
        raise error(f"{name} must be {' and '.join(x for x in (low, high) if x)}, got {value}{hint}")
    return value


# Extra draws a failing sample may get under the self check (each costs a sampling pass for the
# failing rows).
MAX_SELF_CHECK = 16


def self_check(value: Any, name: str = "self_check") -> int:
    """The self check's number of extra draws (:mod:`pandiff.self_check`): 0 (off) to
    :data:`MAX_SELF_CHECK`."""
    return number(value, name, 0, MAX_SELF_CHECK, integer=True, hint=" (0 = off)")


def best_of(value: Any, name: str = "best_of") -> int:
    """How many whole samples a best-of-K call draws per prompt (:func:`pandiff.self_check.ranked_sample`):
    1 (off) to :data:`MAX_SELF_CHECK`."""
    return number(value, name, 1, MAX_SELF_CHECK, integer=True, hint=" (1 = off)")


# The widest gap things are bitten apart by (pixels of the map; the built-in world's maps are 64 px).
MAX_SEPARATE = 16


def separate_touching(value: Any, name: str = "separate_touching") -> int:
    """The gap in map pixels that touching things are bitten apart by before the redraw
    (:func:`pandiff.self_check.bite_apart`): 0 (off) to :data:`MAX_SEPARATE`."""
    return number(value, name, 0, MAX_SEPARATE, integer=True, hint=" (0 = off)")


def spread_things(value: Any, name: str = "spread_things") -> int:
    """The gap in map pixels that things are moved apart by before the redraw
    (:func:`pandiff.world.checks.spread_things`): 0 (off) to :data:`MAX_SEPARATE`."""
    return number(value, name, 0, MAX_SEPARATE, integer=True, hint=" (0 = off)")


def cogen_steps(value: Any, max_steps: int, name: str = "cogen_steps") -> int:
    """Sampler steps of the co-generation pass whose map the redraw keeps: 0 (off: the pass takes
    the call's ``num_inference_steps``) to the schedule's training timesteps."""
    hint = f" (0 = off; the noise schedule has {max_steps} training timesteps)"
    return number(value, name, 0, max_steps, integer=True, hint=hint)


def colour_split(value: Any, name: str = "colour_split") -> float:
    """The colour-split check's share (:func:`pandiff.world.checks.colour_split_things`): the part
    of a thing's interior that may lie in another colour before the picture counts as failing;
    0 (off) to below 1."""
    return float(number(value, name, 0.0, 0.99, hint=" (0 = off)"))


def misshapen(value: Any, name: str = "misshapen") -> float:
    """The misshapen-thing check's ratio (:func:`pandiff.world.checks.misshapen_things`): a thing
    whose solidity is below this ratio times the least, or above the most over this ratio, of
    single world shapes of its category fails its map; 0 (off) to 1."""
    return float(number(value, name, 0.0, 1.0, hint=" (0 = off)"))


def picture_match(value: Any, name: str = "picture_match") -> float:
    """The self check's picture-match IoU (:func:`pandiff.self_check.instance_match`): a picture
    whose one-forward segmentation matches a thing of its map below it fails; 0 (off) to 1."""
    return float(number(value, name, 0.0, 1.0, hint=" (0 = off)"))


def restarts(value: Any, name: str = "restarts") -> int:
    """How many more times the self check draws a whole sample that still fails after its tries;
    0 (off) to 10."""
    return int(number(value, name, 0, 10, integer=True, hint=" (0 = off)"))


def colour_check(value: Any, name: str = "colour_check") -> bool:
    """Whether the picture check also counts the prompt's colours a picture gets wrong
    (:func:`pandiff.self_check.colour_failures`): True or False."""
    if not isinstance(value, bool):
        raise ConfigError(f"{name} must be true or false, got {value!r}")
    return value


def seed(value: Any, name: str = "--seed") -> int:
    return number(value, name, 0, MAX_SEED, integer=True)


def steps(value: Any, max_steps: int, name: str = "num_inference_steps") -> int:
    """Sampler steps: at least 1, at most the schedule's training timesteps (more would repeat
    timesteps: DPM-Solver++ then runs for hours, DDIM fails)."""
    hint = f" (the noise schedule has {max_steps} training timesteps)"
    return number(value, name, 1, max_steps, integer=True, hint=hint)


def guidance(value: Any, name: str) -> float:
    """A guidance scale: finite and >= 0 (0 turns that guidance off)."""
    return float(number(value, name, 0.0, 1e4))


def positive_float(value: Any, name: str) -> float:
    return float(number(value, name, 0.0, lo_open=True))


def finite_float(text: str) -> float:
    """argparse ``type=`` of every float option: NaN and infinities fail at parse time with the
    usage message (ranges are checked where the value is used, by :func:`number`)."""
    import argparse

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def nonfinite(named_tensors) -> list[str]:
    """Names of the tensors in ``(name, tensor)`` pairs that hold a NaN or an infinity.

    One fused reduction per tensor and a single host sync for the lot, so checking a model's
    parameters before a save costs milliseconds.
    """
    import torch

    named = [(n, t) for n, t in named_tensors if t.is_floating_point()]
    if not named:
        return []
    flags = torch.stack([torch.isfinite(t.detach()).all() for _, t in named]).cpu().tolist()
    return [n for (n, _), ok in zip(named, flags) if not ok]


def describe_names(names: list[str], limit: int = 3) -> str:
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def device(name: Any, option: str = "--device"):
    """A torch device that exists on this machine (``cpu``, ``cuda``, ``cuda:1``, ``mps``)."""
    import torch

    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError):
        raise ConfigError(f"{option} {name!r} is not a torch device; use cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"{option} {name}: this machine has no usable CUDA GPU; use {option} cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(f"{option} {name}: there are only {torch.cuda.device_count()} CUDA device(s)")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"{option} {name}: MPS is not available here; use {option} cpu")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"{option} {name!r}: pandiff runs on cpu, cuda or mps")
    return dev
