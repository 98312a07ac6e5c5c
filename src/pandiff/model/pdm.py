"""The Panoptic Diffusion Model transformers: unified and two-stream, with Multi-Scale Patching.

Both co-generate an image latent (the prediction the noise schedule's ``image_prediction`` names:
noise, v or the clean latent) and a panoptic map as analog bits (clean-bit prediction, tanh ->
[-1, 1]). The map is ``K x (f*s) x (f*s)`` for a latent of side s and patch factor f in {1, 2, 4};
it is patched with side ``f*p`` so it has as many tokens as the image.

The map has its own time token so the two modalities can sit at different noise levels (a clean
map is map-conditioned generation, a clean image is image -> map). The map time token is the
sinusoidal embedding of ``timestep_map`` through a learned Linear (``map_time_embed``): the image
time token stays U-ViT's identity embedding, so pretrained U-ViT weights keep their meaning,
while the map's lives in its own learned subspace (and its own position-embedding slot).

Token order: ``[image time, text, image patches]`` (exactly U-ViT's sequence, so ``pos_embed``
has U-ViT's shape and loads from its checkpoints) then ``[map time, map patches]`` (``map_pos_embed``).
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from torch import Tensor, nn
from torch.nn import functional as F

from pandiff.errors import ConfigError
from pandiff.model.uvit import (
    ImageTokens,
    PatchEmbed,
    PDMOutput,
    UViT,
    batch_timesteps,
    build_blocks,
    build_refiner,
    check_backbone_config,
    check_image_and_text,
    initialize_weights,
    run_blocks,
    timestep_embedding,
    unpatchify,
)

PATCH_FACTORS = (1, 2, 4)


def check_map_config(map_bits: int, patch_factor: int) -> None:
    """Raise ConfigError for an unusable map size."""
    if not isinstance(map_bits, int) or isinstance(map_bits, bool) or map_bits < 1:
        raise ConfigError(f"map_bits must be a positive integer, got {map_bits!r}")
    if patch_factor not in PATCH_FACTORS:
        raise ConfigError(f"patch_factor must be one of {PATCH_FACTORS}, got {patch_factor!r}")


class MapTokens:
    """Mixin holding the map's embedding and head; the host provides ``norm`` before the head."""

    def _build_map_modules(
        self,
        map_bits: int,
        map_patch: int,
        num_tokens: int,
        embed_dim: int,
        conv_head: bool,
        refine_channels: int = 0,
        refine_dilations: list[int] | None = None,
    ) -> None:
        self.map_time_embed = nn.Linear(embed_dim, embed_dim)
        self.map_patch_embed = PatchEmbed(map_patch, map_bits, embed_dim)
        self.map_pos_embed = nn.Parameter(torch.zeros(1, 1 + num_tokens, embed_dim))
        self.map_decoder_pred = nn.Linear(embed_dim, map_patch**2 * map_bits)
        self.map_final_layer = nn.Conv2d(map_bits, map_bits, 3, padding=1) if conv_head else nn.Identity()
        # The same kind of refiner as the image head's, on the map's pre-tanh bits: a patch head
        # spells each map pixel from its own token alone, so outlines come out in 8-pixel steps and
        # touching segments blur.
        self.map_refiner = build_refiner(
            embed_dim, map_patch, map_bits, refine_channels, refine_dilations, field="map_refine"
        )

    def embed_map(self, map_bits: Tensor, timestep: Tensor | float) -> Tensor:
        """``[map time, map patches]`` tokens with position embedding: ``B (1+N) D``."""
        t = batch_timesteps(timestep, map_bits.shape[0], map_bits.device, "timestep_map")
        emb = timestep_embedding(t, self.map_pos_embed.shape[-1]).to(self.map_pos_embed.dtype)
        tokens = torch.cat([self.map_time_embed(emb)[:, None], self.map_patch_embed(map_bits)], dim=1)
        return tokens + self.map_pos_embed  # B 1+N D

    def decode_map(self, tokens: Tensor, noisy: Tensor | None = None) -> Tensor:
        """Map patch tokens ``B N D`` -> clean analog bits ``B K H W`` in [-1, 1].

        ``noisy``: the model's map input, read by the map's pixel refiner (``map_refine_channels >
        0``; required then)."""
        proj = self.map_patch_embed.proj
        normed = self.norm(tokens)
        x = self.map_decoder_pred(normed)  # B N (f p)^2 K
        logits = self.map_final_layer(unpatchify(x, proj.in_channels, proj.kernel_size[0]))
        if self.map_refiner is not None:
            if noisy is None:
                raise ConfigError("this model has a map refiner: decode_map needs the noisy map input")
            logits = self.map_refiner(normed, logits, noisy)
        return torch.tanh(logits)


