"""Data: category tables, panoptic maps and their analog bits, COCO panoptic, feature shards
(the built-in world is :mod:`pandiff.world`)."""
