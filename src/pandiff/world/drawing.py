"""Drawing the built-in world: shape masks on a pixel-centre grid, stuff textures, the image.

Everything here is vectorised numpy on ``size x size`` coordinate grids (pixel ``(row, col)`` has
its centre at ``(col + 0.5, row + 0.5)``). Shapes are not antialiased, so the panoptic map that
:func:`rasterize` returns matches the painted image at every pixel.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from pandiff.data.categories import CategoryTable
from pandiff.errors import DataError

THING_SHAPES = ("circle", "square", "triangle", "star", "cross")
# Saturated thing colours, each far (in RGB) from every stuff colour below.
THING_COLORS: dict[str, tuple[int, int, int]] = {
    "red": (215, 35, 35),
    "orange": (250, 140, 20),
    "yellow": (250, 220, 20),
    "green": (30, 200, 70),
    "blue": (35, 65, 225),
    "purple": (145, 55, 205),
    "pink": (250, 135, 195),
    "white": (248, 248, 248),
}
# Mean image colour of each stuff category (texture varies around it).
STUFF_COLORS: dict[str, tuple[int, int, int]] = {
    "sky": (140, 195, 240),
    "wall": (150, 146, 140),
    "grass": (88, 132, 58),
    "water": (50, 108, 150),
    "sand": (218, 195, 148),
    "floor": (140, 98, 62),
}
SIZES = ("small", "large")
# Farthest point of each shape from its centre, in units of its radius (keeps shapes in frame).
SHAPE_EXTENT = {"circle": 1.0, "square": 0.85, "triangle": 1.15, "star": 1.25, "cross": 0.95}


@dataclass(frozen=True)
class Thing:
    """One shape: category, colour and size words, and its centre and radius in pixels."""

    category: str
    color: str
    size: str
    x: float
    y: float
    radius: float


@dataclass(frozen=True)
class Scene:
    """A scene layout: ``stuff`` top to bottom (1 or 2 names), ``horizon`` the first row of the
    bottom region (None with one region), ``things`` in drawing order (back to front)."""

    size: int
    stuff: tuple[str, ...]
    horizon: int | None
    things: tuple[Thing, ...]


def _polygon_mask(xx: np.ndarray, yy: np.ndarray, vx: list, vy: list) -> np.ndarray:
    """Even-odd point-in-polygon test of pixel centres ``xx, yy`` (H W) against the polygon of
    vertices ``(vx[i], vy[i])``; each coordinate a number, or an array that broadcasts against
    ``xx`` (``K 1 1``: K polygons at once, giving ``K H W``)."""
    inside = np.zeros(np.broadcast_shapes(xx.shape, np.shape(vx[0])), dtype=bool)
    for x0, y0, x1, y1 in zip(vx, vy, vx[1:] + vx[:1], vy[1:] + vy[:1]):
        if np.ndim(y0) == 0 and y0 == y1:
            continue  # a horizontal edge never crosses the horizontal ray
        crosses = (y0 > yy) != (y1 > yy)
        with np.errstate(divide="ignore", invalid="ignore"):  # horizontal edges of K polygons
            inside ^= crosses & (xx < x0 + (yy - y0) * (x1 - x0) / (y1 - y0))
    return inside


def shape_mask(thing: Thing, xx: np.ndarray, yy: np.ndarray) -> np.ndarray:
    """``H W`` bool mask of a thing on the pixel-centre grids ``xx, yy``."""
    return shape_masks(thing.category, thing.x, thing.y, thing.radius, xx, yy)


def shape_masks(category: str, x, y, radius, xx: np.ndarray, yy: np.ndarray) -> np.ndarray:
    """Masks of world shapes of ``category`` centred at ``(x, y)`` with ``radius`` on the
    pixel-centre grids ``xx, yy``: numbers give one ``H W`` mask, arrays that broadcast against
    the grids (``K 1 1``) give K candidate shapes at once (``K H W``)."""
    dx, dy, r = xx - x, yy - y, radius
    if category == "circle":
        return dx * dx + dy * dy <= r * r
    if category == "square":
        return (np.abs(dx) <= 0.85 * r) & (np.abs(dy) <= 0.85 * r)
    if category == "cross":
        arm, half = 0.95 * r, 0.34 * r
        return ((np.abs(dx) <= arm) & (np.abs(dy) <= half)) | ((np.abs(dx) <= half) & (np.abs(dy) <= arm))
    if category == "triangle":
        angles, radii = np.deg2rad([-90, 30, 150]), [1.15 * r] * 3
    elif category == "star":
        angles, radii = np.deg2rad(-90 + 36 * np.arange(10)), [1.25 * r, 0.55 * r] * 5
    else:
        raise DataError(f"unknown shape {category!r}; known: {', '.join(THING_SHAPES)}")
    cos, sin = np.cos(angles), np.sin(angles)
    vx = [x + rad * c for rad, c in zip(radii, cos)]
    vy = [y + rad * s for rad, s in zip(radii, sin)]
    return _polygon_mask(xx, yy, vx, vy)


@lru_cache(maxsize=4)
def _pixel_centres(size: int) -> tuple[np.ndarray, np.ndarray]:
    """``(yy, xx)``, each ``size x size``: the y and x coordinates of the pixel centres."""
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    yy.flags.writeable = xx.flags.writeable = False
    return yy, xx


def rasterize(scene: Scene, table: CategoryTable) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """Category indices (H W), raw thing labels (H W, thing ``k`` -> ``k + 1``, 0 on stuff) and
    each thing's full (unoccluded) mask."""
    s = scene.size
    yy, xx = _pixel_centres(s)
    category = np.full((s, s), table.index_of_name(scene.stuff[0]), dtype=np.int64)
    if scene.horizon is not None:
        category[scene.horizon :] = table.index_of_name(scene.stuff[1])
    labels = np.zeros((s, s), dtype=np.int64)
    masks = []
    for k, thing in enumerate(scene.things):
        mask = shape_mask(thing, xx, yy)
        category[mask] = table.index_of_name(thing.category)
        labels[mask] = k + 1
        masks.append(mask)
    return category, labels, masks


