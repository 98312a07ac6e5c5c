"""``pandiff synthesize``: a whole generated dataset, in the COCO 2017 panoptic layout.

Layout of ``OUT`` (``SPLIT`` is ``train`` unless asked otherwise)::

    OUT/SPLIT2017/000000000001.png                   generated images (image id = pair index + 1)
    OUT/panoptic_SPLIT2017/000000000001.png          COCO panoptic PNGs (RGB-encoded segment ids)
    OUT/annotations/panoptic_SPLIT2017.json          images, annotations, categories, info
    OUT/annotations/captions_SPLIT2017.json          one caption per image: its prompt
    OUT/synthesize.json                              the run's settings (checked by --resume)
    OUT/shards/shard-000000.json ...                 the records of each finished shard

``CocoPanoptic(OUT, SPLIT)``, ``pandiff prepare --data OUT --splits SPLIT`` and training read it
as they read COCO. The two JSON files appear last, atomically, once every shard is done.

Determinism: pair i is drawn with its own generator seeded from ``(seed, i)`` (:func:`pair_seed`)
and prompt ``prompts[(i // per_prompt) % len(prompts)]``, so it depends neither on the batch, nor
on the number of processes, nor on interruptions. (Batched matrix products may round differently
at other batch sizes; in bf16 on CPUs with native bf16 they do not, see tests/test_synthesize.py.)

Resume: shard s holds pairs ``[s * shard_size, (s + 1) * shard_size)``. Its PNGs are written
first; its record file, written atomically afterwards, is what marks it done. After a kill,
``--resume`` redoes every shard without a record (rewriting the same files), so no pair is
duplicated or missing. With several processes (``accelerate launch`` / ``torchrun``) the missing
shards are dealt round-robin; the main process assembles the JSON files after all are done.

Growing: ``--resume`` with a larger ``--n`` (every other setting the same) keeps the finished
shards, redoes the smaller run's last, partial shard and adds the new ones; the JSON files are
assembled anew at the end. Since pair i depends on (seed, i) alone, the grown dataset equals one
made at the larger ``--n`` from the start. A smaller ``--n`` is refused.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from pandiff.data.panoptic_map import MapCleanup, PanopticMap
from pandiff.errors import ConfigError, DataError
from pandiff.io import OUTPUT_MARKER, atomic_write_text, check_output_dir

MANIFEST = "synthesize.json"
PRECISIONS = ("auto", "bf16", "fp32")
# Settings that change the pairs: --resume refuses a folder made with other values.
_OUTPUT_KEYS = (
    "n", "per_prompt", "steps", "seed", "model", "precision", "guidance_scale", "map_guidance_scale",
    "map_cleanup", "sampler", "split", "shard_size", "prompts_sha256", "redraw_image",
    "image_map_guidance_scale", "one_piece_instances", "map_sampler", "self_check",
    "best_of", "avoid_touching", "separate_touching", "colour_split", "misshapen", "picture_match",
    "restarts", "snap_shapes", "spread_things", "cogen_steps", "weights", "colour_check",
)  # fmt: skip
# What a folder written before a key existed was made with.
_LEGACY = {
    "redraw_image": False,
    "image_map_guidance_scale": 0.0,
    "one_piece_instances": False,
    "self_check": 0,
    "best_of": 1,
    "avoid_touching": False,
    "separate_touching": 0,
    "colour_split": 0.0,
    "misshapen": 0.0,
    "picture_match": 0.0,
    "restarts": 0,
    "snap_shapes": False,
    "spread_things": 0,
    "cogen_steps": 0,
    "colour_check": False,
}


@dataclass
class SynthesizeOptions:
    """What ``pandiff synthesize`` was asked (mirrors its command-line options)."""

    out: str
    n: int
    prompts: str | None = None
    captions: str | None = None
    per_prompt: int = 1
    batch: int = 16
    steps: int | None = None  # None: the model folder's, as for the guidance scales and clean-up
    seed: int = 0
    model: str | None = None
    device: str = "cpu"
    precision: str = "auto"
    resume: bool = False
    guidance: float | None = None
    map_guidance: float | None = None
    map_cleanup: int | None = None
    one_piece_instances: bool | None = None  # None: the model folder's
    redraw_image: bool | None = None  # None: the model folder's
    image_map_guidance: float | None = None  # the redraw's; None: the model folder's
    self_check: int | None = None  # extra draws of a pair failing its own checks; None: the model folder's
    best_of: int | None = None  # whole draws per pair, the best kept; None: the model folder's
    avoid_touching: bool | None = None  # the checks also redraw maps with touching things; None: the folder's
    separate_touching: int | None = None  # gap (px) touching things are bitten apart by before the redraw
    colour_split: float | None = None  # with the checks, a picture painting a thing in two colours fails
    misshapen: float | None = None  # with the checks, a map holding a misshapen thing fails
    picture_match: float | None = None  # with the self check, a picture matching its map below this IoU fails
    restarts: int | None = None  # with the self check, whole draws again of a pair that still fails
    colour_check: bool | None = None  # with the checks, a picture with the prompt's colours wrong fails
    snap_shapes: bool | None = None  # with the redraw, the map's things redrawn as world shapes first
    spread_things: int | None = None  # with the redraw, the map's things moved this many pixels apart first
    cogen_steps: int | None = None  # with the redraw, co-generation's steps (0: steps'); None: the folder's
    scheduler: str | None = None
    map_scheduler: str | None = None  # None: scheduler's, else the model's
    split: str = "train"
    shard_size: int | None = None  # default: the resumed run's, else 256 rounded up to a multiple of batch
    workers: int | None = None
    progress: bool = True


# -- prompts and seeds ---------------------------------------------------------------------------
def read_prompts(
    prompts_file: str | Path | None = None, captions_json: str | Path | None = None
) -> list[str]:
    """Prompts in their documented order: the non-blank lines of ``prompts_file`` (stripped), or
    every caption of a COCO captions JSON sorted by (image id, caption id)."""
    if (prompts_file is None) == (captions_json is None):
        raise ConfigError("give exactly one of --prompts FILE and --captions CAPTIONS_JSON")
    path = Path(prompts_file or captions_json)
    if not path.is_file():
        raise DataError(f"{path} does not exist or is not a file")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read {path}: {exc}") from None
    if prompts_file is not None:
        prompts = [line.strip() for line in text.splitlines() if line.strip()]
    else:
        try:
            annotations = json.loads(text)["annotations"]
            ordered = sorted(annotations, key=lambda a: (int(a["image_id"]), int(a.get("id", 0))))
            prompts = [" ".join(str(a["caption"]).split()) for a in ordered]
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise DataError(
                f"{path} is not a COCO captions JSON (annotations with image_id and caption): {exc}"
            ) from None
        prompts = [p for p in prompts if p]
    if not prompts:
        raise DataError(f"{path} holds no prompt")
    return prompts


def prompt_index(i: int, per_prompt: int, num_prompts: int) -> int:
    """Which prompt pair ``i`` draws: ``per_prompt`` pairs per prompt, cycling through the list."""
    return (i // per_prompt) % num_prompts


def pair_seed(seed: int, i: int) -> int:
    """The 64-bit seed of pair ``i``: a SeedSequence hash of ``(seed, i)``, so nearby runs and
    nearby indices never share noise (``seed + i`` would: run 0's pair 1 = run 1's pair 0)."""
    return int(np.random.SeedSequence([seed, i]).generate_state(1, np.uint64)[0])


def pair_generators(seed: int, indices) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(pair_seed(seed, i)) for i in indices]


def file_name(index: int) -> str:
    return f"{index + 1:012d}.png"


# -- the output folder ---------------------------------------------------------------------------
def paths(out: str | Path, split: str) -> dict[str, Path]:
    out = Path(out)
    return {
        "images": out / f"{split}2017",
        "panoptic": out / f"panoptic_{split}2017",
        "panoptic_json": out / "annotations" / f"panoptic_{split}2017.json",
        "captions_json": out / "annotations" / f"captions_{split}2017.json",
        "shards": out / "shards",
        "manifest": out / MANIFEST,
    }


def check_out_dir(out: Path, config: dict, resume: bool) -> None:
    """Refuse a non-empty ``out`` without ``resume``; with it, refuse a folder that is not a
    synthesize run or one made with other settings (its pairs would not match the new ones)."""
    if out.is_symlink() or not out.is_dir() or not any(out.iterdir()):
        check_output_dir(out, overwrite=False)  # refuses a file, a link, the current folder, no write access
        return
    manifest = out / MANIFEST
    if not resume:
        hint = "pass --resume to continue it" if manifest.is_file() else "choose another --out"
        raise ConfigError(f"--out {out} exists and is not empty; {hint}")
    if not manifest.is_file():
        raise ConfigError(f"--out {out} holds files pandiff synthesize did not write ({MANIFEST} is missing); "
                          "choose another --out")  # fmt: skip
    try:
        before = json.loads(manifest.read_text())["config"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise DataError(f"{manifest} is corrupt ({exc}); choose another --out") from None
    # a folder written before "map_sampler" existed sampled its maps with its "sampler"; one
    # written before "weights" existed cannot be checked for them: it resumes as it did then
    legacy = {**_LEGACY, "map_sampler": before.get("sampler"), "weights": config["weights"]}
    changed = [k for k in _OUTPUT_KEYS if k != "n" and before.get(k, legacy.get(k)) != config[k]]
    if not changed and before.get("n") != config["n"]:
        if not isinstance(before.get("n"), int) or config["n"] < before["n"]:
            raise ConfigError(
                f"--resume: {out} holds {before.get('n')} pairs; --n {config['n']} would drop some "
                "(a dataset can grow, not shrink: read the first pairs of it instead)"
            )
        return  # growing: pair i depends on (seed, i) alone, so the finished shards stay valid
    if changed:
        diff = ", ".join(f"{k} {before.get(k, legacy.get(k))!r} -> {config[k]!r}" for k in changed)
        raise ConfigError(f"--resume: {out} was made with other settings ({diff}); use the same ones")


def start_out_dir(out: Path, config: dict, split: str) -> None:
    p = paths(out, split)
    for key in ("images", "panoptic", "shards"):
        p[key].mkdir(parents=True, exist_ok=True)
    p["panoptic_json"].parent.mkdir(exist_ok=True)
    (out / OUTPUT_MARKER).write_text("written by pandiff synthesize; continue it with --resume\n")
    # A new folder, or one growing to more pairs (check_out_dir allowed only that change).
    if not p["manifest"].is_file() or json.loads(p["manifest"].read_text())["config"]["n"] != config["n"]:
        atomic_write_text(p["manifest"], json.dumps({"config": config}, indent=1))


def shard_ranges(n: int, shard_size: int) -> list[range]:
    return [range(s, min(s + shard_size, n)) for s in range(0, n, shard_size)]


def shard_file(out: Path, shard: int) -> Path:
    return out / "shards" / f"shard-{shard:06d}.json"


def done_shards(out: Path, split: str, shards: list[range]) -> set[int]:
    """Shards whose record file exists and whose PNGs are all there (a record is written only
    after its PNGs, so a missing PNG means the folder was tampered with: redo the shard)."""
    p = paths(out, split)
    done = set()
    for s, indices in enumerate(shards):
        f = shard_file(out, s)
        if f.is_file() and all(
            (p[k] / file_name(i)).is_file() for i in indices for k in ("images", "panoptic")
        ):
            try:  # the last shard of a smaller run that grew holds fewer pairs: redo it
                complete = len(json.loads(f.read_text())) == len(indices)
            except (OSError, json.JSONDecodeError, TypeError):
                complete = False
            if complete:
                done.add(s)
    return done


# -- sampling and writing ------------------------------------------------------------------------
@torch.no_grad()
def sample_pairs(
    pipe,
    prompts: list[str],
    generators: list[torch.Generator],
    settings: dict,
    cleanup: MapCleanup | None = None,
    redraw: bool = False,
    tries: int = 0,
    draws: int = 1,
    avoid_touching: bool = False,
    separate: int = 0,
    colour_split: float = 0.0,
    misshapen: float = 0.0,
    picture_match: float = 0.0,
    restarts: int = 0,
    snap: bool = False,
    spread: int = 0,
    cogen: int = 0,
    colour_check: bool = False,
):
    """Co-generate one batch (the pipeline's prompt -> image + map path): returns ``B H W 3`` uint8
    images, ``B K H W`` uint8 hard map bits (both on the CPU) and the decoded maps or None. Without
    the redraw the per-pair work (map decoding, clean-up, PNG encoding) is left to
    :class:`PairWriter` so it can run in other processes, and the maps are None.
    ``settings``: the sampler's steps and guidance scales (``pipe.call_settings``).
    ``redraw``: redraw each image for its map (:meth:`pipe.redraw`); the maps are then decoded and
    cleaned up with ``cleanup`` here, as the pipeline does, and returned, so the writer does not
    decode them again. ``tries`` > 0 samples as the pipeline's self check does
    (:mod:`pandiff.self_check`), ``draws`` > 1 keeps the best of that many whole draws, as the
    pipeline's ``best_of`` does (:func:`pandiff.self_check.ranked_sample`), both also drawing
    again maps with touching things when ``avoid_touching``; either way the maps
    are returned decoded and cleaned, and the bits are None (the writer uses the maps).
    ``separate`` > 0 (with ``redraw``) bites touching things that many pixels apart before the
    redraw, as the pipeline's ``separate_touching`` does; ``colour_split`` > 0 (with the checks) also
    fails pictures that paint a thing of their map in two colours and ``misshapen`` > 0 maps holding
    a thing no single world shape looks like, as the pipeline's do; with the self check,
    ``picture_match`` > 0 fails pictures matching their map below that IoU and ``restarts`` > 0
    draws a still failing pair again whole, as the pipeline's do; ``snap`` (with ``redraw``) redraws
    the map's things as world shapes before the redraw, as the pipeline's ``snap_shapes`` does, and
    ``spread`` > 0 moves them apart, as its ``spread_things`` does; ``cogen`` > 0 (with ``redraw``)
    runs co-generation at that many steps and the redraw at ``settings``', as its ``cogen_steps``
    does; ``colour_check`` (with the checks) also fails pictures with the prompt's colours wrong, as
    its ``colour_check`` does."""
    text, empty = pipe._encode_prompts(prompts)
    if draws > 1 or tries > 0:
        from pandiff.self_check import ranked_sample, self_checked_sample

        if draws > 1:
            sample, n, only_self_check = ranked_sample, draws, {}
        else:
            sample, n = self_checked_sample, tries
            only_self_check = {"picture_match": picture_match, "restarts": restarts}
        latents, maps = sample(
            pipe, prompts, text, empty, settings, cleanup, redraw, n, list(generators), False, avoid_touching,
            separate, colour_split, misshapen, **only_self_check, snap=snap, spread=spread, cogen=cogen,
            colour_check=colour_check,
        )  # fmt: skip
        return pipe.uint8_pictures(latents), None, maps
    out = pipe.sampler().sample(
        text,
        empty,
        pipe.latent_shape,
        pipe.map_shape,
        generator=generators,
        **pipe.cogen_settings(settings, cogen),
    )
    latents, maps = out.latents, None
    if redraw:
        maps = [pipe.bit_codec.decode_map(b.float(), pipe.table) for b in out.map_bits]
        if cleanup:
            maps = [cleanup(m) for m in maps]
        maps = pipe.bite_apart(prompts, maps, separate, snap, spread)
        latents = pipe.redraw(text, empty, maps, settings, generators)
    return pipe.uint8_pictures(latents), (out.map_bits > 0).byte().cpu().numpy(), maps


@dataclass
class PairWriter:
    """Turns one sampled pair into its two PNG files and its JSON record (picklable: it also runs
    in worker processes)."""

    table: object
    bit_codec: object
    cleanup: MapCleanup
    image_dir: Path
    png_dir: Path

    def __call__(self, item: tuple[int, str, np.ndarray, np.ndarray, PanopticMap | None]) -> dict:
        index, prompt, image, bits, pmap = item  # pmap: already decoded and cleaned (the redraw's)
        if pmap is None:
            pmap = self.bit_codec.decode_map(torch.from_numpy(bits), self.table)
            if self.cleanup:
                pmap = self.cleanup(pmap)
        h, w = image.shape[:2]
        if pmap.shape != (h, w):
            pmap = pmap.resize(h)  # COCO wants the PNG at the image's size; upsampling is lossless
        rgb, segments = pmap.to_coco()
        # compress_level 1: PNG deflate at the default level costs more than sampling on a GPU.
        Image.fromarray(image).save(self.image_dir / file_name(index), compress_level=1)
        Image.fromarray(rgb).save(self.png_dir / file_name(index), compress_level=1)
        return {"index": index, "caption": prompt, "height": h, "width": w, "segments_info": segments}


def assemble(out: Path, split: str, n: int, shards: list[range], table, info: dict) -> None:
    """Join the shard records into the panoptic and captions JSON files (atomically, each)."""
    records = []
    for s, indices in enumerate(shards):
        part = json.loads(shard_file(out, s).read_text())
        if [r["index"] for r in part] != list(indices):
            raise DataError(f"{shard_file(out, s)} does not hold pairs {indices.start}..{indices.stop - 1}")
        records += part
    if len(records) != n:
        raise DataError(f"the shards hold {len(records)} pairs, expected {n}")
    images = [{"id": r["index"] + 1, "file_name": file_name(r["index"]), "height": r["height"],
               "width": r["width"]} for r in records]  # fmt: skip
    annotations = [{"image_id": r["index"] + 1, "file_name": file_name(r["index"]),
                    "segments_info": r["segments_info"]} for r in records]  # fmt: skip
    captions = [{"id": r["index"] + 1, "image_id": r["index"] + 1, "caption": r["caption"]} for r in records]
    meta = {"description": "generated by pandiff synthesize", **info}
    p = paths(out, split)
    panoptic = {"info": meta, "licenses": [], "images": images, "annotations": annotations,
                "categories": table.to_coco()}  # fmt: skip
    atomic_write_text(p["panoptic_json"], json.dumps(panoptic, separators=(",", ":")))
    caption_file = {"info": meta, "licenses": [], "images": images, "annotations": captions}
    atomic_write_text(p["captions_json"], json.dumps(caption_file, separators=(",", ":")))


def _writer_pool(workers: int, writer: PairWriter):
    """Worker processes for the per-pair work while the device samples (none: inline). Spawned,
    not forked: forking a process that holds a CUDA context is unsafe."""
    if workers <= 0:
        return None
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))


def run_shards(pipe, opts: SynthesizeOptions, prompts: list[str], mine: list[int], shards: list[range],
               settings: dict, cleanup: MapCleanup, progress, **sampling) -> int:  # fmt: skip
    """Generate and commit the shards ``mine``; returns the pairs written. At most two batches
    are held at once (one being sampled, one being written), whatever ``n`` is. ``sampling``: the
    redraw and check settings, passed on to :func:`sample_pairs` as they are."""
    p = paths(opts.out, opts.split)
    writer = PairWriter(pipe.table, pipe.bit_codec, cleanup, p["images"], p["panoptic"])
    pool = _writer_pool(opts.workers or 0, writer)
    batches = [(s, range(b, min(b + opts.batch, shards[s].stop)))
               for s in mine for b in range(shards[s].start, shards[s].stop, opts.batch)]  # fmt: skip
    records: dict[int, list[dict]] = {s: [] for s in mine}
    written, pending = 0, None

    def finish(job) -> int:  # collect one written batch; commit its shard when that is complete
        s, results = job
        records[s] += list(results)
        if len(records[s]) < len(shards[s]):
            return 0
        atomic_write_text(shard_file(Path(opts.out), s), json.dumps(records.pop(s)))  # commits shard s
        return len(shards[s])

    try:
        for s, idx in batches:
            texts = [prompts[prompt_index(i, opts.per_prompt, len(prompts))] for i in idx]
            gens = pair_generators(opts.seed, idx)
            images, bits, maps = sample_pairs(pipe, texts, gens, settings, cleanup, **sampling)
            if pending is not None:  # the previous batch was written while this one sampled
                written += finish(pending)
            bits = [None] * len(idx) if bits is None else bits  # self-checked: the maps are given
            items = list(zip(idx, texts, images, bits, maps or [None] * len(idx)))
            pending = (s, pool.map(writer, items) if pool else [writer(item) for item in items])
            progress.update(len(idx))
            # tqdm turns its rate into s/pair below 1 pair/s; the postfix always says pairs/s
            elapsed = progress.format_dict["elapsed"]
            progress.set_postfix_str(f"{progress.n / max(elapsed, 1e-9):.2f} pairs/s", refresh=False)
        if pending is not None:
            written += finish(pending)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    return written


def _resumed_shard_size(out: Path, resume: bool) -> int | None:
    try:
        return int(json.loads((out / MANIFEST).read_text())["config"]["shard_size"]) if resume else None
    except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError):
        return None  # no or a corrupt manifest: check_out_dir says what is wrong


def _check(opts: SynthesizeOptions) -> None:
    for name in ("n", "per_prompt", "batch", "steps", "shard_size"):
        if getattr(opts, name) is not None and getattr(opts, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(opts, name)}")
    if opts.precision not in PRECISIONS:
        raise ConfigError(f"--precision must be one of {PRECISIONS}, got {opts.precision!r}")
    if opts.split not in ("train", "val"):
        raise ConfigError(f"--split must be train or val, got {opts.split!r}")


def synthesize(opts: SynthesizeOptions, pipe=None, state=None) -> dict:
    """Write (or finish, with ``opts.resume``) the dataset described in the module docstring.

    ``pipe``: an already loaded pipeline (else ``opts.model`` is loaded); ``state``: an
    ``accelerate.PartialState`` (else one is made: a single process unless launched by
    ``accelerate launch`` or ``torchrun``). Returns a summary with the folder and the counts.
    """
    import hashlib
    import time

    from accelerate import PartialState

    import pandiff

    _check(opts)
    out = Path(opts.out)
    prompts = read_prompts(opts.prompts, opts.captions)
    used = prompts[: -(-opts.n // opts.per_prompt)]
    opts.shard_size = (
        opts.shard_size or _resumed_shard_size(out, opts.resume) or -(-256 // opts.batch) * opts.batch
    )  # the prompts pairs 0..n-1 draw
    if state is None:  # under torchrun on a CPU accelerate needs cpu=True (../shared/LIBRARY-NOTES.md)
        state = PartialState(cpu=not str(opts.device).startswith("cuda"))
    device = state.device if state.num_processes > 1 and str(opts.device).startswith("cuda") else opts.device
    if pipe is None:
        from pandiff.pipeline import PanopticDiffusionPipeline

        pipe = PanopticDiffusionPipeline.from_pretrained(
            opts.model, device=device, scheduler=opts.scheduler, map_scheduler=opts.map_scheduler
        )
    if opts.precision != "auto" or pipe.device.type == "cuda":
        pipe.autocast_dtype = None if opts.precision == "fp32" else torch.bfloat16
    pipe.check_prompts(used, truncate=opts.captions is not None)  # captions are cut, as prepare cuts them
    settings = pipe.call_settings(
        opts.guidance, opts.map_guidance, opts.steps, opts.map_cleanup, opts.image_map_guidance,
        opts.one_piece_instances,
    )  # fmt: skip
    cleanup = pipe.pop_cleanup(settings)
    redraw = pipe.redraws(opts.redraw_image)
    tries = pipe.self_checks(opts.self_check)
    draws = pipe.best_ofs(opts.best_of)
    apart = pipe.keeps_apart(opts.avoid_touching, tries, draws)
    gap = pipe.separates(opts.separate_touching, redraw)
    snap = pipe.snaps(opts.snap_shapes, redraw)
    spread = pipe.spreads(opts.spread_things, redraw)
    cogen = pipe.cogen_steps_of(opts.cogen_steps, settings["num_inference_steps"], redraw)
    acting = pipe.checks_as_acting(tries, draws, **{k: getattr(opts, k) for k in pipe.CHECK_SETTINGS})
    if not redraw:  # drawn only for a given map: without the redraw it changes nothing
        settings["image_map_guidance_scale"] = 0.0
    config = {
        "n": opts.n, "per_prompt": opts.per_prompt, "steps": settings["num_inference_steps"], "seed": opts.seed,
        "model": str(opts.model or "bundled world-s"), "weights": pipe.weights_fingerprint(), "precision": "fp32" if pipe.autocast_dtype is None else "bf16",
        "guidance_scale": settings["guidance_scale"], "map_guidance_scale": settings["map_guidance_scale"],
        "map_cleanup": cleanup.slivers, "one_piece_instances": cleanup.one_piece, "redraw_image": redraw,
        "self_check": tries, "best_of": draws, "avoid_touching": apart,
        "separate_touching": gap, "snap_shapes": snap, "spread_things": spread, "cogen_steps": cogen, **acting, "sampler": pipe.scheduler, "map_sampler": pipe.map_scheduler, "split": opts.split,
        "image_map_guidance_scale": settings["image_map_guidance_scale"],
        "shard_size": opts.shard_size, "prompts": str(opts.prompts or opts.captions),
        "prompts_sha256": hashlib.sha256("\n".join(prompts).encode()).hexdigest(),
        "pandiff_version": pandiff.__version__,
    }  # fmt: skip
    # Every process checks before the main one writes anything, so all refuse alike.
    check_out_dir(out, config, opts.resume)
    state.wait_for_everyone()
    if state.is_main_process:
        start_out_dir(out, config, opts.split)
    state.wait_for_everyone()

    shards = shard_ranges(opts.n, opts.shard_size)
    done = done_shards(out, opts.split, shards)
    todo = [s for s in range(len(shards)) if s not in done]
    mine = todo[state.process_index :: state.num_processes]
    total = sum(len(shards[s]) for s in mine)
    begin = time.perf_counter()
    with tqdm(total=total, unit="pair", desc=f"synthesize [{state.process_index + 1}/{state.num_processes}]",
              disable=not (opts.progress and state.is_main_process), smoothing=0.1) as bar:  # fmt: skip
        written = run_shards(
            pipe, opts, prompts, mine, shards, settings, cleanup, bar, redraw=redraw, tries=tries, draws=draws,
            avoid_touching=apart, separate=gap, snap=snap, spread=spread, cogen=cogen, **acting,
        )  # fmt: skip
    seconds = time.perf_counter() - begin
    state.wait_for_everyone()
    if state.is_main_process:
        info = {k: v for k, v in config.items() if k not in ("shard_size", "prompts_sha256")}
        assemble(out, opts.split, opts.n, shards, pipe.table, info)
    state.wait_for_everyone()
    return {
        "out": str(out), "n": opts.n, "main": state.is_main_process, "resumed_shards": len(done), "written": written,
        "processes": state.num_processes, "seconds": round(seconds, 2),
        "pairs_per_second": round(written / seconds, 3) if seconds > 0 else None,
    }  # fmt: skip


def default_workers(device: str) -> int:
    """Writer processes: none on a CPU (they would take cores from sampling), else up to 8."""
    return 0 if not str(device).startswith("cuda") else min(8, max(1, (os.cpu_count() or 2) - 2))
