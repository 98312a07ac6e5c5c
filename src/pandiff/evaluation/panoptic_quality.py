"""Panoptic quality exactly as COCO's ``panopticapi`` computes it, and semantic mIoU.

PQ (Kirillov et al. 2019): predicted and ground-truth segments of one category match when their
IoU exceeds 0.5; per category ``PQ = sum(IoU of matches) / (TP + FP/2 + FN/2)`` = SQ x RQ, and the
reported PQ is the mean over categories that occur in the predictions or the ground truth
(``pq_things`` / ``pq_stuff``: over thing / stuff categories only). Void and crowd follow COCO's
``pq_compute`` to the letter, so a reported PQ is comparable with published COCO numbers:

* void (category 0) in the **ground truth**: the pixels a predicted segment puts on void are taken
  out of that pair's union; a predicted segment more than half on void (plus crowd of its own
  category) is no false positive;
* void in the **prediction**: no segment; ground-truth pixels predicted void stay in the union
  (a thing with 20 of its 50 pixels predicted void scores IoU 0.6, not 1.0);
* a ground-truth thing pixel with instance 0 is that category's crowd region (COCO ``iscrowd``):
  never matched, never a false negative, its pixels stay in every union, and it excuses unmatched
  predictions of its category that lie on it;
* a prediction of another size than its target is resized to the target's size first
  (:meth:`PanopticMap.resize`, mode pooling; square maps).

Written here rather than taken from torchmetrics because torchmetrics' ``PanopticQuality`` differs
from COCO on both counts (it drops ground-truth pixels predicted void from the union and has no
crowd regions), and panopticapi itself is not packaged: it reads PNG/JSON folders only.

Semantic mIoU (:class:`SemanticIoU`) accumulates one confusion matrix over the whole set
(torchmetrics ``MulticlassJaccardIndex``, ``average="macro"``): IoU per category over all
pixels, averaged over categories present in predictions or targets; void target pixels are
ignored, a void prediction counts as a miss.
"""

from __future__ import annotations

import numpy as np
import torch

from pandiff.data.categories import CategoryTable
from pandiff.data.panoptic_map import CODE_BASE, PanopticMap
from pandiff.errors import DataError


def align_to(pred: PanopticMap, target: PanopticMap, table: CategoryTable) -> PanopticMap:
    """The prediction at the target's size (both must use ``table``)."""
    if len(pred.table) != len(table) or len(target.table) != len(table):
        raise DataError("prediction and target must use the evaluator's category table")
    if pred.shape != target.shape:
        if pred.shape[0] != pred.shape[1] or target.shape[0] != target.shape[1]:
            raise DataError(
                f"cannot compare a {pred.shape} prediction with a {target.shape} target (not square)"
            )
        pred = pred.resize(target.shape[0])
    return pred


def _areas(ids: np.ndarray) -> dict[int, int]:
    """Pixels of every non-void segment id."""
    segs, area = np.unique(ids[ids > 0], return_counts=True)
    return dict(zip(segs.tolist(), area.tolist()))


