"""Panoptic quality (torchmetrics ``PanopticQuality``) and semantic mIoU between panoptic maps.

PQ (Kirillov et al. 2019): predicted and ground-truth segments of one category match when their
IoU exceeds 0.5; per category ``PQ = sum(IoU of matches) / (TP + FP/2 + FN/2)`` = SQ x RQ, and the
reported PQ is the mean over categories that occur in the predictions or the ground truth.
How our maps meet torchmetrics:

* segments are ``(category index, instance index)`` pairs; things are the table's thing indices
  and stuffs its stuff indices (disjoint sets, as torchmetrics requires);
* void (category 0) is in neither set, so torchmetrics turns it into its own *void colour*: void
  target pixels are ignored and a predicted segment lying mostly on void is no false positive
  (``allow_unknown_preds_category=True`` lets predictions contain void too);
* a ground-truth thing pixel with instance 0 (a COCO crowd region) is made void in the target,
  so predictions on a crowd are neither rewarded nor punished, as in COCO's own PQ;
* a prediction of another size than its target is resized to the target's size first
  (:meth:`PanopticMap.resize`, mode pooling; square maps).

Semantic mIoU (:class:`SemanticIoU`) accumulates one confusion matrix over the whole set
(torchmetrics ``MulticlassJaccardIndex``, ``average="macro"``): IoU per category over all
pixels, averaged over categories present in predictions or targets; void target pixels are
ignored, a void prediction counts as a miss.
"""

from __future__ import annotations

import numpy as np
import torch

from pandiff.data.categories import CategoryTable
from pandiff.data.panoptic_map import PanopticMap
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


def panoptic_tensor(pmap: PanopticMap) -> torch.Tensor:
    """``H W 2`` long tensor of ``(category, instance)`` pairs, torchmetrics' layout."""
    return torch.from_numpy(np.stack([pmap.category, pmap.instance], axis=-1))


class PanopticScorer:
    """Accumulates PQ, SQ and RQ over (prediction, target) map pairs; see the module docstring."""

    def __init__(self, table: CategoryTable) -> None:
        from torchmetrics.detection import PanopticQuality

        self.table = table
        self.things = table.thing_indices()
        self.stuffs = table.stuff_indices()
        self.metric = PanopticQuality(
            things=set(self.things), stuffs=set(self.stuffs), allow_unknown_preds_category=True
        )
        self.count = 0

    def update(self, pred: PanopticMap, target: PanopticMap) -> None:
        pred = align_to(pred, target, self.table)
        crowd = np.array(self.table.isthing_lut())[target.category] & (target.instance == 0)
        target_category = np.where(crowd, 0, target.category)
        gt = PanopticMap(target_category, target.instance, self.table)
        self.metric.update(panoptic_tensor(pred)[None], panoptic_tensor(gt)[None])  # 1 H W 2
        self.count += 1

    def compute(self) -> dict[str, float]:
        """``pq``, ``sq``, ``rq`` over all categories seen, and ``pq_things``, ``pq_stuff``, ``n``.

        A value is NaN when no category of its kind occurs in predictions or targets.
        """
        m = self.metric
        tp, fp, fn = m.true_positives.double(), m.false_positives.double(), m.false_negatives.double()
        seen = (tp + 0.5 * fp + 0.5 * fn) > 0  # continuous ids: sorted things, then sorted stuffs
        sq = torch.where(tp > 0, m.iou_sum.double() / tp.clamp(min=1), torch.zeros_like(tp))
        rq = torch.where(seen, tp / (tp + 0.5 * fp + 0.5 * fn).clamp(min=1e-12), torch.zeros_like(tp))
        pq = sq * rq
        is_thing = torch.arange(len(tp)) < len(self.things)

        def mean(values: torch.Tensor, mask: torch.Tensor) -> float:
            return float(values[mask].mean()) if bool(mask.any()) else float("nan")

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
