"""``pandiff evaluate``: sample a model on a dataset's scenes and score the samples.

Modes (``prompt`` = the *first* caption of each scene: in two-thing world scenes it is the one
that states the relation; for COCO it is the first of the five):

* ``cogen``: prompt -> image + map. MCD against the scene's ground-truth map; FID/KID (Inception)
  and CLIP score when their weights are given; on the built-in world also prompt adherence, colour
  accuracy, and with a judge, image-map consistency and world FID/KID on judge features.
* ``map2image``: prompt + ground-truth map -> image. FID/KID, CLIP score; on the world colour
  accuracy under the given map's instances, and with a judge PQ/mIoU of judge(image) vs the map.
* ``image2map``: prompt + real image -> map. PQ and mIoU against the ground truth, MCD; on the
  world prompt adherence of the map.
* ``downstream`` (world): the downstream proof of :func:`pandiff.world.judge_training.downstream_comparison`
  on the first ``n`` training scenes.

Metrics whose weights are absent are skipped with a note saying what to pass; weights that are
asked for explicitly (``--inception``, ``--clip``, ``--judge``) must load. The report records the
sampler, steps, guidance scales, seed, n, model, data and judge behind every number.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from pandiff.data.panoptic_map import PanopticMap
from pandiff.errors import ConfigError, DataError, WeightsError
from pandiff.evaluation.report import Report, check_json_path
from pandiff.world.judge import MIN_JUDGE_MIOU
from pandiff.world.judge_training import LabelledImages, load_split

MODES = ("cogen", "map2image", "image2map", "downstream")
GENERATORS = ("shared", "per-sample")


@dataclass
class EvaluationOptions:
    """What ``pandiff evaluate`` was asked (mirrors its command-line options)."""

    model: str | None
    data: str
    out: str = "report.json"
    mode: str = "cogen"
    n: int = 500
    steps: int | None = None  # None: the model folder's, as for the guidance scales and clean-up
    split: str = "val"
    guidance: float | None = None
    map_guidance: float | None = None
    map_cleanup: int | None = None
    one_piece_instances: bool | None = None  # None: the model's
    redraw_image: bool | None = None  # cogen: redraw each image for its map (None: the model's)
    image_map_guidance: float | None = None  # map2image and the redraw (None: the model's)
    self_check: int | None = None  # cogen: extra draws of a sample failing its own checks (None: the model's)
    best_of: int | None = None  # cogen: whole draws per prompt, best kept (None: the model's)
    # cogen: the checks also redraw maps with touching things (None: the model's)
    avoid_touching: bool | None = None
    # cogen with the redraw: gap (px) touching things are bitten apart by first (None: the model's)
    separate_touching: int | None = None
    # cogen with a self check or best of K: a picture painting a thing in two colours fails (None: the model's)
    colour_split: float | None = None
    # cogen with a self check or best of K: a map holding a misshapen thing fails (None: the model's)
    misshapen: float | None = None
    # cogen with a self check: a picture matching its map below this IoU fails (None: the model's)
    picture_match: float | None = None
    # cogen with a self check: whole draws again of a sample that still fails (None: the model's)
    restarts: int | None = None
    # cogen with a self check or best of K: a picture with the prompt's colours wrong fails (None: the model's)
    colour_check: bool | None = None
    # cogen with the redraw: the map's things redrawn as world shapes first (None: the model's)
    snap_shapes: bool | None = None
    # cogen with the redraw: the map's things moved this many pixels apart first (None: the model's)
    spread_things: int | None = None
    # cogen with the redraw: the co-generation pass's sampler steps (0: --steps; None: the model's)
    cogen_steps: int | None = None
    batch: int = 16
    seed: int = 0
    # "shared": one generator for the whole run (the reports before session 23); "per-sample": one
    # per scene, seeded from (seed, index), so a scene's sample depends on nothing else
    generators: str = "shared"
    scheduler: str | None = None
    map_scheduler: str | None = None  # None: --scheduler's, else the model's
    judge: str | None = None
    min_judge_miou: float = MIN_JUDGE_MIOU
    judge_steps: int = 1200
    inception: str | None = None
    clip: str | None = None
    device: str = "cpu"
    progress: bool = True

    def check(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"--mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        for name in ("n", "steps", "batch", "judge_steps"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.generators not in GENERATORS:
            raise ConfigError(f"--generators must be one of {', '.join(GENERATORS)}, got {self.generators!r}")
        if self.map_cleanup is not None and self.map_cleanup < 0:
            raise ConfigError(f"--map-cleanup must be >= 0 (0 = off), got {self.map_cleanup}")
        if self.n < 2 and self.mode != "image2map":
            raise ConfigError("--n must be >= 2: FID/KID and the judge need at least two samples")
        check_json_path(self.out)


def is_world(data: str | Path) -> bool:
    """Whether ``data`` is a built-in world (it ships scene specs)."""
    return any((Path(data) / "annotations").glob("world_specs_*2017.json"))


def _uint8(images: list) -> torch.Tensor:
    """PIL images -> ``N 3 H W`` uint8."""
    return torch.from_numpy(np.stack([np.asarray(im.convert("RGB")) for im in images])).permute(0, 3, 1, 2)


def _check_table(pipe, table) -> None:
    if [c.coco_id for c in pipe.table.categories] != [c.coco_id for c in table.categories]:
        raise DataError(
            "the model's category table differs from the dataset's; "
            "evaluate it on the data it was trained for"
        )


@dataclass
class Samples:
    """Generated images (``N 3 S S`` uint8), maps and their prompts, aligned with the real scenes."""

    images: torch.Tensor
    maps: list[PanopticMap]
    prompts: list[str]


def generate(pipe, real: LabelledImages, opts: EvaluationOptions, mode: str) -> Samples:
    """Sample the model once per real scene, in batches of ``opts.batch`` scenes: prompts
    (``cogen``), prompts with their maps (``map2image``) or with their images (``image2map``)."""
    from PIL import Image

    prompts = [fitting_caption(pipe, caps) for caps in real.captions]
    if opts.generators == "per-sample":
        own = [
            torch.Generator(opts.device).manual_seed(sample_seed(opts.seed, i)) for i in range(len(prompts))
        ]
    else:
        shared = torch.Generator(opts.device).manual_seed(opts.seed)
    images, maps = [], []
    step = opts.batch
    with tqdm(total=len(prompts), desc=f"evaluate {mode}", disable=not opts.progress) as bar:
        for start in range(0, len(prompts), step):
            kwargs = {
                "num_inference_steps": opts.steps,  # None: the model folder's (the pipeline resolves it)
                "generator": own[start : start + step] if opts.generators == "per-sample" else shared,
                "truncate": True,
                "map_cleanup": opts.map_cleanup,
                "one_piece_instances": opts.one_piece_instances,
                "redraw_image": opts.redraw_image,
                "self_check": opts.self_check,
                "best_of": opts.best_of,
                "avoid_touching": opts.avoid_touching,
                "separate_touching": opts.separate_touching,
                "colour_split": opts.colour_split,
                "misshapen": opts.misshapen,
                "picture_match": opts.picture_match,
                "restarts": opts.restarts,
                "colour_check": opts.colour_check,
                "snap_shapes": opts.snap_shapes,
                "spread_things": opts.spread_things,
                "cogen_steps": opts.cogen_steps,
                "guidance_scale": opts.guidance,
                "map_guidance_scale": opts.map_guidance,
                "image_map_guidance_scale": opts.image_map_guidance,
            }
            if mode == "map2image":
                kwargs["map"] = real.maps[start : start + step]
            elif mode == "image2map":
                kwargs["image"] = [
                    Image.fromarray(im.permute(1, 2, 0).numpy()) for im in real.images[start : start + step]
                ]
            out = pipe(prompts[start : start + step], **kwargs)
            images += out.images
            maps += out.maps
            bar.update(len(out.images))
    return Samples(_uint8(images), maps, prompts)


def sample_seed(seed: int, index: int) -> int:
    """The seed of scene ``index``'s own generator in a run seeded ``seed`` (``--generators
    per-sample``): numpy's ``SeedSequence`` of the pair, so neighbouring scenes, and scene i of
    seed s and scene i + 1 of seed s - 1, draw unrelated noise."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1, dtype=np.uint64)[0] >> 1)


