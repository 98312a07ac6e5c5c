"""scripts/relation_probe.py: colour centroids, the relation rule, prompt pairs, the mean-picture probe."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

from relation_probe import WORDS, colour_centroid, holds, mean_picture_offsets, paired_items, relation_prompt

from pandiff.world.generator import THING_COLORS, make_scene, spatial_relation, things_mix


def test_colour_centroids_of_a_hand_made_picture():
    picture = np.zeros((32, 32, 3), np.uint8)
    picture[4:8, 2:6] = THING_COLORS["red"]  # centre (4, 6) in pixel units (+0.5 per pixel centre)
    picture[20:30, 24:28] = THING_COLORS["blue"]  # centre (26, 25)
    assert colour_centroid(picture, "red") == pytest.approx((4.0, 6.0), abs=1e-3)
    assert colour_centroid(picture, "blue") == pytest.approx((26.0, 25.0), abs=1e-3)
    # Near colours count with a lower weight: a dimmer red square pulls the centroid towards it.
    picture[4:8, 26:30] = np.array(THING_COLORS["red"]) * 0.8
    x, y = colour_centroid(picture, "red")
    assert 4.0 < x < 28.0 and y == pytest.approx(6.0, abs=1e-3)


def test_relation_rule_agrees_with_the_worlds_captions():
    assert holds("left of", (3, 9), (10, 1)) and not holds("right of", (3, 9), (10, 1))
    assert holds("above", (5, 2), (5, 20)) and holds("below", (5, 20), (5, 2))
    for index in range(40):
        spec = make_scene(2, index, 64, mix=things_mix("2:1")).spec
        rel = spec["relations"][0]
        a, b = (spec["things"][rel[k]]["centroid"] for k in ("subject", "object"))
        assert holds(rel["relation"], a, b)
        assert spatial_relation(np.array(a), np.array(b)) == rel["relation"]


def test_prompts_and_items():
    assert relation_prompt(("red", "circle"), "left of", ("blue", "square")) == (
        "a red circle to the left of a blue square on the sand"
    )
    assert set(WORDS) == {"left of", "right of", "above", "below"}
    specs = {i: make_scene(5, i, 64).spec for i in range(30)}
    items = paired_items(specs, 3)
    assert 1 <= len(items) <= 3
    for a, b, relation in items:
        assert a["category"] != b["category"] and relation in WORDS


def test_mean_picture_probe_runs_on_a_tiny_model(tiny_pipeline_dir):
    from pandiff.pipeline import PanopticDiffusionPipeline

    pipe = PanopticDiffusionPipeline.from_pretrained(tiny_pipeline_dir)
    out = mean_picture_offsets(pipe, pairs=(("red", "circle", "blue", "square"),), n=2)
    assert set(out) == {("red circle / blue square", r) for r in WORDS}
    side = pipe.model.config.latent_size
    for dx, dy in out.values():
        assert np.isfinite(dx) and np.isfinite(dy) and abs(dx) < side and abs(dy) < side
    assert mean_picture_offsets(pipe, pairs=(("red", "circle", "blue", "square"),), n=2) == out  # seeded
