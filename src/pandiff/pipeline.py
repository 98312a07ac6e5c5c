"""The user-facing pipeline: prompt -> image + panoptic map, map -> image, image -> map, inpainting.

A pipeline folder (diffusers-style) holds::

    pandiff_pipeline.json   a PipelineConfig: codec, text encoder, schedule, instance bits, category
                            table, image size, and the defaults of every call argument left as None
                            (guidance scales, steps, map clean-up, scheduler)
    model/                  config.json + safetensors of the PDM transformer (EMA weights)
    codec/                  the image codec (AutoencoderKL folder), unless the JSON names another
    text_encoder/           a local text encoder's copy, unless the JSON names one ("minilm", a hub id)

``PanopticDiffusionPipeline.from_pretrained(folder)`` loads all of it and ``save_pretrained(folder)``
writes it; calling the pipeline returns PIL images, :class:`PanopticMap` objects and overlays.
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from pandiff import checks
from pandiff.data.analog_bits import MapBitCodec
from pandiff.data.categories import CategoryTable
from pandiff.data.palette import colorize, overlay
from pandiff.data.panoptic_map import MapCleanup, PanopticMap, canonicalize, center_crop_box
from pandiff.diffusion.sampler import LockstepSampler
from pandiff.diffusion.schedule import NoiseSchedule
from pandiff.errors import ConfigError, DataError, WeightsError
from pandiff.pipeline_config import PipelineConfig, component_path, resolve_model_dir, save_pipeline_folder


@dataclass
class PipelineOutput:
    """What one pipeline call returns; lists are aligned, one entry per sample."""

    prompts: list[str]
    images: list[Image.Image]
    maps: list[PanopticMap]
    overlays: list[Image.Image] = field(default_factory=list)

    def map_images(self) -> list[Image.Image]:
        """The maps in palette colours."""
        return [Image.fromarray(colorize(m)) for m in self.maps]


class PanopticDiffusionPipeline:
    """Composes a PDM model, an image codec, a text encoder and a lockstep sampler.

    Args:
        model: PDM transformer (``model.config`` gives latent and map sizes).
        codec: image codec (``encode``/``decode`` between ``[-1, 1]`` images and latents).
        text_encoder: prompts -> ``B L D`` features, with ``empty()``.
        schedule: the training noise schedule (and the map's bit scale).
        table: category table of the model's maps.
        instance_bits: instance bits of the map codec.
        image_size: pixel side of generated images.
        scheduler: ``"dpmsolver++"``, ``"sde-dpmsolver++"``, ``"ddim"`` or ``"ddpm"``; default the
            config's. It replaces the config's samplers of image and map both.
        map_scheduler: the map's own sampler (the same names), when it should differ from the
            image's; default: ``scheduler`` when that is given, else the config's.
        config: the folder's settings (:class:`PipelineConfig`): the defaults of every call
            argument left as None; default one built from the arguments above (codec
            ``"identity"`` or saved with the pipeline, text encoder by its ``name_or_path``).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        codec,
        text_encoder,
        schedule: NoiseSchedule,
        table: CategoryTable,
        instance_bits: int = 3,
        image_size: int = 64,
        scheduler: str | None = None,
        config: PipelineConfig | None = None,
        map_scheduler: str | None = None,
    ) -> None:
        self.model = model.eval()
        self.codec = codec
        self.text_encoder = text_encoder
        self.schedule = schedule
        self.table = table
        self.bit_codec = MapBitCodec.for_table(table, instance_bits)
        self.image_size = image_size
        if config is None:
            config = PipelineConfig(
                codec="identity" if type(codec).__name__ == "IdentityCodec" else "codec",
                text_encoder=str(getattr(text_encoder, "name_or_path", "minilm")),
                categories=table.to_coco(),
                schedule=schedule.to_dict(),
                instance_bits=instance_bits,
                image_size=image_size,
            )
        if scheduler is not None:
            # validated by __post_init__; the map takes it too unless it has its own
            config = replace(config, scheduler=scheduler, map_scheduler=None)
        if map_scheduler is not None:
            config = replace(config, map_scheduler=map_scheduler)
        self.config = config
        cfg = model.config
        if self.bit_codec.num_bits != cfg.map_bits:
            raise WeightsError(
                f"the model draws {cfg.map_bits} map bits but its category table needs "
                f"{self.bit_codec.num_bits} ({len(table)} categories, {instance_bits} instance bits)"
            )
        self.latent_shape = (cfg.latent_channels, cfg.latent_size, cfg.latent_size)
        self.map_size = cfg.latent_size * cfg.patch_factor
        self.map_shape = (cfg.map_bits, self.map_size, self.map_size)
        self._empty: torch.Tensor | None = None
        self._progress_bar_config: dict = {"disable": True}
        # Model forwards under bf16 autocast where the CPU multiplies bf16 natively (avx512_bf16);
        # set to None for full fp32 sampling.
        self.autocast_dtype: torch.dtype | None = torch.bfloat16 if cpu_has_fast_bf16() else None

    def weights_fingerprint(self) -> str:
        """The first 16 hex digits of a SHA-256 over the diffusion model's and the codec's weights
        (names, dtypes, shapes and bytes, in state-dict order): the same for the same weights
        whatever folder they were loaded from, different after any change to one of them.
        Evaluation reports and synthesize manifests record it, so two runs can tell whether they
        sampled the same model (a folder path does not say; ``--resume`` refuses other weights).
        The text encoder is named by the folder's ``text_encoder`` setting instead."""
        digest = hashlib.sha256()
        parts = [self.model] + ([self.codec] if isinstance(self.codec, torch.nn.Module) else [])
        for part, module in enumerate(parts):
            for name, tensor in module.state_dict().items():
                tensor = tensor.detach().cpu().contiguous()
                digest.update(f"{part}:{name}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
                digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
        return digest.hexdigest()[:16]

    # -- loading and saving ----------------------------------------------------------------------
    @classmethod
    def from_pretrained(
        cls,
        folder: str | Path | None = None,
        device: str | torch.device = "cpu",
        scheduler: str | None = None,
        torch_dtype: torch.dtype | None = None,
        map_scheduler: str | None = None,
    ) -> PanopticDiffusionPipeline:
        """Load a pipeline folder (default: the bundled built-in-world model).

        Args:
            device: where the model, codec and text encoder run.
            scheduler: overrides the folder's sampler, of image and map (``"dpmsolver++"``,
                ``"sde-dpmsolver++"``, ``"ddim"``, ``"ddpm"``).
            map_scheduler: overrides the map's sampler alone (same names; after ``scheduler``).
            torch_dtype: dtype of the model and codec weights (e.g. ``torch.bfloat16``); default
                as stored. The text encoder stays in its own dtype; its features are cast.
        """
        from pandiff.encoders.codec import load_codec
        from pandiff.encoders.text import load_text_encoder
        from pandiff.model import load_pdm

        folder = resolve_model_dir(folder)  # a training run's folder: its export RUN/final
        device = checks.device(device, "device")
        config = PipelineConfig.from_pretrained(folder)
        model = load_pdm(folder / config.model)
        if not getattr(model, "with_map", True):
            raise WeightsError(
                f"{folder} holds an image-only U-ViT (a text-to-image image stream), which draws no "
                "maps; train a two-stream PDM on it with --set model.image_stream="
                f"{folder / config.model}"
            )
        # Components the folder holds a copy of load from it; the pipeline's config names them by
        # absolute path, so save_pretrained copies them into a new folder.
        config = replace(
            config,
            codec=component_path(folder, config.codec),
            text_encoder=component_path(folder, config.text_encoder),
        )
        codec = load_codec(config.codec)
        text_encoder = load_text_encoder(config.text_encoder, max_length=model.config.text_len, device=device)
        pipe = cls(
            model,
            codec,
            text_encoder,
            config.noise_schedule(folder),
            CategoryTable.from_coco(config.categories),
            instance_bits=config.instance_bits,
            image_size=config.image_size,
            scheduler=scheduler,
            config=config,
            map_scheduler=map_scheduler,
        )
        return pipe.to(device, torch_dtype)

    def save_pretrained(self, folder: str | Path) -> Path:
        """Write this pipeline as a folder :meth:`from_pretrained` reads: the model (in its
        current dtype), the codec and a local text encoder copied in, and :attr:`config`."""
        config = replace(self.config, text_encoder=str(getattr(self.text_encoder, "name_or_path", "minilm")))
        return save_pipeline_folder(folder, self.model, config, codec=self.codec)

    def to(
        self,
        *args: str | torch.device | torch.dtype | None,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> PanopticDiffusionPipeline:
        """Move the pipeline to a device and/or cast the model and codec to a dtype, in place:
        ``pipe.to("cuda")``, ``pipe.to(torch.bfloat16)``, ``pipe.to("cuda", torch.float16)``,
        ``pipe.to(device=..., dtype=...)``. The text encoder only moves; its features are cast."""
        for arg in (*args, device, dtype):
            if arg is None:
                continue
            if isinstance(arg, torch.dtype):
                if not arg.is_floating_point:
                    raise ConfigError(f"the pipeline's dtype must be a floating-point dtype, got {arg}")
                # nn.Module's cast: diffusers' ModelMixin.to warns about fp32-kept modules PDM has none of.
                torch.nn.Module.to(self.model, dtype=arg)
                if hasattr(self.codec, "to"):
                    self.codec.to(dtype=arg)
            else:
                target = checks.device(arg, "device")
                for part in (self.model, self.codec, self.text_encoder):
                    if hasattr(part, "to"):
                        part.to(target)
            self._empty = None
        return self

    @property
    def dtype(self) -> torch.dtype:
        """The model's dtype (latents, map bits and text features are cast to it)."""
        return next(self.model.parameters()).dtype

    def set_progress_bar_config(self, **kwargs) -> None:
        """Settings of the sampling progress bar, as in diffusers: ``disable=False`` shows it
        (hidden by default); a call's ``progress`` argument overrides it."""
        unknown = set(kwargs) - {"disable"}
        if unknown:
            raise TypeError(f"unknown progress bar setting(s): {', '.join(sorted(unknown))}")
        self._progress_bar_config.update(kwargs)

    @property
    def scheduler(self) -> str:
        return self.config.scheduler

    @property
    def map_scheduler(self) -> str:
        """The map's sampler (the folder's ``map_scheduler``, or :attr:`scheduler`)."""
        return self.config.map_scheduler or self.config.scheduler

    def call_settings(
        self,
        guidance_scale: float | None = None,
        map_guidance_scale: float | None = None,
        num_inference_steps: int | None = None,
        map_cleanup: int | None = None,
        image_map_guidance_scale: float | None = None,
        one_piece_instances: bool | None = None,
    ) -> dict[str, float | int]:
        """The settings a call with these arguments uses: each given value (checked), else the
        folder's (:attr:`config`). Callers report them; they pass their own values, None
        included, to the call. :meth:`pop_cleanup` takes the map clean-up out of them, leaving
        the sampler's."""
        c = self.config
        size = _given_or(map_cleanup, c.map_cleanup)
        one_piece = _given_flag(one_piece_instances, c.one_piece_instances, "one_piece_instances")
        return {
            "num_inference_steps": checks.steps(
                _given_or(num_inference_steps, c.num_inference_steps), self.schedule.num_train_timesteps
            ),
            "guidance_scale": checks.guidance(_given_or(guidance_scale, c.guidance_scale), "guidance_scale"),
            "map_guidance_scale": checks.guidance(
                _given_or(map_guidance_scale, c.map_guidance_scale), "map_guidance_scale"
            ),
            "image_map_guidance_scale": checks.guidance(
                _given_or(image_map_guidance_scale, c.image_map_guidance_scale), "image_map_guidance_scale"
            ),
            # A block wider than the map would absorb every segment (and its search grows with the side).
            "map_cleanup": checks.number(
                size, "map_cleanup", 0, self.map_size, integer=True, hint=" (0 = off)"
            ),
            "one_piece_instances": one_piece,
        }

    @staticmethod
    def pop_cleanup(settings: dict) -> MapCleanup:
        """Take the map clean-up out of :meth:`call_settings`' dict (what remains is the sampler's)."""
        return MapCleanup(settings.pop("map_cleanup"), settings.pop("one_piece_instances"))

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    # -- inputs ----------------------------------------------------------------------------------
    def check_prompts(
        self, prompt: str | Sequence[str], truncate: bool = False, allow_empty: bool = False
    ) -> list[str]:
        """Validate prompts: non-empty strings that fit the text encoder's window (``truncate``:
        longer prompts are cut to the window instead, as ``pandiff prepare`` cut training captions;
        ``allow_empty``: the empty prompt too, the unconditional one, which image -> map may use)."""
        if not isinstance(prompt, (str, Sequence)):
            raise TypeError(f"prompt must be a string or a list of strings, got {type(prompt).__name__}")
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        if not prompts:
            raise ConfigError("no prompt given")
        limit = self.text_encoder.max_length
        for p in prompts:
            if not isinstance(p, str):
                raise TypeError(f"each prompt must be a string, got {type(p).__name__}")
            if not p.isprintable() and not p.replace("\n", " ").replace("\t", " ").isprintable():
                # Bytes that are not UTF-8 reach argv as lone surrogates, which no tokenizer reads.
                raise ConfigError("the prompt holds bytes that are not UTF-8 text or control characters")
            if not p.strip() and allow_empty:
                continue
            if not p.strip():
                raise ConfigError(
                    "the prompt is empty; describe the scene, e.g. 'two red circles on the grass'"
                )
            if not self.text_encoder.known_words(p):
                warnings.warn(
                    f"no word of the prompt {p[:60]!r} is in the text encoder's vocabulary; the model "
                    "has nothing to follow and draws a guess",
                    stacklevel=2,
                )
            unknown = self.unknown_words(p)
            if unknown:
                warnings.warn(
                    f"the model never saw the word(s) {', '.join(unknown)} (prompt {p[:60]!r}); it draws "
                    "only what the words it knows say (its vocabulary: pandiff generate --help)",
                    stacklevel=2,
                )
            n = self.text_encoder.count_tokens(p)
            if n > limit and not truncate:
                raise ConfigError(
                    f"the prompt is {n} tokens long but the text encoder reads at most {limit}; shorten it"
                )
        return prompts

    def unknown_words(self, prompt: str) -> list[str]:
        """Words of ``prompt`` outside the built-in world's captions, for a model drawing the
        built-in world's categories (the bundled one); ``[]`` for any other model."""
        from pandiff.world.generator import is_world_table, unknown_words

        return unknown_words(prompt) if is_world_table(self.table) else []

    def prepare_map(self, pmap: PanopticMap, resize: bool = False) -> torch.Tensor:
        """A given map -> ``K H W`` bits at the model's map size.

        Integer upsampling (nearest) is lossless and always done; any other size change loses
        labels and needs ``resize=True`` (mode pooling after a centre crop).
        """
        if pmap.table.num_categories != self.table.num_categories or any(
            a.coco_id != b.coco_id for a, b in zip(pmap.table.categories, self.table.categories)
        ):
            raise DataError("the given map uses another category table than the model; convert it first")
        h, w = pmap.shape
        m = self.map_size
        if (h, w) != (m, m):
            lossless = h == w and m % h == 0
            if not (lossless or resize):
                raise DataError(
                    f"the map is {h}x{w} but the model draws {m}x{m} maps; resizing it loses labels. "
                    "Pass resize=True (CLI: --resize) to centre-crop and mode-pool it"
                )
            pmap = pmap.center_crop().resize(m)
        pmap, _ = canonicalize(pmap.category, pmap.instance, self.table, self.bit_codec.max_instances)
        return self.bit_codec.encode_map(pmap)

    def prepare_image(self, image: Image.Image | np.ndarray, resize: bool = False) -> torch.Tensor:
        """A given RGB image -> ``3 S S`` float in ``[-1, 1]`` at the model's image size."""
        img = image if isinstance(image, Image.Image) else Image.fromarray(_rgb_array(image))
        if 0 in img.size:
            raise DataError(f"the image is empty ({img.size[0]}x{img.size[1]} pixels)")
        img = img.convert("RGB")
        s = self.image_size
        if img.size != (s, s):
            if not resize:
                raise DataError(
                    f"the image is {img.size[0]}x{img.size[1]} but the model works at {s}x{s}; "
                    "pass resize=True (CLI: --resize) to centre-crop and resize it"
                )
            top, left, side = center_crop_box(img.size[1], img.size[0])
            img = img.crop((left, top, left + side, top + side)).resize((s, s), Image.BICUBIC)
        arr = torch.from_numpy(np.asarray(img, dtype=np.float32) / 127.5 - 1.0)
        return arr.permute(2, 0, 1)

    def _encode_prompts(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        dev, dtype = self.device, self.dtype
        if self._empty is None:
            self._empty = self.text_encoder.empty().to(dev, dtype)  # cached: same every call
        return self.text_encoder.encode(prompts).to(dev, dtype), self._empty

    def sampler(self) -> LockstepSampler:
        """The lockstep sampler of this pipeline's model, schedule, scheduler and autocast dtype."""
        return LockstepSampler(
            self.model,
            self.schedule,
            self.scheduler,
            autocast_dtype=self.autocast_dtype,
            map_scheduler=self.map_scheduler,
        )

    def redraws(self, redraw_image: bool | None = None) -> bool:
        """Whether a prompt -> image + map call with this ``redraw_image`` redraws the image for
        its map: the given value (checked), else the folder's (``config.redraw_image``)."""
        return _given_flag(redraw_image, self.config.redraw_image, "redraw_image")

    @torch.no_grad()
    def redraw(
        self,
        text: torch.Tensor,
        empty: torch.Tensor,
        maps: Sequence[PanopticMap],
        settings: dict,
        generator: torch.Generator | Sequence[torch.Generator] | None = None,
        progress: bool = False,
    ) -> torch.Tensor:
        """The image latents drawn for ``maps`` (map -> image, one map per row of ``text``).

        Beyond the paper: after co-generation, the joint sample's map is usually right more often
        than its picture (the image side draws touching shapes of one colour as one blob), while
        map -> image from a clean map is the model's strongest task. Drawing the image once more
        for the co-generated map gives a picture that follows that map. ``settings``: the
        sampler's steps and guidance scales; ``generator`` continues where co-generation left it.
        """
        bits = torch.stack([self.prepare_map(m) for m in maps]).to(self.device, self.dtype)
        out = self.sampler().sample(
            text, empty, self.latent_shape, self.map_shape, **settings, map_bits=bits, generator=generator,
            progress=progress,
        )  # fmt: skip
        return out.latents

    def self_checks(self, self_check: int | None = None) -> int:
        """How many more times a prompt -> image + map call with this ``self_check`` draws a
        sample that fails its own checks (:mod:`pandiff.self_check`): the given value (checked),
        else the folder's (``config.self_check``)."""
        return checks.self_check(_given_or(self_check, self.config.self_check))

    def best_ofs(self, best_of: int | None = None) -> int:
        """How many whole samples a prompt -> image + map call with this ``best_of`` draws per
        prompt (:func:`pandiff.self_check.ranked_sample`): the given value (checked), else the
        folder's (``config.best_of``); 1 is off."""
        return checks.best_of(_given_or(best_of, self.config.best_of))

    def avoids_touching(self, avoid_touching: bool | None = None) -> bool:
        """Whether the self check and best of K of a call with this ``avoid_touching`` also draw
        again a map in which two things touch (:func:`pandiff.self_check.map_score`): the
        given value (checked), else the folder's (``config.avoid_touching``)."""
        return _given_flag(avoid_touching, self.config.avoid_touching, "avoid_touching")

    def draws_again(self, self_check: int | None = None, best_of: int | None = None) -> bool:
        """Whether a prompt -> image + map call with these settings draws a failing sample again
        (a self check, or best of K above 1): where the checks' extra criteria can act."""
        return self.self_checks(self_check) > 0 or self.best_ofs(best_of) > 1

    def keeps_apart(
        self, avoid_touching: bool | None = None, self_check: int | None = None, best_of: int | None = None
    ) -> bool:
        """Whether things apart acts in a prompt -> image + map call with these settings (None: the
        folder's): :meth:`avoids_touching`, and a self check or best of K that draws again (without
        one it changes nothing). What ``generate``'s export, evaluation reports and synthesize
        manifests record."""
        return self.avoids_touching(avoid_touching) and self.draws_again(self_check, best_of)

    def bite_apart(
        self, prompts: Sequence[str], maps: list[PanopticMap], gap: int, snap: bool = False, spread: int = 0
    ) -> list[PanopticMap]:
        """``maps`` (one per prompt) with, where that leaves each no worse against its prompt, their
        things snapped to world shapes (``snap``), moved ``spread`` pixels apart and touching things
        bitten ``gap`` pixels apart (:func:`pandiff.self_check.bite_apart`)."""
        if gap <= 0 and not snap and spread <= 0:
            return maps
        from pandiff.self_check import bite_apart, parse_prompt
        from pandiff.world.generator import is_world_table

        specs = [parse_prompt(p, self.table) for p in prompts]
        return bite_apart(maps, specs, is_world_table(self.table), gap, snap, spread)

    def separates(self, separate_touching: int | None = None, redraw_image: bool | None = None) -> int:
        """The gap in map pixels that a prompt -> image + map call with these settings bites
        touching things apart by before its redraw (:func:`pandiff.self_check.bite_apart`): the
        given ``separate_touching`` (checked), else the folder's; 0 when the call does not redraw
        (without the redraw the picture is the co-generated one and a bite would only make the map
        disagree with it). What ``generate``'s export, evaluation reports and synthesize manifests
        record."""
        gap = checks.separate_touching(_given_or(separate_touching, self.config.separate_touching))
        return gap if self.redraws(redraw_image) else 0

    def snaps(self, snap_shapes: bool | None = None, redraw_image: bool | None = None) -> bool:
        """Whether a prompt -> image + map call with these settings redraws the things of its
        co-generated map as world shapes before its redraw (:func:`pandiff.world.checks.snap_things`):
        the given ``snap_shapes`` (checked), else the folder's; False when the call does not redraw
        (without the redraw the picture is the co-generated one and a snapped map would only
        disagree with it). What ``generate``'s export, evaluation reports and synthesize manifests
        record."""
        return _given_flag(snap_shapes, self.config.snap_shapes, "snap_shapes") and self.redraws(redraw_image)

    def spreads(self, spread_things: int | None = None, redraw_image: bool | None = None) -> int:
        """The gap in map pixels that a prompt -> image + map call with these settings moves the
        things of its co-generated map apart by before its redraw
        (:func:`pandiff.world.checks.spread_things`): the given ``spread_things`` (checked), else the
        folder's; 0 when the call does not redraw. What ``generate``'s export, evaluation reports
        and synthesize manifests record."""
        gap = checks.spread_things(_given_or(spread_things, self.config.spread_things))
        return gap if self.redraws(redraw_image) else 0

    def cogen_steps_of(
        self,
        cogen_steps: int | None = None,
        num_inference_steps: int | None = None,
        redraw_image: bool | None = None,
    ) -> int:
        """The sampler steps of the co-generation pass of a prompt -> image + map call with these
        settings, when they differ from its ``num_inference_steps`` (both: the given value,
        checked, else the folder's): ``cogen_steps`` where it is below the call's steps and the
        call redraws its picture, else 0 (the pass takes the call's steps). What ``generate``'s
        export, evaluation reports and synthesize manifests record."""
        steps = checks.steps(
            _given_or(num_inference_steps, self.config.num_inference_steps), self.schedule.num_train_timesteps
        )
        given = checks.cogen_steps(
            _given_or(cogen_steps, self.config.cogen_steps), self.schedule.num_train_timesteps
        )
        return given if self.redraws(redraw_image) and 0 < given < steps else 0

    @staticmethod
    def cogen_settings(settings: dict, cogen: int) -> dict:
        """The sampler settings of the co-generation pass: ``settings`` with ``cogen`` steps
        (:meth:`cogen_steps_of`; 0 leaves them as they are)."""
        return dict(settings, num_inference_steps=cogen) if cogen else settings

    def splits_colours(
        self, colour_split: float | None = None, self_check: int | None = None, best_of: int | None = None
    ) -> float:
        """The share with which a prompt -> image + map call with these settings also fails a
        picture that paints a thing of its map in two colours
        (:func:`pandiff.world.checks.colour_split_things`): the given ``colour_split`` (checked),
        else the folder's; 0 without a self check or best of K (nothing is drawn again). What
        ``generate``'s export, evaluation reports and synthesize manifests record."""
        return self._as_acting("colour_split", colour_split, self.draws_again(self_check, best_of))

    def flags_misshapen(
        self, misshapen: float | None = None, self_check: int | None = None, best_of: int | None = None
    ) -> float:
        """The ratio with which a prompt -> image + map call with these settings also fails a
        co-generated map holding a thing no single world shape of its category looks like by its
        solidity (:func:`pandiff.world.checks.misshapen_things`): the given ``misshapen`` (checked), else
        the folder's; 0 without a self check or best of K (nothing is drawn again). What
        ``generate``'s export, evaluation reports and synthesize manifests record."""
        return self._as_acting("misshapen", misshapen, self.draws_again(self_check, best_of))

    def self_checks_alone(self, self_check: int | None = None, best_of: int | None = None) -> bool:
        """Whether a prompt -> image + map call with these settings runs the self check (tries
        above 0 and no best of K, which replaces it): where its picture match and restarts act."""
        return self.self_checks(self_check) > 0 and self.best_ofs(best_of) <= 1

    def matches_pictures(
        self, picture_match: float | None = None, self_check: int | None = None, best_of: int | None = None
    ) -> float:
        """The IoU below which the self check of a prompt -> image + map call with these settings
        also fails a picture whose one-forward segmentation matches a thing of its map
        (:func:`pandiff.self_check.instance_match`): the given ``picture_match`` (checked), else the
        folder's; 0 where the self check does not run (:meth:`self_checks_alone`). What
        ``generate``'s export, evaluation reports and synthesize manifests record."""
        return self._as_acting("picture_match", picture_match, self.self_checks_alone(self_check, best_of))

    def restarts_failing(
        self, restarts: int | None = None, self_check: int | None = None, best_of: int | None = None
    ) -> int:
        """How many more times the self check of a prompt -> image + map call with these settings
        draws a whole sample that still fails after its tries: the given ``restarts`` (checked),
        else the folder's; 0 where the self check does not run (:meth:`self_checks_alone`). What
        ``generate``'s export, evaluation reports and synthesize manifests record."""
        return self._as_acting("restarts", restarts, self.self_checks_alone(self_check, best_of))

    def checks_colours(
        self, colour_check: bool | None = None, self_check: int | None = None, best_of: int | None = None
    ) -> bool:
        """Whether a prompt -> image + map call with these settings also fails a picture that
        paints a thing in another colour than the prompt gives it, or a pair the prompt relates by
        colour the wrong way round (:func:`pandiff.self_check.colour_failures`; built-in world
        tables only): the given ``colour_check`` (checked), else the folder's; False without a
        self check or best of K (nothing is drawn again). What ``generate``'s export, evaluation
        reports and synthesize manifests record."""
        return self._as_acting("colour_check", colour_check, self.draws_again(self_check, best_of))

    # The sampling checks' extra settings that act only where something is drawn again; the keys
    # are the call's arguments, the folder's keys and the recorded keys alike.
    CHECK_SETTINGS = ("colour_split", "misshapen", "picture_match", "restarts", "colour_check")

    def checks_as_acting(
        self,
        self_check: int | None = None,
        best_of: int | None = None,
        colour_split: float | None = None,
        misshapen: float | None = None,
        picture_match: float | None = None,
        restarts: int | None = None,
        colour_check: bool | None = None,
    ) -> dict:
        """:data:`CHECK_SETTINGS` as a prompt -> image + map call with these settings applies them
        (:meth:`splits_colours`, :meth:`flags_misshapen`, :meth:`matches_pictures`,
        :meth:`restarts_failing`, :meth:`checks_colours`): what the call passes to the checks and what ``generate``'s
        export, evaluation reports and synthesize manifests record."""
        return {
            "colour_split": self.splits_colours(colour_split, self_check, best_of),
            "misshapen": self.flags_misshapen(misshapen, self_check, best_of),
            "picture_match": self.matches_pictures(picture_match, self_check, best_of),
            "restarts": self.restarts_failing(restarts, self_check, best_of),
            "colour_check": self.checks_colours(colour_check, self_check, best_of),
        }

    def _as_acting(self, key: str, given, acts: bool):
        """Folder setting ``key`` as a call applies it: ``given`` (checked by ``checks.<key>``),
        else the folder's; 0 of its type where it cannot act (``acts`` False)."""
        value = getattr(checks, key)(_given_or(given, getattr(self.config, key)))
        return value if acts else type(value)(0)

    def uint8_pictures(self, latents: torch.Tensor) -> np.ndarray:
        """``B H W 3`` uint8 pictures (on the CPU) of image latents ``B C h w``."""
        pixels = self.codec.decode(latents)  # B 3 S S in [-1, 1]
        return ((pixels.float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()

    @torch.no_grad()
    def segment_once(
        self,
        latents: torch.Tensor,
        text: torch.Tensor,
        cleanup: MapCleanup | None = None,
        generator: torch.Generator | Sequence[torch.Generator] | None = None,
    ) -> list[PanopticMap]:
        """The model's own segmentation of ``latents`` (``B C h w``) in one forward: the image
        clean (timestep 0), the map pure noise at the last training timestep, ``text`` (``B L D``)
        the prompts' features. The clean-map prediction there is the map's posterior mean given
        the picture, decoded (and cleaned by ``cleanup``) like a generated map. Used by the self
        check (:mod:`pandiff.self_check`) to see whether a picture shows its map's things."""
        from pandiff.diffusion.sampler import randn

        b = latents.shape[0]
        noise = randn((b, *self.map_shape), generator, latents.device, latents.dtype)
        zero = torch.zeros(b, dtype=torch.long, device=latents.device)
        last = torch.full_like(zero, self.schedule.num_train_timesteps - 1)
        with torch.autocast(
            latents.device.type, dtype=self.autocast_dtype, enabled=self.autocast_dtype is not None
        ):
            out = self.model(latents, zero, text, noise, last)
        maps = [self.bit_codec.decode_map(bits.float().clamp(-1, 1), self.table) for bits in out.map]
        return [cleanup(m) for m in maps] if cleanup else maps

    # -- the call --------------------------------------------------------------------------------
    @torch.no_grad()
    def __call__(
        self,
        prompt: str | Sequence[str],
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        map_guidance_scale: float | None = None,
        num_images: int = 1,
        generator: torch.Generator | Sequence[torch.Generator] | None = None,
        map: PanopticMap | Sequence[PanopticMap] | None = None,
        image: Image.Image | np.ndarray | Sequence[Image.Image | np.ndarray] | None = None,
        mask: np.ndarray | None = None,
        resize: bool = False,
        progress: bool | None = None,
        truncate: bool = False,
        map_cleanup: int | None = None,
        redraw_image: bool | None = None,
        image_map_guidance_scale: float | None = None,
        one_piece_instances: bool | None = None,
        self_check: int | None = None,
        best_of: int | None = None,
        avoid_touching: bool | None = None,
        separate_touching: int | None = None,
        colour_split: float | None = None,
        misshapen: float | None = None,
        picture_match: float | None = None,
        restarts: int | None = None,
        snap_shapes: bool | None = None,
        spread_things: int | None = None,
        cogen_steps: int | None = None,
        colour_check: bool | None = None,
    ) -> PipelineOutput:
        """Generate ``num_images`` samples per prompt.

        Args:
            prompt: one prompt or a list (batched).
            map: a clean map to draw the image for (map -> image), or a list with one map per
                prompt (batched map -> image).
            image: a clean image to segment (image -> map), or a list with one per prompt.
            mask: ``H W`` array, 1 where to generate and 0 where to keep the given image/map
                (inpainting); any size, resized by nearest neighbour to each modality.
            resize: allow lossy resizing of a given map or image to the model's sizes.
            truncate: cut prompts longer than the text encoder's window instead of refusing them.
            num_inference_steps, guidance_scale, map_guidance_scale, map_cleanup: None (the
                default) takes the folder's (:attr:`config`, see :meth:`call_settings`).
                Guidance is classifier-free text and map guidance (0 turns a branch off);
                ``map_cleanup`` is the sliver size for generated maps
                (:meth:`PanopticMap.absorb_slivers`), 0 returns the thresholded bits as they are
                (the paper's decoding). Maps of map -> image and map inpainting are returned as decoded.
            one_piece_instances: generated maps keep each thing instance's largest piece, the
                other pieces join their nearest segment (:meth:`PanopticMap.keep_largest_pieces`;
                beyond the paper). None takes the folder's.
            redraw_image: prompt -> image + map only: draw the image once more for the
                co-generated (cleaned) map, map -> image with the same prompt and generators, so
                the picture shows what the map shows. None takes the folder's (``config.redraw_image``).
            image_map_guidance_scale: beyond the paper, how hard an image drawn for a whole given
                map (map -> image, and the redraw) is pushed towards that map: the prediction with
                the clean map against the one with the map noised to the image's timestep
                (:class:`LockstepSampler`). 0 is off; None takes the folder's.
            self_check: prompt -> image + map only, beyond the paper: how many more times a sample
                that fails its own checks is drawn again (:mod:`pandiff.self_check`: its map
                against what the prompt names, its picture against its map), keeping the draw
                with the fewest failures. 0 is off; None takes the folder's.
            best_of: prompt -> image + map only, beyond the paper: draw this many whole samples per
                prompt and keep the one the model's own checks rank best
                (:func:`pandiff.self_check.ranked_sample`); costs that many times the sampling.
                Above 1 it replaces ``self_check``. 1 is off; None takes the folder's.
            avoid_touching: with ``self_check`` or ``best_of``, beyond the paper: a map in which two
                things touch or overlap counts as failing too, below any failure against the
                prompt (:func:`pandiff.self_check.map_score`), so the kept sample has its things
                apart when a draw has them so. None takes the folder's.
            separate_touching: prompt -> image + map with the redraw only, beyond the paper: the
                gap in map pixels that things still touching in the co-generated map are bitten
                apart by before the picture is drawn for it, where that leaves the map no worse
                against the prompt (:func:`pandiff.self_check.bite_apart`). 0 is off; None takes
                the folder's.
            colour_split: with ``self_check`` or ``best_of``, beyond the paper, for flat-coloured
                worlds: a picture that paints a thing of its map in two colours (more than this
                share of the thing's interior further than 60 RGB from its median colour,
                :func:`pandiff.world.checks.colour_split_things`) fails its check against the map
                too, so it is drawn again (ranked below, with best of K). 0 is off; None takes the
                folder's.
            misshapen: with ``self_check`` or ``best_of``, beyond the paper, for the built-in
                world's shapes: a co-generated map holding a thing whose solidity (area over
                convex hull) is below this ratio times the least, or above the most over this
                ratio, of single world shapes of its category (two shapes fused into one
                instance, a tangle, a cross drawn as a blob) fails its check, ranked below the
                failures against the prompt and above touching things
                (:func:`pandiff.world.checks.misshapen_things`). 0 is off; None takes the folder's.
            picture_match: with ``self_check``, beyond the paper: the picture check also fails a
                picture whose own one-forward segmentation matches some thing of its map (or the
                map one of it) below this IoU (:func:`pandiff.self_check.instance_match`), so it
                is drawn again for the map. 0 is off; None takes the folder's.
            restarts: with ``self_check``, beyond the paper: a sample that still fails its checks
                after its tries (against the prompt, or its picture against its map) is drawn
                again whole, map and picture with their tries, up to this many more times,
                keeping the whole sample that fails least. 0 is off; None takes the folder's.
            colour_check: with ``self_check`` or ``best_of``, beyond the paper, for the built-in
                world: the picture check also counts the prompt's colours the picture gets wrong on
                its map (a thing painted in another colour than the prompt gives it, and a pair the
                prompt relates by colour, "a green circle above an orange circle", painted the
                wrong way round: :func:`pandiff.self_check.colour_failures`), so it is drawn again;
                best of K ranks it right after the map failures. None takes the folder's.
            snap_shapes: prompt -> image + map with the redraw only, beyond the paper, for the
                built-in world's shapes: before the picture is drawn for the co-generated map, each
                thing of the map is redrawn as the world shape of its category that fits it best
                (:func:`pandiff.world.checks.snap_things`), where that leaves the map no worse
                against the prompt (:func:`pandiff.self_check.bite_apart`). None takes the folder's.
            spread_things: prompt -> image + map with the redraw only, beyond the paper, for the
                built-in world's shapes: before the picture is drawn for the co-generated map (after
                ``snap_shapes``, before ``separate_touching``), things that come within this many
                map pixels of another are moved apart, each whole as the world shape that fits it
                best, to the nearest free places (:func:`pandiff.world.checks.spread_things`), where
                that leaves the map no worse against the prompt. 0 is off; None takes the folder's.
            cogen_steps: prompt -> image + map with the redraw only, beyond the paper: the sampler
                steps of the co-generation pass, whose picture the redraw replaces and whose map
                it keeps (the redraw, and every picture drawn again, takes ``num_inference_steps``;
                a call asking fewer runs both at those). 0 runs it at ``num_inference_steps``;
                None takes the folder's.
            generator: a ``torch.Generator``, or a list with one per image (``len(prompt) *
                num_images``, prompt-major): image i then depends on generator i alone.
            progress: show the sampling bar; None follows :meth:`set_progress_bar_config`.
        Returns:
            :class:`PipelineOutput` with PIL images, panoptic maps and overlays.
        """
        prompts = self.check_prompts(prompt, truncate, allow_empty=image is not None and map is None)
        settings = self.call_settings(
            guidance_scale, map_guidance_scale, num_inference_steps, map_cleanup, image_map_guidance_scale,
            one_piece_instances,
        )  # fmt: skip
        cleanup = self.pop_cleanup(settings)
        checks.number(num_images, "num_images", 1, 100_000, integer=True)
        redraw = self.redraws(redraw_image)
        if mask is not None and map is None and image is None:
            raise ConfigError("a mask needs the image and/or map whose unmasked part is kept")
        maps_in = _per_prompt(map, PanopticMap, len(prompts), "map")
        images_in = _per_prompt(image, (Image.Image, np.ndarray), len(prompts), "image")
        prompts = [p for p in prompts for _ in range(num_images)]
        b = len(prompts)
        text, empty = self._encode_prompts(prompts)
        dev, dtype = self.device, self.dtype
        given_bits = given_latents = None
        if maps_in is not None:
            bits = torch.stack([self.prepare_map(m, resize) for m in maps_in]).to(dev)
            given_bits = _expand(bits.to(dtype), b, num_images)
        if images_in is not None:
            pixels = torch.stack([self.prepare_image(im, resize) for im in images_in]).to(dev, dtype)
            given_latents = _expand(self.codec.encode(pixels), b, num_images)
        image_mask = map_mask = None
        if mask is not None:
            mask_t = torch.as_tensor(_mask_array(mask), dtype=dtype)[None, None].to(dev)
            if image is not None:
                image_mask = _resize_mask(mask_t, self.latent_shape[1]).expand(b, -1, -1, -1)
            if map is not None:
                map_mask = _resize_mask(mask_t, self.map_size).expand(b, -1, -1, -1)
        generator = list(generator) if isinstance(generator, Sequence) else generator
        sampling_progress = not self._progress_bar_config["disable"] if progress is None else progress
        tries = self.self_checks(self_check)
        draws = self.best_ofs(best_of)
        apart = self.avoids_touching(avoid_touching)
        gap = self.separates(separate_touching, redraw)
        snap = self.snaps(snap_shapes, redraw)
        spread = self.spreads(spread_things, redraw)
        cogen = (
            self.cogen_steps_of(cogen_steps, settings["num_inference_steps"], redraw)
            if maps_in is None and images_in is None
            else 0
        )
        acting = self.checks_as_acting(
            tries, draws, colour_split, misshapen, picture_match, restarts, colour_check
        )
        if draws > 1 and maps_in is None and images_in is None:
            from pandiff.self_check import ranked_sample

            latents, maps = ranked_sample(
                self, prompts, text, empty, settings, cleanup, redraw, draws, generator, sampling_progress, apart, gap,
                acting["colour_split"], acting["misshapen"], snap, spread, cogen, acting["colour_check"],
            )  # fmt: skip
            return self._output(prompts, latents, maps)
        if tries and maps_in is None and images_in is None:
            from pandiff.self_check import self_checked_sample

            latents, maps = self_checked_sample(
                self, prompts, text, empty, settings, cleanup, redraw, tries, generator, sampling_progress, apart, gap,
                **acting, snap=snap, spread=spread, cogen=cogen,
            )  # fmt: skip
            return self._output(prompts, latents, maps)
        sampler = self.sampler()
        out = sampler.sample(
            text,
            empty,
            self.latent_shape,
            self.map_shape,
            **self.cogen_settings(settings, cogen),
            image=given_latents,
            map_bits=given_bits,
            image_mask=image_mask,
            map_mask=map_mask,
            generator=generator,
            progress=sampling_progress,
        )
        maps = [self.bit_codec.decode_map(bits.float(), self.table) for bits in out.map_bits]
        if maps_in is None and cleanup:
            maps = [cleanup(m) for m in maps]
        latents = out.latents
        if redraw and maps_in is None and images_in is None:
            maps = self.bite_apart(prompts, maps, gap, snap, spread)
            latents = self.redraw(text, empty, maps, settings, generator, progress=sampling_progress)
        return self._output(prompts, latents, maps)

    def _output(self, prompts: list[str], latents: torch.Tensor, maps: list[PanopticMap]) -> PipelineOutput:
        arrays = self.uint8_pictures(latents)
        images = [Image.fromarray(a) for a in arrays]
        overlays = [Image.fromarray(overlay(a, m)) for a, m in zip(arrays, maps)]
        return PipelineOutput(prompts, images, maps, overlays)


def _given_or(value, default):
    return default if value is None else value


def _given_flag(value, default: bool, name: str) -> bool:
    """An on/off call argument: ``value`` when given (True or False, else ConfigError naming
    ``name``), the folder's ``default`` when None."""
    if value is not None and not isinstance(value, bool):
        raise ConfigError(f"{name} must be True, False or None, got {value!r}")
    return _given_or(value, default)


def cpu_has_fast_bf16() -> bool:
    """Whether this CPU has native bf16 matrix instructions (avx512_bf16 or AMX)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def _per_prompt(given, kinds, n: int, name: str) -> list | None:
    """A given map/image, or a list of them, as a list of 1 (shared by all prompts) or ``n``."""
    if given is None:
        return None
    items = [given] if isinstance(given, kinds) else list(given)
    if len(items) not in (1, n):
        raise ConfigError(f"got {len(items)} {name}s for {n} prompts; give one {name}, or one per prompt")
    return items


def _expand(x: torch.Tensor, b: int, num_images: int) -> torch.Tensor:
    """One tensor per given item -> one per sample (prompts repeated ``num_images`` times each)."""
    return x.expand(b, *x.shape[1:]) if x.shape[0] == 1 else x.repeat_interleave(num_images, dim=0)


def _resize_mask(mask: torch.Tensor, size: int) -> torch.Tensor:
    """``1 1 H W`` mask -> ``1 1 size size`` by nearest neighbour, values in {0, 1}."""
    m = mask.shape[-1]
    if mask.shape[-2] != m:
        raise DataError(f"the mask must be square, got {tuple(mask.shape[-2:])}")
    idx = (torch.arange(size) * m) // size
    return (mask[..., idx, :][..., :, idx] > 0.5).float()


def _rgb_array(image) -> np.ndarray:
    """An image given as an array: ``H W 3`` (or ``H W``) uint8 in 0..255, as PIL would read it."""
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        raise TypeError(
            f"an image array must be uint8 (0..255), got {arr.dtype}; convert a float image in [0, 1] "
            "with (x * 255).round().astype(np.uint8), or pass a PIL image"
        )
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (3, 4)):
        raise DataError(f"an image array must be H x W x 3 (RGB), got shape {arr.shape}")
    return arr


def _mask_array(mask) -> np.ndarray:
    """A mask: a non-empty ``H W`` array of 0 (keep) and 1 (generate), no NaN."""
    try:
        arr = np.asarray(mask, dtype=np.float32)
    except (TypeError, ValueError):
        raise TypeError(f"mask must be an H x W array of 0 and 1, got {type(mask).__name__}") from None
    if arr.ndim != 2 or arr.size == 0:
        raise DataError(f"mask must be a non-empty H x W array, got shape {arr.shape}")
    if not np.isfinite(arr).all() or arr.min() < 0 or arr.max() > 1:
        raise DataError("mask values must lie in [0, 1] (1 = generate, 0 = keep), without NaN")
    return arr