def fitting_caption(pipe, captions: list[str]) -> str:
    """The scene's first caption that fits the text encoder's window, else its shortest one (the
    pipeline is then called with ``truncate=True`` and cuts it to the window, as ``pandiff
    prepare`` cut the training captions)."""
    limit = pipe.text_encoder.max_length
    counts = [pipe.text_encoder.count_tokens(c) for c in captions]
    fitting = [c for c, n in zip(captions, counts) if n <= limit]
    return fitting[0] if fitting else min(zip(counts, captions))[1]


def _load_judge(opts: EvaluationOptions, pipe, report: Report):
    from pandiff.world.judge import load_judge

    judge, metrics = load_judge(opts.judge, opts.min_judge_miou)
    if judge.config.image_size != pipe.image_size:
        raise ConfigError(
            f"the judge reads {judge.config.image_size} px images but the model draws {pipe.image_size} px; "
            "train a judge on a world of the model's size"
        )
    report.header["judge"] = {
        "path": str(opts.judge),
        "val_miou": metrics.get("val_miou"),
        "val_pq": metrics.get("val_pq"),
        "min_miou": opts.min_judge_miou,
    }
    return judge


def _extractors(opts: EvaluationOptions, report: Report):
    """The Inception extractor and CLIP loader that are available; notes for the others."""
    from pandiff.evaluation.clip_score import PAPER_CLIP, clip_loader
    from pandiff.evaluation.fid import inception_extractor

    inception = clip = None
    try:
        inception = inception_extractor(opts.inception)
    except WeightsError as exc:
        if opts.inception is not None:
            raise
        report.skip("fid", str(exc))
    if opts.clip is not None:
        clip = clip_loader(opts.clip)
        clip()  # fail now, before sampling, when the weights are broken
    else:
        report.skip(
            "clip_score",
            "CLIP score needs CLIP weights: pass --clip with a local folder or cached hub id "
            f"(the paper: {PAPER_CLIP})",
        )
    return inception, clip


