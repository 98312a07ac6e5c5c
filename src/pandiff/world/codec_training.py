"""Train the built-in world's small ``AutoencoderKL`` (64 px -> 4 x 16 x 16): ``pandiff train-codec``.

Stable Diffusion's autoencoder recipe cut down to a CPU budget: a pixel reconstruction loss plus a
tiny KL term, latents drawn from the posterior while training, random horizontal flips. No
perceptual or adversarial loss (they need a pretrained network and a discriminator); the loss is
the mean squared error because the goal is measured in PSNR (L1 trailed it; the runs behind these
defaults: benchmarks/RESULTS.md, "Lab notes moved out of the code").
After training, the scaling factor is measured as ``1 / std`` of the train latents (how Stable
Diffusion chose 0.18215) and stored in the saved config, so the diffusion model sees latents of
roughly unit variance. Progress (loss, validation PSNR) shows in a tqdm bar;
``DIR/training.json`` records what produced the codec.
"""

from __future__ import annotations

import functools
import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from pandiff import checks
from pandiff.errors import ConfigError, DataError
from pandiff.io import atomic_dir, check_output_dir, write_json

if TYPE_CHECKING:  # imported where used, so that `pandiff train-codec --help` does not load torch
    import torch

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
EVAL_IMAGES = 256  # validation images scored at each periodic evaluation (all at the end)
SCALE_IMAGES = 1024  # train images whose latents set the scaling factor
# Images per step: in a time budget, twice the updates of batch 16 at nearly the same images per
# minute won validation PSNR (measured: benchmarks/RESULTS.md).
BATCH = 8
EVAL_BATCH = 64  # images per forward pass when scoring (no gradients: larger than a training batch)
# Default widths for the built-in world's 64 px codec: training is convolution-bound, so in a
# 20-minute budget a cheaper codec that sees more images wins up to a point (benchmarks/RESULTS.md).
WORLD_CODEC_CHANNELS = [24, 48, 96]
# Initial posterior log-variance. At diffusers' default init it is about 0, i.e. noise as large as
# the latents themselves, and the reconstruction learns nothing until it has shrunk; starting
# narrow (std ~0.02) lets every step count while the posterior stays trainable.
INITIAL_LOGVAR = -8.0


def _no_grad(fn):
    """``@torch.no_grad()`` that imports torch when ``fn`` is called, not when it is defined."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        import torch

        with torch.no_grad():
            return fn(*args, **kwargs)

    return wrapper


@dataclass
class CodecTrainingOptions:
    """What ``pandiff train-codec`` was asked (mirrors its command-line options)."""

    data: Path
    out: Path
    steps: int = 8000
    batch: int = BATCH
    lr: float = 2e-3
    kl_weight: float = 1e-6
    channels: list[int] = field(default_factory=lambda: list(WORLD_CODEC_CHANNELS))
    seed: int = 0
    bf16: bool = True
    eval_every: int = 250
    max_minutes: float | None = None
    device: str | None = None  # None: cuda when available, else cpu
    overwrite: bool = False

    def check(self) -> None:
        """Every option, before any image loads or anything is written."""
        for name in ("steps", "batch", "eval_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if not self.channels or min(self.channels) < 1:
            raise ConfigError(f"--channels must list positive channel counts, got {self.channels}")
        checks.number(self.lr, "--lr", 0.0, 1.0, lo_open=True)
        checks.number(self.kl_weight, "--kl-weight", 0.0)
        if self.max_minutes is not None:
            checks.number(self.max_minutes, "--max-minutes", 0.0, lo_open=True)
        checks.seed(self.seed)
        if self.device is not None:
            checks.device(self.device)
        check_output_dir(self.out, self.overwrite, protect=[self.data])


def load_image_folder(folder: Path) -> torch.Tensor:
    """All images of ``folder`` (sorted by name) as one uint8 tensor ``N 3 H W``.

    Raises:
        DataError: the folder is missing or empty, or the images differ in size.
    """
    import numpy as np
    import torch
    from PIL import Image

    if not folder.is_dir():
        raise DataError(
            f"image folder {str(folder)!r} does not exist; write a world with `pandiff make-world`"
        )
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise DataError(f"no .png/.jpg images in {str(folder)!r}")
    arrays = []
    for path in paths:
        try:
            with Image.open(path) as im:
                arrays.append(np.asarray(im.convert("RGB")))
        except OSError as exc:
            raise DataError(f"cannot read image {str(path)!r}: {exc}") from exc
        if arrays[-1].shape != arrays[0].shape:
            raise DataError(
                f"{str(path)!r} is {arrays[-1].shape[1]}x{arrays[-1].shape[0]} but {str(paths[0])!r} is "
                f"{arrays[0].shape[1]}x{arrays[0].shape[0]}; the codec trains on one image size"
            )
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()  # N 3 H W uint8


def to_unit_range(images: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """uint8 ``B 3 H W`` -> float32 in ``[-1, 1]`` on ``device``."""
    import torch

    return images.to(device=device, dtype=torch.float32) / 127.5 - 1.0


def psnr(reconstruction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB of ``B 3 H W`` images in ``[-1, 1]`` (peak-to-peak 2, i.e. the usual
    PSNR on ``[0, 1]`` images)."""
    import torch

    mse = (reconstruction.float().clamp(-1, 1) - target.float()).pow(2).mean(dim=(1, 2, 3)) / 4.0
    return 10.0 * torch.log10(1.0 / mse.clamp_min(1e-10))


