"""Evaluation: the paper's metrics, and exact checks on the built-in world.

* :mod:`~pandiff.evaluation.mcd`: Mean Count Difference of maps (the paper's metric).
* :mod:`~pandiff.evaluation.fid`: FID and KID (torchmetrics) on Inception or on any extractor.
* :mod:`~pandiff.evaluation.clip_score`: CLIP score (torchmetrics) from a local CLIP.
* :mod:`~pandiff.evaluation.panoptic_quality`: PQ (torchmetrics) and semantic mIoU of maps.
* :mod:`~pandiff.evaluation.world_checks`: prompt adherence and colour accuracy against the
  world's scene specs.
* :mod:`~pandiff.evaluation.judge` / :mod:`~pandiff.evaluation.judge_train`: the world's judge
  segmentation network (``pandiff train-judge``) and the downstream proof.
* :mod:`~pandiff.evaluation.evaluate`: ``pandiff evaluate``, which samples a model and writes a
  JSON report with a Markdown table (:mod:`~pandiff.evaluation.report`).
"""
