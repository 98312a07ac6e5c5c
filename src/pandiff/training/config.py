"""The one training configuration: nested dataclasses, read from a YAML preset, overridden with
``--set section.key=value`` on the command line, and fingerprinted by a hash.

Schema (every key optional in YAML; the defaults below are the paper's where it has one)::

    run:      dir, seed
    data:     features (shard folder from ``pandiff prepare``) | root (COCO-format folder, encoded
              on the fly), split, sample_split, codec and text_encoder (needed on the fly; with
              features the manifest names them), image_size, instance_bits, max_captions (on the
              fly), shuffle_buffer, num_workers, resident (hold the feature split in the training
              device's memory and index batches there: same batches, no input-pipeline wait)
    model:    preset, variant ("unified" | "two-stream" | "image-only": the text-to-image U-ViT
              that a two-stream model then takes as its frozen image stream), overrides (keyword arguments of
              ``pdm_from_preset``), init (a saved model folder to start from), image_stream (a
              pretrained image U-ViT, saved folder or checkpoint file: the frozen image stream of
              a two-stream model; the start of a unified model's image part), warm_start (a saved
              model folder: every weight whose name and shape match, e.g. pixel -> latent space),
              trainable (parameter-name prefixes to train, e.g. [refiner.]; the rest stays frozen;
              null: all)
    schedule: the fields of :class:`~pandiff.diffusion.schedule.NoiseSchedule`
    loss:     the fields of :class:`~pandiff.diffusion.loss.LossConfig`
    train:    steps, batch_size (per process), grad_accum, lr, weight_decay, betas, adam_eps,
              lr_schedule, warmup_steps, grad_clip, mixed_precision, compile (torch.compile the
              model through Accelerate's dynamo backend "inductor"; costs ~30-60 s of compiling on
              2 CPU cores at start, then ~9% faster world-s steps), ema_decay,
              checkpoint_every, keep_checkpoints, log_every, finite_checks ("step": a NaN/inf loss or
              gradient norm stops the run before its update, one host sync per step; "log": the
              check stays on the device, the fused AdamW skips that update and the run stops at the
              next log step or save; "auto": "step" on a CPU, where a sync costs nothing, else "log")
    sample:   every, num, steps, guidance_scale, map_guidance_scale, scheduler, redraw_image,
              one_piece_instances, image_map_guidance_scale (export defaults)

Values given with ``--set`` are parsed by ``yaml.safe_load`` (``--set train.lr=1e-4`` gives a
float, ``--set data.features=null`` gives None) and type-checked like the YAML file.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pandiff import checks
from pandiff.diffusion.loss import LossConfig
from pandiff.diffusion.schedule import NoiseSchedule
from pandiff.errors import ConfigError


@dataclass
class RunConfig:
    dir: str = "runs/world-s"
    seed: int = 0


@dataclass
class DataConfig:
    features: str | None = None
    root: str | None = None
    split: str = "train"
    sample_split: str = "val"
    codec: str | None = None
    text_encoder: str | None = None
    image_size: int = 64
    instance_bits: int = 3
    max_captions: int = 5
    shuffle_buffer: int = 2048
    num_workers: int = 0
    resident: bool = False


@dataclass
class ModelConfig:
    preset: str = "world-s"
    variant: str = "unified"
    overrides: dict = field(default_factory=dict)
    init: str | None = None
    image_stream: str | None = None
    warm_start: str | None = None
    trainable: list | None = None


@dataclass
class TrainConfig:
    steps: int = 10000
    batch_size: int = 64
    grad_accum: int = 1
    lr: float = 2e-4
    weight_decay: float = 0.03
    betas: list = field(default_factory=lambda: [0.9, 0.9])
    adam_eps: float = 1e-8
    lr_schedule: str = "constant_with_warmup"
    warmup_steps: int = 5000
    grad_clip: float = 1.0
    mixed_precision: str = "fp32"
    compile: bool = False
    ema_decay: float = 0.9999
    checkpoint_every: int = 1000
    keep_checkpoints: int = 3
    log_every: int = 10
    finite_checks: str = "auto"


@dataclass
class SampleConfig:
    every: int = 1000
    num: int = 8
    steps: int = 20
    guidance_scale: float = 3.0
    map_guidance_scale: float = 1.0
    scheduler: str = "dpmsolver++"
    # Written to the exported folder's pandiff_pipeline.json (the pipeline's default); the
    # training-time sample grids show the co-generated images as they come.
    redraw_image: bool = False
    one_piece_instances: bool = False
    image_map_guidance_scale: float = 0.0


@dataclass
class Config:
    run: RunConfig = field(default_factory=RunConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    # The library's own frozen dataclasses: one definition of each field, validated on build.
    schedule: NoiseSchedule = field(default_factory=NoiseSchedule)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def hash(self, sections: tuple[str, ...] | None = None) -> str:
        """sha256 (16 hex digits) of the canonical JSON of the config, or of some sections."""
        data = self.to_dict()
        if sections is not None:
            data = {k: data[k] for k in sections}
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


LR_SCHEDULES = ("constant_with_warmup", "linear", "cosine")
FINITE_CHECKS = ("auto", "step", "log")
MIXED_PRECISION = ("fp32", "bf16", "fp16")
VARIANTS = ("unified", "two-stream", "image-only")


def config_from_dict(data: dict | None) -> Config:
    """Build and validate a :class:`Config` from nested dicts (unknown keys are errors)."""
    config = _build(Config, data or {}, "")
    _validate(config)
    return config


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Read a YAML preset (or start from the defaults when ``path`` is None) and apply
    ``section.key=value`` overrides in order."""
    data: dict = {}
    if path is not None:
        path = resolve_config(path)
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (yaml.YAMLError, RecursionError) as exc:  # recursion: a file nested thousands deep
            raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
        except UnicodeDecodeError:
            raise ConfigError(f"config file {path} is not UTF-8 text; pass a YAML file") from None
        if not isinstance(data, dict):
            raise ConfigError(
                f"config file {path} must hold a mapping of sections, got {type(data).__name__}"
            )
    for item in overrides or []:
        apply_override(data, item)
    return config_from_dict(data)


