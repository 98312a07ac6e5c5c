"""Training and scoring the judge network (``pandiff train-judge`` and the downstream proof).

The judge learns from (image, panoptic map) pairs in two phases, each AdamW with a one-cycle
learning rate and random horizontal flips:

1. RegionNet on whole images: cross-entropy on the region classes plus binary cross-entropy on the
   boundary logit (target: :func:`boundary_target`, positives up-weighted);
2. ThingNet on crops of the ground-truth thing instances and of groups of touching instances,
   each also with its thin parts opened away: per-pixel cross-entropy on thing categories.

Scoring runs the full judge (:meth:`Judge.segment`) on held-out pairs and reports semantic mIoU
and PQ (:mod:`pandiff.evaluation.panoptic_quality`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from pandiff.data.categories import CategoryTable
from pandiff.data.panoptic_map import CODE_BASE, PanopticMap
from pandiff.errors import ConfigError, DataError
from pandiff.evaluation.panoptic_quality import PanopticScorer, SemanticIoU
from pandiff.world.judge import (
    MIN_JUDGE_MIOU,
    Judge,
    JudgeConfig,
    crop_boxes,
    instance_crops,
    save_judge,
    segment_images,
)

# Thing-thing boundary pixels are ~1% of a world picture; without up-weighting the head learns "never".
BOUNDARY_POS_WEIGHT = torch.tensor(10.0)


@dataclass
class LabelledImages:
    """Aligned scenes: ``images`` N 3 S S uint8, ``maps`` N maps, ``captions`` N caption lists,
    ``image_ids`` N dataset image ids (empty for generated pairs)."""

    images: torch.Tensor
    maps: list[PanopticMap]
    captions: list[list[str]]
    table: CategoryTable
    image_ids: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.maps)


def load_split(
    root: str | Path, split: str, image_size: int, map_size: int | None = None, limit: int | None = None
) -> LabelledImages:
    """Read up to ``limit`` items of a COCO-layout split (built-in world or COCO) into memory.

    Images are ``image_size`` pixels, maps ``map_size`` (default ``image_size``).
    """
    from pandiff.data.coco import CocoPanoptic

    data = CocoPanoptic(root, split, image_size=image_size, map_size=map_size or image_size)
    n = len(data) if limit is None else min(limit, len(data))
    images, maps, captions, ids = [], [], [], []
    for i in range(n):
        item = data[i]
        images.append(((item["image"] + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8))
        maps.append(PanopticMap(item["category"].numpy(), item["instance"].numpy(), data.table))
        captions.append(item["captions"])
        ids.append(int(item["image_id"]))
    return LabelledImages(torch.stack(images), maps, captions, data.table, ids)


def boundary_target(category: torch.Tensor, instance: torch.Tensor, isthing: list[bool]) -> torch.Tensor:
    """``B H W`` maps -> ``B H W`` float: 1 on thing pixels with a 4-neighbour in *another thing*
    segment (thing-stuff edges need no boundary: the region classes already separate them)."""
    lut = torch.tensor(isthing)
    thing = lut[category]
    key = torch.where(
        thing, category * CODE_BASE + instance, torch.full_like(category, -1)
    ).float()  # as PanopticMap.codes()
    padded = F.pad(key[:, None], (1, 1, 1, 1), value=-1.0)[:, 0]
    h, w = key.shape[1:]
    touches = torch.zeros(key.shape, dtype=torch.bool)
    for dy, dx in ((0, 1), (2, 1), (1, 0), (1, 2)):
        neighbour = padded[:, dy : dy + h, dx : dx + w]
        touches |= (neighbour >= 0) & (neighbour != key)
    return (touches & thing).float()


def _thing_regions(data: LabelledImages) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """ThingNet's training regions: every thing instance, and every connected group of touching
    instances (4-connectivity), which is what the judge crops when a boundary is missed:
    ``(owner image N, mask N S S bool, category N S S)``; N may be 0. Off the region, ``category``
    holds the category of the nearest region pixel, so ThingNet learns every crop cell, also the
    cells that bilinear pasting mixes into the region's edge pixels."""
    from scipy import ndimage

    lut = np.array(data.table.isthing_lut())
    owners, masks, categories = [], [], []
    for b, m in enumerate(data.maps):
        regions = [(m.category == c) & (m.instance == i) for c, i in m.segments() if lut[c]]
        pieces, n = ndimage.label(lut[m.category])
        groups = [pieces == k for k in range(1, n + 1)]
        regions += [g for g in groups if sum(bool((g & r).any()) for r in regions) > 1]
        for mask in regions:
            _, (iy, ix) = ndimage.distance_transform_edt(~mask, return_indices=True)
            owners.append(b)
            masks.append(mask)
            categories.append(m.category[iy, ix])
    size = data.images.shape[-1]
    if not masks:
        empty = torch.zeros(0, size, size)
        return torch.zeros(0, dtype=torch.long), empty.bool(), empty.long()
    return torch.tensor(owners), torch.from_numpy(np.stack(masks)), torch.from_numpy(np.stack(categories))


