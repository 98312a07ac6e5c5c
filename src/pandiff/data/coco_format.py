"""COCO panoptic format: RGB-encoded segment-id PNGs plus ``segments_info`` (id, category_id,
iscrowd, area, bbox), read into per-pixel category/instance arrays (the other way is
:meth:`PanopticMap.to_coco <pandiff.data.panoptic_map.PanopticMap.to_coco>`)."""

from __future__ import annotations

import numpy as np

from pandiff.data.categories import CategoryTable
from pandiff.errors import DataError


def rgb_to_id(rgb: np.ndarray) -> np.ndarray:
    """Segment ids from a COCO panoptic PNG: id = R + 256 G + 256^2 B. ``H W 3`` -> ``H W``."""
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] < 3:
        raise DataError(f"a COCO panoptic PNG must be RGB (H x W x 3), got shape {rgb.shape}")
    rgb = rgb[..., :3].astype(np.int64)
    return rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2]


def id_to_rgb(ids: np.ndarray) -> np.ndarray:
    """Inverse of :func:`rgb_to_id`: ``H W`` ids -> ``H W 3`` uint8."""
    ids = np.asarray(ids, dtype=np.int64)
    return np.stack([ids % 256, (ids // 256) % 256, ids // 65536], axis=-1).astype(np.uint8)


def coco_id(value, what: str) -> int:
    """A COCO id: a JSON integer (a string "5" or 5.0 is another file's format, not ours to guess)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise DataError(f"{what} must be an integer, got {value!r} ({type(value).__name__})")
    return int(value)


def check_segments_info(segments_info, table: CategoryTable, where: str) -> np.ndarray:
    """Validate a COCO panoptic ``segments_info`` list; return ``n 3`` int64 rows (segment id,
    COCO category id, iscrowd). The one validator of panoptic annotations, for every reader.

    Raises DataError (naming ``where``) for a non-list, an entry without an integer ``id`` or
    ``category_id``, an unknown category, an ``iscrowd`` other than 0/1, or a duplicated id (one
    segment would silently take the other's pixels).
    """
    if not isinstance(segments_info, list):
        raise DataError(f"{where}: segments_info must be a list, got {type(segments_info).__name__}")
    rows = []
    for seg in segments_info:
        if not isinstance(seg, dict):
            raise DataError(f"{where}: a segments_info entry must be an object, got {str(seg)[:100]}")
        seg_id = coco_id(seg.get("id"), f"{where}: segment id")
        cat = coco_id(seg.get("category_id"), f"{where}: category_id of segment {seg_id}")
        try:
            table.index_of_coco_id(cat)
        except DataError as exc:
            raise DataError(f"{where}: {exc}") from None
        crowd = seg.get("iscrowd", 0)
        if crowd not in (0, 1) or isinstance(crowd, float):
            raise DataError(f"{where}: iscrowd of segment {seg_id} must be 0 or 1, got {crowd!r}")
        rows.append((seg_id, cat, int(crowd)))
    segments = np.array(rows, dtype=np.int64).reshape(-1, 3)
    ids, counts = np.unique(segments[:, 0], return_counts=True)
    if (counts > 1).any():
        raise DataError(
            f"{where} lists a segment id twice ({int(ids[counts > 1][0])}): one would take the other's pixels"
        )
    return segments


def coco_to_segments(
    png_rgb: np.ndarray, segments_info: list[dict], table: CategoryTable
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Decode a COCO panoptic annotation.

    Returns ``category`` (contiguous indices), ``instance`` (the COCO segment id for things, to be
    relabelled canonically; 0 for stuff) and a ``crowd`` mask, all ``H W``.

    Raises DataError for a segment id in the PNG that ``segments_info`` does not list, or an
    unknown category id.
    """
    ids = rgb_to_id(png_rgb)
    category = np.zeros(ids.shape, dtype=np.int64)
    instance = np.zeros(ids.shape, dtype=np.int64)
    crowd = np.zeros(ids.shape, dtype=bool)
    check_segments_info(segments_info, table, "segments_info")
    info = {int(seg["id"]): seg for seg in segments_info}
    present = np.unique(ids)
    missing = [int(i) for i in present if i != 0 and int(i) not in info]
    if missing:
        raise DataError(
            f"the panoptic PNG holds segment id(s) {missing[:5]} that segments_info does not list; "
            "the PNG and the JSON do not belong together"
        )
    lut = table.isthing_lut()
    for seg_id in present:
        if seg_id == 0:
            continue
        seg = info[int(seg_id)]
        cat = table.index_of_coco_id(seg["category_id"])
        mask = ids == seg_id
        category[mask] = cat
        if lut[cat]:
            instance[mask] = int(seg_id)
            if seg.get("iscrowd", 0):
                crowd[mask] = True
    return category, instance, crowd
