"""COCO 2017 panoptic + captions as a torch dataset of (image, panoptic map, captions).

Expected layout under ``root`` (what the official zips unpack to, with the panoptic PNG zip
unpacked next to the image folders)::

    annotations/panoptic_{split}2017.json   panoptic_{split}2017/*.png
    annotations/captions_{split}2017.json   {split}2017/*.jpg

Each item is built the same way for every image: the picture and its map are centre-cropped to
the largest square (:func:`~pandiff.data.panoptic_map.center_crop_box`); the image is resized
to ``image_size`` (bicubic, antialiased) and the map to ``map_size`` (mode pooling, see
:func:`~pandiff.data.panoptic_map.resize_labels`); the map's instances are then relabelled
canonically once more, because cropping and pooling move or remove first pixels and so change
the raster order the model is taught.

What happens to bad data. Everything the JSON files can tell is checked at construction (cheap,
no PNG decoded); PNG and image problems surface in ``__getitem__`` and name the file.

* Skipped and counted in :attr:`CocoPanoptic.summary` (``strict=True`` raises instead): an image
  without captions, an image without a panoptic annotation. Leaving them out changes nothing
  about the images that stay.
* Counted, not an error: thing instances beyond ``max_instances`` in one category, merged into
  that category's crowd region (instance 0) as documented in :mod:`pandiff.data.panoptic_map`.
  The count comes from ``segments_info`` at full resolution.
* Always an error (:class:`~pandiff.errors.DataError`), because data would silently go wrong or
  the files do not belong together: a missing root, folder or annotation file; corrupt JSON; a
  JSON entry without its required keys; an annotation for an image the ``images`` list lacks; a
  category id outside the panoptic ``categories`` table; duplicate segment ids in one image;
  captions for image ids the panoptic file does not hold (caption and panoptic files from
  different splits or subsets); no image left to use; a corrupt or missing PNG or image file;
  a PNG or image whose size differs from the JSON's; a PNG segment id that ``segments_info``
  does not list.
"""

from __future__ import annotations

import json
import logging
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from pandiff.data.categories import CategoryTable
from pandiff.data.coco_format import check_segments_info, coco_id
from pandiff.data.panoptic_map import PanopticMap, canonicalize, center_crop_box
from pandiff.errors import ConfigError, DataError

logger = logging.getLogger(__name__)

SPLITS = ("train", "val")
_DOWNLOAD_HINT = (
    "download annotations_trainval2017.zip, panoptic_annotations_trainval2017.zip and "
    "{split}2017.zip from https://cocodataset.org/#download and unzip them into {root} "
    "(unzip annotations/panoptic_{split}2017.zip there too)"
)


@dataclass(frozen=True)
class _Record:
    """What one kept image needs at ``__getitem__``. A small array instead of the JSON's list of
    dicts keeps 118k train records compact, so forked DataLoader workers share more pages."""

    image_id: int
    image_file: str
    png_file: str
    height: int
    width: int
    segments: np.ndarray  # n 3: segment id, COCO category id, iscrowd
    captions: tuple[str, ...]


