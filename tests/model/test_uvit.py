"""The image-only U-ViT: the public checkpoint layout, its numerics, and safe checkpoint loading."""

import math

import pytest
import torch
import torch.nn.functional as F

from pandiff.errors import ConfigError, WeightsError
from pandiff.model import PDMTwoStream, PDMUnified, UViT, load_uvit_checkpoint, timestep_embedding

TINY = {
    "latent_channels": 4,
    "latent_size": 8,
    "patch_size": 2,
    "embed_dim": 32,
    "depth": 2,
    "num_heads": 2,
    "text_dim": 12,
    "text_len": 5,
}
D, C, P, L, T_DIM = 32, 4, 2, 5, 12
N = (8 // 2) ** 2


def uvit_t2i_layout() -> dict[str, tuple[int, ...]]:
    """Key -> shape of a U-ViT t2i checkpoint (libs/uvit_t2i.py, mlp_time_embed=False, conv=True)
    with the TINY sizes, written out from U-ViT's definition rather than read from our model."""
    block = {
        "norm1.weight": (D,),
        "norm1.bias": (D,),
        "attn.qkv.weight": (3 * D, D),  # qkv_bias=False: no attn.qkv.bias
        "attn.proj.weight": (D, D),
        "attn.proj.bias": (D,),
        "norm2.weight": (D,),
        "norm2.bias": (D,),
        "mlp.fc1.weight": (4 * D, D),
        "mlp.fc1.bias": (4 * D,),
        "mlp.fc2.weight": (D, 4 * D),
        "mlp.fc2.bias": (D,),
    }
    keys = {
        "pos_embed": (1, 1 + L + N, D),
        "patch_embed.proj.weight": (D, C, P, P),
        "patch_embed.proj.bias": (D,),
        "context_embed.weight": (D, T_DIM),
        "context_embed.bias": (D,),
    }
    for prefix in ("in_blocks.0", "mid_block", "out_blocks.0"):
        keys.update({f"{prefix}.{k}": s for k, s in block.items()})
    keys.update({"out_blocks.0.skip_linear.weight": (D, 2 * D), "out_blocks.0.skip_linear.bias": (D,)})
    keys.update(
        {
            "norm.weight": (D,),
            "norm.bias": (D,),
            "decoder_pred.weight": (P * P * C, D),
            "decoder_pred.bias": (P * P * C,),
            "final_layer.weight": (C, C, 3, 3),
            "final_layer.bias": (C,),
        }
    )
    return keys


def random_checkpoint(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(s, generator=g) * 0.1 for k, s in uvit_t2i_layout().items()}


def reference_uvit(sd: dict[str, torch.Tensor], x, t, context, heads: int = 2) -> torch.Tensor:
    """U-ViT's t2i forward written functionally from the paper/code conventions (einops patterns
    'B C (h p1) (w p2)' and 'B L (K H D)'), independent of pandiff's modules."""

    def lin(v, name):
        return F.linear(v, sd[f"{name}.weight"], sd.get(f"{name}.bias"))

    def block(v, pre, skip=None):
        if skip is not None:
            v = lin(torch.cat([v, skip], -1), f"{pre}.skip_linear")
        h = F.layer_norm(v, (D,), sd[f"{pre}.norm1.weight"], sd[f"{pre}.norm1.bias"])
        qkv = lin(h, f"{pre}.attn.qkv").reshape(v.shape[0], v.shape[1], 3, heads, D // heads)
        q, k, w = qkv.permute(2, 0, 3, 1, 4)
        att = (q @ k.transpose(-1, -2) / math.sqrt(D // heads)).softmax(-1) @ w
        v = v + lin(att.transpose(1, 2).reshape(v.shape), f"{pre}.attn.proj")
        h = F.layer_norm(v, (D,), sd[f"{pre}.norm2.weight"], sd[f"{pre}.norm2.bias"])
        return v + lin(F.gelu(lin(h, f"{pre}.mlp.fc1")), f"{pre}.mlp.fc2")

    half = D // 2
    freqs = torch.exp(-math.log(10000) * torch.arange(half) / half)
    time = torch.cat([torch.cos(t[:, None] * freqs), torch.sin(t[:, None] * freqs)], -1)
    patches = F.conv2d(x, sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"], stride=P)
    tokens = torch.cat([time[:, None], lin(context, "context_embed"), patches.flatten(2).transpose(1, 2)], 1)
    v = tokens + sd["pos_embed"]
    skip = block(v, "in_blocks.0")
    v = block(block(skip, "mid_block"), "out_blocks.0", skip)
    v = lin(F.layer_norm(v, (D,), sd["norm.weight"], sd["norm.bias"]), "decoder_pred")[:, 1 + L :]
    b, side = x.shape[0], 8 // P
    img = v.reshape(b, side, side, P, P, C).permute(0, 5, 1, 3, 2, 4).reshape(b, C, 8, 8)
    return F.conv2d(img, sd["final_layer.weight"], sd["final_layer.bias"], padding=1)


def test_state_dict_keys_are_exactly_the_uvit_checkpoint_layout():
    model = UViT(**TINY)
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert ours == uvit_t2i_layout()


def test_uvit_checkpoint_loads_strictly_and_reproduces_uvit(tmp_path):
    sd = random_checkpoint()
    path = tmp_path / "nnet_ema.pth"
    torch.save(sd, path)
    model = UViT(**TINY).eval()
    assert load_uvit_checkpoint(model, path) == []
    assert torch.equal(model.context_embed.weight, sd["context_embed.weight"])
    x, ctx, t = torch.randn(2, C, 8, 8), torch.randn(2, L, T_DIM), torch.tensor([3.0, 999.0])
    with torch.no_grad():
        out = model(x, t, ctx)
        ref = reference_uvit(sd, x, t, ctx)
    assert out.map is None
    torch.testing.assert_close(out.image, ref, rtol=1e-4, atol=1e-5)


def test_uvit_checkpoint_from_safetensors(tmp_path):
    from safetensors.torch import save_file

    sd = random_checkpoint(1)
    save_file(sd, tmp_path / "uvit.safetensors")
    model = UViT(**TINY)
    load_uvit_checkpoint(model, tmp_path / "uvit.safetensors")
    assert torch.equal(model.pos_embed, sd["pos_embed"])


def test_uvit_checkpoint_initialises_unified_image_part_and_two_stream_image_stream(tmp_path):
    sd = random_checkpoint(2)
    torch.save(sd, tmp_path / "u.pth")
    unified = PDMUnified(**TINY, map_bits=3, patch_factor=2)
    with pytest.raises(WeightsError, match="missing keys: map_"):
        load_uvit_checkpoint(unified, tmp_path / "u.pth")
    missing = load_uvit_checkpoint(unified, tmp_path / "u.pth", strict=False)
    assert missing and all(k.startswith("map_") for k in missing)
    assert torch.equal(unified.out_blocks[0].skip_linear.weight, sd["out_blocks.0.skip_linear.weight"])
    two = PDMTwoStream(**TINY, map_bits=3, patch_factor=2)
    assert load_uvit_checkpoint(two, tmp_path / "u.pth") == []
    assert torch.equal(two.image_stream.pos_embed, sd["pos_embed"])


class NotATensor:
    """A pickled object that ``weights_only=True`` must refuse to build."""


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "does not exist"),
        ({"pos_embed": NotATensor()}, "tensors-only"),
        (b"not a zip and not a pickle", "tensors-only"),
        ({"pos_embed": 3}, "state dict of tensors"),
        ("drop:norm.weight", "missing keys: norm.weight"),
        ("add:extra.weight", "unexpected keys: extra.weight"),
        ("shape:context_embed.weight", r"shape mismatches: context_embed.weight \(32, 13\)"),
    ],
)
def test_uvit_checkpoint_errors(tmp_path, content, message):
    path = tmp_path / "ckpt.pth"
    sd = random_checkpoint()
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif isinstance(content, dict):
        torch.save(content, path)
    elif isinstance(content, str):
        action, key = content.split(":")
        if action == "drop":
            del sd[key]
        elif action == "add":
            sd[key] = torch.zeros(2)
        else:
            sd[key] = torch.zeros(D, T_DIM + 1)
        torch.save(sd, path)
    with pytest.raises(WeightsError, match=message):
        load_uvit_checkpoint(UViT(**TINY), path)


CALLS: list[str] = []


def _record(tag: str) -> str:
    CALLS.append(tag)
    return tag


class RunsCodeWhenUnpickled:
    """The classic pickle exploit: unpickling calls an arbitrary function."""

    def __reduce__(self):
        return (_record, ("unpickled",))


def test_pickled_code_is_never_run(tmp_path):
    torch.save({"pos_embed": RunsCodeWhenUnpickled()}, tmp_path / "evil.pth")
    with pytest.raises(WeightsError, match="tensors-only"):
        load_uvit_checkpoint(UViT(**TINY), tmp_path / "evil.pth")
    assert CALLS == []
    torch.load(tmp_path / "evil.pth", weights_only=False)  # what an unsafe loader would have done
    assert CALLS == ["unpickled"]


def test_timestep_embedding_layout():
    emb = timestep_embedding(torch.tensor([0, 500]), 6)
    assert emb.shape == (2, 6)
    assert torch.equal(emb[0], torch.tensor([1.0, 1.0, 1.0, 0.0, 0.0, 0.0]))  # [cos, sin] at t = 0
    freqs = torch.exp(-math.log(10000.0) * torch.arange(3) / 3)
    torch.testing.assert_close(emb[1, 3:], torch.sin(500 * freqs))
    assert timestep_embedding(torch.tensor([1.0]), 5)[0, -1] == 0  # odd width: zero last column


def test_bad_inputs_and_config_give_config_errors():
    model = UViT(**TINY)
    x, ctx = torch.randn(1, C, 8, 8), torch.randn(1, L, T_DIM)
    with pytest.raises(ConfigError, match="text_len=5"):
        model(x, torch.tensor([1]), torch.randn(1, L + 1, T_DIM))
    with pytest.raises(ConfigError, match="image must have shape"):
        model(torch.randn(1, C, 16, 16), torch.tensor([1]), ctx)
    with pytest.raises(ConfigError, match="no map stream"):
        model(x, torch.tensor([1]), ctx, torch.zeros(1, 3, 16, 16))
    with pytest.raises(ConfigError, match="timestep_image"):
        model(x, torch.tensor([1, 2]), ctx)
    assert model(x, 10, ctx).image.shape == (1, C, 8, 8)  # a scalar timestep serves the batch
    with pytest.raises(ConfigError, match="even"):
        UViT(**{**TINY, "depth": 3})
    with pytest.raises(ConfigError, match="divisible"):
        UViT(**{**TINY, "num_heads": 3})


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_matmul_attention_matches_sdpa_values_and_gradients(dtype):
    from pandiff.model.uvit import matmul_attention

    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 17, 8, generator=g) * 2 for _ in range(3))
    ref = [t.clone().requires_grad_() for t in (q, k, v)]
    ours = [t.clone().to(dtype).requires_grad_() for t in (q, k, v)]
    want = F.scaled_dot_product_attention(*ref)
    got = matmul_attention(*ours)
    assert got.dtype == dtype
    tol = 1e-5 if dtype == torch.float32 else 3e-2
    assert torch.allclose(got.float(), want, atol=tol * 4, rtol=tol)
    upstream = torch.randn(want.shape, generator=g)
    want.backward(upstream)
    got.backward(upstream.to(dtype))
    for a, b in zip(ref, ours):
        assert torch.allclose(b.grad.float(), a.grad, atol=tol * 10, rtol=tol * 4)


def test_bf16_autocast_attention_on_cpu_takes_the_matmul_path_and_agrees_with_fp32(monkeypatch):
    from pandiff.model import uvit

    torch.manual_seed(0)
    attn = uvit.Attention(dim=32, num_heads=4)
    x = torch.randn(2, 10, 32)
    want = attn(x)
    calls = []
    original = uvit.matmul_attention
    monkeypatch.setattr(uvit, "matmul_attention", lambda *a: calls.append(1) or original(*a))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = attn(x)
    assert calls, "bf16 attention on the CPU should use matmul_attention"
    calls.clear()
    attn(x)  # fp32 keeps the fused SDPA kernel
    assert not calls
    assert got.dtype == torch.bfloat16
    assert (got.float() - want).abs().max() < 5e-2
