"""Mean Count Difference (MCD), the paper's metric for the category composition of maps.

For one generated map and the ground-truth map of the caption's image, count the pixels of
every category index (void, index 0, is its own bin, as the paper histograms the raw category
ids including "unlabelled"), take the L1 distance of the two histograms and divide it by the
number of pixels; MCD is the mean over samples. 0 means the same category composition, 2 is the
maximum (no category in common).

Maps of different sizes are compared through their *normalised* histograms (pixel fractions):
``sum_c |h_gen(c) / N_gen - h_gt(c) / N_gt|``. For equal sizes this is exactly the paper's
``L1 / N``; for different sizes it avoids the label changes that resizing a map would cause.
Instances play no part: MCD sees only categories.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from pandiff.data.panoptic_map import PanopticMap
from pandiff.errors import DataError


def category_histogram(category: np.ndarray, num_categories: int) -> np.ndarray:
    """Pixel count per category index: ``H W`` ints in ``0..K`` -> ``K + 1`` int64 (bin 0 = void)."""
    category = np.asarray(category)
    if category.size == 0:
        raise DataError("cannot histogram an empty map")
    if category.min() < 0 or category.max() > num_categories:
        raise DataError(
            f"category indices must lie in 0..{num_categories}, got {category.min()}..{category.max()}"
        )
    return np.bincount(category.ravel().astype(np.int64), minlength=num_categories + 1)


def count_difference(generated: PanopticMap, target: PanopticMap) -> float:
    """MCD of one pair: L1 distance of the normalised category histograms, in ``[0, 2]``."""
    if len(generated.table) != len(target.table):
        raise DataError(
            f"the maps use different category tables "
            f"({len(generated.table)} vs {len(target.table)} categories)"
        )
    k = len(target.table)
    h_gen = category_histogram(generated.category, k) / generated.category.size
    h_gt = category_histogram(target.category, k) / target.category.size
    return float(np.abs(h_gen - h_gt).sum())


def mean_count_difference(generated: Sequence[PanopticMap], targets: Sequence[PanopticMap]) -> float:
    """MCD over aligned lists of generated and ground-truth maps (mean of :func:`count_difference`)."""
    if len(generated) != len(targets):
        raise DataError(
            f"MCD needs one ground-truth map per generated map, got {len(generated)} and {len(targets)}"
        )
    if not generated:
        raise DataError("MCD needs at least one pair of maps")
    return float(np.mean([count_difference(g, t) for g, t in zip(generated, targets)]))
