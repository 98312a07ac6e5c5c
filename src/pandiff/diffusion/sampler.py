"""Lockstep sampling of image and map, with text and classifier-free map guidance.

The image latent and the map bits are integrated on one time grid by two instances of the same
diffusers scheduler (one per modality: the image's model output is epsilon, or v / the clean
image per ``schedule.image_prediction``; the map's is the clean bits), stepped together. Only this glue is ours; the solver maths is diffusers'.

Guidance (all branches of one step run as ONE batched forward):

* ``cond``: caption, current noisy image and map;
* ``uncond``: empty prompt, same inputs (text classifier-free guidance, both outputs);
* ``free``: caption, the map input replaced by pure noise at the last training timestep (the
  model must predict the map from text and image alone). Only in co-generation.

    image = e_c + s_text (e_c - e_u)
    map   = m_c + s_text (m_c - m_u) + s_map (m_c - m_free)

The paper's map rule ``m + s (m - 0.5 m_u - 0.5 m_free)`` is the case s_text = s_map = s / 2.
A modality given by the caller stays clean (timestep 0) at every step; with a mask, the given
values are kept outside the mask (re-noised to the current level) and generated inside it.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from pandiff import checks
from pandiff.diffusion.schedule import NoiseSchedule, check_scheduler
from pandiff.errors import ConfigError


@dataclass
class SampleOutput:
    latents: torch.Tensor  # B C h w, scaled image latents
    map_bits: torch.Tensor | None  # B K H W, analog bits in [-1, 1] (threshold at 0); None: image-only


@dataclass
class _Branches:
    """Model inputs of every guidance branch, stacked along the batch."""

    image: torch.Tensor
    t_image: torch.Tensor
    text: torch.Tensor
    map: torch.Tensor | None
    t_map: torch.Tensor | None
    names: tuple[str, ...]


class LockstepSampler:
    """Samples image latents and map bits together from a PDM model.

    Args:
        model: ``model(image, timestep_image, text, map_bits, timestep_map) -> (image, map)``.
        schedule: the training noise schedule (betas and the map's bit scale).
        scheduler: ``"dpmsolver++"`` (default), ``"sde-dpmsolver++"``, ``"ddim"`` or ``"ddpm"``.
        batch_guidance: run all guidance branches as one forward (default); ``False`` runs one
            forward per branch (same numbers, for benchmarks and tests).
        autocast_dtype: run the model under ``torch.autocast`` in this dtype (e.g. bfloat16 on
            a CPU with avx512_bf16); the solver's arithmetic stays in the samples' dtype.
        map_scheduler: the map's sampler when it differs from the image's (None: ``scheduler``).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        schedule: NoiseSchedule,
        scheduler: str = "dpmsolver++",
        batch_guidance: bool = True,
        autocast_dtype: torch.dtype | None = None,
        map_scheduler: str | None = None,
    ) -> None:
        self.model = model
        self.autocast_dtype = autocast_dtype
        self.schedule = schedule
        self.scheduler_name = check_scheduler(scheduler)  # early: sample() builds the schedulers
        self.map_scheduler_name = check_scheduler(scheduler if map_scheduler is None else map_scheduler)
        self.batch_guidance = batch_guidance
        self._noiser = schedule.training_scheduler()

    @torch.no_grad()
    def sample(
        self,
        text: torch.Tensor,
        empty_text: torch.Tensor,
        latent_shape: tuple[int, int, int],
        map_shape: tuple[int, int, int] | None,
        num_inference_steps: int = 20,
        guidance_scale: float = 3.0,
        map_guidance_scale: float = 1.0,
        image_map_guidance_scale: float = 0.0,
        image: torch.Tensor | None = None,
        map_bits: torch.Tensor | None = None,
        image_mask: torch.Tensor | None = None,
        map_mask: torch.Tensor | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        progress: bool = False,
    ) -> SampleOutput:
        """Generate what is not given.

        Args:
            text: ``B L D`` prompt features; ``empty_text``: ``1 L D``.
            latent_shape / map_shape: ``(C, h, w)`` and ``(K, H, W)`` of one sample; ``map_shape``
                None samples an image-only model (text guidance only).
            image: ``B C h w`` clean latents to condition on (image -> map, or inpainting).
            map_bits: ``B K H W`` clean bits in {-1, +1} to condition on (map -> image, inpainting).
            image_map_guidance_scale: beyond the paper, guidance of the image towards a whole given
                ``map_bits`` (map -> image): ``e + s * (e - e_noised)``, ``e_noised`` the prediction
                with the map noised to the image's own timestep, as in joint training (a map of pure
                noise would be out of the training distribution). It fades as ``t`` falls. 0
                (default) is off; ignored unless a whole map is given.
            image_mask / map_mask: ``B 1 h w`` / ``B 1 H W``, 1 where to generate, 0 where to
                keep the given values (requires the matching ``image`` / ``map_bits``).
            generator: makes the result reproducible; a list of ``B`` generators draws sample i's
                noise from generator i alone, so a sample does not depend on its batch.
        """
        checks.steps(num_inference_steps, self.schedule.num_train_timesteps)
        checks.guidance(guidance_scale, "guidance_scale")
        checks.guidance(map_guidance_scale, "map_guidance_scale")
        checks.guidance(image_map_guidance_scale, "image_map_guidance_scale")
        gens = generator if isinstance(generator, (list, tuple)) else [generator]
        if generator is not None and not all(isinstance(g, torch.Generator) for g in gens):
            raise TypeError(
                f"generator must be a torch.Generator (e.g. torch.Generator().manual_seed(0)) or a list "
                f"of them, one per sample, got {type(generator).__name__}"
            )
        for given, mask, name in ((image, image_mask, "image"), (map_bits, map_mask, "map")):
            if mask is not None and given is None:
                raise ConfigError(f"a {name} mask needs the {name} it applies to")
        with_map = map_shape is not None
        if not with_map and (map_bits is not None or map_mask is not None):
            raise ConfigError("map_shape is None (an image-only model), so no map can be given")
        gen_image = image is None or image_mask is not None
        gen_map = with_map and (map_bits is None or map_mask is not None)
        if not (gen_image or gen_map):
            raise ConfigError(
                "both image and map are given without masks: there is nothing to generate"
                if with_map
                else "the image is given without a mask: there is nothing to generate"
            )

        b = text.shape[0]
        device, dtype = text.device, text.dtype
        map0 = self.schedule.bits_to_diffusion(map_bits) if map_bits is not None else None
        if isinstance(generator, (list, tuple)) and len(generator) != b:
            raise ConfigError(f"got {len(generator)} generators for {b} samples; give one, or one per sample")
        x_image = randn((b, *latent_shape), generator, device, dtype)
        x_map = free_noise = None
        if with_map:
            x_map = randn((b, *map_shape), generator, device, dtype)
            free_noise = randn((b, *map_shape), generator, device, dtype)
        if not gen_image:
            x_image = image
        if not gen_map:
            x_map = map0

        image_sched = self.schedule.inference_scheduler(self.scheduler_name, self.schedule.image_prediction)
        map_sched = self.schedule.inference_scheduler(self.map_scheduler_name, "sample")
        lockstep_timesteps(image_sched, map_sched, num_inference_steps, device)
        x_image = x_image * (image_sched.init_noise_sigma if gen_image else 1.0)
        if gen_map:
            x_map = x_map * map_sched.init_noise_sigma
        timesteps = image_sched.timesteps

        use_uncond = guidance_scale > 0
        use_free = map_guidance_scale > 0 and gen_map and gen_image
        # Image-side map guidance needs a whole given map; its weaker branch is in the training
        # distribution (the joint mode: the map noised to the image's own timestep).
        image_map_scale = (
            image_map_guidance_scale if (map_bits is not None and not gen_map and gen_image) else 0.0
        )
        for i, t in enumerate(tqdm(timesteps, desc="sampling", disable=not progress, leave=False)):
            t_batch = torch.full((b,), int(t), device=device, dtype=torch.long)
            branches = self._branches(
                x_image,
                x_map,
                t_batch,
                text,
                empty_text,
                free_noise,
                gen_image,
                gen_map,
                use_uncond,
                use_free,
                self._noiser.add_noise(map0, free_noise, t_batch) if image_map_scale > 0 else None,
            )
            preds = self._forward(branches, b)
            # eps, or v / x0: see image_prediction
            eps = self._combine(preds, "image", guidance_scale, image_map_scale, "noised_map")
            bits = (
                self._combine(preds, "map", guidance_scale, map_guidance_scale, "free") if gen_map else None
            )
            t_next = timesteps[i + 1] if i + 1 < len(timesteps) else None
            if gen_image:
                x_image = image_sched.step(eps, t, x_image, generator=generator).prev_sample
                if image_mask is not None:
                    x_image = self._keep_known(x_image, image, image_mask, t_next, generator)
            if gen_map:
                x0_map = self.schedule.bits_to_diffusion(bits.clamp(-1, 1))
                x_map = map_sched.step(x0_map, t, x_map, generator=generator).prev_sample
                if map_mask is not None:
                    x_map = self._keep_known(x_map, map0, map_mask, t_next, generator)
        out_bits = self.schedule.diffusion_to_bits(x_map).clamp(-1, 1) if with_map else None
        return SampleOutput(latents=x_image, map_bits=out_bits)

    def _branches(
        self, x_image, x_map, t, text, empty_text, free_noise, gen_image, gen_map, use_uncond, use_free,
        noised_map=None,
    ):  # fmt: skip
        zero = torch.zeros_like(t)
        t_image = t if gen_image else zero
        t_map = t if gen_map else zero
        images, t_images, texts, maps, t_maps, names = (
            [x_image],
            [t_image],
            [text],
            [x_map],
            [t_map],
            ["cond"],
        )
        if use_uncond:
            images.append(x_image)
            t_images.append(t_image)
            texts.append(empty_text.to(text.dtype).expand_as(text))
            maps.append(x_map)
            t_maps.append(t_map)
            names.append("uncond")
        if use_free:
            images.append(x_image)
            t_images.append(t_image)
            texts.append(text)
            maps.append(free_noise)
            t_maps.append(torch.full_like(t, self.schedule.num_train_timesteps - 1))
            names.append("free")
        if noised_map is not None:  # image-side map guidance: the given map at the image's timestep
            images.append(x_image)
            t_images.append(t_image)
            texts.append(text)
            maps.append(noised_map)
            t_maps.append(t)
            names.append("noised_map")
        with_map = x_map is not None
        return _Branches(
            torch.cat(images),
            torch.cat(t_images),
            torch.cat(texts),
            torch.cat(maps) if with_map else None,
            torch.cat(t_maps) if with_map else None,
            tuple(names),
        )

    def _forward(self, br: _Branches, b: int) -> dict[str, dict[str, torch.Tensor]]:
        """Model predictions per branch name: ``{"cond": {"image": ..., "map": ...}, ...}``."""
        if self.batch_guidance:
            image_out, map_out = self._model(br.image, br.t_image, br.text, br.map, br.t_map)
            image_chunks = image_out.split(b)
            map_chunks = map_out.split(b) if map_out is not None else [None] * len(br.names)
        else:
            image_chunks, map_chunks = [], []
            for k in range(len(br.names)):
                sl = slice(k * b, (k + 1) * b)
                map_in, t_map = (br.map[sl], br.t_map[sl]) if br.map is not None else (None, None)
                image_out, map_out = self._model(br.image[sl], br.t_image[sl], br.text[sl], map_in, t_map)
                image_chunks.append(image_out)
                map_chunks.append(map_out)
        return {n: {"image": im, "map": mp} for n, im, mp in zip(br.names, image_chunks, map_chunks)}

    def _model(self, image, t_image, text, map_in, t_map) -> tuple[torch.Tensor, torch.Tensor | None]:
        dtype = image.dtype
        with torch.autocast(
            image.device.type, dtype=self.autocast_dtype, enabled=self.autocast_dtype is not None
        ):
            out = self.model(image, t_image, text, map_in, t_map)
        return out.image.to(dtype), (out.map.to(dtype) if out.map is not None else None)

    @staticmethod
    def _combine(preds, key: str, text_scale: float, map_scale: float, map_branch: str) -> torch.Tensor:
        """``cond + text_scale (cond - uncond) + map_scale (cond - preds[map_branch])`` for ``key``;
        a term whose branch did not run is left out. The map term's weaker branch differs per
        output: ``free`` (map of pure noise) for the map, ``noised_map`` for the image."""
        cond = preds["cond"][key]
        out = cond
        if "uncond" in preds:
            out = out + text_scale * (cond - preds["uncond"][key])
        if map_branch in preds and map_scale > 0:
            out = out + map_scale * (cond - preds[map_branch][key])
        return out

    def _keep_known(self, x, known, mask, t_next, generator):
        """Inside ``mask`` keep the sample; outside it put the known clean values, noised to the
        level of the next timestep (clean after the last step)."""
        if t_next is None:
            noised = known
        else:
            noise = randn(known.shape, generator, known.device, known.dtype)
            t = torch.full((known.shape[0],), int(t_next), device=known.device, dtype=torch.long)
            noised = self._noiser.add_noise(known, noise, t)
        return mask * x + (1 - mask) * noised