def _image_metrics(samples: Samples, real: LabelledImages, inception, clip, report: Report) -> None:
    from pandiff.evaluation.clip_score import ClipScorer

    if inception is not None:
        scores = _distance(inception, real, samples)
        how = (
            f"torchmetrics on Inception-v3 pool features, {scores['n_generated']} generated vs "
            f"{scores['n_real']} real images at the model's size"
        )
        report.add("fid", scores["fid"], how, on="image")
        report.add(
            "kid",
            scores["kid_mean"],
            f"{how}; mean over subsets of {scores['kid_subset_size']}",
            scores,
            on="image",
        )
    if clip is not None:
        scorer = ClipScorer(clip)
        scorer.update(samples.images, samples.prompts)
        report.add(
            "clip_score",
            scorer.compute(),
            "torchmetrics CLIPScore: max(0, mean 100 * cos(image, prompt))",
            on="image",
        )


def _distance(extractor, real: LabelledImages, samples: Samples) -> dict:
    """FID/KID scores of the generated against the real images on ``extractor``'s features."""
    from pandiff.evaluation.fid import FeatureDistance

    dist = FeatureDistance(extractor)
    dist.update(real.images, real=True)
    dist.update(samples.images, real=False)
    return dist.compute()


def _world_metrics(
    samples: Samples, real: LabelledImages, specs: list[dict], judge, mode: str, report: Report
) -> None:
    from pandiff.evaluation.panoptic_quality import map_miou, panoptic_quality
    from pandiff.world import checks as wc
    from pandiff.world import judged as jd
    from pandiff.world.judge import JudgeFeatures, segment_images

    maps = real.maps if mode == "map2image" else samples.maps
    images = (real if mode == "image2map" else samples).images.permute(0, 2, 3, 1).numpy()
    if mode != "map2image":
        own_verdicts = [jd.map_sample(m, s, im) for m, s, im in zip(maps, specs, images)]
        own, rates = jd.summarise(own_verdicts, specs), wc.adherence_rates(own_verdicts)
        how = (
            "share of the model's own maps whose thing counts per category equal the prompt's and that "
            f"hold every named stuff; by things named: {jd.by_bucket(own, 'adherence')}"
        )
        report.add("map_adherence", own["all"]["adherence"], how, {**rates, "by_bucket": own}, on="map")
        if mode == "cogen":
            _mcd_references(samples, real, specs, report)
    if mode == "map2image":
        matches = [wc.colour_matches(m, im, s) for m, im, s in zip(maps, images, specs)]
        correct, judged = sum(c for c, _ in matches), sum(j for _, j in matches)
        how = f"dominant image colour under each given instance vs the prompt's colour, {judged} instances"
        report.add("colour_accuracy", correct / judged if judged else float("nan"), how, on="image")
    if mode == "image2map":  # the map is the output; no generated image to judge
        return
    if judge is None:
        report.skip(
            "judge_metrics",
            "image-judged adherence, colour, relations, image-map agreement, world FID/KID and map "
            "fidelity need a judge: pass --judge DIR (trained with pandiff train-judge)",
        )
        return
    judged_maps = segment_images(judge, samples.images)
    jd.report_judge_ceiling(judge, real, specs, report)
    if mode == "cogen":
        verdicts = [jd.judge_sample(j, s, im, m) for j, s, im, m in zip(judged_maps, specs, images, maps)]
        jd.report_image_figures(jd.summarise(verdicts, specs), report)
        report.samples = sample_records(real.image_ids, samples.prompts, specs, verdicts, own_verdicts)
    target = "given map" if mode == "map2image" else "generated map"
    pq = panoptic_quality(judged_maps, maps)
    report.add(
        "judge_miou",
        map_miou(judged_maps, maps),
        f"semantic mIoU of judge(generated image) vs the {target}",
        on="image vs map",
    )
    how = f"COCO PQ (panopticapi definition) of judge(generated image) vs the {target}"
    report.add("judge_pq", pq["pq"], how, details=pq, on="image vs map")
    scores = _distance(JudgeFeatures(judge), real, samples)
    how = (
        f"on the judge's pooled features, {scores['n_generated']} generated vs {scores['n_real']} real "
        f"{report.header['split']} images"
    )
    report.add("world_fid", scores["fid"], "FID " + how, on="image")
    report.add(
        "world_kid",
        scores["kid_mean"],
        f"KID {how}; subsets of {scores['kid_subset_size']}",
        scores,
        on="image",
    )


