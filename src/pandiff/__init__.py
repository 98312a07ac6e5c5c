"""pandiff: Panoptic Diffusion Models, co-generating an image and its panoptic map from text."""

from typing import TYPE_CHECKING

from pandiff._lazy import lazy_exports

__version__ = "0.1.0"

# Imported on first use (PEP 562): `import pandiff` and `pandiff --help` do not load torch.
_EXPORTS = {
    "Category": "pandiff.data.categories",
    "CategoryTable": "pandiff.data.categories",
    "ConfigError": "pandiff.errors",
    "DataError": "pandiff.errors",
    "MapBitCodec": "pandiff.data.analog_bits",
    "PandiffError": "pandiff.errors",
    "PanopticMap": "pandiff.data.panoptic_map",
    "WeightsError": "pandiff.errors",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())

if TYPE_CHECKING:
    from pandiff.data.analog_bits import MapBitCodec
    from pandiff.data.categories import Category, CategoryTable
    from pandiff.data.panoptic_map import PanopticMap
    from pandiff.errors import ConfigError, DataError, PandiffError, WeightsError

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
