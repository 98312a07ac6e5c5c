"""What the demo's JSON endpoints do, without any HTTP: validate a request, run the pipeline, answer.

:class:`DemoApp` owns the loaded pipeline and a lock that lets one generation run at a time (a
sampler call already uses every core; two at once would only slow both). Every answer carries
PNG data URLs, so the page needs no second request per picture, and a download URL of the COCO
panoptic export of the samples, kept in memory for the last ``max_downloads`` requests.
Bad input raises :class:`pandiff.errors.ConfigError` / ``DataError`` with a message for the user.
"""

from __future__ import annotations

import base64
import binascii
import math
import tempfile
import threading
import time
import uuid
import warnings
import zipfile
from collections import OrderedDict
from dataclasses import asdict, dataclass
from io import BytesIO
from pathlib import Path

import torch
from PIL import Image

from pandiff.coco_export import write_export
from pandiff.data.palette import colorize, legend
from pandiff.data.panoptic_map import PanopticMap
from pandiff.data.readers import open_rgb
from pandiff.demo.uploads import map_from_png_and_json, map_from_zip
from pandiff.errors import ConfigError, DataError
from pandiff.pipeline import PanopticDiffusionPipeline, PipelineOutput

GENERATE_FIELDS = {"prompt", "steps", "guidance", "map_guidance", "seed", "num_images"}
MAP_FIELDS = {"map_png", "map_json", "map_name", "zip", "index"}
IMAGE_FIELDS = {"image"}


@dataclass(frozen=True)
class DemoLimits:
    """What one request may ask for; the page reads these to bound its inputs."""

    max_prompt_chars: int = 200
    max_images: int = 4
    max_steps: int = 100
    max_upload_bytes: int = 16 * 1024 * 1024
    max_downloads: int = 16