def _mcd_references(samples: Samples, real: LabelledImages, specs: list[dict], report: Report) -> None:
    """The two ends of the MCD scale for these prompts (:mod:`pandiff.world.relayout`), overall and
    by bucket, beside the model's MCD by bucket: the world's own floor (a sampler of the world's
    layouts) and one typical layout per prompt (no variety at all)."""
    from pandiff.evaluation.mcd import count_difference
    from pandiff.world import judged as jd
    from pandiff.world.relayout import DRAWS, FLOOR_SEED, TYPICAL_DRAWS, mcd_floor, mcd_typical

    floors = mcd_floor(specs, samples.prompts, real.maps)
    typical, medians = mcd_typical(specs, samples.prompts, real.maps)
    model = [count_difference(g, t) for g, t in zip(samples.maps, real.maps)]
    keys = [jd.bucket(s) for s in specs]

    def by_bucket(name: str, values: list[float]) -> dict:
        return {
            b: {"n": keys.count(b), name: _finite_mean([v for v, k in zip(values, keys) if k == b]),
                "model": float(np.mean([m for m, k in zip(model, keys) if k == b]))}
            for b in jd.BUCKETS if b in keys
        }  # fmt: skip

    def listed(name: str, buckets: dict) -> str:
        return ", ".join(f"{b}: {v[name]:.3f} / {v['model']:.3f} (n={v['n']})" for b, v in buckets.items())

    buckets = by_bucket("floor", floors)
    how = (
        f"MCD of the real scenes laid out again by the world's own rules for the same prompts ({DRAWS} "
        "layouts each: horizon, positions and unstated sizes redrawn; stuff, things, colours, stated "
        "sizes and the relation kept): what a sampler of the world's own distribution scores; a model "
        "below it draws less varied layouts than the world. By bucket, floor / model: "
        + listed("floor", buckets)
    )
    unfit = int(np.isnan(floors).sum())  # scenes no relayout fitted: left out of the floor
    details = {"by_bucket": buckets, "seed": FLOOR_SEED, "scenes_without_layout": unfit}
    report.add("mcd_floor", _finite_mean(floors), how, details, on="map")
    buckets = by_bucket("typical", typical)
    how = (
        f"MCD of one typical layout per prompt: of {TYPICAL_DRAWS} of the world's layouts for the prompt, "
        "the medoid (least summed L1 to the others), every count right: what a generator scores that "
        "draws the same most typical layout every time, about the least a generator of valid layouts "
        "can reach; the per-bin median of the same layouts (not a drawable layout; the least any "
        "prompt-only predictor can reach) is in the details. By bucket, typical / model: "
        + listed("typical", buckets)
    )
    details = {
        "by_bucket": buckets,
        "per_bin_median": _finite_mean(medians),
        "draws": TYPICAL_DRAWS,
        "seed": FLOOR_SEED,
        "scenes_without_layout": int(np.isnan(typical).sum()),
    }
    report.add("mcd_typical", _finite_mean(typical), how, details, on="map")


