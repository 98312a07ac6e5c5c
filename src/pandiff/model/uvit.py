"""U-ViT (Bao et al., "All are Worth Words", CVPR 2023): building blocks and the image-only model.

Every input is a token: ``[time token, text tokens, image patch tokens]`` plus a learned position
embedding, run through ``depth // 2`` in-blocks, one mid-block and ``depth // 2`` out-blocks; out
block i first fuses its input with the output of in-block ``depth//2 - 1 - i`` (a long skip).

Module names follow the public U-ViT text-to-image checkpoints (``mscoco_uvit_small.pth``) so their
state dicts load with no missing or unexpected keys: ``pos_embed``, ``patch_embed.proj``,
``context_embed``, ``in_blocks.{i}`` / ``mid_block`` / ``out_blocks.{i}`` (``norm1``, ``attn.qkv``,
``attn.proj``, ``norm2``, ``mlp.fc1``, ``mlp.fc2``, out blocks also ``skip_linear``), ``norm``,
``decoder_pred``, ``final_layer``. ``time_embed`` is ``nn.Identity`` as in U-ViT's t2i configs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from diffusers.utils import BaseOutput
from torch import Tensor, nn

from pandiff import checks
from pandiff.errors import ConfigError


@dataclass
class PDMOutput(BaseOutput):
    """What every pandiff model returns.

    Attributes:
        image: ``B C h w`` prediction for the image latent: noise, v or the clean latent, whichever
            the noise schedule's ``image_prediction`` names (the bundled model: the clean image).
        map: ``B K H W`` clean analog-bit prediction in [-1, 1] (tanh), or None without map input.
    """

    image: Tensor
    map: Tensor | None = None


def timestep_embedding(timesteps: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal embedding of (possibly fractional) timesteps, U-ViT's layout ``[cos, sin]``.

    Args:
        timesteps: ``B`` noise levels on the training scale (0..999), float or integer.
        dim: embedding width D.
    Returns:
        ``B D`` float32 tensor; an odd D gets a zero last column.
    """
    half = dim // 2
    freqs = torch.exp(
        -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=timesteps.device) / half
    )
    args = timesteps.float()[:, None] * freqs[None]  # B half
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    return F.pad(emb, (0, dim % 2))


def batch_timesteps(timesteps: Tensor | float, batch: int, device: torch.device, name: str) -> Tensor:
    """Accept a ``B`` tensor or one scalar for the whole batch (what samplers hand over); return ``B``."""
    t = torch.as_tensor(timesteps, device=device)
    if t.ndim == 0:
        return t.expand(batch)
    if t.shape != (batch,):
        raise ConfigError(f"{name} must be a scalar or have shape ({batch},), got {tuple(t.shape)}")
    return t


def unpatchify(x: Tensor, channels: int, patch: int) -> Tensor:
    """``B (h w) (p p C)`` patch vectors -> ``B C (h p) (w p)``, U-ViT's channel-last patch order."""
    b, n, _ = x.shape
    side = math.isqrt(n)
    x = x.view(b, side, side, patch, patch, channels)  # B h w p1 p2 C
    return x.permute(0, 5, 1, 3, 2, 4).reshape(b, channels, side * patch, side * patch)


class PatchEmbed(nn.Module):
    """Non-overlapping patches -> tokens: ``B C H W`` -> ``B (H/p W/p) D`` (one strided conv)."""

    def __init__(self, patch_size: int, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)  # B N D


class Attention(nn.Module):
    """Multi-head self-attention with a fused qkv projection and PyTorch's SDPA kernel."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = False) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        b, n, d = x.shape
        # U-ViT's fused layout is (3 heads head_dim) along the last axis.
        qkv = self.qkv(x).view(b, n, 3, self.num_heads, d // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each B H N Dh
        return self.proj(self.attend(q, k, v).transpose(1, 2).reshape(b, n, d))

    @staticmethod
    def attend(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        """``softmax(Q K^T / sqrt(Dh)) V`` for ``B H N Dh`` inputs with the fastest kernel for them:
        :func:`matmul_attention` for bf16/fp16 on the CPU up to ``MATMUL_ATTENTION_MAX_TOKENS``,
        otherwise PyTorch's fused SDPA."""
        if (
            q.device.type == "cpu"
            and q.dtype in (torch.bfloat16, torch.float16)
            and q.shape[-2] <= MATMUL_ATTENTION_MAX_TOKENS
        ):
            return matmul_attention(q, k, v)
        return F.scaled_dot_product_attention(q, k, v)


