"""Training metrics: ``RUN/metrics.csv`` (one row per logging interval) and TensorBoard when
installed. On resume the CSV keeps only rows up to the checkpoint's step, so the rows the resumed
run writes again are not duplicated."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from pandiff.io import atomic_write_text

FIELDS = ("step", "loss", "image_loss", "map_loss", "lr", "samples_per_s", "steps_per_s")


class MetricsLog:
    """Append-only metrics of one run (write on the main process only).

    Args:
        run_dir: the run folder.
        resume_step: the step training resumes from (rows after it are dropped), or None for a
            fresh run (the file starts over).
    """

    def __init__(self, run_dir: str | Path, resume_step: int | None = None) -> None:
        self.path = Path(run_dir) / "metrics.csv"
        kept: list[dict] = []
        if resume_step is not None and self.path.is_file():
            with open(self.path, newline="") as fh:
                kept = [row for row in csv.DictReader(fh) if int(row["step"]) <= resume_step]
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows(kept)
        atomic_write_text(self.path, text.getvalue())
        self._fh = open(self.path, "a", newline="")  # noqa: SIM115 (kept open for the run; closed in close())
        self._csv = csv.DictWriter(self._fh, fieldnames=FIELDS)
        self._tb = _tensorboard(Path(run_dir) / "tensorboard")

    def log(self, row: dict[str, float]) -> None:
        self._csv.writerow({k: _fmt(row[k]) for k in FIELDS})
        self._fh.flush()
        if self._tb is not None:
            for key in FIELDS[1:]:
                self._tb.add_scalar(f"train/{key}", row[key], int(row["step"]))

    def close(self) -> None:
        self._fh.close()
        if self._tb is not None:
            self._tb.close()


def read_metrics(run_dir: str | Path) -> list[dict[str, float]]:
    """The rows of ``RUN/metrics.csv`` as floats (``step`` as int)."""
    with open(Path(run_dir) / "metrics.csv", newline="") as fh:
        return [
            {k: (int(v) if k == "step" else float(v)) for k, v in row.items()} for row in csv.DictReader(fh)
        ]


def _fmt(value: float) -> str:
    return str(int(value)) if isinstance(value, int) else f"{value:.6g}"


def _tensorboard(folder: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # TensorBoard is optional; the CSV is always written
        return None
    return SummaryWriter(str(folder))