class CocoPanoptic(Dataset):
    """COCO 2017 panoptic maps with images and all their captions (see the module docstring).

    Args:
        root: folder holding ``annotations/``, ``panoptic_{split}2017/`` and ``{split}2017/``.
        layout: optional overrides of the four paths (keys ``png_dir``, ``image_dir``,
            ``panoptic_json``, ``captions_json``), relative to ``root``.
        split: ``"train"`` or ``"val"``.
        image_size: side S of the square image tensor.
        map_size: side M of the square panoptic map.
        max_instances: instance budget per thing category (``2**instance_bits - 1``).
        strict: raise instead of skipping images without captions or without a panoptic annotation.
        load_images: when False, items hold no ``image`` (maps and captions only; the image folder
            need not exist), which is all that map evaluation needs.

    Attributes:
        table: the 133-category table of the panoptic JSON (contiguous index 1..K, 0 = void).
        summary: one line, ``"kept N images; skipped A without captions, B without panoptic
            annotation; merged C instances beyond the 7-instance budget into crowd regions"``.

    Items are dicts: ``image`` float ``3 S S`` in [-1, 1] (only with ``load_images``), ``category``
    and ``instance`` long ``M M``, ``captions`` list[str], ``image_id`` int.
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        image_size: int = 256,
        map_size: int = 64,
        max_instances: int = 7,
        strict: bool = False,
        load_images: bool = True,
        layout: dict[str, str | Path] | None = None,
    ) -> None:
        if split not in SPLITS:
            raise ConfigError(f"COCO split must be one of {SPLITS}, got {split!r}")
        for name, value in (("image_size", image_size), ("map_size", map_size)):
            if int(value) < 1:
                raise ConfigError(f"{name} must be a positive number of pixels, got {value}")
        if max_instances < 0:
            raise ConfigError(f"max_instances must be >= 0, got {max_instances}")
        self.root = Path(root)
        self.split = split
        self.image_size = int(image_size)
        self.map_size = int(map_size)
        self.max_instances = int(max_instances)
        self.load_images = load_images
        paths = {
            "png_dir": self.root / f"panoptic_{split}2017",
            "image_dir": self.root / f"{split}2017",
            "panoptic_json": self.root / "annotations" / f"panoptic_{split}2017.json",
            "captions_json": self.root / "annotations" / f"captions_{split}2017.json",
        }
        unknown = set(layout or {}) - set(paths)
        if unknown:
            raise ConfigError(f"unknown layout keys {sorted(unknown)}; use {sorted(paths)}")
        paths.update({k: self.root / v for k, v in (layout or {}).items()})
        self.png_dir, self.image_dir = paths["png_dir"], paths["image_dir"]
        self.panoptic_json, self.captions_json = paths["panoptic_json"], paths["captions_json"]
        self._check_layout()

        panoptic = _read_json(self.panoptic_json, self._hint())
        captions = _read_json(self.captions_json, self._hint())
        try:
            self.table = CategoryTable.from_coco(_field(panoptic, "categories", self.panoptic_json))
        except DataError as exc:
            raise DataError(f"{self.panoptic_json}: {exc}") from None
        self._records, counts = self._index(panoptic, captions, strict)
        self.summary = (
            f"kept {len(self._records)} images; skipped {counts['no_captions']} without captions, "
            f"{counts['no_annotation']} without panoptic annotation; merged {counts['merged']} instances "
            f"beyond the {self.max_instances}-instance budget into crowd regions"
        )
        logger.info("COCO panoptic %s (%s): %s", split, self.root, self.summary)

    @classmethod
    def from_export(cls, folder: str | Path, **kwargs: Any) -> CocoPanoptic:
        """Read a folder written by ``pandiff generate`` (see :mod:`pandiff.coco_export`)."""
        layout = {
            "png_dir": "panoptic",
            "image_dir": ".",
            "panoptic_json": "panoptic.json",
            "captions_json": "captions.json",
        }
        return cls(folder, split="val", layout=layout, **kwargs)

    def _hint(self) -> str:
        return _DOWNLOAD_HINT.format(split=self.split, root=self.root)

    def _check_layout(self) -> None:
        if not self.root.is_dir():
            raise DataError(f"COCO root {self.root} is not a folder; {self._hint()}")
        if not self.png_dir.is_dir():
            nested = self.root / "annotations" / self.png_dir.name
            fix = f"move {nested} to {self.png_dir}" if nested.is_dir() else self._hint()
            raise DataError(f"panoptic PNG folder {self.png_dir} does not exist; {fix}")
        if self.load_images and not self.image_dir.is_dir():
            raise DataError(
                f"image folder {self.image_dir} does not exist; {self._hint()} "
                "(or pass load_images=False to read maps and captions only)"
            )

    def _index(self, panoptic: dict, captions: dict, strict: bool) -> tuple[list[_Record], dict[str, int]]:
        """Cross-check the two JSON files and keep the images that have everything."""
        images: dict[int, dict] = {}
        for entry in _field(panoptic, "images", self.panoptic_json):
            _require(entry, ("id", "file_name", "height", "width"), "panoptic JSON 'images'")
            image_id = coco_id(entry["id"], "panoptic JSON 'images': id")
            if image_id in images:
                raise DataError(f"panoptic JSON lists image id {image_id} twice")
            images[image_id] = entry

        annotations: dict[int, dict] = {}
        for ann in _field(panoptic, "annotations", self.panoptic_json):
            _require(ann, ("image_id", "file_name", "segments_info"), "panoptic JSON 'annotations'")
            image_id = coco_id(ann["image_id"], "panoptic JSON 'annotations': image_id")
            if image_id not in images:
                raise DataError(
                    f"panoptic JSON has an annotation for image id {image_id} that its 'images' list "
                    "lacks; the file is corrupt or was cut down inconsistently"
                )
            if image_id in annotations:
                raise DataError(f"panoptic JSON has two annotations for image id {image_id}")
            annotations[image_id] = ann

        texts: dict[int, list[str]] = {}
        for cap in _field(captions, "annotations", self.captions_json):
            _require(cap, ("image_id", "caption"), "caption JSON 'annotations'")
            text = str(cap["caption"]).strip()
            if text:
                texts.setdefault(int(cap["image_id"]), []).append(text)
        foreign = sorted(set(texts) - set(images))
        if foreign:
            raise DataError(
                f"captions_{self.split}2017.json has captions for {len(foreign)} image id(s) that "
                f"panoptic_{self.split}2017.json does not hold (e.g. {foreign[:5]}); the two files must "
                "come from the same COCO split (and be cut down together when you make a subset)"
            )

        records: list[_Record] = []
        counts = {"no_captions": 0, "no_annotation": 0, "merged": 0}
        for image_id, entry in images.items():
            ann = annotations.get(image_id)
            if ann is None or not texts.get(image_id):
                reason = "panoptic annotation" if ann is None else "captions"
                if strict:
                    raise DataError(
                        f"image id {image_id} ({entry['file_name']}) has no {reason}; "
                        "pass strict=False to skip such images"
                    )
                counts["no_annotation" if ann is None else "no_captions"] += 1
                continue
            segments = self._segments(image_id, ann["segments_info"])
            counts["merged"] += self._overflow(segments)
            records.append(
                _Record(
                    image_id=image_id,
                    image_file=str(entry["file_name"]),
                    png_file=str(ann["file_name"]),
                    height=int(entry["height"]),
                    width=int(entry["width"]),
                    segments=segments,
                    captions=tuple(texts[image_id]),
                )
            )
        if not records:
            raise DataError(
                f"no image of {self.root} ({self.split}) has both a panoptic annotation and captions "
                f"({counts['no_captions']} without captions, {counts['no_annotation']} without panoptic "
                "annotation); check that the annotation files belong together"
            )
        return records, counts

    def _segments(self, image_id: int, segments_info: list[dict]) -> np.ndarray:
        """``segments_info`` -> ``n 3`` int64 (segment id, COCO category id, iscrowd), validated."""
        return check_segments_info(segments_info, self.table, f"segments_info of image id {image_id}")

    def _overflow(self, segments: np.ndarray) -> int:
        """Thing instances beyond the budget, counted per category as ``PanopticMap.from_coco`` merges them."""
        lut = self.table.isthing_lut()
        things = [
            coco_id
            for _, coco_id, crowd in segments
            if not crowd and lut[self.table.index_of_coco_id(coco_id)]
        ]
        _, per_category = np.unique(np.array(things, dtype=np.int64), return_counts=True)
        return int(np.maximum(per_category - self.max_instances, 0).sum())

    # -- items -------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._records)

    def __getitem__(self, index: int) -> dict[str, Any]:
        record = self._records[index]
        pmap = self.load_map(index)
        item: dict[str, Any] = {
            "category": torch.from_numpy(pmap.category),  # M M
            "instance": torch.from_numpy(pmap.instance),  # M M
            "captions": list(record.captions),
            "image_id": record.image_id,
        }
        if self.load_images:
            item["image"] = self._load_image(record)  # 3 S S
        return item

    def load_map(self, index: int) -> PanopticMap:
        """The canonically labelled ``map_size x map_size`` map of item ``index``."""
        record = self._records[index]
        path = self.png_dir / record.png_file
        png = _open_rgb(path, record, "panoptic PNG")
        segments_info = [
            {"id": int(i), "category_id": int(c), "iscrowd": int(k)} for i, c, k in record.segments
        ]
        try:
            full, _ = PanopticMap.from_coco(png, segments_info, self.table, self.max_instances)
        except DataError as exc:
            raise DataError(f"{path} (image id {record.image_id}): {exc}") from None
        small = full.center_crop().resize(self.map_size)
        return canonicalize(small.category, small.instance, small.table, self.max_instances)[0]

    def _load_image(self, record: _Record) -> torch.Tensor:
        """Centre-cropped, bicubic-resized image as ``3 S S`` float in [-1, 1]."""
        rgb = _open_rgb(self.image_dir / record.image_file, record, "image")
        top, left, side = center_crop_box(record.height, record.width)
        picture = Image.fromarray(rgb).crop((left, top, left + side, top + side))
        # Pillow's bicubic resize widens its kernel when shrinking, i.e. it antialiases.
        picture = picture.resize((self.image_size, self.image_size), Image.Resampling.BICUBIC)
        pixels = torch.from_numpy(np.asarray(picture).copy())  # S S 3 uint8
        return pixels.permute(2, 0, 1).float() / 127.5 - 1.0


def collate_fn(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Batch :class:`CocoPanoptic` items: tensors stacked (``image`` B 3 S S when present,
    ``category``/``instance`` B M M, ``image_id`` B), ``captions`` a list of B caption lists."""
    batch: dict[str, Any] = {
        "category": torch.stack([it["category"] for it in items]),
        "instance": torch.stack([it["instance"] for it in items]),
        "captions": [list(it["captions"]) for it in items],
        "image_id": torch.tensor([it["image_id"] for it in items], dtype=torch.long),
    }
    if "image" in items[0]:
        batch["image"] = torch.stack([it["image"] for it in items])
    return batch