# Above this many tokens the fused kernel is as fast in bf16 and never holds the N x N scores.
MATMUL_ATTENTION_MAX_TOKENS = 1024


def matmul_attention(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """``softmax(Q K^T / sqrt(Dh)) V`` as two batched matmuls in the inputs' (low) precision.

    Written out because PyTorch's fused CPU SDPA kernel is several times slower in bf16 at U-ViT's
    token counts (timings: benchmarks/RESULTS.md, "Lab notes moved out of the code"). Same result
    as SDPA up to rounding (tested).
    """
    # The 1/sqrt(Dh) scale goes on Q (N x Dh) rather than the N x N scores; the CPU softmax kernel
    # accumulates reduced-precision inputs in fp32 internally, so no explicit upcast is needed.
    scores = torch.matmul(q * q.shape[-1] ** -0.5, k.transpose(-1, -2))
    return torch.matmul(scores.softmax(dim=-1), v)


class Mlp(nn.Module):
    """Two-layer GELU MLP (exact GELU, as the checkpoints were trained with)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block; with ``skip`` it first fuses a long skip: Linear(2D -> D)."""

    def __init__(
        self, dim: int, num_heads: int, mlp_ratio: float, qkv_bias: bool, skip: bool = False
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, num_heads, qkv_bias)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.skip_linear = nn.Linear(2 * dim, dim) if skip else None

    def forward(self, x: Tensor, skip: Tensor | None = None) -> Tensor:
        if self.skip_linear is not None:
            x = self.skip_linear(torch.cat([x, skip], dim=-1))
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


def build_blocks(
    depth: int, dim: int, num_heads: int, mlp_ratio: float, qkv_bias: bool
) -> tuple[nn.ModuleList, Block, nn.ModuleList]:
    """U-ViT's ``depth // 2`` in-blocks, one mid-block and ``depth // 2`` out-blocks (with skips)."""
    in_blocks = nn.ModuleList(Block(dim, num_heads, mlp_ratio, qkv_bias) for _ in range(depth // 2))
    mid_block = Block(dim, num_heads, mlp_ratio, qkv_bias)
    out_blocks = nn.ModuleList(
        Block(dim, num_heads, mlp_ratio, qkv_bias, skip=True) for _ in range(depth // 2)
    )
    return in_blocks, mid_block, out_blocks


def run_blocks(x: Tensor, in_blocks: nn.ModuleList, mid_block: Block, out_blocks: nn.ModuleList) -> Tensor:
    """The U-shaped pass: ``B L D`` -> ``B L D``; out-blocks consume the in-block outputs last-first."""
    skips = []
    for blk in in_blocks:
        x = blk(x)
        skips.append(x)
    x = mid_block(x)
    for blk in out_blocks:
        x = blk(x, skips.pop())
    return x


class PixelRefiner(nn.Module):
    """A small convolutional head after the patch head: pandiff's addition, not U-ViT's.

    A patch head maps each token to its p x p pixels by one Linear, so a token must spell out every
    pixel of its patch on its own, and neighbouring patches never see each other's pixels: at 8x8
    pixel patches the bundled model drew soft blobs without the world's 1-pixel outlines, and two
    touching shapes of one colour merged. This head reads a ``channels``-wide feature map unpatchified
    from the same tokens, the patch head's prediction and the noisy input itself (so fine detail
    that is still visible at low noise need not pass through the tokens), and adds a correction from
    three 3x3 convolutions (7x7 receptive field, across patch borders). Its last convolution starts
    at zero, so a model warm-started from one without this head predicts exactly what it did.

    ``dilations`` adds one residual 3x3 convolution per entry, at that dilation, after the middle
    one (``h + gelu(conv(h))``; each starts at zero, so a refiner warm-started from one without them
    predicts exactly what it did). Dilations (2, 4, 8) widen the reach from 7x7 to 35x35 pixels:
    about four 8-pixel patches, so the head sees a whole shape and its neighbours, where a
    generated map splits one shape into two instances along a patch border or leaves a shard of
    one instance inside another.

    With ``map_channels > 0`` (a unified PDM's ``refine_map``) it also reads the map at pixel
    resolution (the map input and the map head's prediction): an instance boundary between two
    touching shapes of one colour is then visible to the convolutions at pixel precision, where the
    world draws its outline. That input enters through its own convolution, which starts at zero,
    so a warm start from a refiner without it again predicts exactly what that one did.

    No maintained library has this head: U-ViT's own ``final_layer`` is a single 3x3 convolution on
    the C output channels.
    """

    def __init__(
        self,
        embed_dim: int,
        patch_size: int,
        out_channels: int,
        channels: int,
        map_channels: int = 0,
        dilations: tuple[int, ...] = (),
    ) -> None:
        super().__init__()
        self.patch_size, self.channels = patch_size, channels
        self.feature_pred = nn.Linear(embed_dim, patch_size**2 * channels)
        self.conv_in = nn.Conv2d(channels + 2 * out_channels, channels, 3, padding=1)
        self.map_in = nn.Conv2d(map_channels, channels, 3, padding=1, bias=False) if map_channels else None
        self.conv_mid = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv_wide = nn.ModuleList(
            nn.Conv2d(channels, channels, 3, padding=d, dilation=d) for d in dilations
        )
        self.conv_out = nn.Conv2d(channels, out_channels, 3, padding=1)
        self.zero_output()

    def zero_output(self) -> None:
        """Zero the last convolution (the head then adds nothing to the patch head's prediction),
        the map input's convolution (the map then changes nothing) and the dilated residual
        convolutions (each then passes its input through unchanged)."""
        for conv in [self.conv_out, *self.conv_wide]:
            nn.init.zeros_(conv.weight)
            nn.init.zeros_(conv.bias)
        if self.map_in is not None:
            nn.init.zeros_(self.map_in.weight)

    def forward(self, tokens: Tensor, base: Tensor, noisy: Tensor, map_input: Tensor | None = None) -> Tensor:
        """``tokens`` ``B N D`` (normed), ``base`` and ``noisy`` ``B C H W`` -> refined ``B C H W``.

        ``map_input`` ``B map_channels H W``: required when the head reads the map, else ignored.
        """
        features = unpatchify(self.feature_pred(tokens), self.channels, self.patch_size)
        h = self.conv_in(torch.cat([features, base.to(features.dtype), noisy.to(features.dtype)], 1))
        if self.map_in is not None:
            k = self.map_in.in_channels
            if map_input is None or tuple(map_input.shape[1:]) != (k, *base.shape[2:]):
                got = None if map_input is None else tuple(map_input.shape)
                raise ConfigError(
                    f"this pixel refiner reads the map: it needs a map input of shape "
                    f"(B, {k}, {base.shape[2]}, {base.shape[3]}), got {got}"
                )
            h = h + self.map_in(map_input.to(features.dtype))
        h = F.gelu(h)
        h = F.gelu(self.conv_mid(h))
        for conv in self.conv_wide:
            h = h + F.gelu(conv(h))
        return base + self.conv_out(h)


def initialize_weights(module: nn.Module) -> None:
    """The one place weights are initialised (U-ViT's scheme), applied to every submodule.

    Linear: truncated normal (std 0.02), zero bias. LayerNorm: weight 1, bias 0. Every parameter
    whose name ends in ``pos_embed``: truncated normal (std 0.02). Conv2d (patch embeddings and
    3x3 heads): PyTorch's default (Kaiming-uniform), which U-ViT keeps too. A
    :class:`PixelRefiner`'s last convolution: zero.
    """
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Conv2d):
            m.reset_parameters()
    for name, p in module.named_parameters():
        if name.endswith("pos_embed"):
            nn.init.trunc_normal_(p, std=0.02)
    for m in module.modules():
        if isinstance(m, PixelRefiner):
            m.zero_output()


def build_refiner(
    embed_dim: int,
    patch_size: int,
    out_channels: int,
    channels: int,
    dilations: list[int] | None,
    map_channels: int = 0,
    field: str = "refine",
) -> PixelRefiner | None:
    """A head's optional :class:`PixelRefiner` from its config fields ``{field}_channels`` (0: none)
    and ``{field}_dilations`` (None: none; model configs default to None rather than an empty
    tuple, which would come back from config.json as a list), checked here with errors naming them."""

    checks.number(channels, f"{field}_channels", 0, integer=True, hint=" (0: no pixel refiner)")
    wide = () if dilations is None else dilations
    if not isinstance(wide, (list, tuple)):
        raise ConfigError(
            f"{field}_dilations must be a list of positive integers (e.g. [2, 4, 8]), got {dilations!r}"
        )
    for i, d in enumerate(wide):
        checks.number(d, f"{field}_dilations[{i}]", 1, integer=True)
    if wide and not channels:
        raise ConfigError(f"{field}_dilations widens the pixel refiner: set {field}_channels > 0 too")
    return (
        PixelRefiner(embed_dim, patch_size, out_channels, channels, map_channels, tuple(wide))
        if channels
        else None
    )


def check_backbone_config(
    latent_channels: int,
    latent_size: int,
    patch_size: int,
    embed_dim: int,
    depth: int,
    num_heads: int,
    text_dim: int,
    text_len: int,
) -> None:
    """Raise ConfigError for sizes the U-ViT backbone cannot be built with."""
    sizes = {
        "latent_channels": latent_channels,
        "latent_size": latent_size,
        "patch_size": patch_size,
        "embed_dim": embed_dim,
        "depth": depth,
        "num_heads": num_heads,
        "text_dim": text_dim,
        "text_len": text_len,
    }
    for key, value in sizes.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"{key} must be a positive integer, got {value!r}")
    if latent_size % patch_size:
        raise ConfigError(f"latent_size {latent_size} is not a multiple of patch_size {patch_size}")
    if embed_dim % num_heads:
        raise ConfigError(f"embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
    if depth % 2:
        raise ConfigError(f"depth {depth} must be even (depth//2 in-blocks + 1 mid + depth//2 out-blocks)")


def check_image_and_text(config: Any, image: Tensor, text: Tensor) -> None:
    """Raise ConfigError when the image latent or text features do not fit the model's config."""
    c, s = config.latent_channels, config.latent_size
    if image.ndim != 4 or tuple(image.shape[1:]) != (c, s, s):
        raise ConfigError(
            f"image must have shape (B, {c}, {s}, {s}) for this model, got {tuple(image.shape)}"
        )
    if text.ndim != 3 or text.shape[0] != image.shape[0] or text.shape[2] != config.text_dim:
        raise ConfigError(
            f"text must have shape ({image.shape[0]}, {config.text_len}, {config.text_dim}), got {tuple(text.shape)}"
        )
    if text.shape[1] != config.text_len:
        raise ConfigError(
            f"text has {text.shape[1]} tokens but the model takes text_len={config.text_len}; "
            "pad or truncate the text features to that length"
        )


class ImageTokens:
    """Mixin holding U-ViT's image-side modules (checkpoint names) and their use.

    Hosts: :class:`UViT` and the unified PDM, which share these names so U-ViT weights load into both.
    """

    def _build_image_modules(
        self,
        latent_channels: int,
        latent_size: int,
        patch_size: int,
        embed_dim: int,
        text_dim: int,
        text_len: int,
        conv_head: bool,
        refine_channels: int = 0,
        refine_map_channels: int = 0,
        refine_dilations: list[int] | None = None,
    ) -> None:
        self.patch_embed = PatchEmbed(patch_size, latent_channels, embed_dim)
        self.time_embed = nn.Identity()
        self.context_embed = nn.Linear(text_dim, embed_dim)
        num_tokens = 1 + text_len + (latent_size // patch_size) ** 2
        self.pos_embed = nn.Parameter(torch.zeros(1, num_tokens, embed_dim))
        self.norm = nn.LayerNorm(embed_dim)
        self.decoder_pred = nn.Linear(embed_dim, patch_size**2 * latent_channels)
        self.final_layer = (
            nn.Conv2d(latent_channels, latent_channels, 3, padding=1) if conv_head else nn.Identity()
        )
        self.refiner = build_refiner(
            embed_dim, patch_size, latent_channels, refine_channels, refine_dilations, refine_map_channels
        )

    @property
    def num_prefix_tokens(self) -> int:
        """Tokens before the image patches: the time token and the text tokens."""
        return self.pos_embed.shape[1] - self.num_image_tokens

    @property
    def num_image_tokens(self) -> int:
        """Image patch tokens N = (latent_size / patch_size)^2."""
        return (self.config.latent_size // self.config.patch_size) ** 2

    def embed_image(self, image: Tensor, timestep: Tensor | float, text: Tensor) -> Tensor:
        """``[time, text, image patches]`` tokens with position embedding: ``B (1+L+N) D``."""
        t = batch_timesteps(timestep, image.shape[0], image.device, "timestep_image")
        time_token = self.time_embed(timestep_embedding(t, self.pos_embed.shape[-1]).to(self.pos_embed.dtype))
        tokens = torch.cat([time_token[:, None], self.context_embed(text), self.patch_embed(image)], dim=1)
        return tokens + self.pos_embed  # B 1+L+N D

    def decode_image(
        self, tokens: Tensor, noisy: Tensor | None = None, map_input: Tensor | None = None
    ) -> Tensor:
        """Image patch tokens ``B N D`` -> the image prediction ``B C h w``.

        ``noisy`` is the model's image input, read by the :class:`PixelRefiner` when the model has
        one (``refine_channels > 0``; required then); ``map_input`` the map at the image's
        resolution, read by a refiner that reads the map (``refine_map``; required then).
        """
        proj = self.patch_embed.proj
        normed = self.norm(tokens)
        base = self.final_layer(unpatchify(self.decoder_pred(normed), proj.in_channels, proj.kernel_size[0]))
        if self.refiner is None:
            return base
        if noisy is None:
            raise ConfigError("this model has a pixel refiner: decode_image needs the noisy image input")
        return self.refiner(normed, base, noisy, map_input)


class UViT(ImageTokens, ModelMixin, ConfigMixin):
    """The image-only text-to-image U-ViT: the baseline and the two-stream PDM's frozen image stream.

    Args:
        latent_channels, latent_size: the image latent is ``latent_channels x latent_size^2``.
        patch_size: image patch side p; N = (latent_size / p)^2 image tokens.
        embed_dim, depth, num_heads, mlp_ratio, qkv_bias: transformer width D, blocks (even;
            depth//2 in, 1 mid, depth//2 out), heads, MLP expansion, bias on the fused qkv.
        text_dim, text_len: text features are ``B text_len text_dim``.
        conv_head: a 3x3 conv after unpatchify (U-ViT's ``final_layer``).
        refine_channels: width of a :class:`PixelRefiner` after the head; 0 (U-ViT's) for none.
        refine_dilations: residual dilated convolutions added to that refiner (e.g. ``[2, 4, 8]``;
            each starts at zero, so a warm start from the refiner without them is exact).
    Defaults are U-ViT-S/2 for COCO (the public ``mscoco_uvit_small.pth``).
    """

    @register_to_config
    def __init__(
        self,
        latent_channels: int = 4,
        latent_size: int = 32,
        patch_size: int = 2,
        embed_dim: int = 512,
        depth: int = 12,
        num_heads: int = 8,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = False,
        text_dim: int = 768,
        text_len: int = 77,
        conv_head: bool = True,
        refine_channels: int = 0,
        refine_dilations: list[int] | None = None,
    ) -> None:
        super().__init__()
        check_backbone_config(
            latent_channels, latent_size, patch_size, embed_dim, depth, num_heads, text_dim, text_len
        )
        self._build_image_modules(
            latent_channels,
            latent_size,
            patch_size,
            embed_dim,
            text_dim,
            text_len,
            conv_head,
            refine_channels,
            refine_dilations=refine_dilations,
        )
        self.in_blocks, self.mid_block, self.out_blocks = build_blocks(
            depth, embed_dim, num_heads, mlp_ratio, qkv_bias
        )
        self.initialize_weights()

    def initialize_weights(self) -> None:
        initialize_weights(self)

    @property
    def with_map(self) -> bool:
        """False: this model has no map tokens."""
        return False

    @property
    def map_size(self) -> None:
        """None: this model has no map."""
        return None

    def forward(
        self,
        image: Tensor,
        timestep_image: Tensor | float,
        text: Tensor,
        map_bits: Tensor | None = None,
        timestep_map: Tensor | float | None = None,
    ) -> PDMOutput:
        """Predict the noise of a latent image.

        Args:
            image: ``B C h w`` noisy latent. timestep_image: ``B`` (or scalar) timesteps 0..999.
            text: ``B text_len text_dim`` text features.
            map_bits, timestep_map: must be None (the signature is shared with the PDM models).
        Returns:
            PDMOutput with ``image`` ``B C h w`` and ``map`` None.
        """
        if map_bits is not None:
            raise ConfigError(
                "this image-only U-ViT has no map stream; pass map_bits=None or use a PDM model"
            )
        check_image_and_text(self.config, image, text)
        x = run_blocks(
            self.embed_image(image, timestep_image, text), self.in_blocks, self.mid_block, self.out_blocks
        )  # B 1+L+N D
        return PDMOutput(image=self.decode_image(x[:, self.num_prefix_tokens :], image))
