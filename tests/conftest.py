"""Test-wide settings: never reach the network for weights; fixed thread count for stable speed."""

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

DATA = Path(__file__).parent / "data"


@pytest.fixture
def coco_sample_dir() -> Path:
    """The real COCO val2017 sample (image 142238) copied into the test data."""
    return DATA / "coco-sample"
