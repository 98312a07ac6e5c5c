"""``pandiff train-codec`` on a tiny folder of synthetic images: writes a loadable codec, a
training record, and its loss falls; bad data and options give clear errors."""

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pandiff.cli import SUBCOMMANDS, train_codec
from pandiff.encoders.codec import VaeCodec, load_codec
from pandiff.errors import ConfigError, DataError
from pandiff.world import codec_training


def write_images(folder: Path, n: int, size: int, seed: int) -> None:
    """Flat backgrounds with one bright square each: enough structure to learn in a few steps."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    for i in range(n):
        image = np.full((size, size, 3), rng.integers(0, 256, 3), dtype=np.uint8)
        x, y = rng.integers(0, size // 2, 2)
        image[y : y + size // 3, x : x + size // 3] = rng.integers(0, 256, 3)
        Image.fromarray(image).save(folder / f"{i:012d}.png")


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("world")
    write_images(root / "train2017", 16, 16, seed=0)
    write_images(root / "val2017", 4, 16, seed=1)
    return root


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    train_codec.add_arguments(parser)
    return parser.parse_args(list(argv))


@pytest.fixture(scope="module")
def trained(world, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "codec"
    args = parse(
        "--data",
        str(world),
        "--out",
        str(out),
        "--steps",
        "60",
        "--batch",
        "16",
        "--eval-every",
        "20",
        "--lr",
        "1e-2",
        "--channels",
        "8,16,16",
        "--device",
        "cpu",
    )
    assert train_codec.run(args) == 0
    return out


def test_registered_as_subcommand():
    assert SUBCOMMANDS["train-codec"][0] == "pandiff.cli.train_codec"


def test_writes_loadable_codec_and_record(trained, world):
    assert sorted(p.name for p in trained.iterdir()) == [
        ".pandiff-output",
        "config.json",
        "diffusion_pytorch_model.safetensors",
        "training.json",
    ]
    assert not list(trained.parent.glob(".codec.*"))  # no temporary folder left behind
    record = json.loads((trained / "training.json").read_text())
    assert record["steps"] == 60 and record["seed"] == 0 and record["data"] == str(world.resolve())
    assert record["image_size"] == [16, 16] and record["train_images"] == 16 and record["val_images"] == 4
    assert record["wall_time_s"] > 0 and np.isfinite(record["val_psnr_db"])
    codec = load_codec(trained)
    assert isinstance(codec, VaeCodec)
    assert codec.scaling_factor == pytest.approx(record["scaling_factor"])
    images = codec_training.to_unit_range(codec_training.load_image_folder(world / "val2017"), "cpu")
    latents = codec.encode(images)
    assert latents.shape == (4, 4, 4, 4)
    # The stored scaling factor gives the train latents unit spread (measured on train images).
    train_images = codec_training.to_unit_range(codec_training.load_image_folder(world / "train2017"), "cpu")
    assert codec.encode(train_images).std().item() == pytest.approx(1.0, rel=1e-3)
    psnr = codec_training.psnr(codec.decode(latents), images).mean().item()
    assert psnr == pytest.approx(record["val_psnr_db"], abs=0.01)


def test_loss_falls(trained):
    record = json.loads((trained / "training.json").read_text())
    history = record["history"]
    assert [h["step"] for h in history] == [20, 40, 60]
    # Seconds since the start of training at each check: rising, and within the run's wall time.
    elapsed = [h["elapsed_s"] for h in history]
    assert 0 < elapsed[0] <= elapsed[1] <= elapsed[2] <= record["wall_time_s"] + 0.1
    assert history[-1]["loss"] < 0.85 * history[0]["loss"]
    assert history[-1]["val_psnr_db"] > history[0]["val_psnr_db"]


def test_psnr_of_known_error():
    target = torch.zeros(1, 3, 4, 4)
    # An error of 0.2 on the [-1, 1] scale is 0.1 on [0, 1]: PSNR = 20 dB.
    assert codec_training.psnr(target + 0.2, target).item() == pytest.approx(20.0, abs=1e-4)


def test_learning_rate_schedule():
    assert codec_training.learning_rate(1.0, 5, 0.0, 10) == pytest.approx(0.5)
    assert codec_training.learning_rate(1.0, 50, 0.5, 10) == pytest.approx(0.5)
    assert codec_training.learning_rate(1.0, 100, 1.0, 10) == pytest.approx(0.0)


def test_refuses_existing_out_without_overwrite(world, trained):
    with pytest.raises(ConfigError, match="--overwrite"):
        train_codec.run(parse("--data", str(world), "--out", str(trained)))


def test_missing_world(tmp_path):
    with pytest.raises(DataError, match="does not exist.*make-world"):
        train_codec.run(parse("--data", str(tmp_path / "none"), "--out", str(tmp_path / "o")))


def test_mixed_image_sizes(tmp_path):
    write_images(tmp_path / "w" / "train2017", 2, 16, seed=0)
    Image.new("RGB", (24, 24)).save(tmp_path / "w" / "train2017" / "z.png")
    with pytest.raises(DataError, match="one image size"):
        codec_training.load_image_folder(tmp_path / "w" / "train2017")


def test_size_not_divisible(tmp_path):
    write_images(tmp_path / "w" / "train2017", 2, 18, seed=0)
    write_images(tmp_path / "w" / "val2017", 1, 18, seed=1)
    with pytest.raises(DataError, match="not divisible"):
        train_codec.run(parse("--data", str(tmp_path / "w"), "--out", str(tmp_path / "o")))


def test_bad_options(tmp_path):
    with pytest.raises(ConfigError, match="--steps"):
        train_codec.run(parse("--data", str(tmp_path), "--out", str(tmp_path / "o"), "--steps", "0"))


def test_codec_loss_is_mse_plus_weighted_kl():
    from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution

    target = torch.zeros(2, 3, 4, 4)
    reconstruction = torch.full_like(target, 0.5)
    posterior = DiagonalGaussianDistribution(torch.zeros(2, 8, 1, 1))  # N(0, 1): KL 0
    assert codec_training.codec_loss(reconstruction, target, posterior, 1.0).item() == pytest.approx(0.25)
    wide = DiagonalGaussianDistribution(torch.cat([torch.ones(2, 4, 1, 1), torch.zeros(2, 4, 1, 1)], 1))
    # KL of N(1, 1) from N(0, 1) is 0.5 per latent value: 2 per image, spread over 48 pixel values.
    assert codec_training.codec_loss(target, target, wide, 1.0).item() == pytest.approx(2 / 48)
