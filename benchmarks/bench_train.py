"""Training throughput and model FLOPs utilisation (issue #8): fp32 against bf16 autocast.

Usage::

    python benchmarks/bench_train.py [--models world-s-pixel uvit-s2 uvit-s2-two-stream]
        [--batch 32] [--steps 10] [--warmup 3] [--n 160] [--uvit-batch 8] [--uvit-steps 5]
        [--uvit-warmup 2] [--threads N]
        [--curves STEPS] [--curve-tol 0.05] [--compile] [--no-append] [--note TEXT]

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
import copy
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


def training_flops(model: nn.Module, batch_size: int = 1, device: str | None = "meta") -> FlopCount:
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

    def add(flops: int, gradients: int) -> None:
        totals["forward"] += flops
        totals["training"] += flops * (1 + gradients)

    def linear(mod: nn.Linear, args: tuple, out: torch.Tensor) -> None:
        x = args[0]
        add(
            2 * mod.in_features * mod.out_features * (x.numel() // mod.in_features),
            int(x.requires_grad) + int(mod.weight.requires_grad),
        )

    def conv(mod: nn.Conv2d, args: tuple, out: torch.Tensor) -> None:
        kh, kw_ = mod.kernel_size
        add(
            2 * kh * kw_ * (mod.in_channels // mod.groups) * out.numel(),
            int(args[0].requires_grad) + int(mod.weight.requires_grad),
        )

    def attention(mod: nn.Module, args: tuple, out: torch.Tensor) -> None:
        b, n, d = args[0].shape
        add(2 * 2 * b * n * n * d, 2 * int(args[0].requires_grad))
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
    from pandiff.data.world import generate_world
    from pandiff.encoders.codec import load_codec
    from pandiff.encoders.text import load_text_encoder

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


def time_synthetic(model: nn.Module, batch: int, precision: str, steps: int, warmup: int) -> float:
    """Steps/s (median step) of the trainer's optimizer step -- joint loss, backward, grad clip 1.0,
    AdamW, EMA -- on one synthetic batch of the model's shapes, fp32 or bf16 autocast (what
    Accelerate's ``mixed_precision="bf16"`` does on a CPU). The model's weights change; the
    optimizer and EMA are dropped afterwards."""
    from diffusers.training_utils import EMAModel

    from pandiff.diffusion.loss import LossConfig, joint_loss
    from pandiff.diffusion.schedule import NoiseSchedule

    cfg = model.config
    g = torch.Generator().manual_seed(0)
    side = cfg.patch_factor * cfg.latent_size
    latents = torch.randn(batch, cfg.latent_channels, cfg.latent_size, cfg.latent_size, generator=g)
    bits = torch.randint(0, 2, (batch, cfg.map_bits, side, side), generator=g).float() * 2 - 1
    text = torch.randn(batch, cfg.text_len, cfg.text_dim, generator=g)
    empty = torch.zeros(1, cfg.text_len, cfg.text_dim)
    schedule, loss_cfg = NoiseSchedule(), LossConfig()
    noiser = schedule.training_scheduler()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4, betas=(0.9, 0.9), weight_decay=0.03)
    ema = EMAModel(params, decay=0.9999)
    seconds = []
    for i in range(warmup + steps):
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            out = joint_loss(model, schedule, noiser, latents, bits, text, empty, loss_cfg, g)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        ema.step(params)
        if i >= warmup:
            seconds.append(time.perf_counter() - start)
    del optimizer, ema
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


# -- main --------------------------------------------------------------------------------------------
def verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--models", nargs="*", default=list(MODELS), choices=MODELS, help="models to time (none: curves only)"
    )
    parser.add_argument("--batch", type=int, default=32, help="world-s-pixel batch (its config: 32)")
    parser.add_argument("--uvit-batch", type=int, default=8, help="uvit-s2 synthetic batch")
    parser.add_argument("--uvit-steps", type=int, default=5, help="timed uvit-s2 steps per measurement")
    parser.add_argument("--uvit-warmup", type=int, default=2, help="untimed uvit-s2 steps first")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per measurement")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    parser.add_argument("--n", type=int, default=160, help="scenes in the benchmark world")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument(
        "--curves",
        type=int,
        default=0,
        metavar="STEPS",
        help="also train world-s-pixel STEPS steps in fp32 and in bf16 and compare losses",
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
        help="also time world-s-pixel with train.compile=true (torch.compile through Accelerate)",
    )
    parser.add_argument("--no-append", action="store_true", help="print only; do not write RESULTS.md")
    parser.add_argument("--note", default="", help="a remark stored with the results")
    args = parser.parse_args()
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
            features = make_features(tmp, args.n)
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
