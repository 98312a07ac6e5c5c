"""The downstream proof at several sizes (FreeMask-style curve): a segmenter trained on N generated
pairs against one trained on N real pairs, and on the N real plus the N generated pairs.

    python benchmarks/downstream_curve.py --data WORLD --work DIR [--n 500 2000 10000] [--model FOLDER] \
        [--batch 16] [--judge-steps 1200] [--seed 0] [--out docs/eval/downstream-curve]

1. Prompts: train scene i of the world gives prompt i (its first caption that fits the text
   encoder, else its shortest, cut to the window, as ``evaluate --mode downstream`` takes it),
   written as a captions JSON, ``DIR/prompts.json`` (image id i), for the first max(10000, N)
   scenes, so a later run with a larger N grows the same dataset.
2. ``pandiff synthesize`` makes pair i from prompt i into ``DIR/generated`` (resumable: a killed
   run continues where it stopped, a run with a larger N adds pairs to it; the same folder can
   be filled beforehand by several processes,
   ``torchrun --nproc_per_node 2 -m pandiff.cli -- synthesize --out DIR/generated --captions
   DIR/prompts.json --n NMAX --batch 16`` with ``ACCELERATE_USE_CPU=1``). The sizes are prefixes:
   size N uses pairs 0..N-1 and real train scenes 0..N-1, so the real and the generated sets of
   one size hold the same scenes' prompts.
3. For each N the judge architecture (RegionNet + ThingNet, ``pandiff train-judge``'s recipe, the
   same steps and seed for every training set) is trained on the generated pairs, on the real
   pairs, and on both, and scored on the world's whole real val split: mIoU and PQ.
   Each finished judge is recorded in ``DIR/results.json``, so a killed run skips what it has.

Prints the table, appends it to ``benchmarks/RESULTS.md`` and writes ``OUT.json``, ``OUT.md`` and
``OUT.png`` (matplotlib, from the ``bench`` extra).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from bench_common import log_x_panel, publish, pyplot, save_figure

TRAIN_SETS = ("real", "generated", "real+generated")
PROMPT_POOL = 10_000  # prompts written at least: sizes up to this grow one dataset


def write_prompts(pipe, captions: list[list[str]], path: Path) -> list[str]:
    """Prompt i = train scene i's first caption that fits the text encoder (else its shortest,
    which synthesize cuts to the window as it cuts captions), as a captions JSON with image id i."""
    from pandiff.evaluation.evaluate import fitting_caption
    from pandiff.io import atomic_write_text

    prompts = [fitting_caption(pipe, caps) for caps in captions]
    annotations = [{"id": i, "image_id": i, "caption": c} for i, c in enumerate(prompts)]
    text = json.dumps({"annotations": annotations}, indent=0) + "\n"
    if path.exists() and path.read_text() != text:
        raise SystemExit(f"{path} holds other prompts (another world or model?); use another --work")
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, text)
    return prompts


def subset(data, n: int):
    from pandiff.world.judge_training import LabelledImages

    return LabelledImages(data.images[:n], data.maps[:n], data.captions[:n], data.table, data.image_ids[:n])


def union(a, b):
    import torch

    from pandiff.world.judge_training import LabelledImages

    return LabelledImages(
        torch.cat([a.images, b.images]), a.maps + b.maps, a.captions + b.captions, a.table, []
    )


def measure(args) -> dict:
    from pandiff.io import atomic_write_text
    from pandiff.pipeline import PanopticDiffusionPipeline
    from pandiff.synthesize import SynthesizeOptions, synthesize
    from pandiff.world.judge_training import fit_judge, load_split, score_judge

    work = Path(args.work)
    n_max = max(args.n)
    pipe = PanopticDiffusionPipeline.from_pretrained(args.model, device=args.device)
    size = pipe.image_size
    # One read of the train scenes: their captions make the prompts, their pairs the real sets.
    pool = max(PROMPT_POOL, n_max)
    real = load_split(args.data, "train", size, limit=pool)
    if len(real) < pool:
        raise SystemExit(f"{args.data} has {len(real)} train scenes; the prompts need {pool}")
    write_prompts(pipe, real.captions, work / "prompts.json")
    generated_dir = work / "generated"
    start = time.perf_counter()
    synthesize(
        SynthesizeOptions(
            out=str(generated_dir), n=n_max, captions=str(work / "prompts.json"), batch=args.batch,
            seed=args.seed, model=args.model, device=args.device, resume=generated_dir.exists(),
        ),
        pipe=pipe,
    )  # fmt: skip
    synth_seconds = time.perf_counter() - start
    generated = load_split(generated_dir, "train", size, limit=n_max)
    val = load_split(args.data, "val", size)
    results_path = work / "results.json"
    done = json.loads(results_path.read_text()) if results_path.exists() else {}
    fit = {"steps": args.judge_steps, "thing_steps": max(1, args.judge_steps // 2), "seed": args.seed}
    for n in sorted(args.n):
        sets = {
            "real": subset(real, n),
            "generated": subset(generated, n),
            "real+generated": union(subset(real, n), subset(generated, n)),
        }
        for name in TRAIN_SETS:
            key = f"{n}/{name}/{args.judge_steps}/{args.seed}"
            if key in done:
                continue
            t0 = time.perf_counter()
            scores = score_judge(fit_judge(sets[name], progress=False, **fit), val)
            done[key] = {
                "n": n, "train_set": name, "pairs": len(sets[name]), "miou": scores["miou"],
                "pq": scores["pq"], "sq": scores["sq"], "rq": scores["rq"],
                "seconds": round(time.perf_counter() - t0, 1),
            }  # fmt: skip
            atomic_write_text(results_path, json.dumps(done, indent=1))
            print(f"N={n} {name}: mIoU {scores['miou']:.4f} PQ {scores['pq']:.4f}", flush=True)
    rows = []
    for n in sorted(args.n):
        row = {"n": n}
        for name in TRAIN_SETS:
            r = done[f"{n}/{name}/{args.judge_steps}/{args.seed}"]
            row[name] = {"miou": r["miou"], "pq": r["pq"]}
        rows.append(row)
    return {"rows": rows, "val_images": len(val), "synthesize_seconds": round(synth_seconds, 1), "fit": fit}


def table(rows: list[dict]) -> list[str]:
    lines = [
        (
            "| N | real: mIoU / PQ | generated: mIoU / PQ | generated / real: mIoU / PQ "
            "| real + generated (2N pairs): mIoU / PQ | (real + generated) - real: mIoU / PQ |"
        ),
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        real, gen, both = row["real"], row["generated"], row["real+generated"]
        lines.append(
            f"| {row['n']} | {real['miou']:.3f} / {real['pq']:.3f} | {gen['miou']:.3f} / {gen['pq']:.3f} "
            f"| {gen['miou'] / real['miou']:.3f} / {gen['pq'] / real['pq']:.3f} "
            f"| {both['miou']:.3f} / {both['pq']:.3f} "
            f"| {both['miou'] - real['miou']:+.3f} / {both['pq'] - real['pq']:+.3f} |"
        )
    return lines


def plot(rows: list[dict], path: Path, title: str) -> None:
    plt = pyplot()
    if plt is None:
        return
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    ns = [r["n"] for r in rows]
    for name, style in zip(TRAIN_SETS, ("o-", "s--", "^-.")):
        label = f"{name} ({'2N' if '+' in name else 'N'} pairs)"
        for ax, key in zip(axes, ("miou", "pq")):
            ax.plot(ns, [r[name][key] for r in rows], style, label=label)
    for ax, label in zip(axes, ("val mIoU (real val images)", "val PQ (real val images)")):
        log_x_panel(ax, ns, "N (pairs of each kind)", label, legend=False)
    save_figure(fig, path, title, legend_from=axes[0])  # below: inside, it hid a curve


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="built-in world folder (its train and val splits)")
    parser.add_argument("--work", required=True, help="folder for the prompts, generated pairs and results")
    parser.add_argument("--n", type=int, nargs="+", default=[500, 2000, 10000], help="sizes N")
    parser.add_argument("--model", default=None, help="pipeline folder (default: the bundled model)")
    parser.add_argument("--batch", type=int, default=16, help="synthesize batch (default 16)")
    parser.add_argument("--judge-steps", type=int, default=1200, help="RegionNet steps (ThingNet: half)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default="docs/eval/downstream-curve", help="OUT.json, OUT.md, OUT.png")
    parser.add_argument("--no-append", action="store_true", help="do not append to RESULTS.md")
    args = parser.parse_args()
    if min(args.n) < 1:
        parser.error("--n sizes must be >= 1")

    result = measure(args)
    lines = table(result["rows"])
    model = args.model or "bundled model"
    note = (
        f"{model}; judge architecture trained {result['fit']['steps']} RegionNet + {result['fit']['thing_steps']} "
        f"ThingNet steps (seed {args.seed}) on each training set, scored on {result['val_images']} real val images "
        f"of {args.data}. Size N: pairs 0..N-1 (generated from train scenes 0..N-1's captions) and real train "
        "scenes 0..N-1."
    )
    publish(f"Downstream curve ({model})", lines, append=not args.no_append, note=note)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    command = "python " + " ".join(["benchmarks/downstream_curve.py", *sys.argv[1:]])
    report = {"command": command, "model": model, "data": args.data, "note": note, **result}
    out.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
    md = [
        "# Downstream curve: generated vs real training pairs",
        "",
        f"Command: `{command}`",
        "",
        *lines,
        "",
        note,
    ]
    out.with_suffix(".md").write_text("\n".join(md) + "\n")
    plot(
        result["rows"],
        out.with_suffix(".png"),
        f"{model}: a segmenter trained on N pairs, scored on real val",
    )


if __name__ == "__main__":
    main()