def check_map_input(config: Any, image: Tensor, map_bits: Tensor) -> None:
    """Raise ConfigError when the map does not fit the config or the image batch."""
    k, side = config.map_bits, config.patch_factor * config.latent_size
    if (
        map_bits.ndim != 4
        or tuple(map_bits.shape[1:]) != (k, side, side)
        or map_bits.shape[0] != image.shape[0]
    ):
        raise ConfigError(
            f"map_bits must have shape ({image.shape[0]}, {k}, {side}, {side}) for this model "
            f"(map side = patch_factor x latent_size), got {tuple(map_bits.shape)}"
        )


class _MapProperties:
    """Sizes every map-carrying model exposes."""

    @property
    def with_map(self) -> bool:
        """True: the model co-generates a map."""
        return True

    @property
    def map_size(self) -> int:
        """Map side H = W = patch_factor x latent_size."""
        return self.config.patch_factor * self.config.latent_size


class PDMUnified(_MapProperties, ImageTokens, MapTokens, ModelMixin, ConfigMixin):
    """Unified PDM: one U-ViT over ``[image time, text, image patches, map time, map patches]``.

    Joint self-attention lets image and map attend to each other in every block. The image-side
    modules carry U-ViT's checkpoint names (load them with ``load_uvit_checkpoint(model, path,
    strict=False)``); the map adds ``map_time_embed``, ``map_patch_embed``, ``map_pos_embed``,
    ``map_decoder_pred`` and ``map_final_layer`` and shares the final ``norm``.

    Args: as :class:`~pandiff.model.uvit.UViT`, plus
        map_bits: K, analog-bit channels of the map.
        patch_factor: f in {1, 2, 4}; the map is ``f * latent_size`` wide with patch ``f * patch_size``.
        refine_channels: as :class:`~pandiff.model.uvit.UViT` (the image head's pixel refiner).
        refine_map: the pixel refiner also reads the map, pooled to the image's resolution: the map
            input and the map head's prediction (2K channels; the prediction detached, so the image
            loss does not train the map head through it). Needs ``refine_channels > 0``.
        refine_dilations: as :class:`~pandiff.model.uvit.UViT` (the image refiner's residual
            dilated convolutions).
        map_refine_channels: a :class:`~pandiff.model.uvit.PixelRefiner` of this width after the
            map head too (on the bits before the tanh; it reads the map tokens, the head's bits and
            the noisy map input); 0 = none. Its last convolution starts at zero, so a warm start
            predicts exactly what the model without it did.
        map_refine_dilations: residual dilated convolutions added to the map refiner (see
            :class:`~pandiff.model.uvit.PixelRefiner`; e.g. ``[2, 4, 8]`` for a 35x35 reach); each
            starts at zero, so a warm start from the refiner without them is exact. Needs
            ``map_refine_channels > 0``.
    """

    @register_to_config
    def __init__(
        self,
        latent_channels: int = 4,
        latent_size: int = 32,
        patch_size: int = 2,
        map_bits: int = 11,
        patch_factor: int = 2,
        embed_dim: int = 512,
        depth: int = 12,
        num_heads: int = 8,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = False,
        text_dim: int = 768,
        text_len: int = 77,
        conv_head: bool = True,
        refine_channels: int = 0,
        refine_map: bool = False,
        refine_dilations: list[int] | None = None,
        map_refine_channels: int = 0,
        map_refine_dilations: list[int] | None = None,
    ) -> None:
        super().__init__()
        check_backbone_config(
            latent_channels, latent_size, patch_size, embed_dim, depth, num_heads, text_dim, text_len
        )
        check_map_config(map_bits, patch_factor)
        if not isinstance(refine_map, bool):
            raise ConfigError(f"refine_map must be true or false, got {refine_map!r}")
        if refine_map and not refine_channels:
            raise ConfigError("refine_map needs a pixel refiner to read the map: set refine_channels > 0 too")
        self._build_image_modules(
            latent_channels,
            latent_size,
            patch_size,
            embed_dim,
            text_dim,
            text_len,
            conv_head,
            refine_channels,
            2 * map_bits if refine_map else 0,
            refine_dilations,
        )
        self._build_map_modules(
            map_bits,
            patch_factor * patch_size,
            self.num_image_tokens,
            embed_dim,
            conv_head,
            map_refine_channels,
            map_refine_dilations,
        )
        self.in_blocks, self.mid_block, self.out_blocks = build_blocks(
            depth, embed_dim, num_heads, mlp_ratio, qkv_bias
        )
        self.initialize_weights()

    def initialize_weights(self) -> None:
        initialize_weights(self)

    def forward(
        self,
        image: Tensor,
        timestep_image: Tensor | float,
        text: Tensor,
        map_bits: Tensor | None = None,
        timestep_map: Tensor | float | None = None,
    ) -> PDMOutput:
        """Predict the image noise and the clean map bits.

        Args:
            image: ``B C h w`` noisy latent. timestep_image: ``B`` (or scalar) timesteps 0..999.
            text: ``B text_len text_dim`` text features.
            map_bits: ``B K H W`` noisy (or clean, for map conditioning) analog bits; None runs the
                image tokens alone (the shared weights then compute a plain U-ViT) and returns no map.
            timestep_map: ``B`` (or scalar) map timesteps; None means the same as ``timestep_image``.
        Returns:
            PDMOutput(image ``B C h w``, map ``B K H W`` in [-1, 1] or None).
        """
        check_image_and_text(self.config, image, text)
        x = self.embed_image(image, timestep_image, text)  # B P+N D
        if map_bits is None:
            x = run_blocks(x, self.in_blocks, self.mid_block, self.out_blocks)
            return PDMOutput(
                image=self.decode_image(x[:, self.num_prefix_tokens :], image, self._no_map(image))
            )
        check_map_input(self.config, image, map_bits)
        n_img = x.shape[1]
        m = self.embed_map(map_bits, timestep_image if timestep_map is None else timestep_map)  # B 1+N D
        x = run_blocks(torch.cat([x, m], dim=1), self.in_blocks, self.mid_block, self.out_blocks)
        map_pred = self.decode_map(x[:, n_img + 1 :], map_bits)
        refiner_map = self._refiner_map(map_bits, map_pred) if self.config.refine_map else None
        return PDMOutput(
            image=self.decode_image(x[:, self.num_prefix_tokens : n_img], image, refiner_map), map=map_pred
        )

    def _refiner_map(self, map_bits: Tensor, map_pred: Tensor) -> Tensor:
        """The map input and the (detached) map prediction at the image's resolution: ``B 2K h w``."""
        both = torch.cat([map_bits.to(map_pred.dtype), map_pred.detach()], 1)
        f = self.config.patch_factor
        return F.avg_pool2d(both, f) if f > 1 else both

    def _no_map(self, image: Tensor) -> Tensor | None:
        """What a map-reading refiner reads when the model runs without a map: zeros."""
        if not self.config.refine_map:
            return None
        return image.new_zeros(image.shape[0], self.refiner.map_in.in_channels, *image.shape[2:])


