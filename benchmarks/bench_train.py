"""Training throughput and model FLOPs utilisation (issue #8): fp32 against bf16 autocast; on a
GPU (``--device cuda``, issue #22) the trainer's own bf16 step, eager and compiled, with its data.

Usage::

    python benchmarks/bench_train.py [--models world-s-pixel uvit-s2 uvit-s2-two-stream]
        [--batch 32] [--steps 10] [--warmup 3] [--n 160] [--uvit-batch 8] [--uvit-steps 5]
        [--uvit-warmup 2] [--threads N] [--features DIR]
        [--curves STEPS] [--curve-tol 0.05] [--compile] [--no-append] [--note TEXT]
    python benchmarks/bench_train.py --device cuda [--features DIR] [--models ...] [--batch 1024]
        [--uvit-batch 128] [--workers 4] [--max-seconds 140] [--skip-compiled] [--profile]

``--device cuda`` (:func:`run_gpu`; the CPU rows below are unchanged): bf16 only, every row a
real :class:`~pandiff.training.trainer.Trainer` (its fused AdamW, EMA, checks), eager and with
``train.compile=true``. world-s-pixel at ``--batch`` (1024): ``Trainer.fit`` on ``--features``
(prepared pixel features; without it random shards of their shapes) through the shard stream
(``--workers`` DataLoader workers) and with ``data.resident=true`` (the split held on the GPU),
against the same step on one batch held on the GPU ("in memory"), and their ratio (target >= 90%).
uvit-s2 / uvit-s2-two-stream at ``--uvit-batch`` (128): ``configs/coco256-uvit-s2.yaml`` on random
feature shards of COCO's shapes written with pandiff's own shard writer into a temporary folder,
read by ``Trainer.fit`` through its shard stream, against the in-memory step and the bench's own
synthetic loop (eager); MFU target >= 45% (a frozen image stream counted forward only). A rate is
the timed steps over the wall clock between two ``torch.cuda.synchronize()`` after untimed warm-up
steps (which compile); MFU is against the best bf16 ``torch.matmul`` rate measured in the same run.
All eager rows run first, then the compiled ones, in ``--models`` order; a failing compile becomes
its rows' note; ``--max-seconds`` bounds the whole run (rows past it are cut short, with a note).
``--profile`` adds torch.profiler's top 15 ops (by CUDA time) of uvit-s2 unified's eager step.

Models (``--models``):

* ``world-s-pixel``: the bundled model's trainer (``configs/world-s-pixel.yaml``) on a small
  built-in world (``--n`` scenes) prepared as ``pandiff prepare`` does it (identity codec, MiniLM
  text, 64 px images, 64x64 maps), timed twice per precision: ``data included`` is
  ``Trainer.fit`` itself (its own per-step metrics); ``data excluded`` the same optimizer steps
  (forward, backward, clip, AdamW, EMA) on one batch held in memory; with ``--compile`` also
  ``data excluded, compiled``: the same with ``train.compile=true`` (Accelerate's
  ``torch.compile``, inductor; compiling happens in the untimed warm-up steps).
* ``uvit-s2`` / ``uvit-s2-two-stream``: the paper's COCO size (U-ViT-S/2, D=512, 12+1 blocks),
  unified, and two-stream around a frozen image-only U-ViT-S/2
  (``PDMTwoStream.from_image_stream`` + ``freeze_image_stream``). No data set: the same
  optimizer step (joint loss, backward, clip, AdamW, EMA) on a synthetic in-memory batch of the
  right shapes (latents 4x32x32, maps 11x64x64, text 77x768), batch ``--uvit-batch``, timed
  over ``--uvit-steps`` after ``--uvit-warmup`` (a step is ~10x world-s-pixel's).

Every rate is the median step after the untimed warm-up steps (a busy machine disturbs a median
less than a mean). Per row: steps/s, samples/s, tokens/s (tokens per sample: the whole transformer
sequence ``[time, text, image patches, map time, map patches]``; for the two-stream model the map
stream's sequence, which holds the image stream's tokens too), achieved FLOP/s = FLOPs per step
(:func:`training_flops`) x steps/s, and MFU = achieved FLOP/s / the plain ``torch.matmul`` rate of
the same dtype (fp32 rows: fp32 matmul, bf16 rows: bf16 matmul) measured in this run, with
torch's thread count, before and after the training measurements. The MFU denominator is the
best of those matmul rates (a 1024^3 square matmul and one shaped like each model's MLP: 4096
tokens x D -> 4D), median of 10 repeats each.

``--curves STEPS`` also trains world-s-pixel from the same seed twice, fp32 and bf16 autocast
(``train.mixed_precision``, ``train.steps=STEPS``, ``train.log_every=10``; same data order and
noise draws), and prints the loss of both runs averaged over ~50-step windows, the largest
relative difference of those smoothed losses and the speed ratio (bf16 steps/s over fp32 steps/s,
``Trainer.fit``'s own metrics, data included).

Issue #8's targets are printed as verdicts, never asserted: bf16 >= 2x fp32 steps/s at equal
loss curves (smoothed losses within ``--curve-tol``), and bf16 MFU >= 60% of the same-run bf16
matmul rate.

All tables are printed as Markdown and appended to ``benchmarks/RESULTS.md`` with the machine
(platform, CPU, load average at the start, torch version and threads) unless ``--no-append``.
Wall-clock rates depend on what else runs on the machine; the load average says how busy it was.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import gc
import signal
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from bench_common import machine_description, publish
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "world-s-pixel.yaml"
MODELS = ("world-s-pixel", "uvit-s2", "uvit-s2-two-stream")
SPEED_TARGET = 2.0  # issue #8: bf16 at least 2x fp32 steps/s ...
MFU_TARGET = 0.60  # ... and at least 60% of the same-run bf16 matmul rate


# -- FLOP counting ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class FlopCount:
    """Matmul FLOPs of one training step of ``batch`` samples.

    Attributes:
        forward: FLOPs of the forward pass.
        training: FLOPs of forward + backward (the convention of :func:`training_flops`).
        tokens: tokens per sample, the longest sequence any attention layer saw.
        batch: samples the counts are for.
    """

    forward: int
    training: int
    tokens: int
    batch: int


def training_flops(
    model: nn.Module, batch_size: int = 1, device: str | None = "meta", frozen_backward: bool = True
) -> FlopCount:
    """Matmul FLOPs of one training step of ``model`` on ``batch_size`` samples, counted by hooks
    on the real modules during one forward pass (batch 1, map given when the model has one, grad
    enabled, train mode), so the count follows the model's actual code path.

    Forward, per call:

    * every ``nn.Linear``: ``2 * in * out`` per row (token) of its input;
    * every ``nn.Conv2d`` (patch embeddings, 3x3 heads): ``2 * k_h * k_w * C_in/groups * C_out``
      per output position;
    * every :class:`~pandiff.model.uvit.Attention` (SDPA): ``2 * 2 * N^2 * D`` for ``Q K^T`` and
      ``A V`` over its ``N`` tokens of width ``D`` (all heads).

    Bias adds, norms, activations, softmax and the optimizer are not counted.

    Backward convention (follows autograd, not a flat "3x forward"): a matmul ``Y = A B`` costs
    ``F`` forward, plus ``F`` for ``dA`` if ``A`` requires grad, plus ``F`` for ``dB`` if ``B``
    requires grad. So:

    * a trainable Linear/Conv2d whose input carries gradient: ``3F`` (the usual 6 x params x tokens);
    * a trainable Linear/Conv2d fed by data (the image/map patch embeddings, ``context_embed`` on the
      text, ``map_time_embed`` on the sinusoidal embedding): ``2F`` -- autograd never computes the
      input gradient there (well under 1% of a step for every preset);
    * a frozen Linear/Conv2d (the two-stream's image stream): ``F`` plus ``F`` for the activation
      gradient only where gradient flows through it (every image-stream block after the first
      ``zero_projs`` injection, and its head), otherwise ``F`` (its embeddings and first in-block);
    * attention (no weights; Q, K, V all come from the input): ``3F`` where the input carries
      gradient, otherwise ``F``.

    Recomputation (activation checkpointing, SDPA's backward) is not counted: these are model
    FLOPs, as MFU asks, not hardware FLOPs. The count equals ``torch.utils.flop_counter`` over a
    real forward + backward with SDPA's math backend (``tests/test_bench_flops.py``); torch's
    counter alone misses the fused CPU SDPA kernel.

    Args:
        model: a pandiff model (``UViT``, ``PDMUnified`` or ``PDMTwoStream``); it is not modified.
        batch_size: samples per step; every term is linear in it.
        device: where the counting pass runs on a deep copy of the model; ``"meta"`` (default)
            computes shapes only, no arithmetic. None: the model itself, on its own device.
        frozen_backward: count the activation gradients that flow back through frozen modules
            (default, what autograd computes). False: a frozen module (one whose weights all have
            ``requires_grad=False``: the two-stream's image stream) counts its forward only --
            issue #22's convention for the two-stream model, a lower bound of the work done.
    """
    from pandiff.model.uvit import Attention

    counted = copy.deepcopy(model).to(device) if device is not None else model
    param = next(counted.parameters())
    cfg = counted.config
    kw = {"device": param.device, "dtype": param.dtype}
    image = torch.zeros(1, cfg.latent_channels, cfg.latent_size, cfg.latent_size, **kw)
    text = torch.zeros(1, cfg.text_len, cfg.text_dim, **kw)
    map_bits = None
    if getattr(counted, "with_map", False):
        side = cfg.patch_factor * cfg.latent_size
        map_bits = torch.zeros(1, cfg.map_bits, side, side, **kw)
    timestep = torch.full((1,), 500, device=param.device, dtype=torch.long)

    totals = {"forward": 0, "training": 0, "tokens": 0}
    # Modules whose own weights are all frozen: their backward is not counted unless frozen_backward.
    frozen = {
        id(mod)
        for mod in counted.modules()
        if not frozen_backward
        and any(True for _ in mod.parameters())
        and not any(p.requires_grad for p in mod.parameters())
    }

    def add(flops: int, gradients: int) -> None:
        totals["forward"] += flops
        totals["training"] += flops * (1 + gradients)

    def linear(mod: nn.Linear, args: tuple, out: torch.Tensor) -> None:
        x = args[0]
        add(
            2 * mod.in_features * mod.out_features * (x.numel() // mod.in_features),
            0 if id(mod) in frozen else int(x.requires_grad) + int(mod.weight.requires_grad),
        )

    def conv(mod: nn.Conv2d, args: tuple, out: torch.Tensor) -> None:
        kh, kw_ = mod.kernel_size
        add(
            2 * kh * kw_ * (mod.in_channels // mod.groups) * out.numel(),
            0 if id(mod) in frozen else int(args[0].requires_grad) + int(mod.weight.requires_grad),
        )

    def attention(mod: nn.Module, args: tuple, out: torch.Tensor) -> None:
        b, n, d = args[0].shape
        add(2 * 2 * b * n * n * d, 0 if id(mod) in frozen else 2 * int(args[0].requires_grad))
        totals["tokens"] = max(totals["tokens"], n)

    handles = []
    for mod in counted.modules():
        if isinstance(mod, nn.Linear):
            handles.append(mod.register_forward_hook(linear))
        elif isinstance(mod, nn.Conv2d):
            handles.append(mod.register_forward_hook(conv))
        elif isinstance(mod, Attention):
            handles.append(mod.register_forward_hook(attention))
    was_training = counted.training
    counted.train()
    try:
        with torch.enable_grad():
            counted(image, timestep, text, map_bits, None if map_bits is None else timestep)
    finally:
        for h in handles:
            h.remove()
        counted.train(was_training)
    return FlopCount(
        forward=totals["forward"] * batch_size,
        training=totals["training"] * batch_size,
        tokens=totals["tokens"],
        batch=batch_size,
    )


# -- matmul reference rate -------------------------------------------------------------------------
def matmul_rate(dtype: torch.dtype, m: int, k: int, n: int, repeats: int = 10, warmup: int = 2) -> float:
    """FLOP/s of ``torch.matmul`` of ``m x k`` by ``k x n`` in ``dtype`` (median of ``repeats``),
    with torch's current thread count."""
    g = torch.Generator().manual_seed(0)
    a = torch.randn(m, k, generator=g).to(dtype)
    b = torch.randn(k, n, generator=g).to(dtype)
    c = torch.empty(m, n, dtype=dtype)
    for _ in range(warmup):
        torch.matmul(a, b, out=c)
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        torch.matmul(a, b, out=c)
        seconds.append(time.perf_counter() - start)
    return 2 * m * k * n / statistics.median(seconds)


def matmul_shapes(dims: list[int]) -> list[tuple[int, int, int]]:
    """A 1024^3 square matmul plus one MLP-like shape (4096 tokens x D -> 4D) per width D."""
    return [(1024, 1024, 1024)] + [(4096, d, 4 * d) for d in sorted(set(dims))]


def measure_matmuls(shapes: list[tuple[int, int, int]]) -> dict[tuple[str, tuple], float]:
    return {
        (name, shape): matmul_rate(dtype, *shape)
        for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16))
        for shape in shapes
    }


# -- world-s-pixel: the real trainer ---------------------------------------------------------------
def make_features(folder: Path, n: int) -> Path:
    """A world of ``n`` 64 px scenes prepared as for world-s-pixel (identity codec, MiniLM text)."""
    from pandiff.data.prepare import prepare_features
    from pandiff.encoders.codec import load_codec
    from pandiff.encoders.text import load_text_encoder
    from pandiff.world.generator import generate_world

    start = time.perf_counter()
    generate_world(folder / "world", n=n, size=64, seed=0, workers=1)
    out = folder / "features"
    prepare_features(
        folder / "world",
        out,
        load_codec("identity"),
        "identity",
        load_text_encoder("minilm"),
        splits=["train", "val"],
        image_size=64,
        map_size=64,
        shard_size=256,
        max_captions=3,
        batch_size=32,
        progress=False,
    )
    print(f"made and prepared {n} scenes in {time.perf_counter() - start:.1f} s", flush=True)
    return out


def pixel_config(features: Path, run_dir: Path, batch: int, precision: str, *extra: str):
    from pandiff.training.config import load_config

    return load_config(
        CONFIG,
        [
            f"data.features={features}",
            f"run.dir={run_dir}",
            f"train.batch_size={batch}",
            f"train.mixed_precision={precision}",
            "train.compile=false",  # eager unless a row asks for train.compile=true
            "sample.every=0",
            "train.checkpoint_every=1000000",
            *extra,
        ],
    )


def time_fit(config, warmup: int) -> float:
    """Steps/s of ``Trainer.fit`` (its own per-step metrics, data loading included): the median
    step after the warm-up."""
    from pandiff.training.metrics import read_metrics
    from pandiff.training.trainer import Trainer

    trainer = Trainer(config, progress=False)
    trainer.fit()
    trainer.close()
    rows = read_metrics(config.run.dir)[warmup:]
    return 1.0 / statistics.median(1.0 / row["steps_per_s"] for row in rows)


def time_compute(config, steps: int, warmup: int) -> float:
    """Steps/s of the trainer's optimizer steps alone on one batch kept in memory (median step)."""
    from pandiff.training.trainer import Trainer

    trainer = Trainer(config, progress=False)
    batch = next(iter(trainer.loader))
    seconds = []
    for i in range(warmup + steps):
        start = time.perf_counter()
        trainer._end_step(trainer._micro_step(batch))
        if i >= warmup:
            seconds.append(time.perf_counter() - start)
    trainer.close()
    return 1.0 / statistics.median(seconds)


# -- uvit-s2: synthetic in-memory batch ------------------------------------------------------------
def build_uvit_s2(variant: str) -> nn.Module:
    from pandiff.model import pdm_from_preset
    from pandiff.model.pdm import PDMTwoStream
    from pandiff.model.presets import PRESETS

    torch.manual_seed(0)
    if variant == "unified":
        return pdm_from_preset("uvit-s2", "unified").train()
    preset = PRESETS["uvit-s2"]
    model = PDMTwoStream.from_image_stream(
        pdm_from_preset("uvit-s2", "image-only"), preset["map_bits"], preset["patch_factor"]
    )
    model.freeze_image_stream()
    return model.train()


def time_synthetic(
    model: nn.Module, batch: int, precision: str, steps: int, warmup: int, device: str = "cpu"
) -> float:
    """Steps/s (median step) of the trainer's optimizer step -- joint loss, backward, grad clip 1.0,
    AdamW, EMA -- on one synthetic batch of the model's shapes, fp32 or bf16 autocast (what
    Accelerate's ``mixed_precision="bf16"`` does on a CPU). The model's weights change; the
    optimizer and EMA are dropped afterwards.

    ``device="cuda"``: the model must already be there; the batch is made there, and the rate is
    ``steps`` over the wall clock between two ``torch.cuda.synchronize()`` (no sync inside, so the
    host may run ahead as in training) after the untimed warm-up."""
    from diffusers.training_utils import EMAModel

    from pandiff.diffusion.loss import LossConfig, joint_loss
    from pandiff.diffusion.schedule import NoiseSchedule

    dev = torch.device(device)
    cfg = model.config
    g = torch.Generator().manual_seed(0)
    side = cfg.patch_factor * cfg.latent_size
    latents = torch.randn(batch, cfg.latent_channels, cfg.latent_size, cfg.latent_size, generator=g)
    bits = torch.randint(0, 2, (batch, cfg.map_bits, side, side), generator=g).float() * 2 - 1
    text = torch.randn(batch, cfg.text_len, cfg.text_dim, generator=g)
    empty = torch.zeros(1, cfg.text_len, cfg.text_dim)
    if dev.type != "cpu":
        latents, bits, text, empty = (t.to(dev) for t in (latents, bits, text, empty))
        g = torch.Generator(dev).manual_seed(0)
    schedule, loss_cfg = NoiseSchedule(), LossConfig()
    noiser = schedule.training_scheduler()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4, betas=(0.9, 0.9), weight_decay=0.03)
    ema = EMAModel(params, decay=0.9999)

    def step() -> None:
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            out = joint_loss(model, schedule, noiser, latents, bits, text, empty, loss_cfg, g)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        ema.step(params)

    if dev.type == "cuda":
        for _ in range(warmup):
            step()
        torch.cuda.synchronize(dev)
        start = time.perf_counter()
        for _ in range(steps):
            step()
        torch.cuda.synchronize(dev)
        return steps / (time.perf_counter() - start)
    seconds = []
    for i in range(warmup + steps):
        start = time.perf_counter()
        step()
        if i >= warmup:
            seconds.append(time.perf_counter() - start)
    return 1.0 / statistics.median(seconds)


