"""The COCO panoptic + captions dataset on the real val2017 sample (image 142238), and its errors."""

import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from pandiff.data.coco import CocoPanoptic, collate_fn
from pandiff.data.coco_format import id_to_rgb
from pandiff.data.panoptic_map import PanopticMap, center_crop_box
from pandiff.errors import ConfigError, DataError

IMAGE_ID = 142238
CAPTIONS = [
    "A group of young men playing a game of soccer.",
    "Kids running after a soccer ball on a field.",
    "Boys in uniforms chase the ball across the grass.",
    "A soccer match between two teams of children.",
    "Players crowd around a ball in front of trees.",
]
SUMMARY = (
    "kept 1 images; skipped 0 without captions, 0 without panoptic annotation; "
    "merged 6 instances beyond the 7-instance budget into crowd regions"
)


def write_json(path: Path, data) -> None:
    path.write_text(json.dumps(data))


def read_json(path: Path):
    return json.loads(path.read_text())


@pytest.fixture
def coco_root(tmp_path, coco_sample_dir) -> Path:
    """A writable copy of the sample with a captions file for its one image."""
    root = tmp_path / "coco"
    shutil.copytree(coco_sample_dir, root)
    for folder, _, files in os.walk(root):
        os.chmod(folder, 0o755)
        for name in files:
            os.chmod(Path(folder) / name, 0o644)
    captions = [{"image_id": IMAGE_ID, "id": i, "caption": c + " "} for i, c in enumerate(CAPTIONS, 1)]
    write_json(
        root / "annotations" / "captions_val2017.json",
        {"images": [{"id": IMAGE_ID}], "annotations": captions},
    )
    return root


def load(root: Path, **kwargs) -> CocoPanoptic:
    return CocoPanoptic(root, split="val", image_size=64, map_size=32, **kwargs)


def edit_panoptic(root: Path, edit) -> None:
    path = root / "annotations" / "panoptic_val2017.json"
    data = read_json(path)
    edit(data)
    write_json(path, data)


# -- reading the real sample -------------------------------------------------------------------------
def test_item_shapes_ranges_and_captions(coco_root, caplog):
    with caplog.at_level(logging.INFO, logger="pandiff.data.coco"):
        ds = load(coco_root)
    assert len(ds) == 1
    assert ds.summary == SUMMARY
    assert SUMMARY in caplog.text

    item = ds[0]
    assert item["image_id"] == IMAGE_ID
    assert item["captions"] == CAPTIONS  # all five, stripped, in file order
    image = item["image"]
    assert image.shape == (3, 64, 64) and image.dtype == torch.float32
    assert -1.0 <= float(image.min()) < -0.5 and 0.5 < float(image.max()) <= 1.0
    for key in ("category", "instance"):
        assert item[key].shape == (32, 32) and item[key].dtype == torch.long
    assert 0 <= int(item["category"].min()) and int(item["category"].max()) <= 133
    assert 0 <= int(item["instance"].min()) and int(item["instance"].max()) <= 7


def test_table_and_category_names(coco_root):
    ds = load(coco_root)
    assert len(ds.table) == 133
    assert ds.table[ds.table.index_of_coco_id(200)].name == "rug-merged"
    category = ds[0]["category"]
    names = {ds.table[int(c)].name for c in category.unique() if c > 0}
    assert names == {"person", "sports ball", "tree-merged", "sky-other-merged", "grass-merged"}
    person = ds.table.index_of_name("person")
    assert person == 1 and ds.table[person].isthing
    # The grass is the largest region of the bottom half, the tree line the top rows.
    assert ds.table[int(category[-4:].mode().values.mode().values)].name == "grass-merged"
    assert ds.table[int(category[0].mode().values)].name == "tree-merged"