class DemoApp:
    """The demo's request logic around one loaded pipeline.

    Args:
        pipe: the loaded pipeline (shared by all requests, guarded by a lock).
        limits: per-request bounds.
        model_name: how the export's ``info`` block names the model.
    """

    def __init__(
        self,
        pipe: PanopticDiffusionPipeline,
        limits: DemoLimits | None = None,
        model_name: str = "bundled world-s",
    ) -> None:
        self.pipe = pipe
        self.limits = limits or DemoLimits()
        self.model_name = model_name
        self._pipe_lock = threading.Lock()
        self._downloads: OrderedDict[str, bytes] = OrderedDict()
        self._downloads_lock = threading.Lock()

    def config(self) -> dict:
        """Limits and defaults for the page's controls."""
        defaults = self.pipe.call_settings()
        return {
            **asdict(self.limits),
            "defaults": {
                "steps": defaults["num_inference_steps"],
                "guidance": defaults["guidance_scale"],
                "map_guidance": defaults["map_guidance_scale"],
                "seed": 0,
                "num_images": 1,
            },
            "image_size": self.pipe.image_size,
            "map_size": self.pipe.map_size,
            "model": self.model_name,
            "vocabulary": self._vocabulary(),
        }

    def _vocabulary(self) -> dict | None:
        """The built-in world's words and example prompts, for a model of the built-in world."""
        from pandiff.world.generator import is_world_table, vocabulary_text, world_vocabulary

        if not is_world_table(self.pipe.table):
            return None
        lines = vocabulary_text(200).split("\nexamples:")[0].splitlines()
        return {"examples": world_vocabulary()["examples"], "lines": lines}

    def generate(self, body: dict) -> dict:
        """Prompt -> image + map samples. ``body``: prompt, steps, guidance, map_guidance, seed,
        num_images (all but prompt optional)."""
        params = self._check_params(body, GENERATE_FIELDS)
        return self._run(params, given=None, mode="prompt -> image + map")

    def map_to_image(self, body: dict) -> dict:
        """Uploaded map -> image samples. ``body``: the generate fields plus either ``zip``
        (base64 export zip, with optional 0-based ``index``) or ``map_png`` + ``map_json``
        (base64, with the PNG's file name in ``map_name``)."""
        params = self._check_params(body, GENERATE_FIELDS | MAP_FIELDS)
        table = self.pipe.table
        if body.get("zip"):
            index = body.get("index", 0)
            if not _is_int(index) or index < 0:
                raise ConfigError(f"index must be a whole number >= 0, got {index!r}")
            pmap, name = map_from_zip(self._upload(body, "zip"), table, index)
        elif body.get("map_png") and body.get("map_json"):
            map_name = body.get("map_name", "")
            if not isinstance(map_name, str):
                raise ConfigError("map_name must be a string")
            pmap, name = map_from_png_and_json(
                self._upload(body, "map_png"), self._upload(body, "map_json"), table, map_name
            )
        else:
            raise DataError("upload a map: either an export zip, or a panoptic PNG together with its JSON")
        answer = self._run(params, given=pmap, mode="map -> image")
        answer["given_map"] = _data_url(Image.fromarray(colorize(pmap)))
        answer["given_name"] = name
        return answer

    def segment(self, body: dict) -> dict:
        """Uploaded image -> map samples. ``body``: the generate fields (the prompt optional) plus
        ``image`` (a base64 PNG/JPEG, any size: centre-cropped and resized to the model's)."""
        params = self._check_params(body, GENERATE_FIELDS | IMAGE_FIELDS, allow_empty_prompt=True)
        if not body.get("image"):
            raise DataError("upload an image to segment")
        image = open_rgb(BytesIO(self._upload(body, "image")), "uploaded image", name="(image)")
        answer = self._run(params, given=None, mode="image -> map", image=image)
        answer["given_image"] = _data_url(image)
        return answer

    def download(self, token: str) -> bytes | None:
        """The zip of an earlier answer, or None once it has been dropped (or never existed)."""
        with self._downloads_lock:
            return self._downloads.get(token)

    # -- internals --------------------------------------------------------------------------------
    def _check_params(self, body: dict, allowed: set[str], allow_empty_prompt: bool = False) -> dict:
        """Validate the generation fields; returns prompt, steps, seed, num_images and the scales."""
        if not isinstance(body, dict):
            raise ConfigError("the request body must be a JSON object")
        unknown = sorted(set(body) - allowed)
        if unknown:
            raise ConfigError(
                f"unknown field(s) {', '.join(unknown)}; expected some of {', '.join(sorted(allowed))}"
            )
        lim = self.limits
        prompt = body.get("prompt", "")
        if not isinstance(prompt, str) or not (prompt.strip() or allow_empty_prompt):
            raise ConfigError("the prompt is empty; describe the scene, e.g. 'two red circles on the grass'")
        if len(prompt) > lim.max_prompt_chars:
            raise ConfigError(
                f"the prompt is {len(prompt)} characters long; the demo takes at most {lim.max_prompt_chars}"
            )
        steps = body.get("steps")
        if steps is not None and (not _is_int(steps) or not 1 <= steps <= lim.max_steps):
            raise ConfigError(f"steps must be a whole number in 1..{lim.max_steps}, got {steps!r}")
        num_images = body.get("num_images", 1)
        if not _is_int(num_images) or not 1 <= num_images <= lim.max_images:
            raise ConfigError(f"num_images must be a whole number in 1..{lim.max_images}, got {num_images!r}")
        seed = body.get("seed", 0)
        if not _is_int(seed) or not 0 <= seed < 2**32:
            raise ConfigError(f"seed must be a whole number in 0..{2**32 - 1}, got {seed!r}")
        scales = {}
        for name in ("guidance", "map_guidance"):
            value = body.get(name)
            if value is not None and (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not math.isfinite(value)
                or value < 0
            ):
                raise ConfigError(f"{name} must be a number >= 0, got {value!r}")
            scales[name] = None if value is None else float(value)
        # The values the call will use (None: the model folder's), for the answer and the export.
        settings = self.pipe.call_settings(scales["guidance"], scales["map_guidance"], steps)
        return {
            "prompt": prompt.strip(),
            "steps": settings["num_inference_steps"],
            "seed": seed,
            "num_images": num_images,
            "guidance_scale": settings["guidance_scale"],
            "map_guidance_scale": settings["map_guidance_scale"],
        }

    def _upload(self, body: dict, name: str) -> bytes:
        """Decode a base64 field (a bare string or a ``data:...;base64,`` URL)."""
        value = body[name]
        if not isinstance(value, str):
            raise DataError(f"{name} must be a base64 string")
        if value.startswith("data:"):
            value = value.partition(",")[2]
        if len(value) * 3 // 4 > self.limits.max_upload_bytes:
            raise DataError(f"{name} is larger than {self.limits.max_upload_bytes // 2**20} MiB")
        try:
            return base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise DataError(f"{name} is not valid base64") from None

    def _run(
        self, params: dict, given: PanopticMap | None, mode: str, image: Image.Image | None = None
    ) -> dict:
        """One pipeline call under the lock, then the answer (with the pipeline's warnings, e.g.
        words the model does not know) and its COCO export zip."""
        start = time.perf_counter()
        with self._pipe_lock, warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", UserWarning)
            out = self.pipe(
                params["prompt"],
                num_inference_steps=params["steps"],
                guidance_scale=params["guidance_scale"],
                map_guidance_scale=params["map_guidance_scale"],
                num_images=params["num_images"],
                generator=torch.Generator().manual_seed(params["seed"]),
                map=given,
                image=image,
                resize=True,  # uploads come at any size; centre-crop and mode-pool them
            )
        seconds = time.perf_counter() - start
        info = {
            "model": self.model_name,
            "sampler": self.pipe.scheduler,
            "map_sampler": self.pipe.map_scheduler,
            "mode": mode,
            **params,
        }
        token = self._store(_export_zip(out, self.pipe, info))
        return {
            "samples": [
                {
                    "prompt": prompt,
                    "image": _data_url(image),
                    "map": _data_url(map_image),
                    "overlay": _data_url(over),
                    "segments": describe_map(pmap),
                    "legend": legend(pmap),
                }
                for prompt, image, map_image, over, pmap in zip(
                    out.prompts, out.images, out.map_images(), out.overlays, out.maps
                )
            ],
            "download": f"/download/{token}.zip",
            "seconds": round(seconds, 2),
            "settings": params,
            "warnings": [str(w.message) for w in caught if issubclass(w.category, UserWarning)],
        }

    def _store(self, data: bytes) -> str:
        token = uuid.uuid4().hex
        with self._downloads_lock:
            self._downloads[token] = data
            while len(self._downloads) > self.limits.max_downloads:
                self._downloads.popitem(last=False)
        return token


def describe_map(pmap: PanopticMap) -> str:
    """A one-line summary of a map: things with their counts, then stuff, e.g. ``circle x2, grass``."""
    counts = pmap.thing_counts()
    things = [f"{pmap.table[c].name} x{n}" for c, n in sorted(counts.items())]
    stuff = sorted({pmap.table[c].name for c, _ in pmap.segments() if c not in counts})
    return ", ".join(things + stuff) or "void"


def _export_zip(out: PipelineOutput, pipe: PanopticDiffusionPipeline, info: dict) -> bytes:
    """The samples as a zipped export folder (see :mod:`pandiff.coco_export`), files at the zip's root."""
    with tempfile.TemporaryDirectory(prefix="pandiff-demo-") as tmp:
        folder = write_export(Path(tmp) / "export", out.prompts, out.images, out.maps, pipe.table, True, info)
        buffer = BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            for path in sorted(folder.rglob("*")):
                if path.is_file():
                    archive.write(path, path.relative_to(folder).as_posix())
    return buffer.getvalue()


def _data_url(image: Image.Image) -> str:
    buffer = BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