def _opened(masks: torch.Tensor) -> torch.Tensor:
    """``N S S`` bool masks after a 3x3 morphological opening (erosion, then dilation)."""
    x = masks[:, None].float()
    eroded = -F.max_pool2d(-x, 3, stride=1, padding=1)
    return F.max_pool2d(eroded, 3, stride=1, padding=1)[:, 0] > 0.5


def _thing_targets(
    masks: torch.Tensor, categories: torch.Tensor, table: CategoryTable, size: int
) -> torch.Tensor:
    """ThingNet targets: ``N size size`` thing positions (0..T-1) on each region's crop grid."""
    position = torch.zeros(len(table) + 1, dtype=torch.long)
    position[table.thing_indices()] = torch.arange(len(table.thing_indices()))
    grid = F.affine_grid(crop_boxes(masks), (len(masks), 1, size, size), align_corners=False)
    sampled = F.grid_sample(
        categories[:, None].float(), grid, mode="nearest", padding_mode="border", align_corners=False
    )
    return position[sampled[:, 0].round().long()]


def _optimizer(params, lr: float, steps: int):
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=1e-4)
    return optimizer, torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=lr, total_steps=steps, pct_start=0.15
    )


def _flipped_batch(gen: torch.Generator, batch: int, inputs: torch.Tensor, *targets: torch.Tensor):
    """A random batch of ``inputs`` (``N C H W``) and the matching ``targets`` (``N H W``), each
    example mirrored left-right with probability 1/2 (the same flip for input and targets)."""
    idx = torch.randint(len(inputs), (min(batch, len(inputs)),), generator=gen)
    flip = torch.rand(len(idx), 1, 1, generator=gen) < 0.5
    x = torch.where(flip[:, None], inputs[idx].flip(-1), inputs[idx])
    return (x, *(torch.where(flip, t[idx].flip(-1), t[idx]) for t in targets))


