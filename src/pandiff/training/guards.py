"""The training loop's divergence checks: a NaN/inf loss or gradient stops the run before the
update (``train.finite_checks=step``), or the fused optimizer skips that update on the device and the
run stops at the next log step or save (``log``: no host sync per step); weights that an update left
non-finite are caught at the next log step (the loop reads a flag there) and before any save."""

from __future__ import annotations

import torch

from pandiff.errors import PandiffError
from pandiff.training import checkpoint as ckpt


class NonFiniteLossError(PandiffError):
    """A loss, gradient or weight became NaN or infinite; nothing of it was saved."""


class DivergenceChecks:
    """Mixed into the Trainer; uses its ``accelerator``, ``run_dir``, ``state``, ``_weights_finite`` and
    ``_first_bad`` (the first step whose non-finite loss or gradient the device recorded, 0: none)."""

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
        bad = torch.stack([(~self._weights_finite).float(), self._first_bad.float()]).view(1, 2)
        if self.accelerator.num_processes > 1:
            bad = self.accelerator.gather(bad)  # processes x 2
        rows = bad.tolist()  # the one host sync of deferred checks
        weights = any(w for w, _ in rows)
        first = min((f for _, f in rows if f), default=0)
        if first:
            raise self._diverged(
                f"step {int(first)}: the loss or gradient norm was not finite on at least one process; "
                f"its update was skipped (as was any later non-finite one) and training stopped at step "
                f"{self.state.step}, before saving"
            )
        if weights:
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