PRESETS_DIR = Path(__file__).resolve().parents[1] / "configs"


def presets() -> list[str]:
    """Names of the presets shipped with pandiff (``src/pandiff/configs/*.yaml``)."""
    return sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))


def resolve_config(path: str | Path) -> Path:
    """A YAML file: ``path`` itself when it exists, else the shipped preset it names
    (``world-s-pixel``, ``world-s-pixel.yaml`` or ``configs/world-s-pixel.yaml``)."""
    given = Path(path)
    if given.is_file():
        return given
    if given.exists():
        raise ConfigError(f"config {given} is a folder; pass a YAML file or a preset name")
    name = given.name[: -len(given.suffix)] if given.suffix in (".yaml", ".yml") else given.name
    preset = PRESETS_DIR / f"{name}.yaml"
    if given.parent in (Path("."), Path("configs")) and preset.is_file():
        return preset
    raise ConfigError(
        f"config file {given} does not exist and names no preset; the presets are "
        f"{', '.join(presets())} (pass a name, e.g. --config world-s-pixel, or a YAML path)"
    )


def apply_override(data: dict, item: str) -> None:
    """Set ``data[a][b] = yaml.safe_load(c)`` for ``item = "a.b=c"`` (any depth), in place."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set expects section.key=value, got {item!r}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {item!r}: the value is not valid YAML ({exc})") from None
    parts = key.strip().split(".")
    node = data
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {item!r}: {part!r} is a value, not a section")
        node = child
    node[parts[-1]] = value


def _build(cls: type, data: Any, where: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"config section {where or 'top level'!r} must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise ConfigError(
            f"unknown config key(s) {', '.join(where + k for k in unknown)}; valid keys of "
            f"{where.rstrip('.') or 'the config'}: {', '.join(names)}"
        )
    kwargs = {}
    for name in names:
        if name not in data:
            continue
        hint, value, key = hints[name], data[name], where + name
        kwargs[name] = (
            _build(hint, value, key + ".") if dataclasses.is_dataclass(hint) else _coerce(hint, value, key)
        )
    return cls(**kwargs)


def _coerce(hint: Any, value: Any, key: str) -> Any:
    """Check ``value`` against a field type (``int``, ``float``, ``str``, ``list``, ``dict``,
    optionally ``| None``); ints are accepted for floats."""
    args = typing.get_args(hint)
    optional = type(None) in args
    base = next((a for a in args if a is not type(None)), hint) if args else hint
    if value is None:
        if optional:
            return None
        raise ConfigError(f"config key {key} must not be null")
    if base is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if base is float and isinstance(value, str):
        # YAML 1.1 reads "1e-4" (no dot) as a string; accept it as the number it plainly is.
        try:
            value = float(value)
        except ValueError:
            pass
    if base is float and isinstance(value, float) and not math.isfinite(value):
        # YAML's .nan/.inf parse as floats; one would train a NaN model or be written into exports.
        raise ConfigError(f"config key {key} must be a finite number, got {value}")
    if base is int and isinstance(value, bool) or not isinstance(value, base):
        hint_text = (
            " (YAML reads no/yes/on/off as booleans: quote the value)" if isinstance(value, bool) else ""
        )
        raise ConfigError(
            f"config key {key} must be {base.__name__}, got {value!r} ({type(value).__name__}){hint_text}"
        )
    return value


def _validate(c: Config) -> None:
    def need(ok: bool, message: str) -> None:
        if not ok:
            raise ConfigError(message)

    t = c.train
    need(t.steps >= 1, "train.steps must be >= 1")
    need(t.batch_size >= 1 and t.grad_accum >= 1, "train.batch_size and train.grad_accum must be >= 1")
    need(t.lr > 0 and t.weight_decay >= 0, "train.lr must be > 0 and train.weight_decay >= 0")
    need(len(t.betas) == 2 and all(0 <= b < 1 for b in t.betas), "train.betas must be two numbers in [0, 1)")
    need(t.lr_schedule in LR_SCHEDULES, f"train.lr_schedule must be one of {', '.join(LR_SCHEDULES)}")
    need(t.warmup_steps >= 0 and t.grad_clip >= 0, "train.warmup_steps and train.grad_clip must be >= 0")
    need(
        t.mixed_precision in MIXED_PRECISION,
        f"train.mixed_precision must be one of {', '.join(MIXED_PRECISION)}",
    )
    need(0 <= t.ema_decay < 1, "train.ema_decay must lie in [0, 1)")
    need(
        t.checkpoint_every >= 1 and t.keep_checkpoints >= 1,
        "train.checkpoint_every and keep_checkpoints must be >= 1",
    )
    need(t.log_every >= 1, "train.log_every must be >= 1")
    need(
        t.finite_checks in FINITE_CHECKS,
        f"train.finite_checks must be one of {', '.join(FINITE_CHECKS)}",
    )
    need(t.adam_eps > 0, "train.adam_eps must be > 0")
    checks.seed(c.run.seed, "run.seed")
    checks.guidance(c.sample.guidance_scale, "sample.guidance_scale")
    checks.guidance(c.sample.map_guidance_scale, "sample.map_guidance_scale")
    checks.steps(c.sample.steps, c.schedule.num_train_timesteps, "sample.steps")
    need(isinstance(c.sample.redraw_image, bool), "sample.redraw_image must be true or false")
    need(isinstance(c.sample.one_piece_instances, bool), "sample.one_piece_instances must be true or false")
    checks.guidance(c.sample.image_map_guidance_scale, "sample.image_map_guidance_scale")
    need(c.sample.every >= 0 and c.sample.num >= 1, "sample.every must be >= 0 (0: off) and sample.num >= 1")
    need(c.model.variant in VARIANTS, f"model.variant must be one of {', '.join(VARIANTS)}")
    need(
        (c.data.features is None) != (c.data.root is None),
        "set exactly one of data.features (shards from `pandiff prepare`) and data.root "
        "(a COCO-format folder encoded on the fly)",
    )
    need(
        c.data.shuffle_buffer >= 1 and c.data.num_workers >= 0,
        "data.shuffle_buffer >= 1, data.num_workers >= 0",
    )
    need(
        not c.data.resident or (c.data.features is not None and c.data.num_workers == 0),
        "data.resident holds feature shards in memory: it needs data.features and data.num_workers 0",
    )
    need(
        c.data.max_captions >= 1 and c.data.instance_bits >= 0,
        "data.max_captions >= 1, data.instance_bits >= 0",
    )
