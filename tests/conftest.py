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


@pytest.fixture(scope="session")
def tiny_pipeline_dir(tmp_path_factory) -> Path:
    """A complete pipeline folder around a tiny random pixel-space PDM on the world's categories
    (identity codec, the real MiniLM text encoder), as ``pandiff train --export`` writes it."""
    import json

    import torch

    from pandiff.data.world import world_category_table
    from pandiff.diffusion.schedule import NoiseSchedule
    from pandiff.model import pdm_from_preset

    torch.manual_seed(0)
    model = pdm_from_preset("world-s-pixel", latent_size=16, patch_size=4, embed_dim=32, depth=2, num_heads=2)
    with torch.no_grad():  # wake the zero-initialised heads so every input matters
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    folder = tmp_path_factory.mktemp("pipeline") / "tiny-world"
    model.save_pretrained(folder / "model")
    description = {
        "model": "model",
        "codec": "identity",
        "text_encoder": "minilm",
        "schedule": NoiseSchedule().to_dict(),
        "instance_bits": 3,
        "categories": world_category_table().to_coco(),
        "image_size": 16,
        "guidance_scale": 2.0,
        "map_guidance_scale": 1.0,
    }
    (folder / "pandiff_pipeline.json").write_text(json.dumps(description))
    return folder
