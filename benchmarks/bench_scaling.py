"""Where a PDM step's time goes as the map and the image grow (issue #8).

Usage::

    python benchmarks/bench_scaling.py [--batch 16] [--repeats 5] [--precision bf16|fp32]
        [--modes train sample] [--paper] [--no-append] [--note TEXT]

Scenarios (unified PDM, world-s widths: D=192, 8+1 blocks, 3 heads, MiniLM 24x384 text):

* **map resolution**: latents 4x16x16 in 2x2 patches, patch factor f = 1 / 2 / 4, so the map is
  16 / 32 / 64 px in 2f x 2f patches. The token count stays 154; only the map's patch embedding
  and head grow (its head emits (2f)^2 x 7 values per token, then a 3x3 conv at map resolution).
* **image tokens**: f = 4, latents 8 / 16 / 32 px, i.e. 16 / 64 / 256 image tokens and as many
  map tokens (58 / 154 / 538 tokens in all): attention grows with the square of the tokens.
* ``--paper`` adds U-ViT-S/2 at the paper's COCO size (D=512, 12+1 blocks, 4x32x32 latents,
  f = 2, 64 px maps x 11 bits, CLIP 77x768: 591 tokens).

For each scenario and mode the **whole** model step is timed (``train``: forward, a squared
loss on both outputs, backward; ``sample``: a forward under ``torch.no_grad``, as a sampler
runs it), then the model's own submodules are timed alone on inputs of the shapes they see
inside that step, in the same mode, and multiplied by how often the step runs them:

* attention core: ``Attention.attend`` (``softmax(Q K^T) V``), x blocks;
* attention projections: the ``qkv`` and ``proj`` linears, x blocks;
* MLP: ``fc1``, GELU, ``fc2``, x blocks;
* norms + skips: the two LayerNorms per block and the out-blocks' ``skip_linear`` on the
  concatenated long skip;
* image in/out: ``embed_image`` (patch embedding, time and text tokens) and ``decode_image``
  (final norm, linear head, 3x3 conv);
* map in/out: ``embed_map`` and ``decode_map`` (linear head, 3x3 conv, tanh);
* other: whole minus the parts (residual adds, concatenations, slicing, the loss, autograd
  bookkeeping; negative when the parts, timed alone, ran slower than inside the step).

Every time is the median of ``--repeats`` after one warm-up. The table is printed as Markdown and
appended to ``benchmarks/RESULTS.md`` with the machine's description unless ``--no-append``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from contextlib import nullcontext

import torch
from bench_common import machine_description, publish

PARTS = ("attention core", "attn qkv+proj", "MLP", "norms+skips", "image in/out", "map in/out")


def scenarios(paper: bool) -> list[tuple[str, dict]]:
    """(label, PDMUnified config) of every scenario."""
    from pandiff.model.presets import PRESETS

    world_s = PRESETS["world-s"]  # latents 4x16x16 in 2x2 patches
    rows = [(f"map f={f}", {**world_s, "patch_factor": f}) for f in (1, 2, 4)]
    rows += [(f"image {s}px", {**world_s, "latent_size": s, "patch_factor": 4}) for s in (8, 32)]
    if paper:
        rows.append(("uvit-s2 (paper)", dict(PRESETS["uvit-s2"])))
    return rows


class Timer:
    """Median wall time of a callable in one mode: ``train`` (forward + backward) or ``sample``."""

    def __init__(self, mode: str, precision: str, repeats: int) -> None:
        self.mode, self.repeats = mode, repeats
        self.dtype = torch.bfloat16 if precision == "bf16" else torch.float32  # what matmuls emit
        self.autocast = torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16" else nullcontext()

    def __call__(self, fn: Callable[[], torch.Tensor | tuple]) -> float:
        seconds = []
        for i in range(self.repeats + 1):
            start = time.perf_counter()
            if self.mode == "train":
                with self.autocast:
                    out = fn()
                outs = out if isinstance(out, tuple) else (out,)
                sum(o.float().square().mean() for o in outs).backward()
            else:
                with torch.no_grad(), self.autocast:
                    fn()
            if i:
                seconds.append(time.perf_counter() - start)
        return statistics.median(seconds)


def leaf(*shape: int, grad: bool, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.randn(*shape, dtype=dtype).requires_grad_(grad)


def measure(config: dict, batch: int, timer: Timer) -> dict[str, float]:
    """Seconds of the whole step and of each part for one scenario."""
    from pandiff.model import PDMUnified

    torch.manual_seed(0)
    model = PDMUnified(**config).train(timer.mode == "train")
    cfg = model.config
    grad = timer.mode == "train"
    side = cfg.patch_factor * cfg.latent_size
    image = torch.randn(batch, cfg.latent_channels, cfg.latent_size, cfg.latent_size)
    bits = torch.rand(batch, cfg.map_bits, side, side) * 2 - 1
    text = torch.randn(batch, cfg.text_len, cfg.text_dim)
    t = torch.full((batch,), 500)
    n_img = model.num_image_tokens
    n = model.num_prefix_tokens + n_img + 1 + n_img
    d, heads = cfg.embed_dim, cfg.num_heads
    blocks = [*model.in_blocks, model.mid_block, *model.out_blocks]
    blk, skip_blk = model.in_blocks[0], model.out_blocks[0]
    # Inside the step the residual stream is fp32 (position embeddings and residual adds are fp32
    # under autocast) but Q, K, V and the attention output come out of bf16 matmuls.
    x = leaf(batch, n, d, grad=grad)
    qkv = [leaf(batch, heads, n, d // heads, grad=grad, dtype=timer.dtype) for _ in range(3)]
    attn_out = leaf(batch, n, d, grad=grad, dtype=timer.dtype)
    skip = leaf(batch, n, d, grad=grad)
    img_tokens = leaf(batch, n_img, d, grad=grad)

    def whole():
        out = model(image, t, text, bits, t)
        return out.image, out.map

    seconds = {"whole": timer(whole)}
    seconds["attention core"] = len(blocks) * timer(lambda: blk.attn.attend(*qkv))
    seconds["attn qkv+proj"] = len(blocks) * (
        timer(lambda: blk.attn.qkv(x)) + timer(lambda: blk.attn.proj(attn_out))
    )
    seconds["MLP"] = len(blocks) * timer(lambda: blk.mlp(x))
    seconds["norms+skips"] = 2 * len(blocks) * timer(lambda: blk.norm1(x)) + len(model.out_blocks) * timer(
        lambda: skip_blk.skip_linear(torch.cat([x, skip], dim=-1))
    )
    seconds["image in/out"] = timer(lambda: model.embed_image(image, t, text)) + timer(
        lambda: model.decode_image(img_tokens)
    )
    seconds["map in/out"] = timer(lambda: model.embed_map(bits, t)) + timer(
        lambda: model.decode_map(img_tokens)
    )
    seconds["tokens"] = n
    seconds["map side"] = side
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--precision", choices=("bf16", "fp32"), default="bf16")
    parser.add_argument("--modes", nargs="+", choices=("train", "sample"), default=["train", "sample"])
    parser.add_argument("--paper", action="store_true", help="add U-ViT-S/2 at the paper's COCO size")
    parser.add_argument("--no-append", action="store_true", help="print only; do not write RESULTS.md")
    parser.add_argument("--note", default="", help="a remark stored with the results")
    args = parser.parse_args()
    print(f"Machine: {machine_description()}", flush=True)

    header = (
        "| mode | scenario | tokens | map px | ms / step | ms / sample | " + " | ".join(PARTS) + " | other |"
    )
    lines = [
        (
            f"Unified PDM, batch {args.batch}, {args.precision}{' autocast' if args.precision == 'bf16' else ''}; "
            "train = forward + backward, sample = one forward without gradients. Parts: share of the "
            "whole step, from the model's submodules timed alone at the step's shapes "
            "(see bench_scaling.py)."
        ),
        "",
        header,
        "|---|---|---:|---:|---:|---:|" + "---:|" * (len(PARTS) + 1),
    ]
    for mode in args.modes:
        timer = Timer(mode, args.precision, args.repeats)
        for label, config in scenarios(args.paper):
            s = measure(config, args.batch, timer)
            whole = s["whole"]
            other = whole - sum(s[p] for p in PARTS)
            shares = " | ".join(f"{100 * s[p] / whole:.0f}%" for p in PARTS)
            row = (
                f"| {mode} | {label} | {s['tokens']} | {s['map side']} | {1000 * whole:.1f} "
                f"| {1000 * whole / args.batch:.2f} | {shares} | {100 * other / whole:.0f}% |"
            )
            print(row, flush=True)
            lines.append(row)
    publish(
        "bench_scaling.py: cost per step by map resolution and image tokens",
        lines,
        not args.no_append,
        args.note,
    )


if __name__ == "__main__":
    main()
