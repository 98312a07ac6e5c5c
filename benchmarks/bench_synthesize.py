"""Dataset synthesis speed: end-to-end pairs/s of ``pandiff synthesize`` next to the model's
forward-only throughput at the same batch, measured in the same run.

    efficiency = pairs/s x steps x guidance branches / forward samples/s

1.0 means sampling costs exactly the model's forwards; what falls short is the sampler, the text
encoder, map decoding and clean-up, PNG encoding and writing. Prints a table and appends it to
benchmarks/RESULTS.md.

    python benchmarks/bench_synthesize.py                              # CPU, batch 1 and 16, bf16
    python benchmarks/bench_synthesize.py --device cuda --batch 256 1024 --pairs-per-batch 4
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from bench_common import publish

from pandiff.pipeline import PanopticDiffusionPipeline
from pandiff.synthesize import SynthesizeOptions, default_workers, pair_generators, sample_pairs, synthesize

PROMPTS = [
    "two red circles and a blue square on the grass",
    "a green star left of a yellow triangle on the sand",
    "three blue circles in the water",
    "a purple square above an orange star",
]


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


@torch.no_grad()
def forward_throughput(pipe, batch: int, branches: int, device: str, seconds: float) -> float:
    """Model forwards per second x samples per forward, at ``batch x branches`` samples per forward
    (what one sampler step runs), random inputs at a mid timestep, the pipeline's autocast."""
    b = batch * branches
    g = torch.Generator().manual_seed(0)
    image = torch.randn(b, *pipe.latent_shape, generator=g).to(device)
    bits = torch.randn(b, *pipe.map_shape, generator=g).to(device)
    text = pipe.text_encoder.encode(PROMPTS[:1]).expand(b, -1, -1).to(device)
    t = torch.full((b,), 500, device=device, dtype=torch.long)
    dtype = pipe.autocast_dtype

    def forward():
        with torch.autocast(torch.device(device).type, dtype=dtype, enabled=dtype is not None):
            pipe.model(image, t, text, bits, t)

    forward()  # warm-up
    sync(device)
    calls, start = 0, time.perf_counter()
    while calls < 3 or time.perf_counter() - start < seconds:
        forward()
        calls += 1
    sync(device)
    return calls * b / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None, help="pipeline folder (default: bundled model)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch", type=int, nargs="+", default=None, help="default 1 16 (CPU), 256 1024 (GPU)")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--precision", default="bf16", choices=["bf16", "fp32"])
    p.add_argument("--pairs-per-batch", type=int, default=2, help="timed pairs = this x batch (default 2)")
    p.add_argument(
        "--forward-seconds", type=float, default=10.0, help="time spent on forward-only (default 10)"
    )
    p.add_argument("--no-append", action="store_true", help="print only; do not append to RESULTS.md")
    p.add_argument("--note", default="")
    args = p.parse_args()
    cuda = args.device.startswith("cuda")
    batches = args.batch or ([256, 1024] if cuda else [1, 16])
    pipe = PanopticDiffusionPipeline.from_pretrained(args.model, device=args.device)
    pipe.autocast_dtype = torch.bfloat16 if args.precision == "bf16" else None
    scales = pipe.default_scales()
    branches = 1 + (scales["guidance_scale"] > 0) + (scales["map_guidance_scale"] > 0)
    workers = default_workers(args.device)
    lines = [
        (
            f"{args.steps} DPM-Solver++ steps, {branches} guidance branches per step, {args.precision}, "
            f"{args.device}, {workers} writer processes, map clean-up {pipe.map_cleanup}; forward-only: model alone at "
            "batch x branches samples per forward"
        ),
        "",
        "| device | batch | pairs timed | synthesize pairs/s | forward-only samples/s | efficiency |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        prompts = Path(tmp) / "prompts.txt"
        prompts.write_text("\n".join(PROMPTS) + "\n")
        for batch in batches:
            fwd = forward_throughput(pipe, batch, branches, args.device, args.forward_seconds)
            sample_pairs(pipe, PROMPTS[:1] * batch, pair_generators(0, range(batch)), 2, scales)  # warm-up
            n = args.pairs_per_batch * batch
            opts = SynthesizeOptions(
                out=str(Path(tmp) / f"b{batch}"), n=n, prompts=str(prompts), batch=batch, steps=args.steps,
                device=args.device, precision=args.precision, workers=workers, progress=False,
            )  # fmt: skip
            summary = synthesize(opts, pipe=pipe)
            rate = summary["pairs_per_second"]
            eff = rate * args.steps * branches / fwd
            lines.append(f"| {args.device} | {batch} | {n} | {rate:.2f} | {fwd:.1f} | {eff:.2f} |")
            print(lines[-1], flush=True)
    publish("bench_synthesize.py: dataset synthesis vs forward-only", lines, not args.no_append, args.note)


if __name__ == "__main__":
    main()
