"""The joint PDM training objective (paper, generalised with per-modality timesteps).

Every training example is put in one of three modes, drawn independently:

* **joint** (the paper's case): image latent and map bits noised at one shared timestep;
  losses on both;
* **clean map** (probability ``p_clean_map``): the map is given clean at timestep 0, only the
  image is noised. It teaches map -> image and provides the "follow this map" branch that
  classifier-free map guidance relies on; loss on the image only;
* **clean image** (probability ``p_clean_image``): the image latent is clean at timestep 0 and
  the map is noised. It teaches image -> map (segmentation); loss on the map only.

The image head predicts noise (epsilon MSE, the paper's; ``schedule.image_prediction`` also
offers v and the clean image); the map head predicts clean bits (x0 MSE).
Independently, the caption is swapped for the empty prompt with probability ``text_dropout``
(text classifier-free guidance).

An image-only model (``model.with_map`` False: the text-to-image U-ViT that becomes a two-stream
PDM's frozen image stream) is trained on the image term alone, every example noised.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from pandiff.diffusion.schedule import NoiseSchedule
from pandiff.errors import ConfigError


@dataclass(frozen=True)
class LossConfig:
    """Weights and conditioning probabilities of the joint objective."""

    map_loss_weight: float = 1.0
    text_dropout: float = 0.1
    p_clean_map: float = 0.1
    p_clean_image: float = 0.1
    # With schedule.image_prediction == "sample" (clean-image prediction), each example's x0 error
    # is weighted by min(1 + SNR_t, x0_weight_cap): 1 + SNR makes it exactly the v-prediction loss
    # of the same model; the cap stops nearly clean steps from dominating. 1 = plain x0 MSE.
    x0_weight_cap: float = 1.0
    # Beyond the paper: the world draws a dark outline along every segment's edge, and two
    # touching shapes of one colour stay apart in the picture only through that 1-2 pixel line.
    # In a plain mean over 4096 pixels it weighs next to nothing, and generated pictures merge
    # such shapes. With w > 0 each image pixel on a segment boundary of the example's map (its
    # instance bits differ from a 4-neighbour's) counts 1 + w times as much as any other, the
    # error then normalised by the example's total weight (so the loss keeps its scale).
    # 0 = the plain mean. Latent models get the boundary max-pooled to the latent grid.
    image_boundary_weight: float = 0.0

    def __post_init__(self) -> None:
        for name in ("text_dropout", "p_clean_map", "p_clean_image"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"loss.{name} must lie in [0, 1], got {value}")
        if self.p_clean_map + self.p_clean_image > 1.0:
            raise ConfigError("loss.p_clean_map + loss.p_clean_image must not exceed 1")
        if self.map_loss_weight < 0:
            raise ConfigError("loss.map_loss_weight must be >= 0")
        if self.x0_weight_cap < 1:
            raise ConfigError(f"loss.x0_weight_cap must be >= 1 (1: plain x0 MSE), got {self.x0_weight_cap}")
        if not 0.0 <= self.image_boundary_weight <= 1000.0:
            raise ConfigError(
                f"loss.image_boundary_weight must lie in [0, 1000] (0: plain mean), got {self.image_boundary_weight}"
            )


@dataclass
class LossOutput:
    loss: torch.Tensor
    image_loss: torch.Tensor
    map_loss: torch.Tensor


def _masked_mean(per_example: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over the examples where ``mask`` holds; 0 (with a graph) when none does."""
    mask = mask.to(per_example.dtype)
    return (per_example * mask).sum() / mask.sum().clamp_min(1.0)


def map_boundaries(map_bits: torch.Tensor) -> torch.Tensor:
    """``B 1 H W`` float mask of the pixels of ``map_bits`` (``B K H W``, any sign coding) whose
    bits differ from those of a 4-neighbour: both sides of every segment edge."""
    pos = map_bits > 0
    edge = torch.zeros_like(pos[:, :1])
    dy = (pos[:, :, 1:] != pos[:, :, :-1]).any(dim=1, keepdim=True)  # B 1 H-1 W
    dx = (pos[:, :, :, 1:] != pos[:, :, :, :-1]).any(dim=1, keepdim=True)  # B 1 H W-1
    edge[:, :, 1:] |= dy
    edge[:, :, :-1] |= dy
    edge[:, :, :, 1:] |= dx
    edge[:, :, :, :-1] |= dx
    return edge.float()


