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

    def __post_init__(self) -> None:
        for name in ("text_dropout", "p_clean_map", "p_clean_image"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"loss.{name} must lie in [0, 1], got {value}")
        if self.p_clean_map + self.p_clean_image > 1.0:
            raise ConfigError("loss.p_clean_map + loss.p_clean_image must not exceed 1")
        if self.map_loss_weight < 0:
            raise ConfigError("loss.map_loss_weight must be >= 0")


@dataclass
class LossOutput:
    loss: torch.Tensor
    image_loss: torch.Tensor
    map_loss: torch.Tensor


def _masked_mean(per_example: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over the examples where ``mask`` holds; 0 (with a graph) when none does."""
    mask = mask.to(per_example.dtype)
    return (per_example * mask).sum() / mask.sum().clamp_min(1.0)


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

    def rand(*shape):
        return torch.rand(shape, generator=generator, device=device)

    def randn_like(x):
        return torch.randn(x.shape, generator=generator, device=device, dtype=x.dtype)

    u = rand(b)
    clean_map = u < config.p_clean_map
    clean_image = (u >= config.p_clean_map) & (u < config.p_clean_map + config.p_clean_image)
    drop_text = rand(b) < config.text_dropout
    t = torch.randint(0, schedule.num_train_timesteps, (b,), generator=generator, device=device)
    zero = torch.zeros_like(t)
    t_image = torch.where(clean_image, zero, t)
    t_map = torch.where(clean_map, zero, t)

    eps = randn_like(latents)
    x_image = noiser.add_noise(latents, eps, t)
    x_image = torch.where(clean_image.view(b, 1, 1, 1), latents, x_image)

    map0 = schedule.bits_to_diffusion(map_bits)
    x_map = noiser.add_noise(map0, randn_like(map0), t)
    x_map = torch.where(clean_map.view(b, 1, 1, 1), map0, x_map)

    text = torch.where(drop_text.view(b, 1, 1), empty_text.to(text.dtype).expand_as(text), text)
    out = model(x_image, t_image, text, x_map, t_map)

    if schedule.image_prediction == "v_prediction":
        image_target = noiser.get_velocity(latents, eps, t)
    elif schedule.image_prediction == "sample":
        image_target = latents
    else:
        image_target = eps
    image_err = (out.image.float() - image_target.float()).pow(2).mean(dim=(1, 2, 3))  # B
    map_err = (out.map.float() - map_bits.float()).pow(2).mean(dim=(1, 2, 3))  # B
    image_loss = _masked_mean(image_err, ~clean_image)
    map_loss = _masked_mean(map_err, ~clean_map)
    return LossOutput(image_loss + config.map_loss_weight * map_loss, image_loss.detach(), map_loss.detach())