# -- bf16 against fp32 loss curves -----------------------------------------------------------------
def loss_curves(features: Path, tmp: Path, steps: int, batch: int) -> dict[str, dict]:
    """Train world-s-pixel ``steps`` steps from seed 0 in fp32 and in bf16; per precision the
    per-step losses (``history``) and the median logged steps/s (first 10-step window skipped)."""
    from pandiff.training.metrics import read_metrics
    from pandiff.training.trainer import Trainer

    runs = {}
    for precision in ("fp32", "bf16"):
        config = pixel_config(
            features,
            tmp / f"curve-{precision}",
            batch,
            precision,
            f"train.steps={steps}",
            "train.log_every=10",
        )
        start = time.perf_counter()
        trainer = Trainer(config, progress=False)
        history = trainer.fit()
        trainer.close()
        rows = read_metrics(config.run.dir)
        timed = rows[1:] or rows
        rate = 1.0 / statistics.median(1.0 / row["steps_per_s"] for row in timed)
        runs[precision] = {"loss": [h["loss"] for h in history], "steps_per_s": rate}
        print(
            f"curve {precision}: {steps} steps in {time.perf_counter() - start:.0f} s, "
            f"{rate:.3f} steps/s, last loss {history[-1]['loss']:.4f}",
            flush=True,
        )
    return runs


