"""Feature shards: what `pandiff prepare` writes, that it resumes, that the stream is deterministic
and rank/worker-aware, and that mismatched features are refused."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch.utils.data import DataLoader

from pandiff.cli import main
from pandiff.data import prepare
from pandiff.data.shards import FeatureManifest
from pandiff.data.streams import ResidentStream, ShardStream, buffer_shuffle
from pandiff.errors import DataError
from pandiff.training.trainer import Trainer


def test_manifest_and_shards_hold_the_encoded_split(tiny_features, tiny_world):
    from pandiff.data.coco import CocoPanoptic

    manifest = FeatureManifest.read(tiny_features)
    spec = manifest.spec
    assert (spec.latent_channels, spec.latent_size, spec.map_size, spec.text_dim, spec.text_len) == (
        3,
        16,
        16,
        32,
        16,
    )
    assert spec.codec == "identity" and len(spec.categories) == 11 and spec.instance_bits == 3
    train = CocoPanoptic(tiny_world, "train", image_size=16, map_size=16)
    files = manifest.shard_files("train")
    assert [c for _, c in files] == [16, 16, len(train) - 32]
    shard = load_file(str(files[0][0]))
    assert shard["moments"].dtype == torch.float16 and shard["moments"].shape == (16, 6, 16, 16)
    assert shard["text"].shape == (16, 5, 16, 32) and shard["category"].dtype == torch.uint8
    item = train[3]
    assert torch.equal(shard["category"][3].long(), item["category"])
    assert torch.equal(shard["instance"][3].long(), item["instance"])
    # identity codec: the moments' mean is the image itself (to fp16 precision)
    assert torch.allclose(shard["moments"][3, :3].float(), train[3]["image"], atol=1e-3)
    assert int(shard["num_captions"][3]) == min(5, len(item["captions"]))
    assert manifest.empty_text().shape == (1, 16, 32)


def test_prepare_resumes_after_an_interruption(
    tmp_path, tiny_world, tiny_text_encoder_dir, tiny_features, monkeypatch, capsys
):
    out = tmp_path / "features"
    real_write = prepare.write_shard
    written = []

    def write_then_die(path, tensors, captions):
        if len(written) == 2:
            raise KeyboardInterrupt
        real_write(path, tensors, captions)
        written.append(path.name)

    monkeypatch.setattr(prepare, "write_shard", write_then_die)
    args = [
        "prepare",
        "--data",
        str(tiny_world),
        "--out",
        str(out),
        "--codec",
        "identity",
        "--text-encoder",
        str(tiny_text_encoder_dir),
        "--text-max-length",
        "16",
        "--image-size",
        "16",
        "--map-size",
        "16",
        "--shard-size",
        "16",
    ]
    assert main(args) == 130  # interrupted
    assert written == ["train-00000.safetensors", "train-00001.safetensors"]
    with pytest.raises(DataError, match="unfinished"):
        FeatureManifest.read(out).shard_files("train")

    encoded = []
    real_encode = prepare._encode_batch
    monkeypatch.setattr(prepare, "write_shard", real_write)
    monkeypatch.setattr(
        prepare, "_encode_batch", lambda b, *a: encoded.append(len(b["captions"])) or real_encode(b, *a)
    )
    assert main(args) == 0
    train_left = FeatureManifest.read(out).shard_files("train")[2][1]
    val = FeatureManifest.read(out).split("val")["num_items"]
    assert encoded == [train_left, val]  # only the last train shard and the val split were encoded
    reference = FeatureManifest.read(tiny_features)
    for split in ("train", "val"):
        for (a, _), (b, _) in zip(FeatureManifest.read(out).shard_files(split), reference.shard_files(split)):
            x, y = load_file(str(a)), load_file(str(b))
            assert all(torch.equal(x[k], y[k]) for k in y)

    assert main(args) == 0 and encoded == [train_left, val]  # a finished folder is left as it is
    capsys.readouterr()
    assert main([*args[:-4], "--map-size", "32", "--shard-size", "16"]) == 2  # other settings: refused
    assert "map_size" in capsys.readouterr().err


def test_stream_order_is_deterministic_and_rank_aware(tiny_features):
    manifest = FeatureManifest.read(tiny_features)

    def ids(stream, workers=0):
        loader = DataLoader(stream, batch_size=None, num_workers=workers)
        return [b["image_id"].tolist() for b in loader]

    single = ShardStream(manifest, "train", batch_size=4, seed=3, shuffle_buffer=8)
    epoch0 = ids(single)
    assert len(epoch0) == single.batches_per_epoch == single.num_items // 4
    assert ids(single, workers=2) == epoch0  # same batches whatever the worker count
    assert len({i for b in epoch0 for i in b}) == 4 * len(epoch0)  # no item twice in an epoch
    single.set_epoch(1)
    assert ids(single) != epoch0
    single.set_epoch(0, skip_batches=3)
    assert ids(single) == epoch0[3:]  # what a resumed run reads

    ranks = [
        ShardStream(manifest, "train", 4, seed=3, shuffle_buffer=8, rank=r, world_size=2) for r in (0, 1)
    ]
    seen = [[i for b in ids(s) for i in b] for s in ranks]
    assert len(seen[0]) == len(seen[1]) > 0 and not set(seen[0]) & set(seen[1])

    rng = np.random.default_rng(0)
    stream = np.arange(100)
    shuffled = buffer_shuffle(stream, 10, rng)
    assert sorted(shuffled) == list(stream) and not np.array_equal(shuffled, stream)
    assert np.max(np.arange(100) - np.argsort(shuffled)) <= 10  # no item comes out more than 10 places early


def test_resident_stream_gives_the_shard_stream_batches(tiny_features):
    """The in-memory stream (features held on the training device) reads exactly the batches,
    captions included, of the memory-mapped one, in every epoch and after a resume."""
    manifest = FeatureManifest.read(tiny_features)
    kw = {"batch_size": 4, "seed": 5, "shuffle_buffer": 8}
    mapped, resident = ShardStream(manifest, "train", **kw), ResidentStream(manifest, "train", **kw)
    assert resident.nbytes > 0 and resident.batches_per_epoch == mapped.batches_per_epoch
    for epoch, skip in ((0, 0), (1, 0), (2, 2)):
        for stream in (mapped, resident):
            stream.set_epoch(epoch, skip)
        pairs = list(zip(DataLoader(mapped, batch_size=None), DataLoader(resident, batch_size=None)))
        assert len(pairs) == mapped.batches_per_epoch - skip
        for a, b in pairs:
            assert set(a) == set(b)
            assert all(a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]) for k in a)
    texts = torch.cat([b["text"].flatten(1) for b in DataLoader(resident, batch_size=None)])
    assert len(torch.unique(texts, dim=0)) > 1  # a real comparison: the captions differ


def test_trainer_refuses_features_that_do_not_match_the_model(tmp_path, tiny_features, tiny_config):
    config = tiny_config(tmp_path / "run", tiny_features, "model.overrides.text_dim=48")
    with pytest.raises(
        DataError, match=r"text feature dim is 32 in the features but 48 in the model.*pandiff prepare"
    ):
        Trainer(config, progress=False)
    config = tiny_config(tmp_path / "run", tiny_features, "model.overrides.map_bits=8")
    with pytest.raises(DataError, match=r"map bits \(11 categories.*is 7 in the features but 8"):
        Trainer(config, progress=False)


def test_training_on_the_fly_without_shards(
    tmp_path, tiny_world, tiny_text_encoder_dir, tiny_config, tiny_features
):
    config = tiny_config(
        tmp_path / "run",
        tiny_features,
        "data.features=null",
        f"data.root={tiny_world}",
        "data.codec=identity",
        f"data.text_encoder={tiny_text_encoder_dir}",
        "data.image_size=16",
        "train.steps=4",
    )
    trainer = Trainer(config, progress=False)
    history = trainer.fit()
    trainer.close()
    assert len(history) == 4 and all(np.isfinite(h["loss"]) for h in history)
    # captions are tokenized to the model's text length; the batches hold images and caption strings
    assert trainer.spec.text_len == 16 and trainer.data.text_encoder.max_length == 16
    batch = next(iter(trainer.loader))
    assert batch["image"].shape == (8, 3, 16, 16) and len(batch["caption"]) == 8


def test_prepare_batches_across_shards_and_workers_give_the_same_shards(
    tmp_path, tiny_world, tiny_text_encoder_dir, tiny_features, features_of, monkeypatch
):
    """One loader serves the whole split (not one per shard, which restarted the decode workers
    every shard); batches that do not divide the shard size are cut at shard boundaries, and
    decoding in worker processes changes nothing."""
    sizes, loaders = [], []
    real_encode, real_loader = prepare._encode_batch, prepare.DataLoader

    def encode(batch, *a):
        sizes.append(len(batch["captions"]))
        return real_encode(batch, *a)

    def loader(*a, **k):
        loaders.append(k["num_workers"])
        return real_loader(*a, **k)

    monkeypatch.setattr(prepare, "_encode_batch", encode)
    monkeypatch.setattr(prepare, "DataLoader", loader)
    out = tmp_path / "features"
    features_of(tiny_world, out, tiny_text_encoder_dir, splits=["train"], batch_size=5, num_workers=2)
    counts = [c for _, c in FeatureManifest.read(out).shard_files("train")]
    assert len(counts) == 3 and loaders == [2]  # three shards, one loader with its 2 workers
    assert sizes[:4] == [5, 5, 5, 1] and sum(sizes) == sum(counts)  # never a batch across a boundary
    reference = FeatureManifest.read(tiny_features).shard_files("train")
    assert counts == [c for _, c in reference]
    for (a, _), (b, _) in zip(FeatureManifest.read(out).shard_files("train"), reference):
        x, y = load_file(str(a)), load_file(str(b))
        assert all(torch.equal(x[k], y[k]) for k in y)


def test_prepare_refuses_a_file_or_a_foreign_folder_before_encoding(tmp_path, tiny_world, capsys):
    """--out is checked first: a file or a folder pandiff did not write is refused and left as it
    was; a folder of an earlier prepare is resumed (test above)."""
    from pandiff.cli import main

    notes = tmp_path / "mine" / "notes.txt"
    notes.parent.mkdir()
    notes.write_text("x")
    afile = tmp_path / "afile"
    afile.write_text("y")
    for out, message in (
        (notes.parent, "did not write"),
        (afile, "existing file"),
        (tiny_world, "reads or writes"),
    ):
        args = [
            "prepare",
            "--data",
            str(tiny_world),
            "--out",
            str(out),
            "--codec",
            "identity",
            "--splits",
            "val",
        ]
        assert main([*args, "--text-encoder", "/nonexistent-encoder"]) == 2  # refused before any loading
        assert message in capsys.readouterr().err
    assert [p.name for p in notes.parent.iterdir()] == ["notes.txt"] and afile.read_text() == "y"