class PanopticScorer:
    """Accumulates COCO's PQ, SQ and RQ over (prediction, target) map pairs; see the module docstring."""

    def __init__(self, table: CategoryTable) -> None:
        self.table = table
        self.isthing = np.asarray(table.isthing_lut(), dtype=bool)  # by category index, 0 = void
        k = len(table) + 1
        self.tp, self.fp, self.fn = np.zeros(k, np.int64), np.zeros(k, np.int64), np.zeros(k, np.int64)
        self.iou_sum = np.zeros(k, np.float64)
        self.count = 0

    def update(self, pred: PanopticMap, target: PanopticMap) -> None:
        pred = align_to(pred, target, self.table)
        # One id per segment (PanopticMap.codes); 0 = void, whatever the instance.
        gt_ids = np.where(target.category > 0, target.codes(), 0).ravel()
        pred_ids = np.where(pred.category > 0, pred.codes(), 0).ravel()
        pairs, counts = np.unique(np.stack([gt_ids, pred_ids]), axis=1, return_counts=True)
        overlap = {(int(g), int(p)): int(n) for (g, p), n in zip(pairs.T, counts)}  # pixels per pair
        gt_area = _areas(gt_ids)
        pred_area = _areas(pred_ids)
        crowd = {g for g in gt_area if self.isthing[g // CODE_BASE] and g % CODE_BASE == 0}
        matched_gt, matched_pred = set(), set()
        for (g, p), n in overlap.items():
            if g == 0 or p == 0 or g in crowd or g // CODE_BASE != p // CODE_BASE:
                continue
            iou = n / (pred_area[p] + gt_area[g] - n - overlap.get((0, p), 0))
            if iou > 0.5:  # IoU > 0.5 makes the match unique
                self.tp[g // CODE_BASE] += 1
                self.iou_sum[g // CODE_BASE] += iou
                matched_gt.add(g)
                matched_pred.add(p)
        for g in set(gt_area) - matched_gt - crowd:
            self.fn[g // CODE_BASE] += 1
        for p in set(pred_area) - matched_pred:
            crowd_id = p // CODE_BASE * CODE_BASE  # its category's crowd region, if the target has one
            excused = overlap.get((0, p), 0) + (overlap.get((crowd_id, p), 0) if crowd_id in crowd else 0)
            if excused / pred_area[p] <= 0.5:
                self.fp[p // CODE_BASE] += 1
        self.count += 1

    def compute(self) -> dict[str, float]:
        """``pq``, ``sq``, ``rq`` over all categories seen, and ``pq_things``, ``pq_stuff``, ``n``.

        A value is NaN when no category of its kind occurs in predictions or targets.
        """
        tp, fp, fn = (
            self.tp[1:].astype(np.float64),
            self.fp[1:].astype(np.float64),
            self.fn[1:].astype(np.float64),
        )
        seen = (tp + fp + fn) > 0
        sq = np.where(tp > 0, self.iou_sum[1:] / np.maximum(tp, 1), 0.0)
        rq = np.where(seen, tp / np.maximum(tp + 0.5 * fp + 0.5 * fn, 1e-12), 0.0)
        pq = sq * rq
        is_thing = self.isthing[1:]

        def mean(values: np.ndarray, mask: np.ndarray) -> float:
            return float(values[mask].mean()) if mask.any() else float("nan")

        return {
            "pq": mean(pq, seen),
            "sq": mean(sq, seen),
            "rq": mean(rq, seen),
            "pq_things": mean(pq, seen & is_thing),
            "pq_stuff": mean(pq, seen & ~is_thing),
            "n": self.count,
        }


class SemanticIoU:
    """Accumulates dataset-level semantic mIoU over category maps (void targets ignored)."""

    def __init__(self, num_categories: int) -> None:
        from torchmetrics.classification import MulticlassJaccardIndex

        self.num_categories = num_categories
        self.metric = MulticlassJaccardIndex(num_classes=num_categories + 1, ignore_index=0, average="macro")
        self.per_class = MulticlassJaccardIndex(
            num_classes=num_categories + 1, ignore_index=0, average="none"
        )
        self.count = 0

    def update(self, pred: np.ndarray | torch.Tensor, target: np.ndarray | torch.Tensor) -> None:
        """Add ``... H W`` predicted and target category indices (``0..K``, 0 = void)."""
        pred_t, target_t = torch.as_tensor(np.asarray(pred)), torch.as_tensor(np.asarray(target))
        if pred_t.shape != target_t.shape:
            raise DataError(
                f"prediction {tuple(pred_t.shape)} and target {tuple(target_t.shape)} differ in shape"
            )
        self.metric.update(pred_t.long(), target_t.long())
        self.per_class.update(pred_t.long(), target_t.long())
        self.count += 1

    def compute(self) -> float:
        if self.count == 0:
            raise DataError("mIoU needs at least one map")
        return float(self.metric.compute())

    def compute_per_class(self) -> list[float]:
        """IoU of categories ``1..K`` (0 for categories never seen)."""
        return [float(v) for v in self.per_class.compute()[1:]]


def map_miou(preds: list[PanopticMap], targets: list[PanopticMap]) -> float:
    """Semantic mIoU of aligned map lists (predictions resized to their target's size)."""
    if not preds or len(preds) != len(targets):
        raise DataError(
            f"mIoU needs equally many predictions and targets, got {len(preds)} and {len(targets)}"
        )
    iou = SemanticIoU(len(targets[0].table))
    for p, t in zip(preds, targets):
        iou.update(align_to(p, t, t.table).category, t.category)
    return iou.compute()


def panoptic_quality(preds: list[PanopticMap], targets: list[PanopticMap]) -> dict[str, float]:
    """PQ/SQ/RQ of aligned map lists (see :class:`PanopticScorer`)."""
    if not preds or len(preds) != len(targets):
        raise DataError(f"PQ needs equally many predictions and targets, got {len(preds)} and {len(targets)}")
    scorer = PanopticScorer(targets[0].table)
    for p, t in zip(preds, targets):
        scorer.update(p, t)
    return scorer.compute()
