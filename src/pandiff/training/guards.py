"""The training loop's divergence checks: a NaN/inf loss or gradient stops the run before the
update; weights that an update left non-finite are caught at the next log step (the loop reads a
flag there, so steps need no host sync of their own) and before any save."""

from __future__ import annotations

import torch

from pandiff.errors import PandiffError
from pandiff.training import checkpoint as ckpt


class NonFiniteLossError(PandiffError):
    """A loss, gradient or weight became NaN or infinite; nothing of it was saved."""


class DivergenceChecks:
    """Mixed into the Trainer; uses its ``accelerator``, ``run_dir``, ``state`` and ``_weights_finite``."""

    def _check_finite(self, values: torch.Tensor, names: tuple[str, ...]) -> None:
        bad = (~torch.isfinite(values)).float()
        if self.accelerator.num_processes > 1:
            bad = self.accelerator.reduce(bad, "sum")
        if bool(bad.any()):
            which = ", ".join(n for n, b in zip(names, bad.tolist()) if b)
            shown = ", ".join(f"{n}={v:.4g}" for n, v in zip(names, values.tolist()))
            aside = None
            if self.accelerator.is_main_process:  # the weights of this very step gave the bad loss
                aside = ckpt.set_aside(self.run_dir, self.state.step)
            note = f" ({aside.name} gave it, so it was renamed aside)" if aside else ""
            raise self._diverged(
                f"step {self.state.step + 1}: {which} is not finite on at least one process ({shown} here)"
                f"{note}; training stopped before the weights were updated"
            )

    def _check_weights(self) -> None:
        bad = (~self._weights_finite).float().view(1)
        if self.accelerator.num_processes > 1:
            bad = self.accelerator.reduce(bad, "sum")
        if bool(bad.item()):
            raise self._diverged(
                f"by step {self.state.step} an update left NaN or infinite weights (the losses were still "
                "finite); they are not saved"
            )

    def _diverged(self, what: str) -> NonFiniteLossError:
        last = ckpt.latest_checkpoint(self.run_dir)
        return NonFiniteLossError(
            f"{what}. The last good checkpoint is {last or 'none (no checkpoint was written yet)'}. Lower "
            "train.lr, lengthen train.warmup_steps or check the data, then run again with --resume"
        )
