"""Can a model learn relations from the text encoder's token features?  (session 17, issue #17)

A small transformer reads a caption's token features plus one query token for a named thing (its
colour and shape) and predicts that thing's centroid: the layout a text-to-image model has to draw
at high noise. It trains on the captions of two-thing relation scenes (``make-world --things 2:1``)
and is scored on held-out scenes: is the predicted order of the two things along the axis where
they differ the picture's order?  Chance is 50%. Scenes whose two things share colour and shape
("two red circles, one above the other") are left out: their order is not in the words.

    python scripts/text_binding_probe.py [--features last|embeddings+last|pooled] [--steps 6000]

Session 17 (2 CPU cores, ~15 min): the last layer of MiniLM stays at chance for ~2500 steps of
batch 128, then reaches 98% by step 6000, so the features carry which thing the relation puts where.
Hand-written: a diagnostic, not a library feature; the text model is loaded as pandiff loads it.
"""

from __future__ import annotations

import argparse
import multiprocessing
import time

import torch
import torch.nn.functional as F
from torch import nn

from pandiff.world.generator import THING_COLORS, THING_SHAPES, make_scene, things_mix

COLOURS, SHAPES = list(THING_COLORS), list(THING_SHAPES)
_MIX = things_mix("2:1")


def scene_record(task: tuple[int, int]) -> dict:
    """Captions and ``(colour, shape, x, y)`` of each thing (centroid / picture side) of one scene."""
    seed, index = task
    spec = make_scene(seed, index, 64, mix=_MIX).spec
    things = [
        (t["color"], t["category"], t["centroid"][0] / 64, t["centroid"][1] / 64) for t in spec["things"]
    ]
    return {"captions": spec["captions"][:3], "things": things}


def records(seed: int, n: int, workers: int = 2) -> list[dict]:
    tasks = [(seed, i) for i in range(n)]
    if workers == 1:
        return [scene_record(t) for t in tasks]
    with multiprocessing.Pool(workers) as pool:
        return pool.map(scene_record, tasks, chunksize=256)


def examples(recs: list[dict], rng: torch.Generator, all_captions: bool = False):
    """Captions, query ids ``B 2`` (colour x 5 + shape) and targets ``B 2 2``; one random caption
    per scene (all three with ``all_captions``); scenes of two equal things left out."""
    caps, queries, targets = [], [], []
    for r in recs:
        (ca, sa, *pa), (cb, sb, *pb) = r["things"]
        if (ca, sa) == (cb, sb):
            continue
        chosen = (
            r["captions"] if all_captions else [r["captions"][int(torch.randint(3, (1,), generator=rng))]]
        )
        for cap in chosen:
            caps.append(cap)
            queries.append(
                [COLOURS.index(ca) * 5 + SHAPES.index(sa), COLOURS.index(cb) * 5 + SHAPES.index(sb)]
            )
            targets.append([pa, pb])
    return caps, torch.tensor(queries), torch.tensor(targets, dtype=torch.float32)


@torch.no_grad()
def text_features(encoder, captions: list[str], kind: str) -> torch.Tensor:
    """``N L D`` features in the encoder's own window ``L`` (24 tokens for MiniLM): the last layer
    (what pandiff trains on), the embedding layer concatenated with it, or the masked mean of the
    last layer repeated (no word order)."""
    length = encoder.max_length
    out = []
    for i in range(0, len(captions), 256):
        batch = encoder.tokenizer(
            captions[i : i + 256],
            padding="max_length",
            truncation=True,
            max_length=length,
            return_tensors="pt",
        )
        hidden = encoder.model(**batch, output_hidden_states=True).hidden_states
        if kind == "last":
            x = hidden[-1]
        elif kind == "embeddings+last":
            x = torch.cat([hidden[0], hidden[-1]], -1)
        else:
            mask = batch["attention_mask"][..., None].to(hidden[-1].dtype)
            x = ((hidden[-1] * mask).sum(1, keepdim=True) / mask.sum(1, keepdim=True)).expand(-1, length, -1)
        out.append(x.half())
    return torch.cat(out)


class LayoutProbe(nn.Module):
    """A 3-block transformer over ``[text tokens, 2 thing queries]``; each query -> its ``(x, y)``."""

    def __init__(self, text_dim: int, length: int = 24, dim: int = 128) -> None:
        super().__init__()
        self.text = nn.Linear(text_dim, dim)
        self.query = nn.Embedding(len(COLOURS) * len(SHAPES), dim)
        self.pos = nn.Parameter(torch.randn(1, length + 2, dim) * 0.02)
        layer = nn.TransformerEncoderLayer(dim, 4, 4 * dim, 0.0, batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, 3, enable_nested_tensor=False)
        self.out = nn.Linear(dim, 2)

    def forward(self, text: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
        h = torch.cat([self.text(text), self.query(queries)], 1) + self.pos
        return self.out(self.blocks(h)[:, -2:])


def order_accuracy(pred: torch.Tensor, target: torch.Tensor) -> float:
    """Share of scenes whose predicted order of the two things, along the axis where the true
    centroids differ most, is the true order."""
    d_true, d_pred = target[:, 0] - target[:, 1], pred[:, 0] - pred[:, 1]
    axis = d_true.abs().argmax(1, keepdim=True)
    return ((d_true.gather(1, axis) > 0) == (d_pred.gather(1, axis) > 0)).float().mean().item()


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--features", choices=("last", "embeddings+last", "pooled"), default="last")
    p.add_argument("--steps", type=int, default=6000)
    p.add_argument("--train-scenes", type=int, default=30000)
    p.add_argument("--val-scenes", type=int, default=1000)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    from pandiff.encoders.text import load_text_encoder

    torch.manual_seed(args.seed)
    rng = torch.Generator().manual_seed(args.seed)
    t0 = time.time()
    encoder = load_text_encoder("minilm")
    train_caps, train_q, train_y = examples(records(7, args.train_scenes), rng)
    val_caps, val_q, val_y = examples(records(8, args.val_scenes), rng)
    train_x = text_features(encoder, train_caps, args.features)
    val_x = text_features(encoder, val_caps, args.features).float()
    print(f"{len(train_caps)} train captions, {len(val_caps)} val scenes, features {tuple(train_x.shape[1:])}, "
          f"{time.time() - t0:.0f} s", flush=True)  # fmt: skip
    probe = LayoutProbe(train_x.shape[-1], length=train_x.shape[1])
    opt = torch.optim.AdamW(probe.parameters(), args.lr, weight_decay=0.01)
    print("| step | train loss | val order right |\n|---:|---:|---:|", flush=True)
    for step in range(1, args.steps + 1):
        j = torch.randint(0, len(train_caps), (args.batch,), generator=rng)
        loss = F.mse_loss(probe(train_x[j].float(), train_q[j]), train_y[j])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 500 == 0 or step == args.steps:
            probe.eval()
            with torch.no_grad():
                acc = order_accuracy(probe(val_x, val_q), val_y)
            probe.train()
            print(f"| {step} | {loss.item():.4f} | {acc:.3f} |", flush=True)
    print(f"{time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
