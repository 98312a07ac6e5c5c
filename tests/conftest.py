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


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread: the tests' tensors are tiny, and on a busy 2-core machine syncing
    threads for every op costs more than the op itself. The previous setting is restored."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def pipeline_calls(monkeypatch) -> list[dict]:
    """The keyword arguments of every ``PanopticDiffusionPipeline`` call made in the test (the
    calls still run)."""
    from pandiff.pipeline import PanopticDiffusionPipeline

    calls: list[dict] = []
    real = PanopticDiffusionPipeline.__call__

    def spy(self, *args, **kwargs):
        calls.append(kwargs)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(PanopticDiffusionPipeline, "__call__", spy)
    return calls


@pytest.fixture(scope="session")
def make_tiny_pipeline(tmp_path_factory):
    """Writes a complete pipeline folder around a tiny random pixel-space PDM on the world's
    categories (identity codec, the real MiniLM text encoder), with the writer ``pandiff train
    --export`` uses: ``make_tiny_pipeline(image_size) -> folder``."""
    import torch

    from pandiff.diffusion.schedule import NoiseSchedule
    from pandiff.model import pdm_from_preset
    from pandiff.pipeline_config import PipelineConfig, save_pipeline_folder
    from pandiff.world.generator import world_category_table

    def make(image_size: int) -> Path:
        torch.manual_seed(0)
        model = pdm_from_preset(
            "world-s-pixel", latent_size=image_size, patch_size=4, embed_dim=32, depth=2, num_heads=2
        )
        with torch.no_grad():  # wake the zero-initialised heads so every input matters
            for p in model.parameters():
                p.add_(0.05 * torch.randn_like(p))
        config = PipelineConfig(
            codec="identity",
            text_encoder="minilm",
            categories=world_category_table().to_coco(),
            schedule=NoiseSchedule().to_dict(),
            image_size=image_size,
            guidance_scale=2.0,
        )
        folder = tmp_path_factory.mktemp("pipeline") / f"tiny-world-{image_size}"
        return save_pipeline_folder(folder, model, config)

    return make


@pytest.fixture(scope="session")
def tiny_pipeline_dir(make_tiny_pipeline) -> Path:
    """A 16 px tiny pipeline folder (see ``make_tiny_pipeline``)."""
    return make_tiny_pipeline(16)