def curve_table(runs: dict[str, dict], tol: float) -> tuple[list[str], float, float]:
    """Markdown rows of the window-mean losses, the largest relative difference and the speed ratio."""
    fp32, bf16 = runs["fp32"]["loss"], runs["bf16"]["loss"]
    steps = min(len(fp32), len(bf16))
    window = 50 if steps >= 100 else 10
    lines = [
        (
            f"Loss curves, world-s-pixel from seed 0: mean loss over each {window}-step window "
            "(same data order and noise draws in both runs)."
        ),
        "",
        "| steps | fp32 loss | bf16 loss | relative difference |",
        "|---|---:|---:|---:|",
    ]
    worst = 0.0
    for end in range(window, steps + window, window):
        lo, hi = end - window, min(end, steps)
        if lo >= hi:
            break
        a, b = statistics.fmean(fp32[lo:hi]), statistics.fmean(bf16[lo:hi])
        rel = abs(b - a) / abs(a)
        worst = max(worst, rel)
        lines.append(f"| {lo + 1}-{hi} | {a:.4f} | {b:.4f} | {100 * rel:.2f}% |")
    ratio = runs["bf16"]["steps_per_s"] / runs["fp32"]["steps_per_s"]
    lines += [
        "",
        (
            f"Steps/s (Trainer.fit, data included): fp32 {runs['fp32']['steps_per_s']:.3f}, "
            f"bf16 {runs['bf16']['steps_per_s']:.3f}; bf16/fp32 = {ratio:.2f}x."
        ),
        f"Largest relative difference of the smoothed losses: {100 * worst:.2f}% (tolerance {100 * tol:.0f}%).",
    ]
    return lines, worst, ratio


# -- GPU (issue #22): the trainer's own step, data from real feature shards ---------------------------
UVIT_CONFIG = ROOT / "configs" / "coco256-uvit-s2.yaml"
MFU_TARGET_GPU = 0.45  # issue #22: U-ViT-S/2 at >= 45% of the same-run bf16 matmul rate ...
LOOP_TARGET = 0.90  # ... and world-s-pixel's training loop at >= 90% of its in-memory step rate
COCO_CATEGORIES = 133  # COCO panoptic: 8 category bits + 3 instance bits = uvit-s2's 11 map bits


class BudgetExceeded(BaseException):
    """``--max-seconds`` ran out (a BaseException, so no ``except Exception`` inside torch eats it)."""


class Budget:
    """A wall-clock budget for the whole run: :meth:`guard` arms a timer that interrupts the
    guarded block (a compile included) when the budget is spent; ``seconds <= 0``: no limit."""

    def __init__(self, seconds: float) -> None:
        self.seconds = float(seconds)
        self.start = time.perf_counter()

    def left(self) -> float:
        return float("inf") if self.seconds <= 0 else self.seconds - (time.perf_counter() - self.start)

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    @contextlib.contextmanager
    def guard(self):
        left = self.left()
        if left <= 0:
            raise BudgetExceeded(f"--max-seconds {self.seconds:.0f} spent")
        if left == float("inf") or not hasattr(signal, "setitimer"):
            yield
            return

        def stop(signum, frame):
            raise BudgetExceeded(f"--max-seconds {self.seconds:.0f} spent")

        previous = signal.signal(signal.SIGALRM, stop)
        signal.setitimer(signal.ITIMER_REAL, left)
        try:
            yield
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)


