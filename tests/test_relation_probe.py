"""scripts/relation_probe.py: colour centroids, the relation rule, prompt pairs, the mean-picture probe."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

from relation_probe import (
    WORDS,
    colour_centroid,
    holds,
    mean_picture_offsets,
    paired_items,
    paired_probe,
    relation_prompt,
)

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


# Fakes that do or do not read the relation word: the probes must tell them apart.
SHIFT = {"left": (-1, 0), "right": (1, 0), "above": (0, -1), "below": (0, 1)}


def _layout(prompt: str, reads: bool) -> tuple[tuple[int, int], tuple[int, int]]:
    """Pixel corners (x, y) of the first and the second named thing on a 32 px picture: placed by
    the relation word, or always first top-left of second when the words are ignored."""
    dx, dy = next(v for k, v in SHIFT.items() if k in prompt.split()) if reads else (-1, -1)
    return (12 + 8 * dx, 12 + 8 * dy), (12 - 8 * dx, 12 - 8 * dy)


def _mean_pipe(reads: bool):
    seen = []

    class Model(torch.nn.Module):
        config = SimpleNamespace(latent_size=32, latent_channels=3, map_bits=2)
        map_size = 32

        def forward(self, image, t, text, maps, t_map):
            picture = torch.full((image.shape[0], 3, 32, 32), 0.5)  # grey, in 0-1
            (xa, ya), (xb, yb) = _layout(seen[-1], reads)
            picture[:, :, ya : ya + 8, xa : xa + 8] = torch.tensor(THING_COLORS["red"]).view(3, 1, 1) / 255
            picture[:, :, yb : yb + 8, xb : xb + 8] = torch.tensor(THING_COLORS["blue"]).view(3, 1, 1) / 255
            return SimpleNamespace(image=picture * 2 - 1)

    class Text:
        def encode(self, prompts):
            seen.extend(prompts)
            return torch.zeros(len(prompts), 3, 4)

    return SimpleNamespace(model=Model(), text_encoder=Text())


def test_mean_picture_probe_tells_a_model_that_reads_relations_from_one_that_does_not():
    pairs = (("red", "circle", "blue", "square"),)
    reads = mean_picture_offsets(_mean_pipe(True), pairs=pairs, n=2)
    key = "red circle / blue square"
    assert reads[(key, "left of")] == pytest.approx((-16, 0), abs=0.01)
    assert reads[(key, "right of")] == pytest.approx((16, 0), abs=0.01)
    assert reads[(key, "above")] == pytest.approx((0, -16), abs=0.01)
    assert reads[(key, "below")] == pytest.approx((0, 16), abs=0.01)
    ignores = mean_picture_offsets(_mean_pipe(False), pairs=pairs, n=2)
    assert all(v == pytest.approx((-16, -16), abs=0.01) for v in ignores.values())


NAMES = ["circle", "square", "triangle", "star", "cross"]


class _PairedPipe:
    """Draws each prompt's two things into a category map, by :func:`_layout`."""

    table = SimpleNamespace(index_of_name=lambda name: NAMES.index(name) + 1)

    def __init__(self, reads: bool, draw: bool = True) -> None:
        self.reads, self.draw = reads, draw

    def __call__(self, prompts, generator=None, redraw_image=True):
        assert redraw_image is False and len(generator) == len(prompts)
        maps = []
        for prompt in prompts:
            words = prompt.split()  # "a red circle <relation> a blue square on the grass"
            category = np.zeros((32, 32), int)
            if self.draw:
                (xa, ya), (xb, yb) = _layout(prompt, self.reads)
                category[ya : ya + 8, xa : xa + 8] = NAMES.index(words[2]) + 1
                category[yb : yb + 8, xb : xb + 8] = NAMES.index(words[-4]) + 1
            maps.append(SimpleNamespace(category=category))
        return SimpleNamespace(maps=maps)


def test_paired_probe_counts_both_held_for_a_reader_and_exactly_one_for_an_ignorer():
    items = [
        ({"color": "red", "category": "circle"}, {"color": "blue", "category": "square"}, "left of"),
        ({"color": "green", "category": "star"}, {"color": "pink", "category": "cross"}, "above"),
        ({"color": "white", "category": "triangle"}, {"color": "red", "category": "circle"}, "below"),
    ]
    for reads, both, one in ((True, 3, 0), (False, 0, 3)):
        stats = paired_probe(_PairedPipe(reads), items, batch=2)
        assert (stats["pairs"], stats["both_hold"], stats["exactly_one_holds"]) == (3, both, one)
        assert stats["relation_n"] == stats["inverse_n"] == 3
    # Things missing from the map leave their pair out.
    assert paired_probe(_PairedPipe(True, draw=False), items)["pairs"] == 0
