"""The PDM transformer: U-ViT backbone, unified and two-stream PDM, presets and safe weight loading.

- :mod:`pandiff.model.uvit`: U-ViT building blocks and the image-only text-to-image :class:`UViT`.
- :mod:`pandiff.model.pdm`: :class:`PDMUnified` and :class:`PDMTwoStream` (Multi-Scale Patching).
- :mod:`pandiff.model.presets`: named sizes and :func:`pdm_from_preset`.
- :mod:`pandiff.model.loading`: :func:`load_pdm` and :func:`load_uvit_checkpoint`.
"""

from pandiff.model.loading import MODEL_CLASSES, PDMModel, load_pdm, load_uvit_checkpoint
from pandiff.model.pdm import PATCH_FACTORS, PDMTwoStream, PDMUnified
from pandiff.model.presets import PRESETS, VARIANTS, pdm_from_preset
from pandiff.model.uvit import PDMOutput, UViT, timestep_embedding

__all__ = [
    "MODEL_CLASSES",
    "PATCH_FACTORS",
    "PRESETS",
    "VARIANTS",
    "PDMModel",
    "PDMOutput",
    "PDMTwoStream",
    "PDMUnified",
    "UViT",
    "load_pdm",
    "load_uvit_checkpoint",
    "pdm_from_preset",
    "timestep_embedding",
]
