"""One training run end to end: check the export folder, train, checkpoint, export the EMA pipeline
(what ``pandiff train`` runs after parsing its options)."""

from __future__ import annotations


def train(config, resume: bool = False, export: str | None = None, progress: bool = True) -> int:
    """Train, checkpoint and export; returns 0 (errors raise)."""
    from pandiff.training.trainer import Trainer

    out = check_export(config, export)
    trainer = Trainer(config, resume=resume, progress=progress)
    try:
        trainer.fit()
        out = trainer.export(out)
    finally:
        trainer.close()
    if trainer.accelerator.is_main_process:
        last = trainer.history[-1] if trainer.history else None
        summary = f"loss {last['loss']:.4f}" if last else "no steps run (already at train.steps)"
        print(f"trained to step {trainer.state.step} ({summary}); EMA pipeline exported to {out}")
    return 0


def check_export(config, export: str | None):
    """The export folder, checked before training starts: absent, empty or an earlier pandiff
    export (replaced), never the run folder, one of its checkpoints, the features or a folder
    holding anything else."""
    from pathlib import Path

    from pandiff.errors import ConfigError
    from pandiff.io import check_output_dir
    from pandiff.training.checkpoint import PREFIX

    run_dir = Path(config.run.dir)
    out = Path(export) if export is not None else run_dir / "final"
    inside = out.resolve().parent == run_dir.resolve()
    if inside and (out.name.startswith((PREFIX, ".", "samples")) or out.suffix):
        raise ConfigError(f"--export {out} is a file or folder of the run itself; choose another --export")
    inputs = [p for p in (config.data.features, config.data.root) if p]
    return check_output_dir(out, overwrite=True, option="--export", protect=[run_dir, *inputs])
