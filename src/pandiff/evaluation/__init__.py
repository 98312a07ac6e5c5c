"""Evaluation: the paper's metrics, and the ``pandiff evaluate`` report (the built-in world's
checks and judge live in :mod:`pandiff.world`).

* :mod:`~pandiff.evaluation.mcd`: Mean Count Difference of maps (the paper's metric).
* :mod:`~pandiff.evaluation.fid`: FID and KID (torchmetrics) on Inception or on any extractor.
* :mod:`~pandiff.evaluation.clip_score`: CLIP score (torchmetrics) from a local CLIP.
* :mod:`~pandiff.evaluation.panoptic_quality`: PQ (torchmetrics) and semantic mIoU of maps.
* :mod:`~pandiff.evaluation.evaluate`: ``pandiff evaluate``, which samples a model and writes a
  JSON report with a Markdown table (:mod:`~pandiff.evaluation.report`).
"""
