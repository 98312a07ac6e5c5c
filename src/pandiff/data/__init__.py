"""Data: category tables, panoptic maps and their analog bits, COCO panoptic, the built-in world."""