@_no_grad
def evaluate_psnr(vae, images: torch.Tensor, device: torch.device, batch: int) -> float:
    """Mean PSNR (dB) of decoding each image's posterior mean."""
    import torch

    vae.eval()
    scores = []
    for chunk in images.split(batch):
        x = to_unit_range(chunk, device)
        scores.append(psnr(vae.decode(vae.encode(x).latent_dist.mean).sample, x).cpu())
    vae.train()
    return float(torch.cat(scores).mean())


@_no_grad
def measure_scaling_factor(vae, images: torch.Tensor, device: torch.device, batch: int) -> float:
    """``1 / std`` of the posterior means of ``images``: makes the latents unit-variance."""
    import torch

    vae.eval()
    means = [vae.encode(to_unit_range(chunk, device)).latent_dist.mean.cpu() for chunk in images.split(batch)]
    return float(1.0 / torch.cat(means).std())


@_no_grad
def narrow_posterior(vae, logvar: float = INITIAL_LOGVAR) -> None:
    """Start every posterior log-variance at ``logvar`` (the log-variance half of ``quant_conv``)."""
    channels = vae.config.latent_channels
    vae.quant_conv.weight[channels:] = 0.0
    vae.quant_conv.bias[channels:] = logvar


def codec_config(channels: list[int], size: int) -> dict:
    """The AutoencoderKL config for ``size`` px images with ``channels`` per level."""
    from pandiff.encoders.codec import TINY_VAE_CONFIG

    return {
        **TINY_VAE_CONFIG,
        "down_block_types": ["DownEncoderBlock2D"] * len(channels),
        "up_block_types": ["UpDecoderBlock2D"] * len(channels),
        "block_out_channels": list(channels),
        "norm_num_groups": math.gcd(TINY_VAE_CONFIG["norm_num_groups"], *channels),
        "sample_size": size,
    }


def learning_rate(peak: float, step: int, progress: float, warmup_steps: int) -> float:
    """Linear warm-up over ``warmup_steps``, then cosine decay to 0 as ``progress`` goes 0 -> 1."""
    warmup = min(1.0, step / max(1, warmup_steps))
    return peak * warmup * 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


def codec_loss(
    reconstruction: torch.Tensor, target: torch.Tensor, posterior, kl_weight: float
) -> torch.Tensor:
    """Mean squared error of ``B 3 H W`` images plus ``kl_weight`` x the KL divergence per pixel
    value, i.e. the balance of Stable Diffusion's per-image sums."""
    mse = (reconstruction.float() - target).pow(2).mean()
    return mse + kl_weight * posterior.kl().float().mean() / target[0].numel()


def make_codec(channels: list[int], size: int, device: torch.device | str, seed: int = 0):
    """A freshly initialised codec for ``size`` px images (seeded, narrow posterior), in training
    mode on ``device``."""
    import torch
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    vae = AutoencoderKL(**codec_config(channels, size))
    narrow_posterior(vae)
    # channels_last: oneDNN's (and cuDNN's) faster convolution layout; on 2 CPU cores 22% more
    # steps per minute at batch 8, 3% at batch 16 (benchmarks/bench_codec.py). The weights go back
    # to the standard layout before saving.
    return vae.to(device, memory_format=torch.channels_last).train()


def make_optimizer(vae, lr: float) -> torch.optim.Optimizer:
    # beta2 0.99 (PyTorch's default is 0.999): with the slower second-moment average a 35-minute
    # run collapsed at step ~2000 (27.9 -> 17.8 dB val PSNR); with 0.99 the same run, a little
    # behind up to step 1500, never dropped and passed 30 dB at step 3500.
    import torch

    return torch.optim.Adam(vae.parameters(), lr=lr, betas=(0.9, 0.99))


def optimizer_step(
    vae, optimizer: torch.optim.Optimizer, x: torch.Tensor, kl_weight: float, bf16: bool
) -> float:
    """One update on the ``B 3 H W`` batch ``x`` in ``[-1, 1]``: encode, draw a latent from the
    posterior, decode, :func:`codec_loss`, backward, step. Returns the loss."""
    import torch

    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
        posterior = vae.encode(x).latent_dist
        reconstruction = vae.decode(posterior.sample()).sample  # B 3 H W
    loss = codec_loss(reconstruction, x, posterior, kl_weight)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.item()


