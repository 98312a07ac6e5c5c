"""Dataset synthesis speed: end-to-end pairs/s of ``pandiff synthesize`` next to the model's
forward-only throughput at the same batch, measured in the same run.

    efficiency = pairs/s x (steps x branches / forward samples/s
                            + redraw steps x redraw branches / redraw forward samples/s)

(the second term only when the image is redrawn for its map, ``redraw_image``: the bundled default)

1.0 means sampling costs exactly the model's forwards; what falls short is the sampler, the text
encoder, map decoding and clean-up, PNG encoding and writing. On a CPU shared with other jobs the
wall-time figures swing with their load, so the table also gives the same ratio in CPU time
(meaningful for CPU runs with ``--threads 1``; on a GPU read the wall-time columns). Prints a
table and appends it to benchmarks/RESULTS.md.

    python benchmarks/bench_synthesize.py                              # CPU, batch 1 and 16, bf16
    python benchmarks/bench_synthesize.py --device cuda --batch 256 1024 --pairs-per-batch 4
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from bench_common import REDRAW, publish

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
def forward_throughput(pipe, batch: int, branches: int, device: str, seconds: float) -> tuple[float, float]:
    """Samples per second (wall) and per CPU second of model forwards at ``batch x branches``
    samples per forward (what one sampler step runs), random inputs at a mid timestep, the
    pipeline's autocast."""
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
    calls, start, cpu = 0, time.perf_counter(), time.process_time()
    while calls < 3 or time.perf_counter() - start < seconds:
        forward()
        calls += 1
    sync(device)
    return calls * b / (time.perf_counter() - start), calls * b / (time.process_time() - cpu)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None, help="pipeline folder (default: bundled model)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch", type=int, nargs="+", default=None, help="default 1 16 (CPU), 256 1024 (GPU)")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--precision", default="bf16", choices=["bf16", "fp32"])
    p.add_argument("--pairs-per-batch", type=int, default=1, help="pairs per run = this x batch (default 1)")
    p.add_argument("--min-pairs", type=int, default=8, help="but at least this many (default 8)")
    p.add_argument(
        "--forward-seconds", type=float, default=4.0, help="forward-only seconds per repeat (default 4)"
    )
    p.add_argument("--repeats", type=int, default=3, help="paired runs per batch; medians (default 3)")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    p.add_argument("--no-append", action="store_true", help="print only; do not append to RESULTS.md")
    p.add_argument(
        "--redraw", default="model", choices=list(REDRAW),
        help="redraw each image for its map: the model folder's setting (default), on, off",
    )  # fmt: skip
    p.add_argument("--note", default="")
    args = p.parse_args()
    if args.threads:  # on a shared CPU, 2 spinning OpenMP threads can run 10x slower than 1
        torch.set_num_threads(args.threads)
    cuda = args.device.startswith("cuda")
    batches = args.batch or ([256, 1024] if cuda else [1, 16])
    pipe = PanopticDiffusionPipeline.from_pretrained(args.model, device=args.device)
    pipe.autocast_dtype = torch.bfloat16 if args.precision == "bf16" else None
    warm = pipe.call_settings(num_inference_steps=2)  # the folder's guidance; 2 steps to warm up
    cleanup = pipe.pop_cleanup(warm)
    branches = 1 + (warm["guidance_scale"] > 0) + (warm["map_guidance_scale"] > 0)
    redraw = pipe.redraws(REDRAW[args.redraw])
    # The redraw pass (map -> image) runs the conditional branch, with text guidance the text-free
    # one, and with image-side map guidance the noised-map one.
    redraw_branches = (
        (1 + (warm["guidance_scale"] > 0) + (warm["image_map_guidance_scale"] > 0)) if redraw else 0
    )
    workers = default_workers(args.device)
    lines = [
        (
            f"{args.steps} DPM-Solver++ steps, {branches} guidance branches per step"
            + (f", then {args.steps} redraw steps of {redraw_branches} branches" if redraw else ", no redraw")
            + f", {args.precision}, "
            f"{args.device}, {workers} writer processes, map clean-up {cleanup.slivers}"
            + (", one piece per instance" if cleanup.one_piece else "")
            + "; forward-only: model alone at "
            "batch x branches samples per forward"
        ),
        "",
        (
            "| device | batch | runs x pairs | synthesize pairs/s | forward-only samples/s | efficiency | "
            "pairs per CPU s | forward samples per CPU s | efficiency (CPU time) |"
        ),
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        prompts = Path(tmp) / "prompts.txt"
        prompts.write_text("\n".join(PROMPTS) + "\n")
        for batch in batches:
            sample_pairs(pipe, PROMPTS[:1] * batch, pair_generators(0, range(batch)), warm)  # warm-up
            redraw_fwd = []  # wall and CPU forward samples/s at the redraw pass's batch
            n = max(args.pairs_per_batch * batch, args.min_pairs)
            runs = []  # per repeat: wall and CPU pairs/s, then wall and CPU forward samples/s
            for r in range(args.repeats):
                # Forward-only right before and after each synthesize run, paired with it: the
                # load of a shared machine drifts between minutes, less within one repeat.
                before = forward_throughput(pipe, batch, branches, args.device, args.forward_seconds / 2)
                opts = SynthesizeOptions(
                    out=str(Path(tmp) / f"b{batch}-{r}"), n=n, prompts=str(prompts), batch=batch,
                    steps=args.steps, device=args.device, precision=args.precision, workers=workers,
                    progress=False, redraw_image=redraw,
                )  # fmt: skip
                cpu = time.process_time()
                rate = synthesize(opts, pipe=pipe)["pairs_per_second"]
                cpu_rate = n / (time.process_time() - cpu)
                after = forward_throughput(pipe, batch, branches, args.device, args.forward_seconds / 2)
                runs.append((rate, cpu_rate, (before[0] + after[0]) / 2, (before[1] + after[1]) / 2))
                if redraw:
                    redraw_fwd.append(
                        forward_throughput(
                            pipe, batch, redraw_branches, args.device, args.forward_seconds / 2
                        )
                    )
            rate, cpu_rate, fwd, fwd_cpu = (statistics.median(col) for col in zip(*runs))
            # Efficiency: the seconds per pair that the model's forwards alone take (both passes),
            # times the pairs per second achieved.
            r_fwd, r_fwd_cpu = (statistics.median(col) for col in zip(*redraw_fwd)) if redraw else (1.0, 1.0)
            extra = args.steps * redraw_branches
            eff = statistics.median(r[0] * (args.steps * branches / r[2] + extra / r_fwd) for r in runs)
            eff_cpu = statistics.median(
                r[1] * (args.steps * branches / r[3] + extra / r_fwd_cpu) for r in runs
            )
            lines.append(
                f"| {args.device} | {batch} | {args.repeats} x {n} | {rate:.2f} | {fwd:.1f} | {eff:.2f} | "
                f"{cpu_rate:.2f} | {fwd_cpu:.1f} | {eff_cpu:.2f} |"
            )
            print(lines[-1], flush=True)
    publish("bench_synthesize.py: dataset synthesis vs forward-only", lines, not args.no_append, args.note)


if __name__ == "__main__":
    main()
