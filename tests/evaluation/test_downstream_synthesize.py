"""``evaluate --mode downstream`` makes its generated training set with ``pandiff synthesize``:
the pairs the judge is trained on are exactly the dataset synthesize writes for those prompts."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pandiff.evaluation.evaluate import EvaluationOptions, evaluate
from pandiff.synthesize import SynthesizeOptions, synthesize
from pandiff.world import judge_training as judge_train
from pandiff.world.judge_training import load_split


@pytest.mark.parametrize("redraw", [False, True])
def test_downstream_trains_on_the_synthesized_dataset(
    tiny_pipeline_dir, tiny_world, tmp_path, monkeypatch, redraw
):
    seen = {}

    def compare(generated, real, val, **kw):  # stands in for the judge training: keeps its input
        seen["generated"], seen["real"] = generated, real
        return {f"{s}_{k}": 0.5 for s in ("generated", "real") for k in ("miou", "pq")} | {
            "miou_ratio": 1.0, "pq_ratio": 1.0,
        }  # fmt: skip

    monkeypatch.setattr(judge_train, "downstream_comparison", compare)
    opts = EvaluationOptions(
        model=str(tiny_pipeline_dir), data=str(tiny_world), out=str(tmp_path / "report.json"), n=3, steps=2,
        batch=2, seed=5, progress=False, mode="downstream", judge_steps=2, redraw_image=redraw,
    )  # fmt: skip
    evaluate(opts)
    real = seen["real"]
    prompts = tmp_path / "prompts.json"
    captions = [{"id": i, "image_id": i, "caption": c[0]} for i, c in enumerate(real.captions)]
    prompts.write_text(json.dumps({"annotations": captions}))
    out = tmp_path / "synthesized"
    synthesize(SynthesizeOptions(out=str(out), n=3, captions=str(prompts), steps=2, seed=5,
                                 model=str(tiny_pipeline_dir), progress=False, redraw_image=redraw))  # fmt: skip
    expected = load_split(out, "train", real.images.shape[-1])
    assert np.array_equal(seen["generated"].images.numpy(), expected.images.numpy())
    assert all(np.array_equal(a.codes(), b.codes()) for a, b in zip(seen["generated"].maps, expected.maps))
    assert seen["generated"].captions == [[c[0]] for c in real.captions]
