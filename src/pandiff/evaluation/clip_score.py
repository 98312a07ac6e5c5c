"""CLIP score (``100 * cos(image embedding, text embedding)``, averaged) with torchmetrics' ``CLIPScore``.

The paper scores with CLIP ViT-B/32 (``openai/clip-vit-base-patch32``). The model comes from a
local folder (``save_pretrained`` of a ``CLIPModel`` and its ``CLIPProcessor``) or a hub id that
is already in the local Hugging Face cache; it is handed to torchmetrics as a callable, the way
torchmetrics accepts models whose name it does not know.

transformers 5 returns a ``BaseModelOutputWithPooling`` (projected embedding in
``pooler_output``) from ``get_image_features``/``get_text_features`` where torchmetrics 1.9
expects a tensor; :class:`_EmbeddingOnly` adapts the model so the metric's own code runs
unchanged. torchmetrics clamps the final mean at 0, as the CLIP-score definition does.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import nn

from pandiff.errors import DataError, WeightsError

PAPER_CLIP = "openai/clip-vit-base-patch32"


class _EmbeddingOnly(nn.Module):
    """A ``CLIPModel`` whose feature calls return the projected ``N d`` embedding tensor."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.config = model.config

    @staticmethod
    def _tensor(out) -> torch.Tensor:
        return out if isinstance(out, torch.Tensor) else out.pooler_output

    def get_image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self._tensor(self.model.get_image_features(pixel_values=pixel_values))

    def get_text_features(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        return self._tensor(self.model.get_text_features(input_ids=input_ids, attention_mask=attention_mask))


def clip_loader(name_or_path: str | Path) -> Callable[[], tuple[nn.Module, object]]:
    """A callable returning ``(model, processor)`` for torchmetrics' ``CLIPScore``.

    Args:
        name_or_path: a local folder with a ``CLIPModel`` + ``CLIPProcessor``, or a hub id present
            in the local cache (nothing is downloaded when ``HF_HUB_OFFLINE=1``).
    Raises (when called):
        WeightsError: the folder or cache entry is missing or is not a CLIP model.
    """
    name = str(name_or_path)

    def load() -> tuple[nn.Module, object]:
        from transformers import CLIPModel, CLIPProcessor

        try:
            model = CLIPModel.from_pretrained(name).eval()
            processor = CLIPProcessor.from_pretrained(name)
        except (OSError, ValueError) as exc:
            raise WeightsError(
                f"cannot load a CLIP model and processor from {name!r} ({exc}); pass --clip with a local "
                f"folder saved by CLIPModel/CLIPProcessor.save_pretrained, e.g. of {PAPER_CLIP}"
            ) from None
        return _EmbeddingOnly(model), processor

    return load


class ClipScorer:
    """Accumulates the CLIP score of (image, prompt) pairs.

    Args:
        loader: what :func:`clip_loader` returns (called once, here).
    """

    def __init__(self, loader: Callable[[], tuple[nn.Module, object]]) -> None:
        from torchmetrics.multimodal.clip_score import CLIPScore

        self.metric = CLIPScore(model_name_or_path=loader)
        self.count = 0

    @torch.no_grad()
    def update(self, images: torch.Tensor, prompts: Sequence[str]) -> None:
        """Add ``N 3 H W`` uint8 images and their ``N`` prompts."""
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise DataError(f"expected N 3 H W uint8 images, got {tuple(images.shape)} {images.dtype}")
        if len(prompts) != len(images):
            raise DataError(f"CLIP score needs one prompt per image, got {len(prompts)} and {len(images)}")
        self.metric.update(images, list(prompts))
        self.count += len(images)

    def compute(self) -> float:
        """``max(0, mean over pairs of 100 * cosine)``."""
        if self.count == 0:
            raise DataError("CLIP score needs at least one image")
        return float(self.metric.compute())