class MapStream(MapTokens, nn.Module):
    """The two-stream PDM's trainable stream: U-ViT blocks over ``[image-stream tokens, map tokens]``.

    Its blocks have the image stream's shapes; it owns the map embedding and head and its own
    final ``norm``. :class:`PDMTwoStream` drives the blocks in lockstep with the image stream.
    """

    def __init__(
        self,
        map_bits: int,
        map_patch: int,
        num_tokens: int,
        embed_dim: int,
        depth: int,
        num_heads: int,
        mlp_ratio: float,
        qkv_bias: bool,
        conv_head: bool,
    ) -> None:
        super().__init__()
        self._build_map_modules(map_bits, map_patch, num_tokens, embed_dim, conv_head)
        self.in_blocks, self.mid_block, self.out_blocks = build_blocks(
            depth, embed_dim, num_heads, mlp_ratio, qkv_bias
        )
        self.norm = nn.LayerNorm(embed_dim)


class PDMTwoStream(_MapProperties, ModelMixin, ConfigMixin):
    """Two-stream PDM: a frozen text-to-image U-ViT plus a trainable map stream (ControlNet-style).

    ``image_stream`` is a :class:`UViT`, frozen by default. ``map_stream`` runs blocks of the same
    shape over ``[image-stream input tokens, map time, map patches]``; after block i (in, mid and
    out blocks alike) its output at the image-stream positions goes through ``zero_projs[i]``, a
    zero-initialised Linear(D, D), and is added to the image stream's hidden state. At
    initialisation the image prediction therefore equals the frozen U-ViT's exactly.

    Args: the same as :class:`PDMUnified`.
    """

    @register_to_config
    def __init__(
        self,
        latent_channels: int = 4,
        latent_size: int = 32,
        patch_size: int = 2,
        map_bits: int = 11,
        patch_factor: int = 2,
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
        check_map_config(map_bits, patch_factor)
        self.image_stream = UViT(
            latent_channels=latent_channels,
            latent_size=latent_size,
            patch_size=patch_size,
            embed_dim=embed_dim,
            depth=depth,
            num_heads=num_heads,
            mlp_ratio=mlp_ratio,
            qkv_bias=qkv_bias,
            text_dim=text_dim,
            text_len=text_len,
            conv_head=conv_head,
            refine_channels=refine_channels,
            refine_dilations=refine_dilations,
        )
        self.map_stream = MapStream(
            map_bits=map_bits,
            map_patch=patch_factor * patch_size,
            num_tokens=self.num_image_tokens,
            embed_dim=embed_dim,
            depth=depth,
            num_heads=num_heads,
            mlp_ratio=mlp_ratio,
            qkv_bias=qkv_bias,
            conv_head=conv_head,
        )
        self.zero_projs = nn.ModuleList(nn.Linear(embed_dim, embed_dim) for _ in range(depth + 1))
        self.initialize_weights()
        self.freeze_image_stream()

    @property
    def num_image_tokens(self) -> int:
        """Image patch tokens N = (latent_size / patch_size)^2; the map has as many."""
        return self.image_stream.num_image_tokens

    def initialize_weights(self) -> None:
        """U-ViT's scheme everywhere, then zero the projections into the image stream."""
        initialize_weights(self)
        for proj in self.zero_projs:
            nn.init.zeros_(proj.weight)
            nn.init.zeros_(proj.bias)

    def freeze_image_stream(self) -> None:
        """Stop gradients to the image stream's parameters (activations still carry them through)."""
        self.image_stream.requires_grad_(False)

    @classmethod
    def from_image_stream(
        cls, uvit: UViT, map_bits: int, patch_factor: int, copy_blocks: bool = True
    ) -> PDMTwoStream:
        """Build a two-stream PDM around a (pretrained) image-only U-ViT.

        Args:
            uvit: the text-to-image model; its weights are copied into the frozen image stream.
            map_bits, patch_factor: the map's channels and Multi-Scale Patching factor.
            copy_blocks: also start the map stream's blocks and norm from the U-ViT's (ControlNet's
                "trainable copy"), so it begins with features that already understand the image.
        """
        fields = {k: v for k, v in uvit.config.items() if not k.startswith("_")}
        model = cls(**fields, map_bits=map_bits, patch_factor=patch_factor).to(uvit.pos_embed.device)
        model.image_stream.load_state_dict(uvit.state_dict())
        if copy_blocks:
            for name in ("in_blocks", "mid_block", "out_blocks", "norm"):
                getattr(model.map_stream, name).load_state_dict(getattr(uvit, name).state_dict())
        return model

    def forward(
        self,
        image: Tensor,
        timestep_image: Tensor | float,
        text: Tensor,
        map_bits: Tensor | None = None,
        timestep_map: Tensor | float | None = None,
    ) -> PDMOutput:
        """Predict the image noise and the clean map bits; arguments as :meth:`PDMUnified.forward`.

        With ``map_bits=None`` only the image stream runs: the frozen U-ViT's prediction, no map.
        """
        img = self.image_stream
        if map_bits is None:
            return img(image, timestep_image, text)
        check_image_and_text(self.config, image, text)
        check_map_input(self.config, image, map_bits)
        ms = self.map_stream
        h = img.embed_image(image, timestep_image, text)  # B P+N D
        n_img = h.shape[1]
        m = ms.embed_map(map_bits, timestep_image if timestep_map is None else timestep_map)  # B 1+N D
        g = torch.cat([h, m], dim=1)  # B P+N+1+N D
        projs = iter(self.zero_projs)

        def step(
            blk_h: nn.Module,
            blk_g: nn.Module,
            h: Tensor,
            g: Tensor,
            skip_h: Tensor | None = None,
            skip_g: Tensor | None = None,
        ) -> tuple[Tensor, Tensor]:
            h, g = blk_h(h, skip_h), blk_g(g, skip_g)
            return h + next(projs)(g[:, :n_img]), g  # the map stream steers the image stream

        skips = []
        for blk_h, blk_g in zip(img.in_blocks, ms.in_blocks):
            h, g = step(blk_h, blk_g, h, g)
            skips.append((h, g))
        h, g = step(img.mid_block, ms.mid_block, h, g)
        for blk_h, blk_g in zip(img.out_blocks, ms.out_blocks):
            h, g = step(blk_h, blk_g, h, g, *skips.pop())
        return PDMOutput(
            image=img.decode_image(h[:, img.num_prefix_tokens :], image),
            map=ms.decode_map(g[:, n_img + 1 :]),
        )