def describe_error(exc: BaseException) -> str:
    """One line: the error's type and the first line of its message (a compile error's own type,
    not the ConfigError the trainer wraps it in)."""
    cause = exc.__cause__ if exc.__cause__ is not None and not isinstance(exc, BudgetExceeded) else exc
    lines = str(cause).strip().splitlines() or [""]
    text = f"{type(cause).__name__}: {lines[0][:200]}".rstrip(": ")
    return text.replace("|", "/")


def error_note(exc: BaseException) -> str:
    """A row's note for a failure: ``compile failed: TYPE: message`` when torch.compile (dynamo,
    inductor, triton) raised it, else ``failed: TYPE: message``."""
    chain = [e for e in (exc, exc.__cause__) if e is not None]
    compiling = any(
        type(e).__module__.startswith(("torch._dynamo", "torch._inductor", "triton"))
        or "torch.compile" in str(e)
        for e in chain
    )
    return ("compile failed: " if compiling else "failed: ") + describe_error(exc)


def write_feature_shards(
    folder: Path,
    n: int,
    *,
    latent_channels: int = 4,
    latent_size: int = 32,
    map_size: int = 64,
    text_len: int = 77,
    text_dim: int = 768,
    num_categories: int = COCO_CATEGORIES,
    instance_bits: int = 3,
    max_captions: int = 1,
    codec: str = "vae",
    shard_size: int = 512,
    seed: int = 0,
) -> Path:
    """A feature folder of ``n`` random items in pandiff's shard format, written as ``pandiff
    prepare`` writes it (:class:`FeatureManifest`, :func:`write_shard`, :func:`write_empty_text`):
    split ``train`` only. Defaults: U-ViT-S/2's COCO shapes (latents 4x32x32 from a tiny random
    ``AutoencoderKL`` of downsample 8 saved next to the shards, 64x64 maps of 133 categories + 3
    instance bits = 11 bits, text 77x768). ``codec="identity"``: pixel space (``latent_channels``
    must be 3), as world-s-pixel's features. The values are noise; the shapes, dtypes and the
    reading path are the real ones. Returns the feature folder."""
    from pandiff.data.shards import (
        FeatureManifest,
        FeatureSpec,
        codec_fingerprint,
        shard_name,
        write_empty_text,
        write_shard,
    )
    from pandiff.encoders.codec import IDENTITY, TINY_VAE_CONFIG, VaeCodec, load_codec

    folder = Path(folder)
    out = folder / "features"
    if codec == "identity":
        model, codec_ref = load_codec(IDENTITY), IDENTITY
    else:  # downsample 8 (four levels), as Stable Diffusion's VAE
        config = dict(
            TINY_VAE_CONFIG,
            latent_channels=latent_channels,
            down_block_types=["DownEncoderBlock2D"] * 4,
            up_block_types=["UpDecoderBlock2D"] * 4,
            block_out_channels=[4, 4, 4, 4],
            sample_size=8 * latent_size,
        )
        model = VaeCodec.from_config(config)
        model.save_pretrained(folder / "codec")
        codec_ref = str((folder / "codec").resolve())
    if model.latent_channels != latent_channels:
        raise ValueError(
            f"codec {codec!r} has {model.latent_channels} latent channels, not {latent_channels}"
        )
    categories = tuple(
        {
            "id": i + 1,
            "name": f"category-{i + 1}",
            "supercategory": "",
            "isthing": int(i < num_categories // 2),
        }
        for i in range(num_categories)
    )
    spec = FeatureSpec(
        codec=codec_ref,
        codec_hash=codec_fingerprint(model),
        latent_channels=latent_channels,
        downsample=int(model.downsample),
        scaling_factor=float(model.scaling_factor),
        text_encoder="synthetic (bench_train.py)",
        text_encoder_hash="0" * 16,
        text_dim=text_dim,
        text_len=text_len,
        image_size=latent_size * int(model.downsample),
        map_size=map_size,
        instance_bits=instance_bits,
        max_captions=max_captions,
        categories=categories,
    )
    manifest = FeatureManifest.create(out, spec, shard_size, "synthetic (bench_train.py)")
    out.mkdir(parents=True, exist_ok=True)
    manifest.save()
    write_empty_text(out, torch.zeros(1, text_len, text_dim))
    manifest.begin_split("train", n)
    g = torch.Generator().manual_seed(seed)
    category_dtype = torch.uint8 if num_categories < 256 else torch.int16
    # Text features (most of the bytes) drawn from a pool of 256 random items: drawing 77 x 768
    # normals per item took seconds; reading them back costs the same.
    pool = torch.randn(min(n, 256), max_captions, text_len, text_dim, generator=g).to(torch.float16)
    for index, first in enumerate(range(0, n, shard_size)):
        m = min(shard_size, n - first)
        mean = torch.randn(m, latent_channels, latent_size, latent_size, generator=g)
        logvar = torch.full_like(mean, -4.0)
        tensors = {
            "moments": torch.cat([mean, logvar], dim=1).to(torch.float16),
            "text": pool[torch.randint(0, len(pool), (m,), generator=g)],
            "num_captions": torch.full((m,), max_captions, dtype=torch.uint8),
            "category": torch.randint(0, num_categories + 1, (m, map_size, map_size), generator=g).to(
                category_dtype
            ),
            "instance": torch.randint(0, 2**instance_bits, (m, map_size, map_size), generator=g).to(
                torch.uint8
            ),
            "image_id": torch.arange(first, first + m, dtype=torch.int64),
        }
        name = shard_name("train", index)
        write_shard(out / name, tensors, [[f"item {first + i}"] * max_captions for i in range(m)])
        manifest.add_shard("train", name, m)
    return out


def uvit_config(
    features: Path,
    run_dir: Path,
    variant: str,
    batch: int,
    compiled: bool,
    workers: int,
    steps: int,
    *extra: str,
):
    """coco256-uvit-s2.yaml (the paper's recipe; bf16) on ``features``, ``variant`` unified or
    two-stream (a fresh frozen image stream: no checkpoint needed), for a benchmark run."""
    from pandiff.training.config import load_config

    return load_config(
        UVIT_CONFIG,
        [
            f"data.features={features}",
            f"run.dir={run_dir}",
            f"model.variant={variant}",
            "model.image_stream=null",
            f"train.batch_size={batch}",
            "train.mixed_precision=bf16",
            f"train.compile={str(compiled).lower()}",
            f"train.steps={steps}",
            f"train.log_every={steps}",
            f"data.num_workers={workers}",
            "sample.every=0",
            "train.checkpoint_every=1000000000",
            *extra,
        ],
    )


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_loop(trainer, warmup: int, steps: int) -> float:
    """Steps/s of ``Trainer.fit`` (its data stream, its step, its logging): ``steps`` optimizer
    steps after ``warmup`` untimed ones (at least 1; compiling happens there), timed between two
    device syncs (none in between but the trainer's own). The trainer must be built with
    ``train.steps = warmup + steps``; its final checkpoint is not written."""
    device = trainer.accelerator.device
    end = trainer.state.step + warmup + steps
    marks: dict[int, float] = {}
    original = trainer._end_step

    def end_step(sums):
        original(sums)
        if trainer.state.step in (end - steps, end):
            _sync(device)
            marks[trainer.state.step] = time.perf_counter()

    trainer._end_step, trainer.save = end_step, lambda: None  # a benchmark keeps no checkpoint
    try:
        trainer.fit()
    finally:
        del trainer._end_step, trainer.save
    return steps / (marks[end] - marks[end - steps])


def device_batch(trainer) -> dict:
    """One batch of the trainer's stream, moved to its device (held there: data excluded)."""
    device = trainer.accelerator.device
    batch = next(iter(trainer.loader))
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def time_in_memory(trainer, warmup: int, steps: int) -> float:
    """Steps/s of the trainer's optimizer step (``_micro_step`` + ``_end_step``, compiled when the
    config says so) on one batch held on the device: the training loop without its data."""
    device = trainer.accelerator.device
    batch = device_batch(trainer)
    step = trainer._compiled_step if trainer.config.train.compile else trainer._micro_step
    for _ in range(warmup):
        trainer._end_step(step(batch))
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        trainer._end_step(step(batch))
    _sync(device)
    return steps / (time.perf_counter() - start)


def profile_steps(trainer, steps: int = 5, warmup: int = 2, rows: int = 15) -> str:
    """torch.profiler over ``steps`` in-memory trainer steps: the top ``rows`` ops by device time
    (CPU time without a GPU) as torch's table."""
    from torch.profiler import ProfilerActivity, profile

    device = trainer.accelerator.device
    batch = device_batch(trainer)
    for _ in range(warmup):
        trainer._end_step(trainer._micro_step(batch))
    _sync(device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for _ in range(steps):
            trainer._end_step(trainer._micro_step(batch))
        _sync(device)
    events = prof.key_averages()
    if device.type == "cuda":
        sort = "device_time_total" if hasattr(events[0], "device_time_total") else "cuda_time_total"
    else:
        sort = "cpu_time_total"
    return events.table(sort_by=sort, row_limit=rows)


@dataclass
class GpuRow:
    """One measured (or failed) row of the device benchmark."""

    model: str
    mode: str  # eager | compiled
    data: str
    batch: int
    rate: float | None  # steps/s; None: the row failed or was skipped (see note)
    flops: FlopCount
    flops_frozen_fwd: FlopCount
    params: tuple[int, int]
    seconds: float
    note: str = ""


def run_trainer_rows(
    config,
    model: str,
    mode: str,
    parts: list[tuple[str, str]],
    warmup: int,
    steps: int,
    counts: tuple[FlopCount, FlopCount, tuple[int, int]],
    budget: Budget,
    profile: list | None = None,
) -> list[GpuRow]:
    """Build one Trainer from ``config`` and time ``parts`` on it in order: ``(data label, "loop")``
    is :func:`time_loop`, ``(data label, "memory")`` :func:`time_in_memory`. Any error (a failed
    compile above all) or the spent budget ends the group: its rows left get the error as their
    note, and the run goes on. ``profile``: a list to append :func:`profile_steps`' table to."""
    from pandiff.training.trainer import Trainer

    rows: list[GpuRow] = []
    trainer = None
    mark = time.perf_counter()
    try:
        with budget.guard():
            if mode == "compiled":
                torch._dynamo.reset()  # a fresh cache per compiled model
            trainer = Trainer(config, progress=False)
            for data, kind in parts:
                rate = (
                    time_loop(trainer, warmup, steps)
                    if kind == "loop"
                    else time_in_memory(trainer, warmup, steps)
                )
                now = time.perf_counter()
                rows.append(GpuRow(model, mode, data, config.train.batch_size, rate, *counts, now - mark))
                mark = now
                _report_gpu(rows[-1])
            if profile is not None:
                profile.append(profile_steps(trainer))
    except (Exception, BudgetExceeded) as exc:  # noqa: BLE001 -- one failed row must not cost the others
        note = f"stopped: {exc}" if isinstance(exc, BudgetExceeded) else error_note(exc)
        for data, _ in parts[len(rows) :]:
            rows.append(
                GpuRow(
                    model,
                    mode,
                    data,
                    config.train.batch_size,
                    None,
                    *counts,
                    time.perf_counter() - mark,
                    note,
                )
            )
            mark = time.perf_counter()
            _report_gpu(rows[-1])
    finally:
        if trainer is not None:
            trainer.close()
        del trainer
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return rows


def cuda_matmul_rate(
    dtype: torch.dtype, m: int, k: int, n: int, device, repeats: int = 10, warmup: int = 3
) -> float:
    """FLOP/s of ``torch.matmul`` of ``m x k`` by ``k x n`` in ``dtype`` on ``device`` (median of
    ``repeats``, timed between device syncs)."""
    g = torch.Generator(device).manual_seed(0)
    a = torch.randn(m, k, generator=g, device=device).to(dtype)
    b = torch.randn(k, n, generator=g, device=device).to(dtype)
    c = torch.empty(m, n, dtype=dtype, device=device)
    for _ in range(warmup):
        torch.matmul(a, b, out=c)
    seconds = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        torch.matmul(a, b, out=c)
        _sync(device)
        seconds.append(time.perf_counter() - start)
    del a, b, c
    return 2 * m * k * n / statistics.median(seconds)


def gpu_matmuls(dims: list[int], device) -> dict[tuple[int, int, int], float]:
    """bf16 matmul FLOP/s: 8192^3 and 4096^3 squares and one MLP-like shape (65536 tokens x D -> 4D)
    per model width D."""
    shapes = [(8192, 8192, 8192), (4096, 4096, 4096)] + [(65536, d, 4 * d) for d in sorted(set(dims))]
    return {shape: cuda_matmul_rate(torch.bfloat16, *shape, device=device) for shape in shapes}


def model_counts(model: nn.Module, batch: int) -> tuple[FlopCount, FlopCount, tuple[int, int]]:
    """(training FLOPs, the same with frozen modules counted forward only, (trainable, total) params)."""
    return training_flops(model, batch), training_flops(model, batch, frozen_backward=False), _params(model)


def device_info(device: torch.device) -> str:
    """The accelerator in words (``torch.cuda.get_device_name``), or the CPU."""
    if device.type != "cuda":
        return f"device: CPU, torch {torch.__version__}, {torch.get_num_threads()} threads"
    props = torch.cuda.get_device_properties(device)
    return (
        f"GPU: {torch.cuda.get_device_name(device)} ({props.total_memory / 2**30:.0f} GiB, "
        f"{props.multi_processor_count} SMs), CUDA {torch.version.cuda}, torch {torch.__version__}"
    )


def run_gpu(
    args,
    device: torch.device,
    uvit_overrides: list[str] | None = None,
    uvit_shapes: dict | None = None,
    budget: Budget | None = None,
) -> list[str]:
    """The device benchmark (issue #22); returns the Markdown lines it printed/appended.

    Eager groups of every model first, then the compiled ones, in ``--models`` order, so a slow or
    failing compile costs only the rows after it within ``--max-seconds``. ``uvit_overrides``:
    extra config overrides for the uvit-s2 trainers and ``uvit_shapes`` the matching
    :func:`write_feature_shards` sizes (tests shrink the model with them; the bench's own loop
    row is left out then)."""
    from pandiff.model.presets import PRESETS
    from pandiff.training.setup import build_model

    budget = budget or Budget(args.max_seconds)
    info = device_info(device)
    print(info, flush=True)
    for name in ("recompile_limit", "cache_size_limit"):  # several models compile in one process
        if hasattr(torch._dynamo.config, name):
            setattr(torch._dynamo.config, name, 64)
    dims = [PRESETS[m.removesuffix("-two-stream")]["embed_dim"] for m in args.models]
    matmul_start = gpu_matmuls(dims, device) if device.type == "cuda" else {}
    for shape, rate in matmul_start.items():
        print(f"matmul bf16 {shape}: {rate / 1e12:.1f} TFLOP/s", flush=True)
    modes = ["eager"] + ([] if args.skip_compiled else ["compiled"])
    rows: list[GpuRow] = []
    profiles: list[str] = []
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp_name:
        tmp = Path(tmp_name)
        start = time.perf_counter()
        pixel_features = args.features
        if "world-s-pixel" in args.models and pixel_features is None:
            pixel_features = write_feature_shards(
                tmp / "pixel",
                max(args.n, args.batch * (args.warmup + args.steps + 1)),
                latent_channels=3,
                latent_size=64,
                map_size=64,
                text_len=24,
                text_dim=384,
                num_categories=12,
                max_captions=1,
                codec="identity",
            )
            print(f"wrote synthetic world-s-pixel shards in {time.perf_counter() - start:.1f} s", flush=True)
        uvit_features = None
        if any(m.startswith("uvit-s2") for m in args.models):
            start = time.perf_counter()
            items = args.uvit_batch * (args.uvit_warmup + args.uvit_steps + 1)
            uvit_features = write_feature_shards(tmp / "uvit", items, **(uvit_shapes or {}))
            print(f"wrote {items} uvit-s2 feature items in {time.perf_counter() - start:.1f} s", flush=True)

        counts = {}
        if "world-s-pixel" in args.models:
            base = pixel_config(Path(pixel_features), tmp / "probe", args.batch, "bf16")
            counts["world-s-pixel"] = model_counts(build_model(base.model, 0), args.batch)
        for name in args.models:
            if name.startswith("uvit-s2"):
                variant = "two-stream" if name.endswith("two-stream") else "unified"
                base = uvit_config(
                    uvit_features,
                    tmp / "probe",
                    variant,
                    args.uvit_batch,
                    False,
                    0,
                    1,
                    *(uvit_overrides or []),
                )
                counts[name] = model_counts(build_model(base.model, 0), args.uvit_batch)

        for mode in modes:
            for name in args.models:
                compiled = mode == "compiled"
                run = tmp / f"{name}-{mode}"
                if name == "world-s-pixel":
                    w, s, b = args.warmup, args.steps, args.batch
                    flags = (
                        f"train.steps={w + s}",
                        f"train.log_every={w + s}",
                        f"train.compile={str(compiled).lower()}",
                    )
                    if not compiled:  # the shard stream, as the bundled config reads it
                        shards = pixel_config(
                            Path(pixel_features),
                            run / "shards",
                            b,
                            "bf16",
                            *flags,
                            f"data.num_workers={args.workers}",
                        )
                        rows += run_trainer_rows(
                            shards,
                            name,
                            mode,
                            [(f"shards, {args.workers} workers", "loop")],
                            w,
                            s,
                            counts[name],
                            budget,
                        )
                    resident = pixel_config(
                        Path(pixel_features),
                        run / "resident",
                        b,
                        "bf16",
                        *flags,
                        "data.resident=true",
                        "data.num_workers=0",
                    )
                    rows += run_trainer_rows(
                        resident,
                        name,
                        mode,
                        [
                            ("resident (GPU)" if device.type == "cuda" else "resident", "loop"),
                            ("in memory", "memory"),
                        ],
                        w,
                        s,
                        counts[name],
                        budget,
                    )
                else:
                    variant = "two-stream" if name.endswith("two-stream") else "unified"
                    w, s, b = args.uvit_warmup, args.uvit_steps, args.uvit_batch
                    config = uvit_config(
                        uvit_features, run, variant, b, compiled, args.workers, w + s, *(uvit_overrides or [])
                    )
                    profile = profiles if (args.profile and variant == "unified" and not compiled) else None
                    rows += run_trainer_rows(
                        config,
                        name,
                        mode,
                        [(f"shards, {args.workers} workers", "loop"), ("in memory", "memory")],
                        w,
                        s,
                        counts[name],
                        budget,
                        profile,
                    )
                    if not compiled and not uvit_overrides:  # the bench's own loop, as issue #8 measured
                        rows.append(synthetic_row(name, variant, b, w, s, counts[name], device, budget))

    matmul_end = gpu_matmuls(dims, device) if device.type == "cuda" else {}
    peak = max([*matmul_start.values(), *matmul_end.values()], default=0.0)
    lines = gpu_tables(args, info, rows, matmul_start, matmul_end, peak, profiles, budget)
    return lines


def synthetic_row(name, variant, batch, warmup, steps, counts, device, budget) -> GpuRow:
    """:func:`time_synthetic` on the device, bf16, eager (the bench's own loop, no trainer)."""
    mark = time.perf_counter()
    model = None
    try:
        with budget.guard():
            model = build_uvit_s2(variant).to(device)
            rate = time_synthetic(model, batch, "bf16", steps, warmup, device=str(device))
        row = GpuRow(
            name, "eager", "synthetic (bench loop)", batch, rate, *counts, time.perf_counter() - mark
        )
    except (Exception, BudgetExceeded) as exc:  # noqa: BLE001
        note = f"stopped: {exc}" if isinstance(exc, BudgetExceeded) else "failed: " + describe_error(exc)
        row = GpuRow(
            name, "eager", "synthetic (bench loop)", batch, None, *counts, time.perf_counter() - mark, note
        )
    del model
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    _report_gpu(row)
    return row


def gpu_tables(args, info, rows, matmul_start, matmul_end, peak, profiles, budget) -> list[str]:
    """Markdown: setup, matmul rates, FLOPs per model, the rows, and issue #22's verdicts."""
    lines = [
        info,
        "",
        (
            f"Device benchmark (issue #22), bf16 autocast, one process; a rate is the timed steps over "
            f"the wall clock between two device syncs after the untimed warm-up steps (compiling happens "
            f"there). world-s-pixel: configs/world-s-pixel.yaml, batch {args.batch}, {args.steps} timed "
            f"after {args.warmup} warm-up steps, features {args.features or 'synthetic (identity codec)'}; "
            f"uvit-s2: configs/coco256-uvit-s2.yaml (two-stream: variant two-stream, fresh frozen image "
            f"stream), batch {args.uvit_batch}, {args.uvit_steps} timed after {args.uvit_warmup} warm-up "
            "steps, random feature shards of COCO's shapes (latents 4x32x32 as moments, maps 64x64 of 133 "
            "categories + 3 instance bits, text 77x768, 1 caption) written with pandiff's shard writer "
            "(page-cached). Data: `shards` = Trainer.fit on its ShardStream through the DataLoader "
            "(memory-mapped safetensors); `resident` = Trainer.fit with data.resident=true "
            "(ResidentStream: the split on the device); `in memory` = the trainer's step on one batch "
            "held on the device (data excluded); `synthetic (bench loop)` = the bench's own step "
            "(plain AdamW, no trainer). Compiled = train.compile=true (Accelerate, inductor). "
            "MFU = achieved FLOP/s / the best same-run bf16 torch.matmul rate; `MFU, frozen fwd` "
            "counts a frozen image stream's forward only (issue #22's convention; equal for unified). "
            f"Elapsed: the row's wall time (trainer build and compile in its first row); whole run "
            f"{budget.elapsed():.0f} s (--max-seconds {args.max_seconds:g})."
        ),
    ]
    if matmul_start:
        lines += ["", "| bf16 matmul m x k x n | TFLOP/s before | TFLOP/s after |", "|---|---:|---:|"]
        for shape, rate in matmul_start.items():
            lines.append(
                f"| {' x '.join(map(str, shape))} | {rate / 1e12:.1f} | {matmul_end[shape] / 1e12:.1f} |"
            )
    lines += [
        "",
        (
            "| model | params trainable / total (M) | tokens / sample | forward GFLOP / sample "
            "| training GFLOP / sample | same, frozen stream fwd only |"
        ),
        "|---|---|---:|---:|---:|---:|",
    ]
    seen = set()
    for r in rows:
        if r.model in seen:
            continue
        seen.add(r.model)
        f, ff = r.flops, r.flops_frozen_fwd
        lines.append(
            f"| {r.model} | {r.params[0] / 1e6:.1f} / {r.params[1] / 1e6:.1f} | {f.tokens} "
            f"| {f.forward / f.batch / 1e9:.3f} | {f.training / f.batch / 1e9:.3f} | {ff.training / ff.batch / 1e9:.3f} |"
        )
    lines += [
        "",
        (
            "| model | mode | data | batch | steps/s | samples/s | TFLOP/s | MFU | MFU, frozen fwd "
            "| elapsed s | note |"
        ),
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        if r.rate is None:
            lines.append(
                f"| {r.model} | {r.mode} | {r.data} | {r.batch} | - | - | - | - | - | {r.seconds:.1f} | {r.note} |"
            )
            continue
        achieved, frozen = r.flops.training * r.rate, r.flops_frozen_fwd.training * r.rate
        mfu = f"{100 * achieved / peak:.1f}%" if peak else "-"
        mfu_frozen = f"{100 * frozen / peak:.1f}%" if peak else "-"
        lines.append(
            f"| {r.model} | {r.mode} | {r.data} | {r.batch} | {r.rate:.2f} | {r.rate * r.batch:.0f} "
            f"| {achieved / 1e12:.1f} | {mfu} | {mfu_frozen} | {r.seconds:.1f} | {r.note} |"
        )
    lines += ["", "| model | mode | target | measured | verdict |", "|---|---|---|---:|---|"]
    for model in dict.fromkeys(r.model for r in rows):
        for mode in ("eager", "compiled"):
            mine = {r.data: r for r in rows if r.model == model and r.mode == mode and r.rate is not None}
            memory = mine.get("in memory")
            if model == "world-s-pixel" and memory is not None:
                for data, r in mine.items():
                    if data == "in memory":
                        continue
                    ratio = r.rate / memory.rate
                    lines.append(
                        f"| {model} | {mode} | loop ({data}) / in memory >= {100 * LOOP_TARGET:.0f}% "
                        f"| {100 * ratio:.1f}% | {verdict(ratio >= LOOP_TARGET)} |"
                    )
            if model.startswith("uvit-s2") and peak:
                for data, r in mine.items():
                    if not data.startswith("shards"):
                        continue
                    mfu = r.flops_frozen_fwd.training * r.rate / peak
                    lines.append(
                        f"| {model} | {mode} | MFU >= {100 * MFU_TARGET_GPU:.0f}%, data from {data} "
                        f"| {100 * mfu:.1f}% ({r.rate * r.batch:.0f} samples/s) | {verdict(mfu >= MFU_TARGET_GPU)} |"
                    )
                    if memory is not None:
                        ratio = r.rate / memory.rate
                        lines.append(
                            f"| {model} | {mode} | loop ({data}) / in memory | {100 * ratio:.1f}% | - |"
                        )
    if profiles:
        lines += [
            "",
            "torch.profiler, uvit-s2 unified eager, 5 in-memory trainer steps (top 15 ops by device time):",
            "",
            "```",
            profiles[0].rstrip(),
            "```",
        ]
    return lines


def _report_gpu(r: GpuRow) -> None:
    if r.rate is None:
        print(f"{r.model} {r.mode} data {r.data}: {r.note} ({r.seconds:.1f} s)", flush=True)
        return
    print(
        f"{r.model} {r.mode} data {r.data}: {r.rate:.2f} steps/s, {r.rate * r.batch:.0f} samples/s, "
        f"{r.flops.training * r.rate / 1e12:.2f} TFLOP/s ({r.seconds:.1f} s)",
        flush=True,
    )


# -- main --------------------------------------------------------------------------------------------
def verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


DEFAULTS = {  # per --device: (CPU: issue #8's sizes, unchanged; cuda: issue #22's)
    "cpu": {
        "batch": 32,
        "uvit_batch": 8,
        "uvit_steps": 5,
        "uvit_warmup": 2,
        "steps": 10,
        "warmup": 3,
        "n": 160,
        "workers": 0,
        "max_seconds": 0.0,
    },
    "cuda": {
        "batch": 1024,
        "uvit_batch": 128,
        "uvit_steps": 10,
        "uvit_warmup": 4,
        "steps": 20,
        "warmup": 5,
        "n": 0,
        "workers": 4,
        "max_seconds": 140.0,
    },
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line; the size defaults depend on ``--device`` (:data:`DEFAULTS`)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--models", nargs="*", default=list(MODELS), choices=MODELS, help="models to time (none: curves only)"
    )
    parser.add_argument(
        "--device",
        choices=("cpu", "cuda"),
        default="cpu",
        help="cpu: issue #8's fp32 vs bf16 rows; cuda: issue #22's bf16 rows (trainer, real shards, compile)",
    )
    parser.add_argument("--batch", type=int, default=None, help="world-s-pixel batch (cpu 32, cuda 1024)")
    parser.add_argument("--uvit-batch", type=int, default=None, help="uvit-s2 batch (cpu 8, cuda 128)")
    parser.add_argument("--uvit-steps", type=int, default=None, help="timed uvit-s2 steps (cpu 5, cuda 10)")
    parser.add_argument(
        "--uvit-warmup", type=int, default=None, help="untimed uvit-s2 steps first (cpu 2, cuda 4)"
    )
    parser.add_argument("--steps", type=int, default=None, help="timed world-s-pixel steps (cpu 10, cuda 20)")
    parser.add_argument(
        "--warmup", type=int, default=None, help="untimed world-s-pixel steps first (cpu 3, cuda 5)"
    )
    parser.add_argument(
        "--n",
        type=int,
        default=None,
        help="scenes in the benchmark world (cpu 160; cuda: synthetic items, if no --features)",
    )
    parser.add_argument(
        "--features",
        default=None,
        metavar="DIR",
        help="world-s-pixel features from `pandiff prepare` (identity codec) instead of making a world "
        "(cpu: needs MiniLM) or, on cuda, writing random shards of its shapes",
    )
    parser.add_argument(
        "--workers", type=int, default=None, help="cuda: DataLoader workers of the shard-stream rows (4)"
    )
    parser.add_argument(
        "--max-seconds",
        type=float,
        default=None,
        help="cuda: wall-clock budget of the run (140 s; the final matmul and tables come after it); "
        "rows past it are cut short with a note; 0: none",
    )
    parser.add_argument("--skip-compiled", action="store_true", help="cuda: eager rows only")
    parser.add_argument(
        "--profile", action="store_true", help="cuda: torch.profiler table of uvit-s2 unified's eager step"
    )
    parser.add_argument(
        "--tmp", default=None, help="folder for the temporary world/shards (default: system temp)"
    )
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument(
        "--curves",
        type=int,
        default=0,
        metavar="STEPS",
        help="also train world-s-pixel STEPS steps in fp32 and in bf16 and compare losses (cpu)",
    )
    parser.add_argument(
        "--curve-tol",
        type=float,
        default=0.05,
        help="largest relative difference of smoothed losses that counts as equal",
    )
    parser.add_argument(
        "--compile",
        action="store_true",
        help="cpu: also time world-s-pixel with train.compile=true (cuda always has compiled rows)",
    )
    parser.add_argument("--no-append", action="store_true", help="print only; do not write RESULTS.md")
    parser.add_argument("--note", default="", help="a remark stored with the results")
    args = parser.parse_args(argv)
    for key, value in DEFAULTS[args.device].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.device == "cuda" and (args.warmup < 1 or args.uvit_warmup < 1):
        parser.error("--device cuda: --warmup and --uvit-warmup must be at least 1")
    return args


def main() -> None:
    args = parse_args()
    budget = Budget(args.max_seconds)  # counts from here: imports, shard writing and all
    if args.device == "cuda":
        if not torch.cuda.is_available():
            raise SystemExit("--device cuda: torch sees no CUDA device")
        if args.threads is not None:
            torch.set_num_threads(args.threads)
        print(f"Machine: {machine_description()}", flush=True)
        lines = run_gpu(args, torch.device("cuda"), budget=budget)
        publish(
            "bench_train.py --device cuda: training throughput and MFU on the GPU",
            lines,
            not args.no_append,
            args.note,
        )
        return
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    print(f"Machine: {machine_description()}", flush=True)

    from pandiff.model.presets import PRESETS

    shapes = matmul_shapes([PRESETS[m.removesuffix("-two-stream")]["embed_dim"] for m in args.models])
    matmul_start = measure_matmuls(shapes)
    for (name, shape), rate in matmul_start.items():
        print(f"matmul {name} {shape}: {rate / 1e9:.1f} GFLOP/s", flush=True)

    rows = []  # (model, precision, data, batch, steps/s, FlopCount, params)
    curves = None
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        features = None
        if "world-s-pixel" in args.models or args.curves:
            features = Path(args.features) if args.features else make_features(tmp, args.n)
        for name in args.models:
            if name == "world-s-pixel":
                from pandiff.training.setup import build_model

                base = pixel_config(features, tmp / "probe", args.batch, "fp32")
                model = build_model(base.model, 0)
                flops = training_flops(model, args.batch)
                params = _params(model)
                del model
                for precision in ("fp32", "bf16"):
                    fit = pixel_config(
                        features,
                        tmp / f"fit-{precision}",
                        args.batch,
                        precision,
                        f"train.steps={args.warmup + args.steps}",
                        "train.log_every=1",
                    )
                    mem = pixel_config(features, tmp / f"mem-{precision}", args.batch, precision)
                    timings = [
                        ("included", time_fit, fit, (args.warmup,)),
                        ("excluded", time_compute, mem, (args.steps, args.warmup)),
                    ]
                    if args.compile:
                        compiled = pixel_config(
                            features, tmp / f"jit-{precision}", args.batch, precision, "train.compile=true"
                        )
                        timings.append(
                            ("excluded, compiled", time_compute, compiled, (args.steps, args.warmup))
                        )
                    for data, timing, config, extra in timings:
                        rows.append(
                            (name, precision, data, args.batch, timing(config, *extra), flops, params)
                        )
                        _report(rows[-1])
            else:
                model = build_uvit_s2("two-stream" if name.endswith("two-stream") else "unified")
                flops = training_flops(model, args.uvit_batch)
                params = _params(model)
                for precision in ("fp32", "bf16"):
                    rate = time_synthetic(
                        model, args.uvit_batch, precision, args.uvit_steps, args.uvit_warmup
                    )
                    rows.append((name, precision, "synthetic", args.uvit_batch, rate, flops, params))
                    _report(rows[-1])
                del model
        if args.curves:
            curves = loss_curves(features, tmp, args.curves, args.batch)

    matmul_end = measure_matmuls(shapes)
    peak = {
        name: max(r for (n, _), r in [*matmul_start.items(), *matmul_end.items()] if n == name)
        for name in ("fp32", "bf16")
    }

    setup = ["One process; rates are the median step after the warm-up."]
    if "world-s-pixel" in args.models or args.curves:
        setup.append(
            f"world-s-pixel: configs/world-s-pixel.yaml on {args.n} built-in scenes (identity codec, "
            f"MiniLM 24x384, 64 px, maps 64x64 x 7 bits), batch {args.batch}, {args.steps} timed steps "
            f"after {args.warmup} warm-up steps."
        )
    if any(m.startswith("uvit-s2") for m in args.models):
        setup.append(
            f"uvit-s2: synthetic in-memory batch {args.uvit_batch} (latents 4x32x32, maps 11x64x64, "
            f"text 77x768), {args.uvit_steps} timed steps after {args.uvit_warmup} warm-up steps; "
            "two-stream = frozen U-ViT-S/2 image stream + trainable map stream."
        )
    setup.append(
        "FLOPs: matmuls (Linear, Conv2d, attention QK^T and AV) counted by forward hooks; backward "
        "counted per operand that needs a gradient (bench_train.training_flops). MFU = achieved "
        "FLOP/s / best same-run torch.matmul rate of the row's dtype."
    )
    lines = [
        " ".join(setup),
        "",
        "| dtype | matmul m x k x n | GFLOP/s before | GFLOP/s after |",
        "|---|---|---:|---:|",
    ]
    for (name, shape), rate in matmul_start.items():
        lines.append(
            f"| {name} | {' x '.join(map(str, shape))} | {rate / 1e9:.1f} | {matmul_end[(name, shape)] / 1e9:.1f} |"
        )
    lines += [
        "",
        (
            "| model | params trainable / total (M) | tokens / sample | forward GFLOP / sample "
            "| training GFLOP / sample | training / forward |"
        ),
        "|---|---|---:|---:|---:|---:|",
    ]
    seen = set()
    for model, _, _, _, _, flops, (trainable, total) in rows:
        if model in seen:
            continue
        seen.add(model)
        lines.append(
            f"| {model} | {trainable / 1e6:.1f} / {total / 1e6:.1f} | {flops.tokens} "
            f"| {flops.forward / flops.batch / 1e9:.3f} | {flops.training / flops.batch / 1e9:.3f} "
            f"| {flops.training / flops.forward:.2f} |"
        )
    lines += [
        "",
        (
            "| model | precision | data loading | batch | steps/s | samples/s | tokens/s "
            "| GFLOP / step | achieved GFLOP/s | MFU |"
        ),
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for model, precision, data, batch, rate, flops, _ in rows:
        achieved = flops.training * rate
        lines.append(
            f"| {model} | {precision} | {data} | {batch} | {rate:.3f} | {rate * batch:.2f} "
            f"| {rate * batch * flops.tokens:.0f} | {flops.training / 1e9:.1f} | {achieved / 1e9:.1f} "
            f"| {100 * achieved / peak[precision]:.1f}% |"
        )

    # Issue #8's targets, per model (compute-only rows: data excluded / synthetic).
    lines += ["", "| model | target | measured | verdict |", "|---|---|---:|---|"]
    for model, data in dict.fromkeys((r[0], r[2]) for r in rows if r[2] != "included"):
        rate = {r[1]: r for r in rows if r[0] == model and r[2] == data}
        label = f"{model} ({data})"
        if "fp32" in rate and "bf16" in rate:
            ratio = rate["bf16"][4] / rate["fp32"][4]
            lines.append(
                f"| {label} | bf16 >= {SPEED_TARGET:.0f}x fp32 steps/s | {ratio:.2f}x | "
                f"{verdict(ratio >= SPEED_TARGET)} |"
            )
        if "bf16" in rate:
            _, _, _, _, r, flops, _ = rate["bf16"]
            mfu = flops.training * r / peak["bf16"]
            lines.append(
                f"| {label} | bf16 MFU >= {100 * MFU_TARGET:.0f}% of bf16 matmul | {100 * mfu:.1f}% | "
                f"{verdict(mfu >= MFU_TARGET)} |"
            )
    if curves is not None:
        curve_lines, worst, ratio = curve_table(curves, args.curve_tol)
        lines += [
            (
                f"| world-s-pixel, {args.curves}-step curves | bf16 >= {SPEED_TARGET:.0f}x fp32 steps/s "
                f"| {ratio:.2f}x | {verdict(ratio >= SPEED_TARGET)} |"
            ),
            (
                f"| world-s-pixel, {args.curves}-step curves | equal loss curves (within "
                f"{100 * args.curve_tol:.0f}%) | {100 * worst:.2f}% | {verdict(worst <= args.curve_tol)} |"
            ),
            "",
            *curve_lines,
        ]

    publish("bench_train.py: training throughput, MFU, bf16 vs fp32", lines, not args.no_append, args.note)


def _params(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    return (
        sum(p.numel() for p in model.parameters() if p.requires_grad),
        sum(p.numel() for p in model.parameters()),
    )


def _report(row) -> None:
    model, precision, data, batch, rate, flops, _ = row
    print(
        f"{model} {precision} data {data}: {rate:.3f} steps/s, {rate * batch:.2f} samples/s, "
        f"{flops.training * rate / 1e9:.1f} GFLOP/s",
        flush=True,
    )


if __name__ == "__main__":
    main()
