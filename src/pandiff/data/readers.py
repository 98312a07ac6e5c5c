"""Reading user-given files: an RGB image, and a COCO panoptic PNG with its ``segments_info``
(``pandiff generate --map``, ``pandiff segment`` and the demo's uploads)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, UnidentifiedImageError

from pandiff.data.categories import CategoryTable
from pandiff.data.coco_format import check_segments_info
from pandiff.data.panoptic_map import PanopticMap
from pandiff.errors import DataError


def read_panoptic_png(png: str | Path, json_path: str | Path | None, table: CategoryTable) -> PanopticMap:
    """Read a COCO panoptic PNG and its ``segments_info`` into a map over ``table``."""
    png = Path(png)
    if not png.is_file():
        raise DataError(
            f"map file {png} {'is a folder' if png.is_dir() else 'does not exist'}; pass a PNG file"
        )
    candidates = (
        [Path(json_path)]
        if json_path
        else [png.parent / "panoptic.json", png.parent.parent / "panoptic.json"]
    )
    found = next((c for c in candidates if c.is_file()), None)
    if found is None:
        raise DataError(
            f"no segments_info for {png}: pass --map-json with the COCO panoptic JSON "
            f"(looked for {', '.join(str(c) for c in candidates)})"
        )
    try:
        data = json.loads(found.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:  # recursion: deep nesting
        raise DataError(f"{found} is not valid JSON: {exc}") from None
    annotations = data.get("annotations") if isinstance(data, dict) else None
    if not isinstance(annotations, list) or not all(isinstance(a, dict) for a in annotations):
        raise DataError(
            f"{found} is not a COCO panoptic JSON: it needs an object whose 'annotations' is a list of "
            "objects (each with file_name and segments_info)"
        )
    entry = next((a for a in annotations if a.get("file_name") == png.name), None)
    if entry is None:
        raise DataError(f"{found} has no annotation whose file_name is {png.name}")
    check_segments_info(entry.get("segments_info"), table, f"{found} ({png.name})")
    rgb = np.asarray(open_rgb(png, "map"))
    pmap, _ = PanopticMap.from_coco(rgb, entry["segments_info"], table)
    return pmap


def read_image(path: str | Path) -> Image.Image:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"image file {path} {'is a folder' if path.is_dir() else 'does not exist'}")
    return open_rgb(path, "image")


def open_rgb(path: Path | BinaryIO, what: str, name: str | None = None) -> Image.Image:
    """Decode an image file (or an open binary stream, called ``name`` in messages) to RGB; an
    unreadable, truncated or decompression-bomb file (a header claiming 40000x40000 pixels) is a
    DataError, not a traceback or an out-of-memory kill."""
    name = name or str(path)
    try:
        with Image.open(path) as img:
            rgb = img.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise DataError(f"cannot read the {what} {name}: {exc}") from None
    if 0 in rgb.size:
        raise DataError(f"the {what} {name} is empty ({rgb.size[0]}x{rgb.size[1]} pixels)")
    return rgb
