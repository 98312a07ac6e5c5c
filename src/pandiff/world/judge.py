"""The built-in world's judge: a small segmentation network that reads a generated image's map.

The judge is two small plain-torch networks, because on a CPU the costly part of a U-Net is
full-resolution convolution, while what is slow to learn (a shape's identity, at any position and
size) is per object:

1. :class:`RegionNet`, a compact U-Net, labels every pixel with its *region* (void, "a thing",
   or one of the stuff categories) and a *boundary* bit (a thing pixel next to another thing).
2. Instances (:func:`split_instances`): within each connected thing region, the pixels away from
   edges form *cores*; each core is an instance and the region's other pixels join the nearest
   core (a region without a core is one instance). Edges are the predicted boundary pixels and the
   *colour edges* of the image (:func:`colour_edges`): touching world things always differ in
   colour or are split by the darker one-pixel outline of the front one, and a colour step is
   found more reliably than a learned one-pixel boundary.
3. :class:`ThingNet` names the things: each instance is cropped to a square around it, resampled
   to ``crop x crop`` (image and instance mask), and labelled per pixel with thing categories; the
   labels are pasted back onto the instance's pixels. Seeing every object position- and
   scale-normalised is what makes shapes quick to learn. An instance whose labels mostly agree
   (:data:`VOTE_SHARE`) takes the majority label; one that does not is taken as two touching
   shapes merged by a missed edge and keeps its per-pixel labels (it then becomes two segments);
   ThingNet learns such merged groups too.

:meth:`Judge.features` gives the vector that world FID/KID compare: RegionNet's penultimate
features (bottleneck and every decoder stage), each averaged over the picture, concatenated.

A judge folder holds ``config.json`` (the :class:`JudgeConfig` with the category table),
``judge.safetensors`` and ``metrics.json`` (validation mIoU and PQ written by ``pandiff
train-judge``). :func:`load_judge` refuses a judge whose validation mIoU is below
:data:`MIN_JUDGE_MIOU`, since its verdicts would not be trustworthy.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pandiff.checks import describe_names, nonfinite
from pandiff.data.categories import CategoryTable
from pandiff.data.panoptic_map import PanopticMap, canonicalize, fill_from_nearest
from pandiff.errors import ConfigError, DataError, WeightsError

MIN_JUDGE_MIOU = 0.95
# Boundary logit above which a pixel counts as an edge between things: below 0 (p > 0.27) because a
# gap in an edge merges two instances while a spurious edge pixel only trims a core.
BOUNDARY_THRESHOLD = -1.0
# RGB distance (0..255 per channel) between 4-neighbours that counts as a colour edge. World things
# are flat-coloured with a 0.55x darker outline: the weakest such step (black's outline) is ~22,
# pixel noise is ~5.
COLOUR_EDGE = 18.0
# An instance whose ThingNet labels agree on at least this share of its pixels is one shape and
# takes that label everywhere; below it, it is taken as a merged group and keeps per-pixel labels.
VOTE_SHARE = 0.6
CONFIG_FILE, WEIGHTS_FILE, METRICS_FILE = "config.json", "judge.safetensors", "metrics.json"


@dataclass
class JudgeConfig:
    """Sizes of a judge: ``image_size`` S of its ``3 S S`` inputs, ``width`` w of RegionNet's first
    stage, ``crop`` the side of ThingNet's region crops, ``min_area`` the smallest region (pixels)
    the judge reports (smaller specks join their surroundings; world things keep >= 12 visible
    pixels at 64 px), ``categories`` the COCO category entries of its table."""

    image_size: int = 64
    width: int = 16
    crop: int = 32
    min_area: int = 10
    categories: list[dict] = field(default_factory=list)

    @property
    def table(self) -> CategoryTable:
        return CategoryTable.from_coco(self.categories)


def _conv(c_in: int, c_out: int) -> nn.Sequential:
    """3x3 conv + BatchNorm + ReLU."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)
    )