def _read_json(path: Path, hint: str) -> dict:
    if not path.is_file():
        raise DataError(f"annotation file {path} does not exist; {hint}")
    try:
        with open(path, "rb") as fh:
            data = json.load(fh)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:  # recursion: deep nesting
        raise DataError(f"{path} is not valid JSON ({exc}); download and unzip it again") from None
    if not isinstance(data, dict):
        raise DataError(f"{path} must hold a JSON object with COCO's keys, got {type(data).__name__}")
    return data


def _field(data: dict, key: str, path: Path) -> list:
    value = data.get(key)
    if not isinstance(value, list):
        raise DataError(f"{path} has no '{key}' list; is it a COCO 2017 annotation file?")
    return value


def _require(entry: Any, keys: tuple[str, ...], where: str) -> None:
    if not isinstance(entry, dict) or any(k not in entry for k in keys):
        raise DataError(f"an entry of {where} lacks one of {list(keys)}: {str(entry)[:200]}")


def _open_rgb(path: Path, record: _Record, what: str) -> np.ndarray:
    """Decode an image file to ``H W 3`` uint8, checking its size against the JSON's."""
    if not path.is_file():
        raise DataError(
            f"{what} {path} for image id {record.image_id} does not exist; unzip it into {path.parent}"
        )
    try:
        with Image.open(path) as img:
            rgb = np.asarray(img.convert("RGB"))
    except (OSError, ValueError, SyntaxError, zlib.error, Image.DecompressionBombError) as exc:
        raise DataError(
            f"{what} {path} (image id {record.image_id}) cannot be decoded ({exc}); replace it"
        ) from None
    if rgb.shape[:2] != (record.height, record.width):
        raise DataError(
            f"{what} {path} is {rgb.shape[1]}x{rgb.shape[0]} but the panoptic JSON says "
            f"{record.width}x{record.height} for image id {record.image_id}; the files do not belong together"
        )
    return rgb