def test_map_is_canonical_after_crop_and_resize(coco_root):
    ds = load(coco_root)
    item = ds[0]
    category, instance = item["category"].numpy(), item["instance"].numpy()
    person = ds.table.index_of_name("person")
    people = category == person
    # Seven identified people (the budget) and the crowd region (instance 0: merged + COCO crowd).
    assert sorted(np.unique(instance[people]).tolist()) == list(range(8))
    first = [np.flatnonzero((people & (instance == k)).ravel())[0] for k in range(1, 8)]
    assert first == sorted(first)  # raster order of the first pixel

    # Without relabelling, crop + pooling would break that order on this image; the relabelled map
    # must be the same partition of the pixels.
    png = np.asarray(Image.open(coco_root / "panoptic_val2017" / "000000142238.png").convert("RGB"))
    segments = read_json(coco_root / "annotations" / "panoptic_val2017.json")["annotations"][0][
        "segments_info"
    ]
    full, merged = PanopticMap.from_coco(png, segments, ds.table)
    raw = full.center_crop().resize(32)
    assert merged == 6
    raw_first = [
        np.flatnonzero(((raw.category == person) & (raw.instance == k)).ravel())[0] for k in range(1, 8)
    ]
    assert raw_first != sorted(raw_first)
    np.testing.assert_array_equal(raw.category, category)
    pairs = set(zip(raw.instance[people].tolist(), instance[people].tolist()))
    assert len(pairs) == 8 and (0, 0) in pairs  # a bijection that keeps the crowd region


def test_image_is_the_centre_crop_resized_bicubically(coco_root):
    image = load(coco_root)[0]["image"]
    jpg = Image.open(coco_root / "val2017" / "000000142238.jpg").convert("RGB")
    top, left, side = center_crop_box(jpg.height, jpg.width)
    assert (top, left, side) == (0, 106, 427)
    expected = jpg.crop((left, top, left + side, top + side)).resize((64, 64), Image.Resampling.BICUBIC)
    expected = torch.from_numpy(np.asarray(expected).copy()).permute(2, 0, 1).float() / 127.5 - 1
    torch.testing.assert_close(image, expected)


def test_maps_only_mode_needs_no_image_folder(coco_root):
    shutil.rmtree(coco_root / "val2017")
    item = load(coco_root, load_images=False)[0]
    assert "image" not in item
    assert item["category"].shape == (32, 32) and item["captions"] == CAPTIONS


def test_collate_stacks_tensors_and_keeps_caption_lists(coco_root):
    ds = load(coco_root)
    batch = collate_fn([ds[0], ds[0]])
    assert batch["image"].shape == (2, 3, 64, 64)
    assert batch["category"].shape == batch["instance"].shape == (2, 32, 32)
    assert batch["captions"] == [CAPTIONS, CAPTIONS]
    assert batch["image_id"].tolist() == [IMAGE_ID, IMAGE_ID]
    loaded = next(iter(DataLoader(ds, batch_size=1, collate_fn=collate_fn)))
    assert torch.equal(loaded["category"][0], ds[0]["category"])
    maps_only = collate_fn([load(coco_root, load_images=False)[0]])
    assert "image" not in maps_only and maps_only["category"].shape == (1, 32, 32)


# -- counted skips and strict mode ------------------------------------------------------------------------
def add_images(data):
    """Image 1 has an annotation but no captions; image 2 has captions (added below) but no annotation."""
    for new_id in (1, 2):
        data["images"].append({**data["images"][0], "id": new_id})
    data["annotations"].append({**data["annotations"][0], "image_id": 1})


def test_images_without_captions_or_annotation_are_skipped_and_counted(coco_root):
    edit_panoptic(coco_root, add_images)
    path = coco_root / "annotations" / "captions_val2017.json"
    captions = read_json(path)
    captions["annotations"].append({"image_id": 2, "id": 99, "caption": "unused"})
    write_json(path, captions)

    ds = load(coco_root)
    assert len(ds) == 1 and ds[0]["image_id"] == IMAGE_ID
    assert ds.summary == (
        "kept 1 images; skipped 1 without captions, 1 without panoptic annotation; "
        "merged 6 instances beyond the 7-instance budget into crowd regions"
    )
    with pytest.raises(DataError, match="image id 1 .* has no captions"):
        load(coco_root, strict=True)


