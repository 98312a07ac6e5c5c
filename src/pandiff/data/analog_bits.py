"""Panoptic maps as analog bits (Bit Diffusion), the continuous form the model diffuses.

Scheme (channels of a ``B C H W`` tensor with values in {-1, +1}):

* channels ``0 .. category_bits-1``: the contiguous category index (0 = void, 1..K), least
  significant bit first; ``category_bits = ceil(log2(K + 1))`` (8 for COCO's 133 categories);
* channels ``category_bits .. category_bits+instance_bits-1``: the per-category instance index
  (0 for stuff/void/crowd, 1..2^instance_bits-1 for identified thing instances), LSB first.

A set bit is +1, a clear bit -1. Decoding thresholds at 0 and reads the integers back; invalid
codes are repaired so every decoded map is a valid :class:`PanopticMap`: a category index above K
becomes void, void and stuff pixels get instance 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from pandiff.data.categories import CategoryTable
from pandiff.data.panoptic_map import PanopticMap
from pandiff.errors import DataError


@dataclass(frozen=True)
class MapBitCodec:
    """Encodes category/instance maps to analog bits and back.

    Args:
        num_categories: K, the number of categories in the table (void excluded).
        instance_bits: bits for the per-category instance index (default 3: up to 7 instances).
    """

    num_categories: int
    instance_bits: int = 3

    def __post_init__(self) -> None:
        if self.num_categories < 1:
            raise DataError("a map codec needs at least one category")
        if self.instance_bits < 0:
            raise DataError("instance_bits must be >= 0")

    @classmethod
    def for_table(cls, table: CategoryTable, instance_bits: int = 3) -> MapBitCodec:
        return cls(len(table), instance_bits)

    @property
    def category_bits(self) -> int:
        return max(1, math.ceil(math.log2(self.num_categories + 1)))

    @property
    def num_bits(self) -> int:
        """Channels of the analog-bit tensor."""
        return self.category_bits + self.instance_bits

    @property
    def max_instances(self) -> int:
        return 2**self.instance_bits - 1

    def encode(
        self, category: torch.Tensor | np.ndarray, instance: torch.Tensor | np.ndarray
    ) -> torch.Tensor:
        """``... H W`` integer maps -> ``... C H W`` float bits in {-1, +1} (C = ``num_bits``)."""
        category = torch.as_tensor(np.asarray(category) if isinstance(category, np.ndarray) else category)
        instance = torch.as_tensor(np.asarray(instance) if isinstance(instance, np.ndarray) else instance)
        if category.shape != instance.shape:
            raise DataError(f"category {tuple(category.shape)} and instance {tuple(instance.shape)} differ")
        if int(category.min()) < 0 or int(category.max()) > self.num_categories:
            raise DataError(f"category indices must lie in 0..{self.num_categories}")
        if int(instance.min()) < 0 or int(instance.max()) > self.max_instances:
            raise DataError(
                f"instance indices must lie in 0..{self.max_instances} for {self.instance_bits} instance bits; "
                "canonicalize the map first (pandiff.data.panoptic_map.canonicalize)"
            )
        cat_bits = _to_bits(category.long(), self.category_bits)
        inst_bits = _to_bits(instance.long(), self.instance_bits)
        return torch.cat([cat_bits, inst_bits], dim=-3) * 2.0 - 1.0

    def decode(
        self, bits: torch.Tensor, isthing: list[bool] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``... C H W`` analog bits -> ``(category, instance)`` long tensors ``... H W``.

        Thresholds at 0. ``isthing`` (``table.isthing_lut()``) lets the decoder clear the instance
        of stuff pixels; void pixels always get instance 0.
        """
        if bits.shape[-3] != self.num_bits:
            raise DataError(f"expected {self.num_bits} bit channels, got {bits.shape[-3]}")
        hard = (bits > 0).long()
        category = _from_bits(hard[..., : self.category_bits, :, :])
        instance = _from_bits(hard[..., self.category_bits :, :, :])
        category = torch.where(category > self.num_categories, torch.zeros_like(category), category)
        keep = category > 0
        if isthing is not None:
            lut = torch.tensor(isthing, dtype=torch.bool, device=category.device)
            keep = lut[category]
        instance = torch.where(keep, instance, torch.zeros_like(instance))
        return category, instance

    def encode_map(self, pmap: PanopticMap) -> torch.Tensor:
        """A :class:`PanopticMap` -> ``C H W`` bits."""
        return self.encode(pmap.category, pmap.instance)

    def decode_map(self, bits: torch.Tensor, table: CategoryTable) -> PanopticMap:
        """``C H W`` bits -> a valid :class:`PanopticMap` over ``table``."""
        category, instance = self.decode(bits, table.isthing_lut())
        return PanopticMap(category.cpu().numpy(), instance.cpu().numpy(), table)


def _to_bits(values: torch.Tensor, n: int) -> torch.Tensor:
    """``... H W`` ints -> ``... n H W`` {0, 1} floats, LSB first."""
    shifts = torch.arange(n, device=values.device).view(n, 1, 1)
    return ((values.unsqueeze(-3) >> shifts) & 1).float()


def _from_bits(bits: torch.Tensor) -> torch.Tensor:
    """``... n H W`` {0, 1} ints -> ``... H W`` ints, LSB first."""
    n = bits.shape[-3]
    weights = (2 ** torch.arange(n, device=bits.device)).view(n, 1, 1)
    return (bits * weights).sum(dim=-3)
