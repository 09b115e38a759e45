"""Learning-rate schedules that torch does not have, built like torch's (`module.scheduler._target_`).

`CosineToBudget` decays the learning rate along a cosine over the run's *budget*: whichever of
`trainer.max_steps` and `trainer.max_time` will stop the run first. A time-capped run (the quickstart) makes
2,000 steps on one CPU and 7,000 on another; a schedule over max_steps would not fit either, and a constant
rate leaves the weights where the last noisy updates put them. Measured on the quickstart (AMX Xeon, 6,800
steps at a constant 1e-3): validation PSNR peaked at step ~2,500 and fell 0.1 dB by the end.
"""
from __future__ import annotations

import datetime as _dt
import math
import time
from collections.abc import Callable, Mapping
from typing import Any

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from sr_lightning.config import ConfigError


def budget_seconds(max_time: Any, key: str = "trainer.max_time") -> float | None:
    """Seconds in a Lightning `max_time` ("DD:HH:MM:SS", a dict of timedelta fields, a timedelta); None = no limit."""
    if max_time is None or max_time == "":
        return None
    if isinstance(max_time, _dt.timedelta):
        seconds = max_time.total_seconds()
    elif isinstance(max_time, Mapping):
        try:
            seconds = _dt.timedelta(**{k: float(v) for k, v in max_time.items()}).total_seconds()
        except (TypeError, ValueError) as err:
            raise ConfigError(key, f"got {dict(max_time)!r}: {err}; e.g. {{minutes: 4, seconds: 15}}") from None
    else:
        parts = str(max_time).split(":")
        try:
            days, hours, minutes, secs = (float(p) for p in parts)
        except ValueError:
            raise ConfigError(key, f"got {max_time!r}; expected DD:HH:MM:SS, e.g. 00:00:04:15") from None
        seconds = ((days * 24 + hours) * 60 + minutes) * 60 + secs
    if seconds <= 0:
        raise ConfigError(key, f"got {max_time!r}; a time budget must be positive (null: no limit)")
    return seconds


class CosineToBudget(LRScheduler):
    """Cosine from each group's lr to `eta_min`, over the steps or the time the run has, whichever ends first.

    Progress is ``max(step / max_steps, elapsed / max_time)`` (a limit that is None, or max_steps <= 0 as
    Lightning's -1, does not count). Elapsed time is measured between `step()` calls and kept in the state
    dict, so a resumed run continues the curve; the time the run was stopped does not count.
    """

    def __init__(self, optimizer: Optimizer, max_steps: int | None = None, max_time: Any = None,
                 eta_min: float = 0.0, last_epoch: int = -1, clock: Callable[[], float] = time.monotonic):
        self.max_steps = int(max_steps) if max_steps and int(max_steps) > 0 else None
        self.budget_s = budget_seconds(max_time)
        if self.max_steps is None and self.budget_s is None:
            self.check_arguments({"max_steps": max_steps, "max_time": max_time})  # raises, naming both limits
        self.eta_min = float(eta_min)
        self.elapsed_s = 0.0
        self._clock = clock
        self._last_tick: float | None = None
        super().__init__(optimizer, last_epoch)

    @staticmethod
    def check_arguments(node: Mapping, key: str = "module.scheduler") -> None:
        """Refuse, before any work, a run with neither limit or an unreadable time (config.check_scheduler calls it)."""
        max_steps = node.get("max_steps")
        budget = budget_seconds(node.get("max_time"), f"{key}.max_time")
        if not (budget or (isinstance(max_steps, int) and max_steps > 0)):
            raise ConfigError(key, f"CosineToBudget needs a budget: trainer.max_steps > 0 or trainer.max_time (got "
                                   f"max_steps={max_steps!r}, max_time={node.get('max_time')!r}); set one of them, "
                                   f"or module.scheduler=null")

    def progress(self) -> float:
        done = 0.0
        if self.max_steps:
            done = max(done, self.last_epoch / self.max_steps)
        if self.budget_s:
            done = max(done, self.elapsed_s / self.budget_s)
        return min(done, 1.0)

    def step(self, epoch: int | None = None) -> None:  # noqa: D102 - torch's signature
        now = self._clock()
        if self._last_tick is not None:
            self.elapsed_s += now - self._last_tick
        self._last_tick = now
        super().step(epoch)

    def get_lr(self) -> list[float]:
        factor = 0.5 * (1.0 + math.cos(math.pi * self.progress()))
        return [self.eta_min + (base - self.eta_min) * factor for base in self.base_lrs]

    def state_dict(self) -> dict[str, Any]:
        # The clock and the last tick belong to this process: a resumed run starts timing afresh.
        return {k: v for k, v in super().state_dict().items() if k not in ("_clock", "_last_tick")}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self._last_tick = self._clock()  # timing restarts now: the pause before the resume does not count
