"""The one noise schedule of pandiff and the map's bit scale.

The image latent and the map bits share one discrete schedule (Stable Diffusion's scaled-linear
betas, 1000 steps, from diffusers). The paper noises the map bits with a larger noise std
(2.0) so that bits can flip. We implement that as a *bit scale*: the map that diffuses is
``bits / map_noise_scale``; then ``x_t = alpha_t * bits / s + sigma_t * eps`` is the paper's
``s * x_t = alpha_t * bits + sigma_t * (s * eps)`` divided by s, i.e. the same process, and every
standard diffusers scheduler applies to the map unchanged.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler

from pandiff import checks
from pandiff.errors import ConfigError

SCHEDULERS = {
    "dpmsolver++": DPMSolverMultistepScheduler,
    # DPM-Solver++(2M) SDE (diffusers' ``algorithm_type="sde-dpmsolver++"``): each step adds fresh
    # noise, so a layout the model drew wrong at high noise can still be redrawn in later steps.
    # On the built-in world it draws more shapes right than the ODE solver at 20 steps.
    "sde-dpmsolver++": DPMSolverMultistepScheduler,
    "ddim": DDIMScheduler,
    "ddpm": DDPMScheduler,
}


def check_scheduler(name: str) -> str:
    """Return ``name`` if it names a sampling scheduler; otherwise raise ConfigError listing them."""
    if name not in SCHEDULERS:
        raise ConfigError(f"unknown scheduler {name!r}; choose one of {', '.join(SCHEDULERS)}")
    return name


# What the image head predicts. The paper's is epsilon (as U-ViT and Stable Diffusion, whose
# 4-channel latents have 2x2 patches of 16 values). What we measured on the built-in world in
# PIXEL space (8x8x3 = 192 values per token, as wide as the D=192 model):
#
# * epsilon: errors at high noise are amplified ~1/alpha (x14 at t=999 of the scaled-linear
#   schedule) when turned into the clean image; after 2750 steps it sampled noise;
# * v (alpha eps - sigma x0): a sensible path, but images stayed patchy noise after 2500 steps;
# * sample (the clean image, x0, as the map head): clean images after a few hundred steps. The
#   network outputs a point on the low-dimensional image manifold instead of carrying 192-d noise
#   through every block (the argument of Li & He 2025, "Back to Basics: Let Denoising Generative
#   Models Denoise"). Train it with LossConfig.x0_weight_cap > 1 (the v loss, capped).
#
# Pixel space also needs a zero-terminal-SNR schedule: at t=999 scaled-linear keeps alpha=0.068
# of the image, and averaged over an 8x8 patch that signal stands above the noise, so the model
# learns to read the layout out of the "noise" - and at sampling time, starting from pure noise,
# reads a random layout (too many objects, prompt ignored). ``beta_schedule="squaredcos_cap_v2"``
# (cosine, alpha ~ 0 at t=999) removes the leak. The map head always predicts the clean bits.
IMAGE_PREDICTIONS = ("epsilon", "v_prediction", "sample")


@dataclass(frozen=True)
class NoiseSchedule:
    """Training noise schedule shared by image and map; ``map_noise_scale`` is the bit scale,
    ``image_prediction`` the image head's target (``epsilon``, ``v_prediction`` or ``sample``)."""

    num_train_timesteps: int = 1000
    beta_start: float = 0.00085
    beta_end: float = 0.012
    beta_schedule: str = "scaled_linear"
    map_noise_scale: float = 2.0
    image_prediction: str = "epsilon"

    def __post_init__(self) -> None:
        checks.number(self.num_train_timesteps, "num_train_timesteps", 1, 100_000, integer=True)
        checks.number(self.beta_start, "beta_start", 0.0, 1.0, lo_open=True)
        checks.number(self.beta_end, "beta_end", self.beta_start, 1.0)
        checks.number(self.map_noise_scale, "map_noise_scale", 0.0, lo_open=True)
        if not isinstance(self.beta_schedule, str):
            raise ConfigError(f"beta_schedule must be a name, got {self.beta_schedule!r}")
        if self.image_prediction not in IMAGE_PREDICTIONS:
            raise ConfigError(
                f"image_prediction must be one of {', '.join(IMAGE_PREDICTIONS)}, got {self.image_prediction!r}"
            )

    def scheduler_config(self) -> dict:
        return {
            "num_train_timesteps": self.num_train_timesteps,
            "beta_start": self.beta_start,
            "beta_end": self.beta_end,
            "beta_schedule": self.beta_schedule,
        }

    def training_scheduler(self) -> DDPMScheduler:
        """A DDPM scheduler whose ``add_noise`` covers all training timesteps (never call
        ``set_timesteps`` on it: that would shrink its table to the inference steps)."""
        return DDPMScheduler(**self.scheduler_config())

    def inference_scheduler(self, name: str, prediction_type: str):
        """A fresh sampling scheduler (``dpmsolver++``, ``sde-dpmsolver++``, ``ddim`` or ``ddpm``)
        for one modality.

        Args:
            prediction_type: ``"epsilon"`` for the image, ``"sample"`` for the map (clean bits).
        """
        check_scheduler(name)
        kwargs = dict(self.scheduler_config(), prediction_type=prediction_type)
        if name in ("dpmsolver++", "sde-dpmsolver++"):
            kwargs.update(algorithm_type=name, solver_order=2)
        if name == "ddim":
            kwargs.update(clip_sample=False, set_alpha_to_one=False)
        if name == "ddpm":
            kwargs.update(clip_sample=False)
        return SCHEDULERS[name](**kwargs)

    def bits_to_diffusion(self, bits: torch.Tensor) -> torch.Tensor:
        """Analog bits in {-1, +1} -> the map's diffusion space (``bits / map_noise_scale``)."""
        return bits / self.map_noise_scale

    def diffusion_to_bits(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.map_noise_scale

    def to_dict(self) -> dict:
        return asdict(self)
