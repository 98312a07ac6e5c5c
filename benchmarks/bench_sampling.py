"""Sampling cost: wall time and peak memory per image+map pair.

Each configuration runs in a fresh subprocess so its peak RSS is its own. Prints a table and
appends it to benchmarks/RESULTS.md.

    python benchmarks/bench_sampling.py                      # bundled model
    python benchmarks/bench_sampling.py --model DIR --steps 10 20 50 --batch 1 8
    python benchmarks/bench_sampling.py --quick              # 20 steps, batch 1, both guidance modes
"""

from __future__ import annotations

import argparse
import itertools
import json
import subprocess
import sys

from bench_common import REDRAW, publish

WORKER = r"""
import json, resource, sys, time, torch
from pandiff.pipeline import PanopticDiffusionPipeline
from pandiff.diffusion.sampler import LockstepSampler
args = json.loads(sys.argv[1])
t0 = time.perf_counter()
pipe = PanopticDiffusionPipeline.from_pretrained(args["model"], scheduler=args["scheduler"])
if args["precision"] == "fp32":
    pipe.autocast_dtype = None
load_s = time.perf_counter() - t0
if not args["batched"]:
    original = LockstepSampler.__init__
    def separate(self, *a, **k):
        k["batch_guidance"] = False
        original(self, *a, **k)
    LockstepSampler.__init__ = separate
prompt = "two red circles and a blue square on the grass"
redraw, self_check, best_of, apart = args["redraw"], args["self_check"], args["best_of"], args["apart"]
split, shapes, match, again = args["colour_split"], args["misshapen"], args["picture_match"], args["restarts"]
snap, spread, cogen, colours = args["snap"], args["spread"], args["cogen"], args["colour_check"]
pipe(prompt, num_inference_steps=2, num_images=args["batch"], redraw_image=redraw, self_check=0)  # warm-up
times, cpu = [], []
for rep in range(args["repeats"]):
    t, c = time.perf_counter(), time.process_time()
    pipe(prompt, num_inference_steps=args["steps"], num_images=args["batch"],
         generator=torch.Generator().manual_seed(rep), redraw_image=redraw, self_check=self_check, best_of=best_of,
         avoid_touching=apart, colour_split=split, misshapen=shapes, picture_match=match, restarts=again,
         snap_shapes=snap, spread_things=spread, cogen_steps=cogen, colour_check=colours)
    times.append(time.perf_counter() - t)
    cpu.append(time.process_time() - c)
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"load_s": load_s, "call_s": min(times), "mean_s": sum(times) / len(times), "cpu_s": min(cpu),
                  "rss_mb": rss, "self_check": pipe.self_checks(self_check), "best_of": pipe.best_ofs(best_of),
                  "apart": pipe.avoids_touching(apart), "split": pipe.splits_colours(split, self_check, best_of),
                  "shapes": pipe.flags_misshapen(shapes, self_check, best_of),
                  "match": pipe.matches_pictures(match, self_check, best_of),
                  "again": pipe.restarts_failing(again, self_check, best_of),
                  "snap": pipe.snaps(snap, redraw), "spread": pipe.spreads(spread, redraw),
                  "cogen": pipe.cogen_steps_of(cogen, args["steps"], redraw),
                  "colours": pipe.checks_colours(colours, self_check, best_of)}))
"""


def _switch(value: str) -> bool | None:
    """An on / off / model choice: the pipeline call's value (None: the folder's setting)."""
    return REDRAW[value]


def _number(kind: type):
    """A 'model' (None: the folder's setting) or a number of ``kind``."""
    return lambda value: None if value == "model" else kind(value)


# The sampling settings a run varies, one table row per combination of their values (each flag
# takes several): flag, the worker's key, how a value is read, help.
SETTINGS = (
    ("--redraw", "redraw", _switch,
     "redraw each image for its map: the model folder's setting, on, off (several: one row each)"),
    ("--self-check", "self_check", _number(int),
     ("extra draws of a sample failing its own checks: 'model' (the folder's) or a number; several: one "
     "row each. Its cost varies with the draws: compare the mean column")),
    ("--best-of", "best_of", _number(int),
     ("whole draws per sample, the best by its own checks kept: 'model' (the folder's) or a number; "
     "several: one row each")),
    ("--avoid-touching", "apart", _switch,
     ("the checks also draw again maps whose things touch: the model folder's setting, on, off (several: "
     "one row each; it only acts with a self check or best of K)")),
    ("--colour-split", "colour_split", _number(float),
     ("the checks also fail pictures painting a thing in two colours: 'model' (the folder's) or a share "
     "(0 = off); several: one row each. It only acts with a self check or best of K")),
    ("--misshapen", "misshapen", _number(float),
     ("the checks also draw again maps holding a thing no single world shape looks like: 'model' (the "
     "folder's) or a ratio (0 = off); several: one row each. It only acts with a self check or best of K")),
    ("--picture-match", "picture_match", _number(float),
     ("the self check also fails pictures matching their map below this IoU: 'model' (the folder's) or an "
     "IoU (0 = off); several: one row each. It only acts with a self check")),
    ("--restarts", "restarts", _number(int),
     ("whole draws again of a sample still failing after the self check's tries: 'model' (the folder's) or "
     "a number (0 = off); several: one row each. It only acts with a self check")),
    ("--snap-shapes", "snap", _switch,
     ("redraw the map's things as world shapes before the redraw: the model folder's setting, on, off "
     "(several: one row each; it only acts with the redraw)")),
    ("--spread-things", "spread", _number(int),
     ("move touching things of the map apart by this many pixels before the redraw: 'model' (the folder's) "
     "or a gap (0 = off); several: one row each. It only acts with the redraw")),
    ("--cogen-steps", "cogen", _number(int),
     ("sampler steps of the co-generation pass whose map the redraw keeps (the redraw takes --steps): "
     "'model' (the folder's) or a number (0 = off); several: one row each. It only acts with the redraw")),
    ("--colour-check", "colour_check", _switch,
     ("the checks also fail pictures with the prompt's colours wrong: the model folder's setting, on, off "
     "(several: one row each; it only acts with a self check or best of K)")),
)  # fmt: skip


