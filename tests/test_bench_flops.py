"""The FLOP counter of benchmarks/bench_train.py against hand-counted tiny models."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from bench_train import training_flops

from pandiff.model import pdm_from_preset
from pandiff.model.pdm import PDMTwoStream

# A tiny image-only U-ViT: latents 4x8x8 in patches of 2 -> N = 16 image tokens; D = 32, MLP 128;
# depth 2 = 1 in-block, 1 mid-block, 1 out-block (with a 2D -> D skip Linear); text 4 x 16.
TINY = {
    "latent_size": 8,
    "patch_size": 2,
    "embed_dim": 32,
    "depth": 2,
    "num_heads": 2,
    "text_dim": 16,
    "text_len": 4,
}
C, S, P, D, L, TD = 4, 8, 2, 32, 4, 16
N = (S // P) ** 2  # 16 image tokens
SEQ = 1 + L + N  # time + text + image = 21 tokens


def linear(rows: int, d_in: int, d_out: int) -> int:
    return 2 * rows * d_in * d_out


def conv(k: int, c_in: int, c_out: int, positions: int) -> int:
    return 2 * k * k * c_in * c_out * positions


def block_linears(n: int) -> int:
    """qkv, proj, fc1, fc2 of one block over n tokens (no skip Linear)."""
    return linear(n, D, 3 * D) + linear(n, D, D) + linear(n, D, 4 * D) + linear(n, 4 * D, D)


def attention(n: int) -> int:
    return 2 * 2 * n * n * D  # Q K^T and A V over all heads


def tiny_uvit():
    return pdm_from_preset("world-s", "image-only", **TINY)


def test_forward_and_training_flops_of_a_tiny_uvit_match_a_hand_count():
    patch = conv(P, C, D, N)  # 16384
    context = linear(L, TD, D)  # 4096
    blocks = 3 * (block_linears(SEQ) + attention(SEQ)) + linear(SEQ, 2 * D, D)  # + out-block skip
    head = linear(N, D, P * P * C) + conv(3, C, C, S * S)  # decoder_pred + 3x3 final_layer
    forward = patch + context + blocks + head
    assert forward == 1_858_944
    # Everything trainable: 3x, except the two embeddings fed by data (no input gradient): 2x.
    training = 3 * forward - patch - context
    assert training == 5_556_352

    count = training_flops(tiny_uvit(), batch_size=1)
    assert (count.forward, count.training, count.tokens) == (forward, training, SEQ)
    # Every term is per sample; the real (non-meta) pass counts the same.
    batch = training_flops(tiny_uvit(), batch_size=5, device=None)
    assert (batch.forward, batch.training, batch.tokens) == (5 * forward, 5 * training, SEQ)


def test_a_frozen_model_counts_its_forward_only():
    model = tiny_uvit().requires_grad_(False)
    count = training_flops(model)
    assert count.training == count.forward == 1_858_944


def test_two_stream_counts_the_frozen_image_stream_where_gradient_flows():
    map_bits = 3  # patch factor 1: map 3 x 8 x 8 in patches of 2, N map tokens
    model = PDMTwoStream.from_image_stream(tiny_uvit(), map_bits=map_bits, patch_factor=1)
    g = SEQ + 1 + N  # the map stream's sequence: image-stream tokens + map time + map patches

    # Frozen image stream. Embeddings and the first in-block see no gradient: forward only.
    # After it, every image-stream matmul carries the zero_projs' gradient back: Linear/Conv 2x
    # (activation gradient only), attention 3x (both operands are activations).
    image_embed = conv(P, C, D, N) + linear(L, TD, D)
    image_block0 = block_linears(SEQ) + attention(SEQ)
    image_rest = 2 * (2 * block_linears(SEQ) + linear(SEQ, 2 * D, D)) + 3 * 2 * attention(SEQ)
    image_head = 2 * (linear(N, D, P * P * C) + conv(3, C, C, S * S))
    # Trainable map stream: 3x, except its embeddings fed by data (sinusoid, map bits): 2x.
    map_embed = 2 * (linear(1, D, D) + conv(P, map_bits, D, N))
    map_blocks = 3 * (3 * (block_linears(g) + attention(g)) + linear(g, 2 * D, D))
    map_head = 3 * (linear(N, D, P * P * map_bits) + conv(3, map_bits, map_bits, S * S))
    zero_projs = 3 * 3 * linear(SEQ, D, D)  # one per block, on the image-stream positions
    training = (
        image_embed + image_block0 + image_rest + image_head + map_embed + map_blocks + map_head + zero_projs
    )

    forward = (
        image_embed
        + 3 * (block_linears(SEQ) + attention(SEQ))
        + linear(SEQ, 2 * D, D)
        + linear(N, D, P * P * C)
        + conv(3, C, C, S * S)
        + linear(1, D, D)
        + conv(P, map_bits, D, N)
        + 3 * (block_linears(g) + attention(g))
        + linear(g, 2 * D, D)
        + linear(N, D, P * P * map_bits)
        + conv(3, map_bits, map_bits, S * S)
        + 3 * linear(SEQ, D, D)
    )
    count = training_flops(model)
    assert (count.forward, count.training, count.tokens) == (forward, training, g)

    # Issue #22's convention: the frozen image stream counts its forward only (no activation
    # gradients through it); the trainable map stream and zero_projs are counted as before.
    image_forward = (
        image_embed
        + 3 * (block_linears(SEQ) + attention(SEQ))
        + linear(SEQ, 2 * D, D)
        + linear(N, D, P * P * C)
        + conv(3, C, C, S * S)
    )
    frozen_forward_only = image_forward + map_embed + map_blocks + map_head + zero_projs
    lean = training_flops(model, frozen_backward=False)
    assert (lean.forward, lean.training, lean.tokens) == (forward, frozen_forward_only, g)
    assert lean.training < count.training


def test_frozen_backward_changes_nothing_for_a_trainable_model():
    model = pdm_from_preset("world-s", "unified", map_bits=3, patch_factor=1, **TINY)
    assert training_flops(model, frozen_backward=False) == training_flops(model)


@pytest.mark.parametrize("variant", ["unified", "two-stream"])
def test_training_flops_equal_torchs_flop_counter_on_a_real_step(variant):
    """Cross-check with ``torch.utils.flop_counter`` over a real forward + backward (SDPA's math
    backend, whose matmuls torch counts; it does not count the fused CPU kernel)."""
    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    if variant == "unified":
        model = pdm_from_preset("world-s", "unified", map_bits=3, patch_factor=1, **TINY)
    else:
        model = PDMTwoStream.from_image_stream(tiny_uvit(), map_bits=3, patch_factor=1)
    model.train()
    g = torch.Generator().manual_seed(0)
    t = torch.full((2,), 500)
    image, text = torch.randn(2, C, S, S, generator=g), torch.randn(2, L, TD, generator=g)
    bits = torch.randn(2, 3, S, S, generator=g)
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        out = model(image, t, text, bits, t)
        forward = counter.get_total_flops()
        (out.image.square().mean() + out.map.square().mean()).backward()
    count = training_flops(model, batch_size=2)
    assert (count.forward, count.training) == (forward, counter.get_total_flops())


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