def lockstep_timesteps(image_sched, map_sched, num_inference_steps: int, device) -> None:
    """Set both schedulers to one timestep grid, so that image and map stay at one noise level, as
    in joint training (one shared timestep).

    Samplers of one family share a grid; across families they do not (DPM-Solver++ spaces its 20
    steps from 999, DDIM and DDPM theirs from 950 down to 0), so one takes the other's grid as
    custom timesteps, which DPM-Solver++ and DDPM accept and DDIM does not: the map follows the
    image, except a DDIM map, which the image follows.
    """
    image_sched.set_timesteps(num_inference_steps, device=device)
    map_sched.set_timesteps(num_inference_steps, device=device)
    if torch.equal(image_sched.timesteps.cpu(), map_sched.timesteps.cpu()):
        return
    for follower, leader in ((map_sched, image_sched), (image_sched, map_sched)):
        if "timesteps" in inspect.signature(follower.set_timesteps).parameters:
            follower.set_timesteps(timesteps=leader.timesteps.tolist(), device=device)
            return
    # Unreachable with today's samplers (only DDIM lacks custom timesteps); kept for a new one.
    raise ConfigError(
        f"the image's and the map's samplers ({type(image_sched).__name__}, {type(map_sched).__name__}) "
        "step on different timestep grids and neither takes the other's; use one sampler for both"
    )


def randn(shape, generator, device, dtype) -> torch.Tensor:
    """Standard normal noise of ``shape`` (``B ...``). With a list of generators, row i is drawn
    by generator i alone, on that generator's device, then moved: a sample's noise then depends
    neither on its batch nor on the device that samples it."""
    if isinstance(generator, (list, tuple)):
        rows = [torch.randn((1, *shape[1:]), generator=g, device=g.device, dtype=dtype) for g in generator]
        return torch.cat(rows).to(device)
    return torch.randn(shape, generator=generator, device=device, dtype=dtype)