def run_one(cfg: dict) -> dict:
    res = subprocess.run(
        [sys.executable, "-c", WORKER, json.dumps(cfg)], capture_output=True, text=True, check=False
    )
    if res.returncode != 0:
        raise SystemExit(f"benchmark worker failed for {cfg}:\n{res.stderr[-2000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None, help="pipeline folder (default: bundled model)")
    p.add_argument("--steps", type=int, nargs="+", default=[10, 20, 50])
    p.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    p.add_argument("--schedulers", nargs="+", default=["dpmsolver++", "ddim"])
    p.add_argument("--precision", nargs="+", default=["bf16", "fp32"], choices=["bf16", "fp32"])
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--quick", action="store_true", help="20 steps, batch 1, DPM-Solver++, bf16 only")
    for flag, key, read, helptext in SETTINGS:
        choices = list(REDRAW) if read is _switch else None
        p.add_argument(flag, dest=key, nargs="+", default=["model"], choices=choices, help=helptext)
    p.add_argument("--no-append", action="store_true", help="print only; do not append to RESULTS.md")
    p.add_argument("--note", default="")
    args = p.parse_args()
    if args.quick:
        args.steps, args.batch, args.schedulers, args.precision = [20], [1], ["dpmsolver++"], ["bf16"]
    rows = []
    header = (
        "| scheduler | precision | guidance forwards | redraw | self check | best of | things apart | colour split | misshapen | picture match | restarts | snap | spread | co-gen steps | colour check | steps | batch "
        "| s / pair "
        "| mean s / pair | CPU s / pair | s / call | peak RSS MB | load s |"
    )
    rule = "|---|---|---|---|---:|---:|---|---:|---:|---:|---:|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    print(header)
    print(rule)
    keys = [key for _, key, _, _ in SETTINGS]
    configs = [
        {**dict(zip(keys, values)), "scheduler": s, "precision": pr, "batched": bt, "steps": st, "batch": b}
        for *values, s, pr, bt, st, b in itertools.product(
            *(getattr(args, key) for key in keys), args.schedulers, args.precision, (True, False), args.steps,
            args.batch,
        )
        if bt or (st == 20 and s == "dpmsolver++")  # one-forward-per-branch only as a comparison
    ]  # fmt: skip
    for cfg in configs:
        worker = {**cfg, **{key: read(cfg[key]) for _, key, read, _ in SETTINGS}}
        res = run_one({**worker, "model": args.model, "repeats": args.repeats})
        row = (
            f"| {cfg['scheduler']} | {cfg['precision']} | {'batched' if cfg['batched'] else 'per branch'} "
            f"| {cfg['redraw']} | {res['self_check']} | {res['best_of']} | {'on' if res['apart'] else 'off'} | {res['split']:g} | {res['shapes']:g} "
            f"| {res['match']:g} | {res['again']} | {'on' if res['snap'] else 'off'} | {res['spread']} "
            f"| {res['cogen'] or cfg['steps']} | {'on' if res['colours'] else 'off'} "
            f"| {cfg['steps']} | {cfg['batch']} "
            f"| {res['call_s'] / cfg['batch']:.3f} | {res['mean_s'] / cfg['batch']:.3f} "
            f"| {res['cpu_s'] / cfg['batch']:.3f} | {res['call_s']:.3f} "
            f"| {res['rss_mb']:.0f} | {res['load_s']:.2f} |"
        )
        print(row, flush=True)
        rows.append(row)
    model = args.model or "bundled world-s"
    publish(f"Sampling cost ({model})", [header, rule, *rows], not args.no_append, args.note)


if __name__ == "__main__":
    main()
