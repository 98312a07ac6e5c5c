"""Colours for maps: a fixed colour per category, instances told apart, and overlays on images."""

from __future__ import annotations

import colorsys
import hashlib

import numpy as np

from pandiff.data.categories import CategoryTable
from pandiff.data.panoptic_map import PanopticMap

VOID_COLOR = (0, 0, 0)
# Brightness shifts of instances 1..7 (index 0: stuff and crowd keep the plain category colour),
# alternating darker/brighter so neighbours in the canonical order contrast.
SHADES = np.array([0.0, -0.3, 0.3, -0.1, 0.2, -0.2, 0.1, 0.4])


def category_colors(table: CategoryTable) -> np.ndarray:
    """``(K + 1) x 3`` uint8: row i is category i's colour (the table's own colour when it has
    one, else a colour derived from the name's hash so it never changes); row 0 is void."""
    colors = np.zeros((len(table) + 1, 3), dtype=np.uint8)
    colors[0] = VOID_COLOR
    for i, cat in enumerate(table.categories, start=1):
        if cat.color is not None:
            colors[i] = cat.color
        else:
            h = int(hashlib.sha1(cat.name.encode()).hexdigest()[:8], 16)
            r, g, b = colorsys.hsv_to_rgb((h % 360) / 360.0, 0.55 + (h >> 9) % 40 / 100.0, 0.85)
            colors[i] = (int(r * 255), int(g * 255), int(b * 255))
    return colors


def colorize(pmap: PanopticMap) -> np.ndarray:
    """``H W 3`` uint8 picture of a map: category colour, each instance a different brightness,
    and a dark outline along every segment boundary so touching instances stay apart."""
    colors = category_colors(pmap.table).astype(np.float32)
    rgb = colors[pmap.category]
    # Instances 1..7 get seven distinct shades, alternating darker/brighter so neighbours in the
    # canonical order contrast; instance 0 (stuff, crowd) keeps the plain category colour.
    shade = SHADES[np.where(pmap.instance > 0, 1 + (pmap.instance - 1) % 7, 0)][..., None]
    rgb = np.clip(rgb + shade * np.where(shade > 0, 255 - rgb, rgb), 0, 255)
    edges = segment_boundaries(pmap)
    rgb[edges] *= 0.35
    return rgb.astype(np.uint8)


def legend(pmap: PanopticMap) -> list[dict]:
    """One entry per segment of ``pmap``, as :func:`colorize` paints it: ``label`` (``circle 1``,
    ``circle 2`` for the instances of a thing, the category name for stuff), ``category`` and
    ``color`` (``#rrggbb``); things first, in category order, then stuff."""
    colors = category_colors(pmap.table).astype(np.float32)
    things, stuff, seen = [], [], {}
    for cat, inst in pmap.segments():
        name = pmap.table[cat].name
        base = colors[cat]
        shade = SHADES[1 + (inst - 1) % 7 if inst > 0 else 0]
        rgb = np.clip(base + shade * (255 - base if shade > 0 else base), 0, 255).astype(np.uint8)
        entry = {"category": name, "color": "#{:02x}{:02x}{:02x}".format(*rgb.tolist())}
        if inst > 0:
            seen[cat] = seen.get(cat, 0) + 1
            things.append({**entry, "label": f"{name} {seen[cat]}"})
        else:
            stuff.append({**entry, "label": name})
    return things + stuff


def segment_boundaries(pmap: PanopticMap) -> np.ndarray:
    """``H W`` bool: pixels whose right or lower neighbour belongs to another segment."""
    key = pmap.codes()
    edges = np.zeros(key.shape, dtype=bool)
    edges[:, :-1] |= key[:, :-1] != key[:, 1:]
    edges[:-1, :] |= key[:-1, :] != key[1:, :]
    return edges


def overlay(image: np.ndarray, pmap: PanopticMap, alpha: float = 0.5) -> np.ndarray:
    """Blend the coloured map over an ``H W 3`` uint8 image (map resized by nearest neighbour to
    the image size when they differ); boundaries drawn opaque."""
    image = np.asarray(image)
    h, w = image.shape[:2]
    colored = colorize(pmap)
    edges = segment_boundaries(pmap)
    if colored.shape[:2] != (h, w):
        ys = (np.arange(h) * colored.shape[0]) // h
        xs = (np.arange(w) * colored.shape[1]) // w
        colored = colored[ys][:, xs]
        edges = edges[ys][:, xs]
    out = image.astype(np.float32) * (1 - alpha) + colored.astype(np.float32) * alpha
    out[edges] = colored[edges]
    return np.clip(out, 0, 255).astype(np.uint8)
