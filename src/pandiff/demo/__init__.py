"""The web demo (``pandiff demo``): a small page of our own served by the standard library.

:mod:`pandiff.demo.api` holds the request logic around a loaded pipeline, :mod:`pandiff.demo.uploads`
reads uploaded maps, :mod:`pandiff.demo.server` serves the page in ``static/`` and the JSON API.
Nothing is fetched from other hosts, so the demo works offline.
"""

from pandiff.demo.api import DemoApp, DemoLimits
from pandiff.demo.server import DemoServer, make_server

__all__ = ["DemoApp", "DemoLimits", "DemoServer", "make_server"]