def train_steps(
    vae, train: torch.Tensor, val: torch.Tensor, args: CodecTrainingOptions
) -> tuple[int, list[dict]]:
    """Optimise ``vae`` in place on uint8 ``train`` images; returns the steps taken and the history
    (seconds since the start, mean loss since the previous check and validation PSNR, every
    ``--eval-every`` steps).

    Training progress is steps done or time spent, whichever is further along, so a
    ``--max-minutes`` run still decays its learning rate to zero before it stops.
    """
    import torch
    from tqdm.auto import tqdm

    device = vae.device
    generator = torch.Generator().manual_seed(args.seed)
    optimizer = make_optimizer(vae, args.lr)
    warmup_steps = min(100, args.steps // 10)
    limit_s = math.inf if args.max_minutes is None else 60.0 * args.max_minutes
    history: list[dict] = []
    losses: list[float] = []
    val_psnr = float("nan")
    start = time.monotonic()
    bar = tqdm(total=args.steps, desc="train-codec", unit="step")
    step, progress = 0, 0.0
    while progress < 1.0:
        step += 1
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(args.lr, step, progress, warmup_steps)
        index = torch.randint(len(train), (args.batch,), generator=generator)
        x = to_unit_range(train[index], device).contiguous(memory_format=torch.channels_last)  # B 3 H W
        flip = torch.rand(args.batch, generator=generator) < 0.5
        x[flip] = x[flip].flip(-1)
        loss = optimizer_step(vae, optimizer, x, args.kl_weight, args.bf16)
        if not math.isfinite(loss):
            raise ConfigError(f"training diverged at step {step} (loss {loss}); lower --lr")
        losses.append(loss)
        progress = max(step / args.steps, (time.monotonic() - start) / limit_s)
        if step % args.eval_every == 0 or progress >= 1.0:
            val_psnr = evaluate_psnr(vae, val[:EVAL_IMAGES], device, EVAL_BATCH)
            history.append(
                {
                    "step": step,
                    "elapsed_s": round(time.monotonic() - start, 1),
                    "loss": round(sum(losses) / len(losses), 6),
                    "val_psnr_db": round(val_psnr, 3),
                }
            )
            losses.clear()
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.4f}", val_psnr=f"{val_psnr:.2f}dB")
    bar.close()
    return step, history


def train_codec(opts: CodecTrainingOptions) -> dict:
    """Train a codec on ``opts.data``'s train2017/ images, score it on val2017/, and save it (with
    its measured scaling factor and ``training.json``) to ``opts.out``; returns that report."""
    import torch

    opts.check()
    args = replace(opts, device=opts.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    args.data, args.out = Path(args.data), Path(args.out)
    train = load_image_folder(args.data / "train2017")
    val = load_image_folder(args.data / "val2017")
    size = tuple(train.shape[-2:])
    if tuple(val.shape[-2:]) != size:
        raise DataError(f"train images are {size} but val images are {tuple(val.shape[-2:])}; use one world")
    downsample = 2 ** (len(args.channels) - 1)
    if size[0] % downsample or size[1] % downsample:
        raise DataError(f"image size {size} is not divisible by the codec's downsample factor {downsample}")

    vae = make_codec(args.channels, size[0], args.device, args.seed)
    start = time.monotonic()
    steps, history = train_steps(vae, train, val, args)
    train_seconds = time.monotonic() - start
    bad = checks.nonfinite(vae.named_parameters())
    if bad:  # the last step's loss was finite, but its update overflowed: never save such a codec
        raise ConfigError(
            f"training diverged: after step {steps} {checks.describe_names(bad)} hold NaN or infinite "
            f"values; nothing was saved to {args.out}. Lower --lr"
        )

    device = vae.device
    val_psnr = evaluate_psnr(vae, val, device, EVAL_BATCH)
    scaling = measure_scaling_factor(vae, train[:SCALE_IMAGES], device, EVAL_BATCH)
    vae.register_to_config(scaling_factor=scaling)
    report = {
        "steps": steps,
        "wall_time_s": round(train_seconds, 1),
        "val_psnr_db": round(val_psnr, 3),
        "scaling_factor": scaling,
        "data": str(args.data.resolve()),
        "train_images": len(train),
        "val_images": len(val),
        "image_size": list(size),
        "seed": args.seed,
        "batch": args.batch,
        "lr": args.lr,
        "kl_weight": args.kl_weight,
        "channels": list(args.channels),
        "bf16": args.bf16,
        "device": str(device),
        "torch_threads": torch.get_num_threads(),
        "history": history,
    }
    with atomic_dir(args.out) as tmp:
        vae.to("cpu", memory_format=torch.contiguous_format).save_pretrained(tmp, safe_serialization=True)
        write_json(tmp / "training.json", report, indent=2)
    return report
