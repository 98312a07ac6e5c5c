"""Export a trained model as a pipeline folder that ``PanopticDiffusionPipeline.from_pretrained`` reads::

    DIR/model/                 config.json + diffusion_pytorch_model.safetensors (EMA weights)
    DIR/codec/                 a copy of the image codec, when it is a local folder
    DIR/pandiff_pipeline.json  {"model", "codec", "text_encoder", "schedule", "instance_bits",
                                "categories", "image_size", "guidance_scale", "map_guidance_scale",
                                "map_cleanup", "trained_steps", "weights"}

``codec`` is ``"codec"`` (the copy), ``"identity"`` or a hub id; ``text_encoder`` is ``"minilm"``,
a hub id or an absolute folder path. The folder is written atomically.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from pandiff.checks import describe_names, nonfinite
from pandiff.data.shards import FeatureSpec
from pandiff.diffusion.schedule import NoiseSchedule
from pandiff.errors import WeightsError
from pandiff.io import atomic_dir, write_json
from pandiff.pipeline import MAP_CLEANUP
from pandiff.pipeline_spec import PIPELINE_FILE
from pandiff.training.config import SampleConfig


def export_pipeline(
    out: str | Path, model, spec: FeatureSpec, schedule: NoiseSchedule, sample: SampleConfig, step: int
) -> Path:
    """Write ``model`` (already holding the weights to ship: EMA) and its pipeline description.

    Args:
        model: a ``save_pretrained``-able PDM model.
        spec: the features the model was trained on (codec, text encoder, sizes, categories).
        schedule: the training noise schedule; sample: default guidance scales.
        step: training steps behind the weights.
    """
    out = Path(out)
    bad = nonfinite(model.named_parameters())
    if bad:  # a diverged model draws black images and empty maps: never ship one
        raise WeightsError(
            f"the weights to export hold NaN or infinite values ({describe_names(bad)}) after step {step}; "
            f"nothing was written to {out}. Lower train.lr and train again"
        )
    with atomic_dir(out) as tmp:
        model.save_pretrained(tmp / "model", safe_serialization=True)
        codec = spec.codec
        if Path(codec).is_dir():
            shutil.copytree(codec, tmp / "codec")
            codec = "codec"
        description = {
            "model": "model",
            "codec": codec,
            "text_encoder": spec.text_encoder,
            "schedule": schedule.to_dict(),
            "instance_bits": spec.instance_bits,
            "categories": list(spec.categories),
            "image_size": spec.image_size,
            "guidance_scale": sample.guidance_scale,
            "map_guidance_scale": sample.map_guidance_scale,
            "map_cleanup": MAP_CLEANUP,
            "trained_steps": step,
            "weights": "ema",
        }
        write_json(tmp / PIPELINE_FILE, description, indent=1)
    return out
