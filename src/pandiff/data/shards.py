"""Feature shards: a dataset encoded once (``pandiff prepare``) and streamed during training.

A feature folder holds ``manifest.json``, ``empty_text.safetensors`` (``1 L D`` features of the
empty prompt) and, per split, shards ``{split}-{i:05d}.safetensors`` of ``shard_size`` items::

    moments       n 2C h w  float16  the codec's posterior mean and log-variance (unscaled), so
                                     training draws a fresh latent each time it sees an image
    text          n K L D   float16  token features of the first K = max_captions captions
    num_captions  n         uint8    how many of the K rows are real captions
    category      n M M     uint8 (int16 beyond 255 categories)  contiguous category index
    instance      n M M     uint8    per-category instance index (bits are built on the fly)
    image_id      n         int64

and the caption strings as JSON in the safetensors metadata (``captions``). The manifest names
what made the features (:class:`FeatureSpec`: codec path and weight hash, text encoder, sizes,
instance bits, category table), a ``config_hash`` of all of it, and per split the finished shards.

Reading streams batches from the shards: see :mod:`pandiff.data.streams`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from pandiff.data.categories import CategoryTable
from pandiff.errors import DataError
from pandiff.io import atomic_path, write_json

FORMAT = "pandiff-features/1"
MANIFEST = "manifest.json"
EMPTY_TEXT = "empty_text.safetensors"


@dataclass(frozen=True)
class FeatureSpec:
    """Everything about the features that a model trained on them must agree with."""

    codec: str
    codec_hash: str
    latent_channels: int
    downsample: int
    scaling_factor: float
    text_encoder: str
    text_encoder_hash: str
    text_dim: int
    text_len: int
    image_size: int
    map_size: int
    instance_bits: int
    max_captions: int
    categories: tuple

    @property
    def latent_size(self) -> int:
        return self.image_size // self.downsample

    @property
    def table(self) -> CategoryTable:
        return CategoryTable.from_coco(self.categories)

    def to_manifest(self) -> dict:
        return {
            "codec": {
                "path": self.codec,
                "config_hash": self.codec_hash,
                "latent_channels": self.latent_channels,
                "downsample": self.downsample,
                "scaling_factor": self.scaling_factor,
            },
            "text_encoder": {
                "name": self.text_encoder,
                "weights_hash": self.text_encoder_hash,
                "dim": self.text_dim,
                "max_length": self.text_len,
            },
            "image_size": self.image_size,
            "map_size": self.map_size,
            "latent_size": self.latent_size,
            "instance_bits": self.instance_bits,
            "max_captions": self.max_captions,
            "categories": list(self.categories),
        }

    @classmethod
    def from_manifest(cls, m: dict) -> FeatureSpec:
        c, t = m["codec"], m["text_encoder"]
        return cls(
            codec=str(c["path"]),
            codec_hash=str(c["config_hash"]),
            latent_channels=int(c["latent_channels"]),
            downsample=int(c["downsample"]),
            scaling_factor=float(c["scaling_factor"]),
            text_encoder=str(t["name"]),
            text_encoder_hash=str(t["weights_hash"]),
            text_dim=int(t["dim"]),
            text_len=int(t["max_length"]),
            image_size=int(m["image_size"]),
            map_size=int(m["map_size"]),
            instance_bits=int(m["instance_bits"]),
            max_captions=int(m["max_captions"]),
            categories=tuple(m["categories"]),
        )


def check_model_matches(spec: FeatureSpec, model_config: Any, map_size: int, source: str) -> None:
    """Refuse features that a model cannot train on, naming the first field that differs.

    Args:
        spec: what the features were made with.
        model_config: the model's config (``latent_channels``, ``latent_size``, ``text_dim``,
            ``text_len``, ``map_bits``); ``map_size``: the model's map side (None: an image-only
            model, whose map fields are not checked).
        source: where the features come from, for the message.
    """
    from pandiff.data.analog_bits import MapBitCodec

    bits = MapBitCodec(len(spec.categories), spec.instance_bits)
    map_name = (
        f"map bits ({len(spec.categories)} categories -> {bits.category_bits} category bits + "
        f"{spec.instance_bits} instance bits)"
    )
    checks = [
        ("latent channels", spec.latent_channels, model_config.latent_channels, "--codec", "latent_channels"),
        (
            "latent size (image_size / codec downsample)",
            spec.latent_size,
            model_config.latent_size,
            "--image-size",
            "latent_size",
        ),
        ("text feature dim", spec.text_dim, model_config.text_dim, "--text-encoder", "text_dim"),
        ("text length", spec.text_len, model_config.text_len, "--text-max-length", "text_len"),
    ]
    if map_size is not None:  # None: an image-only model, which ignores the maps
        checks += [
            ("map size", spec.map_size, map_size, "--map-size", "patch_factor"),
            (map_name, bits.num_bits, model_config.map_bits, "--instance-bits", "map_bits"),
        ]
    for name, theirs, ours, flag, key in checks:
        if int(theirs) != int(ours):
            raise DataError(
                f"features {source} do not match the model: {name} is {theirs} in the features but "
                f"{ours} in the model. Re-run `pandiff prepare` with a matching {flag}, or change the "
                f"model (--set model.overrides.{key}=...)"
            )


def fingerprint(module: torch.nn.Module, *extra: Any) -> str:
    """sha256 (16 hex digits) of a module's class, ``extra`` values and every weight's bytes."""
    h = hashlib.sha256(type(module).__name__.encode())
    h.update(json.dumps([str(e) for e in extra]).encode())
    for key, value in sorted(module.state_dict().items()):
        h.update(key.encode())
        h.update(value.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def codec_fingerprint(codec) -> str:
    """Fingerprint of an image codec: its weights, sizes and latent scale."""
    return fingerprint(
        codec,
        codec.latent_channels,
        codec.downsample,
        codec.scaling_factor,
        getattr(codec, "shift_factor", 0.0),
    )


def text_encoder_fingerprint(encoder) -> str:
    """Fingerprint of a text encoder: its weights, token window and vocabulary size."""
    return fingerprint(encoder, encoder.max_length, len(encoder.tokenizer))


def resolve_reference(name_or_path: str) -> str:
    """A local folder as an absolute path (so a manifest works from any directory); names as given."""
    path = Path(name_or_path).expanduser()
    return str(path.resolve()) if path.is_dir() else str(name_or_path)


def config_hash(spec: FeatureSpec, shard_size: int) -> str:
    data = dict(dataclasses.asdict(spec), shard_size=shard_size)
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


class FeatureManifest:
    """``manifest.json`` of a feature folder: the spec, shard size and per-split shard lists."""

    def __init__(self, folder: Path, data: dict) -> None:
        self.folder = Path(folder)
        self.data = data
        try:
            self.spec = FeatureSpec.from_manifest(data)
            self.shard_size = int(data["shard_size"])
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(
                f"{self.folder / MANIFEST} lacks or garbles {exc}; re-run `pandiff prepare` into a new folder"
            ) from None

    @classmethod
    def create(cls, folder: str | Path, spec: FeatureSpec, shard_size: int, source: str) -> FeatureManifest:
        data = {"format": FORMAT, "config_hash": config_hash(spec, shard_size), **spec.to_manifest()}
        data.update(shard_size=shard_size, source=source, empty_text=EMPTY_TEXT, splits={})
        return cls(Path(folder), data)

    @classmethod
    def read(cls, folder: str | Path) -> FeatureManifest:
        path = Path(folder) / MANIFEST
        if not path.is_file():
            raise DataError(
                f"{folder} holds no {MANIFEST}; make the features with `pandiff prepare --out {folder}`"
            )
        try:
            data = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise DataError(f"{path} is not valid JSON ({exc}); re-run `pandiff prepare`") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise DataError(f"{path} is not a {FORMAT} manifest; re-run `pandiff prepare` into a new folder")
        return cls(Path(folder), data)

    @property
    def config_hash(self) -> str:
        return str(self.data["config_hash"])

    def save(self) -> None:
        write_json(self.folder / MANIFEST, self.data, indent=1)

    # -- splits ------------------------------------------------------------------------------------
    def split(self, name: str) -> dict:
        """``{"num_items", "shards": [{"file", "count"}], "complete"}``; DataError when absent."""
        splits = self.data.get("splits", {})
        if name not in splits:
            raise DataError(
                f"features {self.folder} have no split {name!r} (they have {sorted(splits) or 'none'}); "
                f"run `pandiff prepare ... --splits {name}` into the same folder"
            )
        return splits[name]

    def begin_split(self, name: str, num_items: int) -> int:
        """Register a split of ``num_items``; returns how many of its shards are already written."""
        entry = self.data["splits"].setdefault(
            name, {"num_items": num_items, "shards": [], "complete": False}
        )
        if entry["num_items"] != num_items:
            raise DataError(
                f"split {name!r} of {self.folder} was prepared from {entry['num_items']} items but the data now "
                f"holds {num_items}; prepare into a new --out folder"
            )
        done = 0
        for shard in entry["shards"]:
            if not (self.folder / shard["file"]).is_file():
                break
            done += 1
        del entry["shards"][done:]
        return done

    def add_shard(self, name: str, file: str, count: int) -> None:
        entry = self.data["splits"][name]
        entry["shards"].append({"file": file, "count": count})
        entry["complete"] = sum(s["count"] for s in entry["shards"]) == entry["num_items"]
        self.save()

    def shard_files(self, name: str) -> list[tuple[Path, int]]:
        """``(path, count)`` of every shard of a finished split."""
        entry = self.split(name)
        if not entry.get("complete"):
            raise DataError(
                f"split {name!r} of {self.folder} is unfinished ({len(entry['shards'])} shards written); "
                "re-run the same `pandiff prepare` command to finish it"
            )
        return [(self.folder / s["file"], int(s["count"])) for s in entry["shards"]]

    def first_captions(self, name: str, n: int) -> tuple[torch.Tensor, list[str]]:
        """Features ``n L D`` (float32) and text of the first caption of the split's first ``n`` items."""
        texts: list[torch.Tensor] = []
        captions: list[str] = []
        for path, _ in self.shard_files(name):
            with safe_open(str(path), framework="pt") as handle:
                rows = min(n - len(captions), handle.get_slice("text").get_shape()[0])
                texts.append(handle.get_slice("text")[:rows, 0].float())
                captions += [c[0] for c in json.loads(handle.metadata()["captions"])[:rows]]
            if len(captions) >= n:
                break
        return torch.cat(texts), captions

    def empty_text(self) -> torch.Tensor:
        """``1 L D`` float32 features of the empty prompt."""
        path = self.folder / EMPTY_TEXT
        try:
            return load_file(str(path))["empty_text"].float()
        except (OSError, SafetensorError, KeyError) as exc:
            raise DataError(f"cannot read {path} ({exc}); re-run `pandiff prepare`") from None


def shard_name(split: str, index: int) -> str:
    return f"{split}-{index:05d}.safetensors"


def write_shard(path: Path, tensors: dict[str, torch.Tensor], captions: list[list[str]]) -> None:
    """Write one shard atomically (temporary file, fsync, rename)."""
    with atomic_path(path) as tmp:
        save_file(
            {k: v.contiguous() for k, v in tensors.items()},
            str(tmp),
            metadata={"captions": json.dumps(captions)},
        )


def write_empty_text(folder: Path, features: torch.Tensor) -> None:
    with atomic_path(folder / EMPTY_TEXT) as tmp:
        save_file({"empty_text": features.to(torch.float16).contiguous()}, str(tmp))