def fit_judge(
    data: LabelledImages,
    steps: int = 1200,
    batch: int = 8,
    thing_steps: int = 600,
    thing_batch: int = 32,
    lr: float = 3e-3,
    width: int = 16,
    seed: int = 0,
    progress: bool = False,
) -> Judge:
    """Train a fresh :class:`Judge` on ``data`` (maps at the images' size): RegionNet for ``steps``
    steps of ``batch`` images, then ThingNet for ``thing_steps`` steps of ``thing_batch`` crops of
    the ground-truth thing regions."""
    if min(steps, batch, thing_steps, thing_batch) < 1:
        raise ConfigError("judge steps and batch sizes must be >= 1")
    if len(data) == 0:
        raise DataError("the judge needs at least one training image")
    size = data.images.shape[-1]
    if data.maps[0].shape != (size, size):
        raise DataError(f"the judge trains on maps of the images' size {size}, got {data.maps[0].shape}")
    torch.manual_seed(seed)
    judge = Judge(JudgeConfig(image_size=size, width=width, categories=data.table.to_coco()))
    gen = torch.Generator().manual_seed(seed)
    images = data.images.float() / 127.5 - 1.0  # N 3 S S
    category = torch.from_numpy(np.stack([m.category for m in data.maps]))  # N S S
    instance = torch.from_numpy(np.stack([m.instance for m in data.maps]))
    region = torch.from_numpy(judge.to_region)[category]  # N S S
    boundary = boundary_target(category, instance, data.table.isthing_lut())
    judge.train()
    optimizer, schedule = _optimizer(judge.region.parameters(), lr, steps)
    for _ in tqdm(range(steps), desc="judge regions", disable=not progress):
        x, y, b = _flipped_batch(gen, batch, images, region, boundary)
        logits = judge.region(x)  # B R+1 S S
        loss = F.cross_entropy(logits[:, :-1], y) + F.binary_cross_entropy_with_logits(
            logits[:, -1], b, pos_weight=BOUNDARY_POS_WEIGHT
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
    owners, masks, categories = _thing_regions(data)
    if len(masks) == 0:  # nothing to learn shapes from (e.g. maps of an untrained model)
        return judge.eval()
    # Predicted masks lose thin parts (star tips, cross arms) that RegionNet or the edges cut off;
    # the same regions with thin parts opened away teach ThingNet to read the shape from the image.
    opened = _opened(masks)
    keep = opened.flatten(1).any(dim=1)
    owners, masks = torch.cat([owners, owners[keep]]), torch.cat([masks, opened[keep]])
    categories = torch.cat([categories, categories[keep]])
    crop = judge.config.crop
    crops = torch.cat([instance_crops(images, owners[i : i + 256], masks[i : i + 256], crop)
                       for i in range(0, len(masks), 256)])  # fmt: skip
    targets = _thing_targets(masks, categories, data.table, crop // 2)  # N C/2 C/2
    optimizer, schedule = _optimizer(judge.things.parameters(), lr, thing_steps)
    for _ in tqdm(range(thing_steps), desc="judge things", disable=not progress):
        x, y = _flipped_batch(gen, thing_batch, crops, targets)
        loss = F.cross_entropy(judge.things(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
    return judge.eval()


def score_judge(judge: Judge, data: LabelledImages) -> dict:
    """The judge on held-out pairs: ``miou``, ``per_class_iou`` (by name), ``pq``, ``sq``, ``rq``,
    ``pq_things``, ``pq_stuff``, ``n``."""
    preds = segment_images(judge, data.images)
    iou = SemanticIoU(len(data.table))
    pq = PanopticScorer(data.table)
    for pred, target in zip(preds, data.maps):
        iou.update(pred.category, target.category)
        pq.update(pred, target)
    names = [c.name for c in data.table.categories]
    return {"miou": iou.compute(), "per_class_iou": dict(zip(names, iou.compute_per_class())), **pq.compute()}


def majority_baseline_miou(train: LabelledImages, val: LabelledImages) -> float:
    """mIoU on ``val`` of predicting the most frequent training category at every pixel."""
    counts = np.bincount(
        np.concatenate([m.category.ravel() for m in train.maps]), minlength=len(train.table) + 1
    )
    counts[0] = 0  # void is never the answer worth giving
    iou = SemanticIoU(len(val.table))
    for m in val.maps:
        iou.update(np.full(m.shape, int(counts.argmax())), m.category)
    return iou.compute()


def downstream_comparison(
    generated: LabelledImages, real: LabelledImages, val: LabelledImages, **fit_options
) -> dict[str, float]:
    """The downstream proof: one judge trained only on ``generated`` pairs, one only on the same
    number of ``real`` pairs (same steps and seed), both scored on the real ``val`` pairs.

    Returns ``generated_miou``, ``real_miou``, ``miou_ratio`` (generated / real), and the same
    for ``pq``.
    """
    if len(generated) != len(real):
        raise DataError(
            f"the comparison needs as many generated as real pairs, got {len(generated)} and {len(real)}"
        )
    out: dict[str, float] = {}
    for name, data in (("generated", generated), ("real", real)):
        scores = score_judge(fit_judge(data, **fit_options), val)
        out[f"{name}_miou"], out[f"{name}_pq"] = scores["miou"], scores["pq"]
    for key in ("miou", "pq"):
        out[f"{key}_ratio"] = (
            out[f"generated_{key}"] / out[f"real_{key}"] if out[f"real_{key}"] > 0 else float("nan")
        )
    return out


def train_judge(
    data_dir: str | Path,
    out: str | Path,
    image_size: int | None = None,
    limit: int | None = None,
    progress: bool = True,
    **fit_options,
) -> dict:
    """Train a judge on ``data_dir``'s train split (at most ``limit`` scenes), score it on val,
    save it to ``out``. ``fit_options`` go to :func:`fit_judge` (steps, batch, thing_steps, lr,
    width, seed).

    Returns the metrics written to ``metrics.json``: ``val_miou``, ``val_pq`` (and SQ/RQ, per-class
    IoU), ``majority_baseline_miou``, ``usable`` (val mIoU >= 0.95), the options, sizes and timing.
    """
    size = image_size or _world_size(data_dir)
    start = time.perf_counter()
    train = load_split(data_dir, "train", size, limit=limit)
    val = load_split(data_dir, "val", size)
    judge = fit_judge(train, progress=progress, **fit_options)
    scores = score_judge(judge, val)
    metrics = {
        "val_miou": scores["miou"],
        "val_pq": scores["pq"],
        "val_sq": scores["sq"],
        "val_rq": scores["rq"],
        "val_per_class_iou": scores["per_class_iou"],
        "majority_baseline_miou": majority_baseline_miou(train, val),
        "usable": scores["miou"] >= MIN_JUDGE_MIOU,
        "min_miou": MIN_JUDGE_MIOU,
        "data": str(data_dir),
        "train_images": len(train),
        "val_images": len(val),
        "image_size": size,
        "fit_options": fit_options,
        "seconds": round(time.perf_counter() - start, 1),
    }
    save_judge(judge, out, metrics)
    return metrics


def _world_size(data_dir: str | Path) -> int:
    """Picture side of a world, from its val panoptic JSON (every world image is square)."""
    import json

    path = Path(data_dir) / "annotations" / "panoptic_val2017.json"
    if not path.is_file():
        raise DataError(f"{path} does not exist; make a world with `pandiff make-world --out {data_dir}`")
    images = json.loads(path.read_text()).get("images") or []
    if not images:
        raise DataError(f"{path} lists no images")
    return int(images[0]["width"])
