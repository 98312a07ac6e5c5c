"""Export a trained model as a pipeline folder that ``PanopticDiffusionPipeline.from_pretrained`` reads::

    DIR/model/                 config.json + diffusion_pytorch_model.safetensors (EMA weights)
    DIR/codec/                 a copy of the image codec, when it is a local folder
    DIR/text_encoder/          a copy of the text encoder, when it is a local folder
    DIR/pandiff_pipeline.json  the PipelineConfig (pandiff.pipeline_config)

``codec`` stays ``"identity"`` or a hub id, ``text_encoder`` ``"minilm"`` or a hub id; local
folders are copied in, so the folder is portable. The folder is written atomically.
"""

from __future__ import annotations

from pathlib import Path

from pandiff.checks import describe_names, nonfinite
from pandiff.data.shards import FeatureSpec
from pandiff.diffusion.schedule import NoiseSchedule
from pandiff.errors import WeightsError
from pandiff.pipeline_config import PipelineConfig, save_pipeline_folder
from pandiff.training.config import SampleConfig


def export_pipeline(
    out: str | Path, model, spec: FeatureSpec, schedule: NoiseSchedule, sample: SampleConfig, step: int
) -> Path:
    """Write ``model`` (already holding the weights to ship: EMA) and its pipeline description.

    Args:
        model: a ``save_pretrained``-able PDM model.
        spec: the features the model was trained on (codec, text encoder, sizes, categories).
        schedule: the training noise schedule; sample: the default guidance scales.
        step: training steps behind the weights.
    """
    out = Path(out)
    bad = nonfinite(model.named_parameters())
    if bad:  # a diverged model draws black images and empty maps: never ship one
        raise WeightsError(
            f"the weights to export hold NaN or infinite values ({describe_names(bad)}) after step {step}; "
            f"nothing was written to {out}. Lower train.lr and train again"
        )
    config = PipelineConfig(
        codec=_absolute_if_folder(spec.codec),
        text_encoder=_absolute_if_folder(spec.text_encoder),
        categories=list(spec.categories),
        schedule=schedule.to_dict(),
        instance_bits=spec.instance_bits,
        image_size=spec.image_size,
        guidance_scale=sample.guidance_scale,
        map_guidance_scale=sample.map_guidance_scale,
        redraw_image=sample.redraw_image,
        one_piece_instances=sample.one_piece_instances,
        image_map_guidance_scale=sample.image_map_guidance_scale,
        trained_steps=step,
        weights="ema",
    )
    return save_pipeline_folder(out, model, config)


def _absolute_if_folder(ref: str) -> str:
    """A component given as a local folder, by absolute path (so it is copied); names stay."""
    path = Path(ref).expanduser()
    return str(path.absolute()) if path.is_dir() else ref