def test_strict_mode_raises_for_an_image_without_annotation(coco_root):
    edit_panoptic(coco_root, lambda d: d["images"].insert(0, {**d["images"][0], "id": 5}))
    path = coco_root / "annotations" / "captions_val2017.json"
    captions = read_json(path)
    captions["annotations"].append({"image_id": 5, "id": 99, "caption": "a field"})
    write_json(path, captions)
    assert load(coco_root).summary.startswith("kept 1 images; skipped 0 without captions, 1 without")
    with pytest.raises(DataError, match="image id 5 .* has no panoptic annotation"):
        load(coco_root, strict=True)


def test_the_instance_budget_is_configurable(coco_root):
    ds = load(coco_root, max_instances=3)
    assert "merged 10 instances beyond the 3-instance budget" in ds.summary
    assert int(ds[0]["instance"].max()) == 3


# -- errors ----------------------------------------------------------------------------------------------------
def test_missing_root_and_folders(coco_root, tmp_path):
    with pytest.raises(DataError, match="nowhere.*cocodataset.org"):
        load(tmp_path / "nowhere")
    shutil.rmtree(coco_root / "val2017")
    with pytest.raises(DataError, match="image folder .*val2017.*load_images=False"):
        load(coco_root)
    (coco_root / "panoptic_val2017").rename(coco_root / "annotations" / "panoptic_val2017")
    with pytest.raises(DataError, match="PNG folder .* does not exist; move .*annotations/panoptic_val2017"):
        load(coco_root, load_images=False)
    shutil.rmtree(coco_root / "annotations" / "panoptic_val2017")
    with pytest.raises(DataError, match="PNG folder .* does not exist; download"):
        load(coco_root, load_images=False)


@pytest.mark.parametrize("name", ["panoptic_val2017.json", "captions_val2017.json"])
def test_missing_annotation_json(coco_root, name):
    (coco_root / "annotations" / name).unlink()
    with pytest.raises(DataError, match=f"annotation file .*{name} does not exist"):
        load(coco_root)


@pytest.mark.parametrize("name", ["panoptic_val2017.json", "captions_val2017.json"])
def test_corrupt_json(coco_root, name):
    path = coco_root / "annotations" / name
    path.write_text(path.read_text()[:-40])
    with pytest.raises(DataError, match=f"{name} is not valid JSON"):
        load(coco_root)


def test_json_without_coco_keys(coco_root):
    write_json(coco_root / "annotations" / "captions_val2017.json", {"images": []})
    with pytest.raises(DataError, match="captions_val2017.json has no 'annotations' list"):
        load(coco_root)
    edit_panoptic(coco_root, lambda d: d["annotations"][0].pop("segments_info"))
    with pytest.raises(DataError, match="lacks one of .*segments_info"):
        load(coco_root)


def test_png_segment_id_missing_from_segments_info(coco_root):
    path = coco_root / "panoptic_val2017" / "000000142238.png"
    png = np.asarray(Image.open(path).convert("RGB")).copy()
    png[:5, :5] = id_to_rgb(np.array([[777]]))[0, 0]
    Image.fromarray(png).save(path)
    ds = load(coco_root)  # JSON-only checks pass; the PNG is read per item
    with pytest.raises(DataError, match=r"000000142238.png \(image id 142238\).*\[777\].*segments_info"):
        ds[0]


def test_unknown_category_id(coco_root):
    edit_panoptic(coco_root, lambda d: d["annotations"][0]["segments_info"][0].update(category_id=999))
    with pytest.raises(DataError, match="image id 142238: unknown category id 999"):
        load(coco_root)


