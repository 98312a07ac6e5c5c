"""Where training batches come from: feature shards, or a COCO-format folder encoded on the fly.

Both paths give the trainer the same things: a deterministic :class:`~pandiff.data.streams.BatchStream`,
the :class:`~pandiff.data.shards.FeatureSpec` the model is checked against, the empty prompt's
features, the codec (to draw latents from moments and decode samples) and prompts for sample grids.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pandiff.data.shards import (
    FeatureManifest,
    FeatureSpec,
    codec_fingerprint,
    resolve_reference,
    text_encoder_fingerprint,
)
from pandiff.data.streams import BatchStream, ResidentStream, ShardStream
from pandiff.errors import ConfigError, DataError
from pandiff.training.config import DataConfig


@dataclass
class TrainingData:
    """Everything the trainer needs from the data side.

    Attributes:
        stream: batches (``moments`` or ``image``; ``text`` or ``caption``; ``category``, ``instance``).
        spec: what the features are (checked against the model).
        empty_text: ``1 L D`` features of the empty prompt.
        codec: the image codec; text_encoder: only when captions are encoded on the fly.
        source: the data's location, for messages.
    """

    stream: BatchStream
    spec: FeatureSpec
    empty_text: torch.Tensor
    codec: Any
    text_encoder: Any
    source: str
    sample_text: torch.Tensor  # n L D, prompts of the sample grid
    sample_captions: list[str]


class ImageStream(BatchStream):
    """Batches of a :class:`~pandiff.data.coco.CocoPanoptic` dataset, for on-the-fly encoding:
    ``image`` ``B 3 S S`` in [-1, 1], ``caption`` (one of each item's captions, drawn per epoch),
    ``category``/``instance`` ``B M M`` long, ``image_id`` ``B``."""

    def __init__(self, dataset, batch_size: int, seed: int, rank: int = 0, world_size: int = 1) -> None:
        self.dataset = dataset
        super().__init__([len(dataset)], batch_size, seed, len(dataset), rank, world_size)

    def load_batch(self, ids: np.ndarray, draws: np.ndarray, state: Any) -> dict[str, Any]:
        from pandiff.data.coco import collate_fn

        batch = collate_fn([self.dataset[int(i)] for i in ids])
        batch["caption"] = [
            caps[min(int(u * len(caps)), len(caps) - 1)] for caps, u in zip(batch.pop("captions"), draws)
        ]
        return batch


def load_training_data(
    cfg: DataConfig,
    map_size: int,
    text_len: int,
    batch_size: int,
    seed: int,
    rank: int,
    world_size: int,
    num_samples: int,
    device: str | torch.device = "cpu",
) -> TrainingData:
    """Open the features (``cfg.features``) or the COCO-format folder (``cfg.root``).

    Args:
        map_size, text_len: the model's map side and text length (on the fly, maps are made and
            captions tokenized to match them).
        batch_size: per-process batch size; seed, rank, world_size: the data order.
        num_samples: prompts to keep for sample grids.
        device: where ``cfg.resident`` features are held (the training device).
    """
    if cfg.features is not None:
        return _from_features(cfg, batch_size, seed, rank, world_size, num_samples, device)
    return _on_the_fly(cfg, map_size, text_len, batch_size, seed, rank, world_size, num_samples)


def _from_features(cfg, batch_size, seed, rank, world_size, num_samples, device) -> TrainingData:
    from pandiff.encoders.codec import load_codec

    manifest = FeatureManifest.read(cfg.features)
    spec = manifest.spec
    order = (manifest, cfg.split, batch_size, seed, cfg.shuffle_buffer, rank, world_size)
    stream = ResidentStream(*order, device=device) if cfg.resident else ShardStream(*order)
    codec = load_codec(cfg.codec or spec.codec, scaling_factor=spec.scaling_factor)
    if cfg.codec is not None and codec_fingerprint(codec) != spec.codec_hash:
        raise DataError(
            f"data.codec {cfg.codec} is not the codec that made the features {cfg.features} ({spec.codec}); "
            "drop data.codec to use the manifest's, or re-run `pandiff prepare` with this codec"
        )
    finished = manifest.data["splits"].get(cfg.sample_split, {}).get("complete", False)
    sample_split = cfg.sample_split if finished else cfg.split
    text, captions = manifest.first_captions(sample_split, num_samples)
    return TrainingData(stream, spec, manifest.empty_text(), codec, None, str(cfg.features), text, captions)


def _on_the_fly(cfg, map_size, text_len, batch_size, seed, rank, world_size, num_samples) -> TrainingData:
    from pandiff.data.coco import CocoPanoptic
    from pandiff.encoders.codec import load_codec
    from pandiff.encoders.text import load_text_encoder

    if cfg.codec is None or cfg.text_encoder is None:
        raise ConfigError("training on data.root encodes on the fly: set data.codec and data.text_encoder")
    max_instances = 2**cfg.instance_bits - 1
    dataset = CocoPanoptic(cfg.root, cfg.split, cfg.image_size, map_size, max_instances)
    codec = load_codec(cfg.codec)
    text_encoder = load_text_encoder(cfg.text_encoder, max_length=text_len)
    spec = FeatureSpec(
        codec=resolve_reference(cfg.codec),
        codec_hash=codec_fingerprint(codec),
        latent_channels=codec.latent_channels,
        downsample=codec.downsample,
        scaling_factor=float(codec.scaling_factor),
        text_encoder=resolve_reference(cfg.text_encoder),
        text_encoder_hash=text_encoder_fingerprint(text_encoder),
        text_dim=text_encoder.dim,
        text_len=text_encoder.max_length,
        image_size=cfg.image_size,
        map_size=map_size,
        instance_bits=cfg.instance_bits,
        max_captions=cfg.max_captions,
        categories=tuple(dataset.table.to_coco()),
    )
    stream = ImageStream(dataset, batch_size, seed, rank, world_size)
    sample_set = dataset
    if (Path(cfg.root) / "annotations" / f"panoptic_{cfg.sample_split}2017.json").is_file():
        sample_set = CocoPanoptic(
            cfg.root, cfg.sample_split, cfg.image_size, map_size, max_instances, load_images=False
        )
    captions = [sample_set[i]["captions"][0] for i in range(min(num_samples, len(sample_set)))]
    return TrainingData(
        stream,
        spec,
        text_encoder.empty().cpu(),
        codec,
        text_encoder,
        str(cfg.root),
        text_encoder.encode(captions).cpu(),
        captions,
    )