def _finite_mean(values: list[float]) -> float:
    """Mean of the finite values: NaN when there are none (without numpy's empty-slice warning,
    which a bucket whose every scene has no layout would raise)."""
    finite = [v for v in values if np.isfinite(v)]
    return float(np.mean(finite)) if finite else float("nan")


def _map_metrics(samples: Samples, real: LabelledImages, mode: str, report: Report) -> None:
    from pandiff.evaluation.mcd import mean_count_difference
    from pandiff.evaluation.panoptic_quality import map_miou, panoptic_quality

    if mode == "map2image":
        return
    how = "mean L1 of normalised category histograms (void a bin) vs the ground-truth map (0 best, 2 worst)"
    report.add("mcd", mean_count_difference(samples.maps, real.maps), how, on="map")
    if mode == "image2map":
        pq = panoptic_quality(samples.maps, real.maps)
        how = "COCO PQ (panopticapi definition) of the generated map vs the ground-truth map"
        report.add("pq", pq["pq"], how, details=pq, on="map vs ground truth")
        report.add(
            "miou",
            map_miou(samples.maps, real.maps),
            "semantic mIoU of the generated map vs the ground-truth map",
            on="map vs ground truth",
        )


def _downstream(pipe, opts: EvaluationOptions, report: Report) -> None:
    from pandiff.world.judge_training import downstream_comparison

    if not is_world(opts.data):
        raise ConfigError(
            "--mode downstream trains the judge network and needs a built-in world (--data WORLD)"
        )
    train = load_split(opts.data, "train", pipe.image_size, limit=opts.n)
    val = load_split(opts.data, opts.split, pipe.image_size)
    _check_table(pipe, train.table)
    import json
    import tempfile

    from pandiff.synthesize import SynthesizeOptions, synthesize

    # The generated set is made the way `pandiff synthesize` makes a dataset (pair i from (seed, i),
    # one per train scene, prompted by its caption) and read back by the same COCO loader as the
    # real set, so both sides pass the same decoding.
    with tempfile.TemporaryDirectory() as tmp:
        prompts = [
            {"id": i, "image_id": i, "caption": fitting_caption(pipe, c)}
            for i, c in enumerate(train.captions)
        ]
        Path(tmp, "prompts.json").write_text(json.dumps({"annotations": prompts}))
        synth = SynthesizeOptions(
            out=f"{tmp}/generated", n=len(train), captions=f"{tmp}/prompts.json", batch=opts.batch,
            steps=opts.steps, seed=opts.seed, model=opts.model, device=opts.device, guidance=opts.guidance,
            map_guidance=opts.map_guidance, map_cleanup=opts.map_cleanup, scheduler=opts.scheduler,
            map_scheduler=opts.map_scheduler,
            one_piece_instances=opts.one_piece_instances,
            redraw_image=opts.redraw_image, image_map_guidance=opts.image_map_guidance,
            self_check=opts.self_check, avoid_touching=opts.avoid_touching,
            separate_touching=opts.separate_touching, colour_split=opts.colour_split,
            misshapen=opts.misshapen, picture_match=opts.picture_match, restarts=opts.restarts,
            colour_check=opts.colour_check, snap_shapes=opts.snap_shapes, spread_things=opts.spread_things, cogen_steps=opts.cogen_steps,
            progress=opts.progress,
        )  # fmt: skip
        synthesize(synth, pipe=pipe)
        generated = load_split(f"{tmp}/generated", "train", pipe.image_size)
    steps = {"steps": opts.judge_steps, "thing_steps": max(1, opts.judge_steps // 2)}
    result = downstream_comparison(generated, train, val, seed=opts.seed, progress=opts.progress, **steps)
    how = (
        f"judge architecture trained {steps['steps']} + {steps['thing_steps']} (ThingNet) steps on {len(train)} pairs, tested on "
        f"{len(val)} real {opts.split} images"
    )
    for key in ("miou", "pq"):
        report.add(
            f"downstream_{key}_generated", result[f"generated_{key}"], f"trained on generated pairs; {how}"
        )
        report.add(f"downstream_{key}_real", result[f"real_{key}"], f"trained on real pairs; {how}")
        report.add(
            f"downstream_{key}_ratio",
            result[f"{key}_ratio"],
            "generated / real (1 = generated data as good as real)",
        )


def sample_records(
    image_ids: list[int], prompts: list[str], specs: list[dict], verdicts: list[dict], own: list[dict]
) -> list[dict]:
    """One record per scene of a judged cogen run, in scene order: what ``pandiff compare`` pairs
    across two reports. ``verdicts`` are judged on the image (:func:`pandiff.world.judged.judge_sample`),
    ``own`` on the model's own map; a criterion the prompt does not test is None."""
    from pandiff.world.judged import bucket

    def yes_no(value) -> bool | None:  # numpy bools are not JSON
        return None if value is None else bool(value)

    return [
        {
            "index": i,
            "image_id": int(image_id),
            "prompt": prompt,
            "bucket": bucket(spec),
            "adherence": yes_no(v["adherence"]),
            "relation": yes_no(v["relation"]),
            "colour": [int(c) for c in v["colour"]],
            "agreement": yes_no(v["agreement"]),
            "agreement_touching": yes_no(v["agreement_touching"]),
            "map_adherence": yes_no(o["adherence"]),
        }
        for i, (image_id, prompt, spec, v, o) in enumerate(zip(image_ids, prompts, specs, verdicts, own))
    ]


def evaluate(opts: EvaluationOptions, pipe=None) -> dict:
    """Run the evaluation described by ``opts``; write ``opts.out`` (JSON) and its ``.md`` table.

    Args:
        pipe: an already loaded pipeline (default: ``PanopticDiffusionPipeline.from_pretrained(opts.model)``).
    Returns:
        The report dict written to JSON.
    """
    opts.check()
    if pipe is None:
        from pandiff.pipeline import PanopticDiffusionPipeline

        pipe = PanopticDiffusionPipeline.from_pretrained(
            opts.model, device=opts.device, scheduler=opts.scheduler, map_scheduler=opts.map_scheduler
        )
    settings = pipe.call_settings(
        opts.guidance, opts.map_guidance, opts.steps, opts.map_cleanup, opts.image_map_guidance,
        opts.one_piece_instances,
    )  # fmt: skip
    sampled = opts.mode in ("cogen", "downstream")
    redraw = pipe.redraws(opts.redraw_image) if sampled else None
    world = is_world(opts.data)
    if opts.model is None:
        from pandiff.pipeline_config import DEFAULT_MODEL_DIR

        model = f"{DEFAULT_MODEL_DIR} (bundled)"
    else:
        model = str(opts.model)
    checked_best_of = opts.best_of if opts.mode == "cogen" else 1  # downstream draws no best of K
    header = {
        "mode": opts.mode,
        "model": model,
        "weights": pipe.weights_fingerprint(),  # the same weights read the same, whatever their path
        "data": str(opts.data),
        "dataset": "world" if world else "coco",
        "split": "train" if opts.mode == "downstream" else opts.split,
        "sampler": pipe.scheduler,
        "map_sampler": pipe.map_scheduler,
        "steps": settings["num_inference_steps"],
        "guidance_scale": settings["guidance_scale"],
        "map_guidance_scale": settings["map_guidance_scale"],
        "map_cleanup": settings["map_cleanup"],
        "one_piece_instances": settings["one_piece_instances"],
        "redraw_image": redraw,
        "self_check": pipe.self_checks(opts.self_check) if sampled else None,
        "best_of": pipe.best_ofs(opts.best_of) if opts.mode == "cogen" else None,
        # recorded as it acted (downstream's synthesize draws with the self check only)
        "avoid_touching": pipe.keeps_apart(opts.avoid_touching, opts.self_check, checked_best_of)
        if sampled
        else None,
        "separate_touching": pipe.separates(opts.separate_touching, redraw) if sampled else None,
        "snap_shapes": pipe.snaps(opts.snap_shapes, redraw) if sampled else None,
        "spread_things": pipe.spreads(opts.spread_things, redraw) if sampled else None,
        "cogen_steps": pipe.cogen_steps_of(opts.cogen_steps, opts.steps, redraw) if sampled else None,
        **(
            pipe.checks_as_acting(
                opts.self_check, checked_best_of, **{k: getattr(opts, k) for k in pipe.CHECK_SETTINGS}
            )
            if sampled
            else dict.fromkeys(pipe.CHECK_SETTINGS)
        ),
        # where an image is drawn for a given map: map -> image, the redraw
        "image_map_guidance_scale": settings["image_map_guidance_scale"]
        if opts.mode == "map2image" or redraw
        else None,
        "seed": opts.seed,
        "generators": None if opts.mode == "downstream" else opts.generators,
        "batch": opts.batch,
        "prompts": "first caption of each scene that fits the text encoder, else its shortest, cut to the window",
        "judge": None,
        "options": asdict(opts),
    }
    report = Report(header)
    if opts.mode == "downstream":
        _downstream(pipe, opts, report)
        report.header["n"] = opts.n
        return report.write(opts.out)
    if opts.judge and not world:
        raise ConfigError("--judge scores built-in-world samples only; --data is not a world")
    makes_images = opts.mode != "image2map"
    judge = _load_judge(opts, pipe, report) if world and opts.judge and makes_images else None
    inception, clip = _extractors(opts, report) if makes_images else (None, None)
    real = load_split(opts.data, opts.split, pipe.image_size, pipe.map_size, limit=opts.n)
    _check_table(pipe, real.table)
    report.header["n"] = len(real)
    samples = generate(pipe, real, opts, opts.mode)
    # Scenes none of whose captions fit the text window are prompted cut (the judge still checks
    # the whole scene): say how many, so a reader can tell what the model was asked.
    limit = pipe.text_encoder.max_length
    report.header["prompts_cut"] = sum(pipe.text_encoder.count_tokens(p) > limit for p in samples.prompts)
    _map_metrics(samples, real, opts.mode, report)
    if makes_images:
        _image_metrics(samples, real, inception, clip, report)
    if world:
        from pandiff.world.checks import load_specs

        by_id = load_specs(opts.data, opts.split)
        specs = [by_id[i] for i in real.image_ids]
        _world_metrics(samples, real, specs, judge, opts.mode, report)
    elif opts.mode == "map2image":
        report.skip("map_fidelity", "PQ of generated images needs a segmenter; COCO has no built-in judge")
    return report.write(opts.out)