def test_captions_for_an_image_the_panoptic_file_lacks(coco_root):
    path = coco_root / "annotations" / "captions_val2017.json"
    captions = read_json(path)
    captions["annotations"].append({"image_id": 424242, "id": 99, "caption": "a cat"})
    write_json(path, captions)
    with pytest.raises(DataError, match=r"captions for 1 image id\(s\).*\[424242\].*same COCO split"):
        load(coco_root)


def test_caption_file_for_other_images_leaves_nothing(coco_root):
    write_json(coco_root / "annotations" / "captions_val2017.json", {"annotations": []})
    with pytest.raises(DataError, match="no image .* has both .*1 without captions"):
        load(coco_root)


def test_inconsistent_panoptic_json(coco_root):
    edit_panoptic(coco_root, lambda d: d["annotations"].append(d["annotations"][0]))
    with pytest.raises(DataError, match="two annotations for image id 142238"):
        load(coco_root)
    edit_panoptic(coco_root, lambda d: d["annotations"][0].update(image_id=31337))
    with pytest.raises(DataError, match="annotation for image id 31337 that its 'images' list lacks"):
        load(coco_root)


def test_duplicate_segment_id(coco_root):
    def duplicate(data):
        info = data["annotations"][0]["segments_info"]
        info.append(dict(info[0], category_id=187))

    edit_panoptic(coco_root, duplicate)
    with pytest.raises(DataError, match="image id 142238 lists a segment id twice"):
        load(coco_root)


def test_corrupt_missing_or_mismatched_files_are_named_at_getitem(coco_root, coco_sample_dir):
    png = coco_root / "panoptic_val2017" / "000000142238.png"
    png.write_bytes(png.read_bytes()[:200])
    ds = load(coco_root)
    with pytest.raises(DataError, match="panoptic PNG .*000000142238.png .*cannot be decoded"):
        ds[0]
    png.unlink()
    with pytest.raises(DataError, match="panoptic PNG .*000000142238.png .*does not exist"):
        ds[0]
    Image.new("RGB", (10, 10)).save(png)
    with pytest.raises(DataError, match="10x10 but the panoptic JSON says 640x427"):
        ds[0]

    shutil.copyfile(coco_sample_dir / "panoptic_val2017" / png.name, png)
    jpg = coco_root / "val2017" / "000000142238.jpg"
    jpg.write_bytes(jpg.read_bytes()[:1000])
    with pytest.raises(DataError, match="image .*000000142238.jpg .*cannot be decoded"):
        ds[0]
    assert load(coco_root, load_images=False)[0]["image_id"] == IMAGE_ID  # maps never open the JPEG


def test_bad_settings(coco_root):
    with pytest.raises(ConfigError, match="split"):
        CocoPanoptic(coco_root, split="test")
    with pytest.raises(ConfigError, match="map_size"):
        CocoPanoptic(coco_root, split="val", map_size=0)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda d: d["images"][0].update(id=str(d["images"][0]["id"])), "'images': id must be an integer"),
        (lambda d: d["annotations"][0].update(image_id=None), "image_id must be an integer"),
        (lambda d: d["annotations"][0]["segments_info"][0].update(category_id="1"), "category_id .* integer"),
        (lambda d: d["annotations"][0]["segments_info"][0].update(id="7"), "segment id must be an integer"),
        (lambda d: d["annotations"][0].update(segments_info={"id": 1}), "segments_info must be a list"),
        (lambda d: d["annotations"][0]["segments_info"].append("x"), "must be an object"),
    ],
)
def test_ids_of_the_wrong_type_are_refused(coco_root, edit, message):
    """COCO ids are JSON integers: a string id is another tool's file, refused by the validator
    that generate --map uses too (issue 18)."""
    edit_panoptic(coco_root, edit)
    with pytest.raises(DataError, match=message):
        load(coco_root)
