"""Sample grids during training: each sample's image beside its panoptic map, as one PNG."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from pandiff.data.analog_bits import MapBitCodec
from pandiff.data.categories import CategoryTable
from pandiff.data.palette import colorize
from pandiff.diffusion.sampler import LockstepSampler
from pandiff.diffusion.schedule import NoiseSchedule
from pandiff.io import atomic_path
from pandiff.training.config import SampleConfig

PAIRS_PER_ROW = 4
GAP = 2


@torch.no_grad()
def sample_pairs(
    model: torch.nn.Module,
    schedule: NoiseSchedule,
    codec,
    bit_codec: MapBitCodec,
    table: CategoryTable,
    text: torch.Tensor,
    empty_text: torch.Tensor,
    cfg: SampleConfig,
    seed: int,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Draw one (image, coloured map) pair per prompt, both ``H W 3`` uint8.

    Args:
        model: the PDM model (with the weights to show, EMA during training).
        text: ``n L D`` prompt features; empty_text: ``1 L D``.
        cfg: sampler, steps and guidance scales.
        seed: fixes the noise, so grids of successive steps are comparable.
    """
    c = model.config
    device = text.device
    generator = torch.Generator(device).manual_seed(seed)
    out = LockstepSampler(model, schedule, cfg.scheduler).sample(
        text,
        empty_text,
        (c.latent_channels, c.latent_size, c.latent_size),
        (c.map_bits, model.map_size, model.map_size) if model.with_map else None,
        num_inference_steps=cfg.steps,
        guidance_scale=cfg.guidance_scale,
        map_guidance_scale=cfg.map_guidance_scale,
        generator=generator,
    )
    images = codec.decode(out.latents.float())  # n 3 H W in [-1, 1]
    pixels = ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    if out.map_bits is None:  # an image-only model (a two-stream image stream): blank map tiles
        maps = [np.full_like(p, 128) for p in pixels]
    else:
        maps = [colorize(bit_codec.decode_map(bits.float(), table)) for bits in out.map_bits]
    return list(zip(pixels, maps))


def grid_image(pairs: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """Tile (image, map) pairs, ``PAIRS_PER_ROW`` per row; maps are scaled (nearest) to the image size."""
    side = pairs[0][0].shape[0]
    cols = min(PAIRS_PER_ROW, len(pairs))
    rows = -(-len(pairs) // cols)
    tile = side + GAP
    grid = np.full((rows * tile + GAP, cols * 2 * tile + GAP, 3), 255, dtype=np.uint8)
    for k, (image, cmap) in enumerate(pairs):
        idx = (np.arange(side) * cmap.shape[0]) // side
        scaled = cmap[idx][:, idx]
        y, x = GAP + (k // cols) * tile, GAP + (k % cols) * 2 * tile
        grid[y : y + side, x : x + side] = image
        grid[y : y + side, x + tile : x + tile + side] = scaled
    return grid


def save_grid(path: str | Path, grid: np.ndarray) -> None:
    """Write the grid as a PNG, atomically."""
    with atomic_path(path) as tmp:
        Image.fromarray(grid).save(tmp, format="PNG")
