"""Read an uploaded COCO panoptic map for the demo's map -> image mode.

Two upload forms are accepted, both as raw bytes:

* a panoptic PNG plus the panoptic JSON that holds its ``segments_info``;
* a zip of an export folder (the demo's download, or a zipped ``pandiff generate --out`` folder):
  its ``panoptic.json`` and the ``panoptic/NNN.png`` of the chosen annotation.

Both end in :func:`pandiff.data.readers.read_panoptic_png`, the reader ``pandiff generate --map``
uses, so the demo and the CLI accept exactly the same maps.
"""

from __future__ import annotations

import json
import tempfile
import zipfile
from io import BytesIO
from pathlib import Path, PurePosixPath

from pandiff.data.categories import CategoryTable
from pandiff.data.panoptic_map import PanopticMap
from pandiff.data.readers import read_panoptic_png
from pandiff.errors import DataError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# An export zip holds small PNGs and JSON; refusing more keeps a zip bomb from filling memory.
MAX_UNZIPPED_BYTES = 64 * 1024 * 1024


def map_from_png_and_json(
    png: bytes, panoptic_json: bytes, table: CategoryTable, png_name: str = ""
) -> tuple[PanopticMap, str]:
    """Parse a panoptic PNG and its JSON.

    The annotation is the one whose ``file_name`` equals ``png_name`` (the uploaded file's
    name), else the JSON's only annotation. Returns the map and the annotation's file name.
    """
    if not png.startswith(PNG_SIGNATURE):
        raise DataError("the uploaded map is not a PNG file; upload the COCO panoptic PNG (RGB-encoded ids)")
    annotations = _annotations(panoptic_json, "the uploaded panoptic JSON")
    name = PurePosixPath(png_name.replace("\\", "/")).name
    entry = next((a for a in annotations if a.get("file_name") == name), None)
    if entry is None:
        if len(annotations) != 1:
            names = ", ".join(str(a.get("file_name")) for a in annotations[:5])
            raise DataError(
                f"the panoptic JSON has {len(annotations)} annotations and none is for '{name}' "
                f"(it lists {names}); upload the PNG under its own file name"
            )
        entry = annotations[0]
    return _read(png, panoptic_json, str(entry["file_name"]), table), str(entry["file_name"])


def map_from_zip(data: bytes, table: CategoryTable, index: int = 0) -> tuple[PanopticMap, str]:
    """Parse annotation ``index`` (0-based) of a zipped export folder.

    ``panoptic.json`` may sit at the zip's root or inside one folder; its PNGs are read from the
    ``panoptic/`` folder beside it. Returns the map and the annotation's file name.
    """
    try:
        archive = zipfile.ZipFile(BytesIO(data))
    except zipfile.BadZipFile:
        raise DataError("the uploaded file is not a zip archive; upload the zip the demo offers") from None
    with archive:
        infos = [i for i in archive.infolist() if not i.is_dir()]
        if sum(i.file_size for i in infos) > MAX_UNZIPPED_BYTES:
            raise DataError(f"the zip unpacks to more than {MAX_UNZIPPED_BYTES // 2**20} MiB; upload one map")
        json_paths = sorted(
            (PurePosixPath(i.filename) for i in infos if PurePosixPath(i.filename).name == "panoptic.json"),
            key=lambda p: len(p.parts),
        )
        if not json_paths:
            raise DataError("the zip has no panoptic.json; upload a zip of a pandiff export folder")
        json_path = json_paths[0]
        panoptic_json = archive.read(str(json_path))
        annotations = _annotations(panoptic_json, f"{json_path} in the zip")
        if not 0 <= index < len(annotations):
            raise DataError(
                f"sample {index} does not exist: the zip's panoptic.json has {len(annotations)} "
                f"annotation(s), numbered 0..{len(annotations) - 1}"
            )
        file_name = str(annotations[index].get("file_name", ""))
        png_path = json_path.parent / "panoptic" / file_name
        try:
            png = archive.read(str(png_path))
        except KeyError:
            raise DataError(f"the zip lacks {png_path}, the PNG of annotation {index}") from None
    return _read(png, panoptic_json, file_name, table), file_name


def _annotations(panoptic_json: bytes, what: str) -> list[dict]:
    try:
        data = json.loads(panoptic_json)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise DataError(f"{what} is not valid JSON: {exc}") from None
    annotations = data.get("annotations") if isinstance(data, dict) else None
    if not isinstance(annotations, list) or not annotations:
        raise DataError(f"{what} has no 'annotations' list; upload a COCO panoptic JSON")
    if not all(isinstance(a, dict) and isinstance(a.get("file_name"), str) for a in annotations):
        raise DataError(f"{what} has annotations without a 'file_name'")
    return annotations


def _read(png: bytes, panoptic_json: bytes, file_name: str, table: CategoryTable) -> PanopticMap:
    """Write the pair to a private temp folder under safe names and read it with the CLI's reader."""
    safe_name = PurePosixPath(file_name.replace("\\", "/")).name
    if not safe_name or safe_name in (".", ".."):
        raise DataError(f"the annotation's file_name '{file_name}' is not a file name")
    if safe_name != file_name:
        # read_panoptic_png matches the annotation by the PNG's name, so the JSON must agree.
        data = json.loads(panoptic_json)
        for a in data["annotations"]:
            if a.get("file_name") == file_name:
                a["file_name"] = safe_name
        panoptic_json = json.dumps(data).encode()
    with tempfile.TemporaryDirectory(prefix="pandiff-demo-") as tmp:
        png_path = Path(tmp) / "panoptic" / safe_name  # its own folder: the name may be panoptic.json
        json_path = Path(tmp) / "panoptic.json"
        png_path.parent.mkdir()
        png_path.write_bytes(png)
        json_path.write_bytes(panoptic_json)
        try:
            return read_panoptic_png(png_path, json_path, table)
        except DataError:
            raise  # already says what is wrong (DataError is a ValueError too: keep its message)
        except (KeyError, TypeError, ValueError) as exc:
            # coco_to_segments indexes segments_info fields; a malformed entry must read as bad input.
            raise DataError(f"the panoptic annotation of {safe_name} is malformed: {exc!r}") from None