def boundary_weights(map_bits: torch.Tensor, size: tuple[int, int], weight: float) -> torch.Tensor:
    """``B 1 h w`` per-pixel loss weights: 1 + ``weight`` on the map's segment boundaries
    (:func:`map_boundaries`, max-pooled to ``size`` when the image grid is coarser), 1 elsewhere."""
    edge = map_boundaries(map_bits)
    if tuple(edge.shape[-2:]) != tuple(size):
        edge = torch.nn.functional.adaptive_max_pool2d(edge, size)
    return 1.0 + weight * edge


def joint_loss(
    model: torch.nn.Module,
    schedule: NoiseSchedule,
    noiser,
    latents: torch.Tensor,
    map_bits: torch.Tensor,
    text: torch.Tensor,
    empty_text: torch.Tensor,
    config: LossConfig,
    generator: torch.Generator | None = None,
) -> LossOutput:
    """One stochastic evaluation of the PDM loss.

    Args:
        model: a PDM model (``model(image, timestep_image, text, map_bits, timestep_map)``).
        schedule: the noise schedule (for the map's bit scale).
        noiser: ``schedule.training_scheduler()`` (its ``add_noise`` covers all timesteps).
        latents: ``B C h w`` clean, scaled image latents.
        map_bits: ``B K H W`` analog bits in {-1, +1}.
        text: ``B L D`` caption features; ``empty_text``: ``1 L D`` empty-prompt features.
        generator: draws timesteps, noise, modes and dropout (on the tensors' device).
    """
    b, device = latents.shape[0], latents.device
    with_map = getattr(model, "with_map", None)
    if with_map is None:  # a DDP wrapper: ask the wrapped module
        with_map = getattr(getattr(model, "module", None), "with_map", True)

    def rand(*shape):
        return torch.rand(shape, generator=generator, device=device)

    def randn_like(x):
        return torch.randn(x.shape, generator=generator, device=device, dtype=x.dtype)

    u = rand(b)
    if with_map:
        clean_map = u < config.p_clean_map
        clean_image = (u >= config.p_clean_map) & (u < config.p_clean_map + config.p_clean_image)
    else:
        clean_map = clean_image = torch.zeros(b, dtype=torch.bool, device=device)
    drop_text = rand(b) < config.text_dropout
    t = torch.randint(0, schedule.num_train_timesteps, (b,), generator=generator, device=device)
    zero = torch.zeros_like(t)
    t_image = torch.where(clean_image, zero, t)
    t_map = torch.where(clean_map, zero, t)

    eps = randn_like(latents)
    x_image = noiser.add_noise(latents, eps, t)
    x_image = torch.where(clean_image.view(b, 1, 1, 1), latents, x_image)

    x_map = None
    if with_map:
        map0 = schedule.bits_to_diffusion(map_bits)
        x_map = noiser.add_noise(map0, randn_like(map0), t)
        x_map = torch.where(clean_map.view(b, 1, 1, 1), map0, x_map)

    text = torch.where(drop_text.view(b, 1, 1), empty_text.to(text.dtype).expand_as(text), text)
    out = model(x_image, t_image, text, x_map, t_map if with_map else None)

    if schedule.image_prediction == "v_prediction":
        image_target = noiser.get_velocity(latents, eps, t)
    elif schedule.image_prediction == "sample":
        image_target = latents
    else:
        image_target = eps
    sq = (out.image.float() - image_target.float()).pow(2)  # B C h w
    if config.image_boundary_weight > 0:
        w = boundary_weights(map_bits, sq.shape[-2:], config.image_boundary_weight)  # B 1 h w
        image_err = (sq * w).sum(dim=(1, 2, 3)) / (w.sum(dim=(1, 2, 3)) * sq.shape[1])  # B
    else:
        image_err = sq.mean(dim=(1, 2, 3))  # B
    if schedule.image_prediction == "sample" and config.x0_weight_cap > 1:
        alpha_bar = noiser.alphas_cumprod.to(device)[t].float()
        snr = alpha_bar / (1 - alpha_bar).clamp_min(1e-8)
        image_err = image_err * (1 + snr).clamp(max=config.x0_weight_cap)
    image_loss = _masked_mean(image_err, ~clean_image)
    if not with_map:
        return LossOutput(image_loss, image_loss.detach(), torch.zeros_like(image_loss).detach())
    map_err = (out.map.float() - map_bits.float()).pow(2).mean(dim=(1, 2, 3))  # B
    map_loss = _masked_mean(map_err, ~clean_map)
    return LossOutput(image_loss + config.map_loss_weight * map_loss, image_loss.detach(), map_loss.detach())
