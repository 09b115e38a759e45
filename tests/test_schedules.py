"""CosineToBudget: the quickstart's schedule over whichever limit (steps or time) stops the run first."""
from __future__ import annotations

import math

import pytest
import torch

from sr_lightning.config import ConfigError
from sr_lightning.schedules import CosineToBudget, budget_seconds


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _optimizer(lr: float = 1.0) -> torch.optim.Optimizer:
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)


def _lr(sched: CosineToBudget) -> float:
    return sched.optimizer.param_groups[0]["lr"]


@pytest.mark.parametrize("value, seconds", [("00:00:04:15", 255.0), ("01:00:00:00", 86400.0),
                                            ({"minutes": 4, "seconds": 15}, 255.0), (None, None)])
def test_budget_seconds_reads_lightnings_formats(value, seconds):
    assert budget_seconds(value) == seconds


@pytest.mark.parametrize("value", ["4:15", "00:00:xx:15", "00:00:00:00", {"fortnights": 1}])
def test_a_bad_max_time_names_the_key(value):
    with pytest.raises(ConfigError, match="trainer.max_time"):
        budget_seconds(value)


def test_steps_end_it_when_there_is_no_time_limit():
    sched = CosineToBudget(_optimizer(), max_steps=10, eta_min=0.0, clock=FakeClock())
    lrs = [_lr(sched)]
    for _ in range(10):
        sched.optimizer.step()
        sched.step()
        lrs.append(_lr(sched))
    assert lrs[0] == pytest.approx(1.0)
    assert lrs[5] == pytest.approx(0.5)
    assert lrs[10] == pytest.approx(0.0, abs=1e-12)
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))


def test_time_ends_it_when_the_budget_runs_out_before_the_steps():
    clock = FakeClock()
    sched = CosineToBudget(_optimizer(), max_steps=100_000, max_time="00:00:01:40", eta_min=1e-3, clock=clock)
    for t in (25.0, 50.0):  # two steps, a quarter and half of the 100 s budget
        clock.now = t
        sched.optimizer.step()
        sched.step()
    assert sched.progress() == pytest.approx(0.5)
    assert _lr(sched) == pytest.approx(1e-3 + (1 - 1e-3) * 0.5)
    clock.now = 500.0  # past the budget: stays at eta_min
    sched.optimizer.step()
    sched.step()
    assert _lr(sched) == pytest.approx(1e-3)


def test_resume_continues_the_curve_and_does_not_count_the_pause():
    clock = FakeClock()
    sched = CosineToBudget(_optimizer(), max_time="00:00:01:40", clock=clock)
    clock.now = 30.0
    sched.optimizer.step()
    sched.step()
    state = sched.state_dict()
    assert "_clock" not in state and state["elapsed_s"] == pytest.approx(30.0)

    later = FakeClock()
    later.now = 10_000.0  # the machine was off for hours
    resumed = CosineToBudget(_optimizer(), max_time="00:00:01:40", clock=later)
    resumed.load_state_dict(state)
    later.now += 20.0
    resumed.optimizer.step()
    resumed.step()
    assert resumed.elapsed_s == pytest.approx(50.0)
    assert _lr(resumed) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))


def test_no_limit_at_all_is_refused():
    with pytest.raises(ConfigError, match="module.scheduler"):
        CosineToBudget(_optimizer(), max_steps=-1, max_time=None)


def test_the_msrresnet_preset_decays_over_a_time_budget_when_it_has_one():
    from hydra.utils import instantiate

    from helpers import compose_train

    cfg = compose_train(["model=msrresnet", "trainer.max_steps=100000", "trainer.max_time=00:00:04:15"])
    sched = instantiate(cfg.module.scheduler, _convert_="all")(_optimizer(1e-3))
    assert isinstance(sched, CosineToBudget)
    assert (sched.max_steps, sched.budget_s, sched.eta_min) == (100_000, 255.0, 1e-7)  # time stops it first
