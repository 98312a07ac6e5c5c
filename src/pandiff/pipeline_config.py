"""A pipeline folder's settings: one :class:`PipelineConfig`, stored as ``pandiff_pipeline.json``.

The config says which components the folder holds (model, codec, text encoder, noise schedule,
category table, sizes) and the defaults a call of the pipeline takes for every argument left as
``None`` (guidance scales, steps, map clean-up, scheduler). It is validated in one place,
:meth:`PipelineConfig.check`, so a hand-edited or foreign file (a string guidance scale, NaN)
fails on loading with a WeightsError naming the key, instead of a traceback deep in sampling.
This module stays free of torch: the CLIs import it before parsing arguments.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from pandiff import checks
from pandiff.errors import ConfigError, WeightsError

PIPELINE_FILE = "pandiff_pipeline.json"
DEFAULT_MODEL_DIR = Path(__file__).parent / "weights" / "world-s"
SCHEDULER_NAMES = ("dpmsolver++", "sde-dpmsolver++", "ddim", "ddpm")
# Side of the block a generated map segment must contain to survive decoding (smaller pieces are
# bit-threshold rims, see PanopticMap.absorb_slivers); 0 keeps the thresholded bits as they are.
MAP_CLEANUP = 3
_REQUIRED = ("codec", "text_encoder", "categories")


@dataclass
class PipelineConfig:
    """What ``pandiff_pipeline.json`` holds; optional keys absent from older folders take these
    defaults.

    Attributes:
        codec: ``"identity"``, a hub id, or a folder (relative to the pipeline folder: ``"codec"``).
        text_encoder: ``"minilm"``, a hub id, or a folder (relative: ``"text_encoder"``).
        categories: the COCO category list of the model's maps.
        model: subfolder of the PDM transformer.
        schedule: keyword arguments of :class:`~pandiff.diffusion.schedule.NoiseSchedule`.
        instance_bits, image_size: map codec instance bits, pixel side of generated images.
        guidance_scale, map_guidance_scale, num_inference_steps, map_cleanup, scheduler,
            redraw_image, one_piece_instances: what a call of the pipeline uses for an argument left as ``None``.
            ``redraw_image``: after a prompt -> image + map sample, draw the image once more for
            the co-generated map (map -> image with the same prompt), so the picture follows the
            map (beyond the paper; older folders, without the key, do not redraw).
            ``one_piece_instances``: generated maps keep each thing instance's largest piece
            (:meth:`~pandiff.data.panoptic_map.PanopticMap.keep_largest_pieces`; beyond the paper,
            off in older folders).
        map_scheduler: the map's sampler in co-generation and image -> map, when it differs from
            ``scheduler`` (None, the default: the same); a ``scheduler`` given to the pipeline
            replaces both.
        image_map_guidance_scale: the default of the call argument of that name: how hard an image
            drawn for a whole given map (map -> image, the redraw) is pushed towards it (beyond
            the paper; 0, the default of older folders, is off).
        self_check: beyond the paper, how many more times a prompt -> image + map sample that
            fails its own checks is drawn again (:mod:`pandiff.self_check`: the map against what
            the prompt names, the picture against the map by the model's own one-forward
            segmentation); 0, the default of older folders, checks nothing.
        best_of: beyond the paper, how many whole prompt -> image + map samples a call draws per
            prompt, keeping the one its own checks rank best (:func:`pandiff.self_check.ranked_sample`;
            replaces ``self_check`` when above 1); 1, the default, draws one.
        avoid_touching: beyond the paper, whether the self check and best of K also count a map
            in which two things touch as failing (:func:`pandiff.self_check.map_score`);
            false, the default of older folders, does not.
        separate_touching: beyond the paper, with ``redraw_image``: the gap in map pixels that
            things still touching in the kept co-generated map are bitten apart by before the
            picture is drawn for it (:func:`pandiff.self_check.bite_apart`); 0, the default of
            older folders, is off.
        colour_split: beyond the paper, for flat-coloured worlds, with ``self_check`` or
            ``best_of``: the share of a thing's interior that its picture may paint in another
            colour before the picture fails its check against the map
            (:func:`pandiff.world.checks.colour_split_things`); 0, the default of older folders,
            is off.
        misshapen: beyond the paper, for the built-in world's shapes, with ``self_check`` or
            ``best_of``: a co-generated map holding a thing whose solidity lies outside the range
            of single world shapes of its category, widened by this ratio (two shapes fused into
            one, a tangle, a cross drawn as a blob), fails its check
            (:func:`pandiff.world.checks.misshapen_things`); 0, the default of older folders, is
            off.
        picture_match: beyond the paper, with ``self_check``: the picture check also fails a
            picture whose one-forward segmentation matches a thing of its map (or the map one of
            it) below this IoU (:func:`pandiff.self_check.instance_match`); 0, the default of
            older folders, is off.
        restarts: beyond the paper, with ``self_check``: a sample that still fails its checks
            after its tries is drawn again whole (map and picture stages), up to this many more
            times (:func:`pandiff.self_check.self_checked_sample`); 0, the default of older
            folders, is off.
        colour_check: beyond the paper, for the built-in world, with ``self_check`` or
            ``best_of``: whether a picture that paints a thing in another colour than the prompt
            gives it, or a pair the prompt relates by colour the wrong way round, fails its check
            (:func:`pandiff.self_check.colour_failures`); false, the default of older folders, is
            off.
        snap_shapes: beyond the paper, for the built-in world's shapes, with ``redraw_image``:
            whether the things of the kept co-generated map are redrawn as the world shapes of
            their categories that fit them best before the picture is drawn for it
            (:func:`pandiff.world.checks.snap_things`, :func:`pandiff.self_check.bite_apart`);
            false, the default of older folders, is off.
        spread_things: beyond the paper, for the built-in world's shapes, with ``redraw_image``:
            the gap in map pixels that the things of the kept co-generated map are moved apart by,
            each whole as the world shape that fits it best, before the picture is drawn for it
            (:func:`pandiff.world.checks.spread_things`, :func:`pandiff.self_check.bite_apart`);
            0, the default of older folders, is off.
        cogen_steps: beyond the paper, with ``redraw_image``: the sampler steps of the
            co-generation pass, whose picture the redraw replaces and whose map it keeps (the
            redraw takes ``num_inference_steps``; a call asking fewer steps runs both at those);
            0, the default of older folders, runs co-generation at ``num_inference_steps``.
        trained_steps, weights: provenance (training steps behind the weights; ``"ema"``).
    """

    codec: str
    text_encoder: str
    categories: list[dict]
    model: str = "model"
    schedule: dict = field(default_factory=dict)
    instance_bits: int = 3
    image_size: int = 64
    guidance_scale: float = 3.0
    map_guidance_scale: float = 1.0
    num_inference_steps: int = 20
    map_cleanup: int = MAP_CLEANUP
    scheduler: str = "dpmsolver++"
    map_scheduler: str | None = None
    redraw_image: bool = False
    one_piece_instances: bool = False
    image_map_guidance_scale: float = 0.0
    self_check: int = 0
    best_of: int = 1
    avoid_touching: bool = False
    separate_touching: int = 0
    colour_split: float = 0.0
    misshapen: float = 0.0
    picture_match: float = 0.0
    restarts: int = 0
    colour_check: bool = False
    snap_shapes: bool = False
    spread_things: int = 0
    cogen_steps: int = 0
    trained_steps: int | None = None
    weights: str | None = None

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        """Raise ConfigError naming the first invalid field."""
        for key in ("model", "codec", "text_encoder"):
            value = getattr(self, key)
            if not isinstance(value, str) or not value:
                raise ConfigError(f"{key!r} must be a non-empty string, got {value!r}")
        if not isinstance(self.categories, list) or not self.categories:
            raise ConfigError("'categories' must be a non-empty list of COCO categories")
        if not isinstance(self.schedule, dict):
            raise ConfigError(f"'schedule' must be an object, got {self.schedule!r}")
        checks.number(self.instance_bits, "'instance_bits'", 0, 16, integer=True)
        checks.number(self.image_size, "'image_size'", 8, 4096, integer=True)
        checks.guidance(self.guidance_scale, "'guidance_scale'")
        checks.guidance(self.map_guidance_scale, "'map_guidance_scale'")
        checks.guidance(self.image_map_guidance_scale, "'image_map_guidance_scale'")
        checks.steps(
            self.num_inference_steps,
            self.schedule.get("num_train_timesteps", 1000),
            "'num_inference_steps'",
        )
        checks.number(self.map_cleanup, "'map_cleanup'", 0, 4096, integer=True)
        checks.self_check(self.self_check, "'self_check'")
        checks.best_of(self.best_of, "'best_of'")
        checks.separate_touching(self.separate_touching, "'separate_touching'")
        checks.spread_things(self.spread_things, "'spread_things'")
        checks.cogen_steps(self.cogen_steps, self.schedule.get("num_train_timesteps", 1000), "'cogen_steps'")
        checks.colour_split(self.colour_split, "'colour_split'")
        checks.misshapen(self.misshapen, "'misshapen'")
        checks.picture_match(self.picture_match, "'picture_match'")
        checks.restarts(self.restarts, "'restarts'")
        for key in ("scheduler", "map_scheduler"):
            name = getattr(self, key)
            if name not in SCHEDULER_NAMES and not (key == "map_scheduler" and name is None):
                raise ConfigError(f"unknown {key} {name!r}; choose one of {', '.join(SCHEDULER_NAMES)}")
        for key in ("redraw_image", "one_piece_instances", "avoid_touching", "snap_shapes", "colour_check"):
            if not isinstance(getattr(self, key), bool):
                raise ConfigError(f"{key!r} must be true or false, got {getattr(self, key)!r}")
        if self.trained_steps is not None:
            checks.number(self.trained_steps, "'trained_steps'", 0, integer=True)

    def to_dict(self) -> dict[str, Any]:
        """The JSON object (provenance keys left out when unknown)."""
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PipelineConfig:
        """A validated config; unknown keys are ignored (a newer pandiff may add some)."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> PipelineConfig:
        """Read and validate ``folder/pandiff_pipeline.json``.

        Raises:
            WeightsError: the folder or file is missing, not JSON, or holds an invalid value.
        """
        folder = Path(folder)
        path = folder / PIPELINE_FILE
        if not folder.is_dir():
            what = "is a file, not a folder" if folder.exists() else "does not exist"
            raise WeightsError(f"model folder {folder} {what}; pass --model with a pipeline folder")
        if not path.is_file():
            raise WeightsError(
                f"{folder} is not a pandiff pipeline folder: {PIPELINE_FILE} is missing "
                "(export one with `pandiff train ... --export DIR`)"
            )
        try:
            data = json.loads(path.read_text(encoding="utf-8"), parse_constant=_no_constant)
        except (json.JSONDecodeError, UnicodeDecodeError, ValueError, RecursionError) as exc:
            raise WeightsError(f"{path} is not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise WeightsError(f"{path} must hold a JSON object, got {type(data).__name__}")
        missing = [k for k in _REQUIRED if k not in data]
        if missing:
            raise WeightsError(f"{path} lacks {', '.join(missing)}; re-export the pipeline")
        try:
            return cls.from_dict(data)
        except ConfigError as exc:
            raise WeightsError(f"{path}: {exc}; re-export the pipeline or fix the file") from None

    def noise_schedule(self, folder: Path | None = None):
        """The :class:`~pandiff.diffusion.schedule.NoiseSchedule` the config describes."""
        from pandiff.diffusion.schedule import NoiseSchedule

        try:
            return NoiseSchedule(**self.schedule)
        except (TypeError, ConfigError) as exc:
            where = folder / PIPELINE_FILE if folder is not None else "the pipeline config"
            raise WeightsError(f"{where}: invalid 'schedule' ({exc}); re-export the pipeline") from None


def component_path(folder: Path, ref: str) -> str:
    """Where a component named ``ref`` in ``folder``'s config loads from: the folder's own copy
    (``folder/ref``) when there is one, else ``ref`` as it is (a name, hub id or absolute path)."""
    local = folder / ref
    return str(local.absolute()) if local.exists() else ref


def _local_dir(ref: str) -> Path | None:
    """``ref`` as a folder to copy: an absolute path to an existing folder (names, hub ids and
    relative placeholders are not)."""
    path = Path(ref).expanduser()
    return path if path.is_absolute() and path.is_dir() else None


def save_pipeline_folder(out: str | Path, model, config: PipelineConfig, codec=None) -> Path:
    """Write a complete pipeline folder, atomically::

        out/model/                 the PDM's config.json + safetensors
        out/codec/                 the image codec, unless it is "identity" or a hub id
        out/text_encoder/          a copy of a local text-encoder folder ("minilm" and hub ids stay names)
        out/pandiff_pipeline.json  ``config``

    Args:
        model: a ``save_pretrained``-able PDM.
        config: its settings; ``codec`` and ``text_encoder`` may name local folders by absolute
            path, which are copied in so the folder is portable.
        codec: the loaded codec, saved with its ``save_pretrained`` when ``config.codec`` is
            neither a local folder (copied) nor ``"identity"``; without it a hub id stays a name.
    """
    from pandiff.io import atomic_dir, write_json

    out = Path(out)
    data = config.to_dict()
    with atomic_dir(out) as tmp:
        model.save_pretrained(tmp / config.model, safe_serialization=True)
        codec_dir, text_dir = _local_dir(config.codec), _local_dir(config.text_encoder)
        if codec_dir is not None:
            shutil.copytree(codec_dir, tmp / "codec")
            data["codec"] = "codec"
        elif codec is not None and config.codec != "identity":
            codec.save_pretrained(tmp / "codec")
            data["codec"] = "codec"
        if text_dir is not None:
            if not (text_dir / "config.json").is_file():  # a Stable Diffusion folder: its text parts
                for part in ("text_encoder", "tokenizer"):
                    shutil.copytree(text_dir / part, tmp / "text_encoder" / part)
            else:
                shutil.copytree(text_dir, tmp / "text_encoder")
            data["text_encoder"] = "text_encoder"
        write_json(tmp / PIPELINE_FILE, data, indent=1)
    return out


def resolve_model_dir(folder: str | Path | None) -> Path:
    """The pipeline folder to load: ``folder`` (default: the bundled model), or, for a training
    run's folder (no pipeline file, but its export ``final/`` has one), that export, with a warning."""
    folder = Path(folder) if folder is not None else DEFAULT_MODEL_DIR
    export = folder / "final"
    if folder.is_dir() and not (folder / PIPELINE_FILE).is_file() and (export / PIPELINE_FILE).is_file():
        import warnings

        warnings.warn(
            f"{folder} is a training run, not a pipeline folder; using its export {export}", stacklevel=2
        )
        return export
    return folder


def _no_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")
