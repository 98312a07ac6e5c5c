"""scripts/text_binding_probe.py: its order score, its examples and its probe's shapes."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

from text_binding_probe import COLOURS, SHAPES, LayoutProbe, examples, order_accuracy, records, text_features


def test_order_accuracy_on_hand_made_layouts():
    target = torch.tensor([[[0.2, 0.5], [0.8, 0.5]], [[0.5, 0.9], [0.5, 0.1]], [[0.1, 0.1], [0.3, 0.9]]])
    # scene 0: x axis, first left; scene 1: y axis, first below; scene 2: y axis (0.8 > 0.2), first above
    right = torch.tensor([[[0.0, 0.0], [1.0, 0.0]], [[0.0, 1.0], [0.0, 0.0]], [[0.9, 0.0], [0.0, 0.5]]])
    assert order_accuracy(right, target) == 1.0  # scene 2's x order is wrong but x is not its axis
    assert order_accuracy(right.flip(1), target) == 0.0
    half = right.clone()
    half[1] = half[1].flip(0)
    assert abs(order_accuracy(half, target) - 2 / 3) < 1e-6


def test_examples_leave_out_equal_things_and_match_captions():
    recs = records(7, 40, workers=1)
    caps, queries, targets = examples(recs, torch.Generator().manual_seed(0))
    kept = [r for r in recs if r["things"][0][:2] != r["things"][1][:2]]
    assert 0 < len(kept) < len(recs) and len(caps) == len(kept) == len(queries) == len(targets)
    for cap, q, r in zip(caps, queries.tolist(), kept):
        assert cap in r["captions"]
        (ca, sa, *_), (cb, sb, *_) = r["things"]
        assert q == [COLOURS.index(ca) * 5 + SHAPES.index(sa), COLOURS.index(cb) * 5 + SHAPES.index(sb)]
        assert ca in cap and cb in cap  # both colours are named
    assert targets.shape == (len(caps), 2, 2) and 0 < targets.min() and targets.max() < 1
    all_caps, _, _ = examples(recs, torch.Generator().manual_seed(0), all_captions=True)
    assert len(all_caps) == 3 * len(kept)


def test_probe_maps_tokens_and_queries_to_two_centroids_and_learns():
    torch.manual_seed(0)
    probe = LayoutProbe(text_dim=8, length=6, dim=32)
    text, queries = torch.randn(16, 6, 8), torch.randint(0, 40, (16, 2))
    assert probe(text, queries).shape == (16, 2, 2)
    target = torch.rand(16, 2, 2)
    opt = torch.optim.AdamW(probe.parameters(), 1e-2)
    first = torch.nn.functional.mse_loss(probe(text, queries), target).item()
    for _ in range(60):
        loss = torch.nn.functional.mse_loss(probe(text, queries), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.5 * first


def test_last_layer_features_are_the_ones_pandiff_trains_on():
    from pandiff.encoders.text import load_text_encoder

    encoder = load_text_encoder("minilm")
    caps = ["a red circle to the left of a blue star on the grass.", "two green crosses on the sand."]
    last = text_features(encoder, caps, "last")
    assert last.shape == (2, encoder.max_length, 384) and last.dtype == torch.float16
    torch.testing.assert_close(last.float(), encoder.encode(caps), atol=2e-3, rtol=2e-3)
    both = text_features(encoder, caps, "embeddings+last")
    assert both.shape == (2, encoder.max_length, 768) and torch.equal(both[..., 384:], last)
    pooled = text_features(encoder, caps, "pooled")
    assert torch.equal(pooled[:, 0], pooled[:, -1])  # one vector repeated: no word order
    assert not torch.allclose(pooled[:, 0].float(), last[:, 0].float())
