"""scripts/sampling_variants.py: the timestep grids its --grid-power samples with."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

from sampling_variants import power_grid

from pandiff.diffusion.schedule import NoiseSchedule


def test_power_one_is_dpm_solvers_own_grid():
    sched = NoiseSchedule().inference_scheduler("sde-dpmsolver++", "sample")
    sched.set_timesteps(20)
    assert power_grid(20, 1.0) == sched.timesteps.tolist()


def test_higher_power_spends_more_steps_at_high_noise():
    grid = power_grid(20, 1.4)
    assert grid[:3] == [999, 984, 959] and grid[-1] == 69  # 999 * (1 - 0.95 ** 1.4) = 69.2
    assert sum(t >= 600 for t in grid) == 11 and sum(t >= 600 for t in power_grid(20, 1.0)) == 8
    assert grid == sorted(set(grid), reverse=True)


def test_a_grid_with_repeated_timesteps_is_refused():
    with pytest.raises(SystemExit, match="repeats timesteps"):
        power_grid(500, 4.0)
