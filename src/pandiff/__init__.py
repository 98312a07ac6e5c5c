"""pandiff: Panoptic Diffusion Models, co-generating an image and its panoptic map from text."""

from pandiff.data.analog_bits import MapBitCodec
from pandiff.data.categories import Category, CategoryTable
from pandiff.data.panoptic_map import PanopticMap
from pandiff.errors import ConfigError, DataError, PandiffError, WeightsError

__version__ = "0.1.0"

__all__ = [
    "Category",
    "CategoryTable",
    "ConfigError",
    "DataError",
    "MapBitCodec",
    "PandiffError",
    "PanopticMap",
    "WeightsError",
    "__version__",
]
