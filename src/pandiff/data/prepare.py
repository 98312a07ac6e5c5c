"""Encode a COCO-format dataset once into feature shards (what ``pandiff prepare`` runs).

Every split given is checked (annotations read, sizes validated) before any encoding starts, then
encoded shard by shard; each shard is written atomically and recorded in the manifest right
after, so an interrupted run, started again with the same command, skips the finished shards.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from pandiff.data.shards import (
    MANIFEST,
    FeatureManifest,
    FeatureSpec,
    codec_fingerprint,
    resolve_reference,
    shard_name,
    text_encoder_fingerprint,
    write_empty_text,
    write_shard,
)
from pandiff.errors import ConfigError, DataError


def prepare_features(
    data: str | Path,
    out: str | Path,
    codec,
    codec_name: str,
    text_encoder,
    splits: list[str],
    image_size: int = 64,
    map_size: int = 64,
    instance_bits: int = 3,
    shard_size: int = 1024,
    max_captions: int = 5,
    batch_size: int = 32,
    num_workers: int = 0,
    progress: bool = True,
) -> FeatureManifest:
    """Encode ``splits`` of the COCO-format folder ``data`` into the feature folder ``out``.

    Args:
        codec: an :class:`~pandiff.encoders.codec.ImageCodec`; ``codec_name`` what loads it again.
        text_encoder: a :class:`~pandiff.encoders.text.TextEncoder`.
    Returns:
        The manifest, with every split complete.
    Raises:
        DataError: bad data, or ``out`` holds features made with other settings.
    """
    from pandiff.data.coco import CocoPanoptic

    if not splits:
        raise ConfigError("--splits needs at least one split")
    datasets = {
        s: CocoPanoptic(data, s, image_size=image_size, map_size=map_size, max_instances=2**instance_bits - 1)
        for s in dict.fromkeys(splits)
    }
    table = next(iter(datasets.values())).table
    if any(ds.table != table for ds in datasets.values()):
        raise DataError(f"the splits of {data} have different category tables; they must share one")
    spec = FeatureSpec(
        codec=resolve_reference(codec_name),
        codec_hash=codec_fingerprint(codec),
        latent_channels=int(codec.latent_channels),
        downsample=int(codec.downsample),
        scaling_factor=float(codec.scaling_factor),
        text_encoder=resolve_reference(text_encoder.name_or_path),
        text_encoder_hash=text_encoder_fingerprint(text_encoder),
        text_dim=int(text_encoder.dim),
        text_len=int(text_encoder.max_length),
        image_size=image_size,
        map_size=map_size,
        instance_bits=instance_bits,
        max_captions=max_captions,
        categories=tuple(table.to_coco()),
    )
    manifest = _open_manifest(Path(out), spec, shard_size, str(Path(data).resolve()))
    write_empty_text(manifest.folder, text_encoder.empty().cpu())
    for split, dataset in datasets.items():
        _encode_split(manifest, split, dataset, codec, text_encoder, spec, batch_size, num_workers, progress)
    return manifest


def _open_manifest(out: Path, spec: FeatureSpec, shard_size: int, source: str) -> FeatureManifest:
    fresh = FeatureManifest.create(out, spec, shard_size, source)
    if not (out / MANIFEST).is_file():
        fresh.save()
        return fresh
    old = FeatureManifest.read(out)
    if old.config_hash != fresh.config_hash:
        differ = [k for k in (*spec.to_manifest(), "shard_size") if old.data.get(k) != fresh.data.get(k)]
        raise DataError(
            f"{out} holds features made with other settings ({', '.join(differ)} differ); "
            "write to a new --out folder, or delete it to start over"
        )
    return old


def _encode_split(
    manifest, split, dataset, codec, text_encoder, spec, batch_size, num_workers, progress
) -> None:
    from pandiff.data.coco import collate_fn

    total, size = len(dataset), manifest.shard_size
    done = manifest.begin_split(split, total)
    manifest.save()
    num_shards = math.ceil(total / size)
    bar = tqdm(
        total=total,
        initial=min(done * size, total),
        desc=f"prepare {split}",
        unit="img",
        disable=not progress,
    )
    category_dtype = torch.uint8 if len(spec.categories) < 256 else torch.int16
    # One DataLoader for the whole split, its batches cut at shard boundaries: a loader per shard
    # restarted its workers every `shard_size` items and left most of them idle (a shard of 1024
    # at batch 512 kept two busy), which made decoding the bottleneck with a GPU encoder.
    shards = [range(i * size, min((i + 1) * size, total)) for i in range(num_shards)]
    batches = [
        list(shard[i : i + batch_size]) for shard in shards[done:] for i in range(0, len(shard), batch_size)
    ]
    loader = DataLoader(dataset, batch_sampler=batches, num_workers=num_workers, collate_fn=collate_fn)
    index, parts, captions, filled = done, {}, [], 0
    for batch in loader:
        encoded = _encode_batch(batch, codec, text_encoder, spec.max_captions)
        encoded["category"] = batch["category"].to(category_dtype)
        encoded["instance"] = batch["instance"].to(torch.uint8)
        encoded["image_id"] = batch["image_id"].long()
        for key, value in encoded.items():
            parts.setdefault(key, []).append(value)
        captions += [list(c) for c in batch["captions"]]
        filled += len(batch["captions"])
        bar.update(len(batch["captions"]))
        if filled == len(shards[index]):
            name = shard_name(split, index)
            write_shard(manifest.folder / name, {k: torch.cat(v) for k, v in parts.items()}, captions)
            manifest.add_shard(split, name, filled)
            index, parts, captions, filled = index + 1, {}, [], 0
    bar.close()


@torch.no_grad()
def _encode_batch(batch: dict, codec, text_encoder, max_captions: int) -> dict[str, torch.Tensor]:
    """Codec moments ``B 2C h w`` and caption features ``B K L D`` (fp16) with their counts."""
    moments = codec.encode_moments(batch["image"]).to(torch.float16).cpu()
    kept = [c[:max_captions] for c in batch["captions"]]
    flat = [c for caps in kept for c in caps]
    features = text_encoder.encode(flat).to(torch.float16).cpu()  # sum(n) L D
    text = torch.zeros(len(kept), max_captions, *features.shape[1:], dtype=torch.float16)
    start = 0
    for i, caps in enumerate(kept):
        text[i, : len(caps)] = features[start : start + len(caps)]
        start += len(caps)
    return {
        "moments": moments,
        "text": text,
        "num_captions": torch.tensor([len(c) for c in kept], dtype=torch.uint8),
    }