def _smooth_noise(rng: np.random.Generator, size: int, cells: int = 4) -> np.ndarray:
    """``size x size`` low-frequency noise (std about 1): a bilinear upsampling of a coarse grid."""
    coarse = rng.normal(size=(cells + 1, cells + 1))
    t = (np.arange(size) + 0.5) / size * cells
    i = np.minimum(t.astype(int), cells - 1)
    interp = np.zeros((size, cells + 1))
    interp[np.arange(size), i] = 1 - (t - i)
    interp[np.arange(size), i + 1] = t - i
    return interp @ coarse @ interp.T


def stuff_texture(name: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """``size x size x 3`` float picture of a stuff category: its colour plus a light texture that
    tells the categories apart (sky gradient, brick wall, grass blades, ripples, speckled sand,
    floor planks)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    fine = rng.normal(size=(size, size))
    shade = 4.0 * _smooth_noise(rng, size)
    if name == "sky":
        shade += 22.0 * yy / size - 11.0 + 2.0 * fine  # lighter towards the horizon
    elif name == "wall":
        brick = max(4, size // 10)
        offset = (yy // brick % 2) * brick
        mortar = (yy % brick == 0) | ((xx + offset) % (2 * brick) == 0)
        shade += np.where(mortar, 28.0, 0.0) + 4.0 * fine
    elif name == "grass":
        shade += 9.0 * (fine + np.roll(fine, 1, 0) + np.roll(fine, 2, 0))  # vertical blades
    elif name == "water":
        phase = rng.uniform(0, 2 * np.pi)
        shade += 10.0 * np.sin(
            2 * np.pi * yy / max(4, size // 12) + 1.5 * np.sin(2 * np.pi * xx / size + phase)
        )
        shade += 2.5 * fine
    elif name == "sand":
        shade += 8.0 * fine
    elif name == "floor":
        plank = max(5, size // 7)
        shade += (
            np.where(yy % plank == 0, -35.0, 0.0)
            + 8.0 * rng.normal(size=(size // plank + 1, 1))[(yy // plank).astype(int), 0]
        )
        shade += 4.0 * (fine + np.roll(fine, 1, 1) + np.roll(fine, 2, 1))  # grain along the planks
    else:
        raise DataError(f"unknown stuff {name!r}; known: {', '.join(STUFF_COLORS)}")
    return np.asarray(STUFF_COLORS[name], dtype=np.float64) + shade[..., None]


def paint(scene: Scene, masks: list[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """The ``H W 3`` uint8 image of a rasterized scene (``masks`` from :func:`rasterize`)."""
    s = scene.size
    image = stuff_texture(scene.stuff[0], s, rng)
    if scene.horizon is not None:
        image[scene.horizon :] = stuff_texture(scene.stuff[1], s, rng)[scene.horizon :]
    for thing, mask in zip(scene.things, masks):
        interior = mask.copy()
        interior[1:] &= mask[:-1]
        interior[:-1] &= mask[1:]
        interior[:, 1:] &= mask[:, :-1]
        interior[:, :-1] &= mask[:, 1:]
        interior[[0, -1], :] = interior[:, [0, -1]] = False
        image[mask] = np.asarray(THING_COLORS[thing.color]) * 0.55  # darker outline
        image[interior] = THING_COLORS[thing.color]
    image += rng.normal(0.0, 2.0, image.shape)  # a little sensor noise everywhere
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)