def _stage(c_in: int, c_out: int) -> nn.Sequential:
    """Two :func:`_conv` at one resolution."""
    return nn.Sequential(_conv(c_in, c_out), _conv(c_out, c_out))


class RegionNet(nn.Module):
    """U-Net: ``B 3 S S`` images in ``[-1, 1]`` -> ``B (R+1) S S`` logits, R region classes
    (void, thing, each stuff) then the boundary. Two-conv stages at S (stem and output), S/2, S/4
    and S/8 (S divisible by 8); widths w, 2w, 4w, 4w keep full resolution cheap."""

    def __init__(self, num_regions: int, width: int) -> None:
        super().__init__()
        w = width
        self.stem = _stage(3, w)  # S
        self.down = nn.ModuleList(
            [_stage(w, 2 * w), _stage(2 * w, 4 * w), _stage(4 * w, 4 * w)]
        )  # S/2 S/4 S/8
        self.up = nn.ModuleList([_stage(8 * w, 2 * w), _stage(4 * w, w)])  # S/4 S/2
        self.out = _stage(2 * w, w)  # S
        self.head = nn.Conv2d(w, num_regions + 1, 1)
        self.num_features = 8 * w

    def run(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(logits B R+1 S S, pooled features B 8w)``."""
        skips = [self.stem(images)]  # B w S S
        for stage in self.down:
            skips.append(stage(F.max_pool2d(skips[-1], 2)))
        x = skips.pop()  # B 4w S/8 S/8
        pooled = [x.mean(dim=(2, 3))]
        for stage in [*self.up, self.out]:
            x = stage(torch.cat([F.interpolate(x, scale_factor=2.0, mode="nearest"), skips.pop()], dim=1))
            pooled.append(x.mean(dim=(2, 3)))
        return self.head(x), torch.cat(pooled, dim=1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.run(images)[0]


class ThingNet(nn.Module):
    """Small encoder-decoder on region crops: ``N 4 C C`` (image RGB in ``[-1, 1]``, region mask in
    {0, 1}) -> ``N T C/2 C/2`` thing-category logits per crop pixel. It sees each thing region
    scale- and position-normalised, which is what makes shapes quick to learn."""

    def __init__(self, num_things: int, width: int = 16) -> None:
        super().__init__()
        w = width
        self.enc = nn.ModuleList([_conv(4, w), _conv(w, 2 * w), _stage(2 * w, 4 * w), _conv(4 * w, 4 * w)])
        self.dec = nn.ModuleList([_conv(8 * w, 2 * w), _conv(4 * w, w)])  # C/8 C/4 -> C/4 C/2
        self.head = nn.Conv2d(w, num_things, 1)

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        skips = []
        x = crops
        for i, stage in enumerate(self.enc):
            x = stage(x if i == 0 else F.max_pool2d(x, 2))
            skips.append(x)  # C, C/2, C/4, C/8
        x = skips.pop()
        for stage in self.dec:
            x = stage(torch.cat([F.interpolate(x, scale_factor=2.0, mode="nearest"), skips.pop()], dim=1))
        return self.head(x)  # N T C/2 C/2


def region_lut(table: CategoryTable) -> tuple[np.ndarray, np.ndarray]:
    """``(category -> region, region -> category)`` index arrays: region 0 void, 1 any thing,
    ``2 + j`` the j-th stuff category (region 1 maps back to 0; ThingNet names the things)."""
    stuffs = table.stuff_indices()
    to_region = np.array([0] + [1 if t else 0 for t in table.isthing_lut()[1:]], dtype=np.int64)
    to_region[stuffs] = 2 + np.arange(len(stuffs))
    return to_region, np.array([0, 0, *stuffs], dtype=np.int64)


def crop_boxes(masks: torch.Tensor) -> torch.Tensor:
    """``N S S`` bool masks -> ``N 2 3`` affine maps from crop coordinates to image coordinates
    (both in ``[-1, 1]``, ``align_corners=False``): the mask's bounding square plus one pixel."""
    n, s = masks.shape[0], masks.shape[-1]
    rows, cols = masks.any(dim=2), masks.any(dim=1)  # N S
    idx = torch.arange(s, device=masks.device)
    big = torch.full_like(idx, s)
    y0, y1 = torch.where(rows, idx, big).amin(1), torch.where(rows, idx, -1).amax(1) + 1
    x0, x1 = torch.where(cols, idx, big).amin(1), torch.where(cols, idx, -1).amax(1) + 1
    theta = torch.zeros(n, 2, 3, device=masks.device)
    theta[:, 0, 0] = theta[:, 1, 1] = (torch.maximum(y1 - y0, x1 - x0).float() / 2 + 1) * (2 / s)
    theta[:, 0, 2] = (x0 + x1).float() / s - 1  # box centre
    theta[:, 1, 2] = (y0 + y1).float() / s - 1
    return theta


def instance_crops(
    images: torch.Tensor, owners: torch.Tensor, masks: torch.Tensor, crop: int
) -> torch.Tensor:
    """Square crops around masks, resampled to ``crop x crop`` (bilinear, zeros outside).

    Args:
        images: ``B 3 S S`` in ``[-1, 1]``.
        owners: ``N`` long, the image each mask lies in.
        masks: ``N S S`` bool masks.
    Returns:
        ``N 4 crop crop``: the image crop, then the mask crop.
    """
    if len(masks) == 0:
        return images.new_zeros(0, 4, crop, crop)
    grid = F.affine_grid(crop_boxes(masks), (len(masks), 4, crop, crop), align_corners=False)
    source = torch.cat([images[owners], masks[:, None].float()], dim=1)  # N 4 S S
    return F.grid_sample(source, grid.to(source.dtype), mode="bilinear", align_corners=False)


def paste_back(values: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`instance_crops`: ``N T c c`` values on each mask's crop grid -> ``N T S S``
    on the image grid (bilinear; zeros outside the crop)."""
    theta = crop_boxes(masks)
    inverse = torch.zeros_like(theta)
    inverse[:, 0, 0] = inverse[:, 1, 1] = 1 / theta[:, 0, 0]
    inverse[:, :, 2] = -theta[:, :, 2] / theta[:, 0, 0, None]
    s = masks.shape[-1]
    grid = F.affine_grid(inverse, (len(masks), values.shape[1], s, s), align_corners=False)
    return F.grid_sample(values, grid.to(values.dtype), mode="bilinear", align_corners=False)


def absorb_specks(region: np.ndarray, min_area: int) -> np.ndarray:
    """``H W`` region labels with every connected piece under ``min_area`` pixels relabelled by
    its nearest surviving pixel (prediction noise at edges and textures, not objects)."""
    from scipy import ndimage

    keep = np.ones(region.shape, dtype=bool)
    for r in np.unique(region):
        pieces, n = ndimage.label(region == r)
        sizes = np.bincount(pieces.ravel(), minlength=n + 1)
        small = np.flatnonzero(sizes < min_area)
        keep &= ~np.isin(pieces, small[small > 0])
    return fill_from_nearest(region, ~keep, keep)


def colour_edges(pixels: np.ndarray, threshold: float = COLOUR_EDGE) -> np.ndarray:
    """``3 H W`` RGB (0..255) -> ``H W`` bool: pixels with a 4-neighbour more than ``threshold`` away
    in colour. Between touching world things there is always one: another colour, or the darker
    outline of the shape in front."""
    pixels = pixels.astype(np.float64)
    dx = np.sqrt(((pixels[:, :, 1:] - pixels[:, :, :-1]) ** 2).sum(axis=0)) > threshold  # H W-1
    dy = np.sqrt(((pixels[:, 1:] - pixels[:, :-1]) ** 2).sum(axis=0)) > threshold  # H-1 W
    edges = np.zeros(pixels.shape[1:], dtype=bool)
    edges[:, 1:] |= dx
    edges[:, :-1] |= dx
    edges[1:] |= dy
    edges[:-1] |= dy
    return edges


def split_instances(things: np.ndarray, boundary: np.ndarray, min_core: int = 3) -> tuple[np.ndarray, int]:
    """Instance labels ``1..n`` (0 elsewhere) for thing pixels ``things`` (``H W`` bool) given
    predicted ``boundary`` pixels; see the module docstring. Cores under ``min_core`` px are noise."""
    from scipy import ndimage

    labels = np.zeros(things.shape, dtype=np.int64)
    regions, n_regions = ndimage.label(things)
    n = 0
    for r in range(1, n_regions + 1):
        region = regions == r
        cores, n_cores = ndimage.label(region & ~boundary)
        sizes = np.bincount(cores.ravel(), minlength=n_cores + 1)
        keep = [c for c in range(1, n_cores + 1) if sizes[c] >= min_core]
        if len(keep) <= 1:
            n += 1
            labels[region] = n
            continue
        seeds = np.zeros(things.shape, dtype=np.int64)
        for c in keep:
            n += 1
            seeds[cores == c] = n
        _, (iy, ix) = ndimage.distance_transform_edt(seeds == 0, return_indices=True)  # nearest core pixel
        labels[region] = seeds[iy, ix][region]
    return labels, n


class Judge(nn.Module):
    """RegionNet + ThingNet with the table they were trained for; ``segment`` reads images."""

    def __init__(self, config: JudgeConfig) -> None:
        super().__init__()
        if config.image_size % 8:
            raise ConfigError(f"the judge's image size must be divisible by 8, got {config.image_size}")
        if not config.categories:
            raise ConfigError("a judge needs its category table (JudgeConfig.categories)")
        self.config = config
        self.table = config.table
        self.to_region, self.to_category = region_lut(self.table)
        self.region = RegionNet(len(self.table.stuff_indices()) + 2, config.width)
        self.things = ThingNet(max(1, len(self.table.thing_indices())))
        self.num_features = self.region.num_features

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """``B 3 S S`` in ``[-1, 1]`` -> ``B num_features`` pooled RegionNet features."""
        return self.region.run(images)[1]

    @torch.no_grad()
    def segment(self, images: torch.Tensor) -> list[PanopticMap]:
        """``B 3 S S`` in ``[-1, 1]`` -> the judge's ``S x S`` panoptic maps."""
        self.eval()
        images = images.float()
        logits = self.region(images).cpu()
        regions = logits[:, :-1].argmax(dim=1).numpy()  # B S S
        boundary = (logits[:, -1] > BOUNDARY_THRESHOLD).numpy()
        regions = np.stack([absorb_specks(r, self.config.min_area) for r in regions])
        pixels = ((images.cpu() + 1) * 127.5).numpy()  # B 3 S S in 0..255
        edges = boundary | np.stack([colour_edges(p) for p in pixels])
        labels = np.stack([split_instances(r == 1, e)[0] for r, e in zip(regions, edges)])
        names = self.name_things(images, labels)
        maps = []
        for region, label, things in zip(regions, labels, names):
            category = self.to_category[region]
            category[label > 0] = things[label > 0]
            maps.append(canonicalize(category, label, self.table)[0])
        return maps

    def name_things(self, images: torch.Tensor, labels: np.ndarray) -> np.ndarray:
        """``B S S`` category index of every thing pixel, from ThingNet on each instance of
        ``labels`` (``B S S``, 1..n per image, 0 off things); 0 off things."""
        owners, masks = [], []
        for b, label in enumerate(labels):
            owners += [b] * int(label.max())
            masks += [label == k for k in range(1, int(label.max()) + 1)]
        out = np.zeros(labels.shape, dtype=np.int64)
        if not masks:
            return out
        mask_t = torch.from_numpy(np.stack(masks)).to(images.device)
        crops = instance_crops(images, torch.tensor(owners, device=images.device), mask_t, self.config.crop)
        votes = paste_back(self.things(crops), mask_t).argmax(dim=1).cpu().numpy()  # N S S
        thing_ids = np.array(self.table.thing_indices(), dtype=np.int64)
        for owner, mask, vote in zip(owners, masks, votes):
            names = vote[mask]
            counts = np.bincount(names)
            out[owner][mask] = thing_ids[
                counts.argmax() if counts.max() >= VOTE_SHARE * len(names) else names
            ]
        return out


class JudgeFeatures(nn.Module):
    """A judge as a FID/KID feature extractor over ``N 3 S S`` uint8 images (see ``fid.py``)."""

    def __init__(self, judge: Judge) -> None:
        super().__init__()
        self.judge = judge.eval()
        self.num_features = judge.num_features

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.judge.features(images.float() / 127.5 - 1.0)


def segment_images(judge: Judge, images: torch.Tensor, batch: int = 64) -> list[PanopticMap]:
    """``N 3 S S`` uint8 images -> the judge's panoptic maps (``S x S``)."""
    s = judge.config.image_size
    if images.dtype != torch.uint8 or images.ndim != 4 or tuple(images.shape[1:]) != (3, s, s):
        raise DataError(f"the judge reads N 3 {s} {s} uint8 images, got {tuple(images.shape)} {images.dtype}")
    maps = []
    for start in range(0, len(images), batch):
        maps += judge.segment(images[start : start + batch].float() / 127.5 - 1.0)
    return maps


def save_judge(judge: Judge, folder: str | Path, metrics: dict) -> None:
    """Write ``config.json``, ``judge.safetensors`` and ``metrics.json`` into ``folder`` atomically."""
    from safetensors.torch import save_file

    from pandiff.io import atomic_dir, write_json

    bad = nonfinite(judge.named_parameters())
    if bad:  # a diverged judge would score every sample as nothing
        raise WeightsError(f"refusing to save a judge with NaN or infinite weights ({describe_names(bad)})")
    with atomic_dir(folder) as tmp:
        write_json(tmp / CONFIG_FILE, asdict(judge.config), indent=1)
        save_file({k: v.contiguous() for k, v in judge.state_dict().items()}, str(tmp / WEIGHTS_FILE))
        write_json(tmp / METRICS_FILE, metrics, indent=1)


def load_judge(folder: str | Path, min_miou: float = MIN_JUDGE_MIOU) -> tuple[Judge, dict]:
    """Load a judge folder and its metrics; refuse one whose validation mIoU is below ``min_miou``.

    Raises:
        WeightsError: the folder or a file is missing or broken, or the judge is too weak.
    """
    from safetensors.torch import load_file

    folder = Path(folder)
    paths = [folder / name for name in (CONFIG_FILE, WEIGHTS_FILE, METRICS_FILE)]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise WeightsError(
            f"{folder} is not a judge folder ({', '.join(missing)} missing); train one with "
            "`pandiff train-judge --data WORLD --out DIR`"
        )
    try:
        config = JudgeConfig(**json.loads(paths[0].read_text()))
        metrics = json.loads(paths[2].read_text())
        judge = Judge(config)
        state = load_file(str(paths[1]))
        judge.load_state_dict(state)
    except (json.JSONDecodeError, TypeError, RuntimeError, OSError, ConfigError) as exc:
        raise WeightsError(f"cannot load the judge in {folder} ({exc}); train it again") from None
    bad = nonfinite(state.items())
    if bad:
        raise WeightsError(
            f"the judge in {folder} holds NaN or infinite weights ({describe_names(bad)}); train it again"
        )
    miou = float(metrics.get("val_miou", float("nan")))
    if not miou >= min_miou:
        raise WeightsError(
            f"the judge in {folder} reached validation mIoU {miou:.4f} < {min_miou}; its verdicts would not "
            "be trustworthy. Train it longer (pandiff train-judge --steps ...) or on a larger world; "
            "for a smoke test, pandiff evaluate --allow-weak-judge uses it anyway"
        )
    return judge.eval(), metrics
