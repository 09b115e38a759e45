"""The training progress bar: it counts toward whatever will stop the run.

A run stops at ``trainer.max_steps`` or ``trainer.max_time``, whichever comes first. With a time budget and a
large step cap (the quickstart: 4 min 15 s, max_steps=100000) a bar over steps says ``1% 750/100000 <9:21:28``,
which describes a stop that never comes. So the bar follows the limit that will be hit first:

* only max_steps: ``step 750/1000 (1:02 left)``;
* only max_time, or a time budget that runs out before the steps do: ``time 3:07/4:15 (1:08 left), step 750``;
* both, steps first: ``step 750/1000 (1:02 left), time budget 3:07/4:15``.

With constant speed the limit whose *fraction done* is larger is reached first, so the choice needs no rate
estimate and holds across a resume (Lightning's Timer keeps the elapsed training time in the checkpoint).
``progress_view`` is the pure function behind the text; ``StepProgressBar`` feeds it from the trainer.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Timer, TQDMProgressBar

__all__ = ["ProgressView", "progress_view", "format_duration", "StepProgressBar"]


@dataclass(frozen=True)
class ProgressView:
    """What the bar shows: position ``n`` of ``total`` in the unit of the limit that stops the run.

    ``limit`` is "steps", "time" or None (no limit known: the bar just counts steps).
    """

    limit: str | None
    n: float
    total: float | None
    text: str


def format_duration(seconds: float | None) -> str:
    """``m:ss`` under an hour, ``h:mm:ss`` above (``?`` when unknown)."""
    if seconds is None:
        return "?"
    seconds = max(int(round(seconds)), 0)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _step_eta(step: int, max_steps: int, elapsed: float, start_step: int, start_elapsed: float) -> float | None:
    """Seconds to max_steps at this session's speed (None before a step of this session has finished)."""
    done, spent = step - start_step, elapsed - start_elapsed
    if done <= 0 or spent <= 0:
        return None
    return (max_steps - step) * spent / done


def progress_view(step: int, max_steps: int | None, elapsed: float, max_time: float | None,
                  start_step: int = 0, start_elapsed: float = 0.0) -> ProgressView:
    """The bar's position and text at ``step`` after ``elapsed`` seconds of training.

    ``max_steps`` None or <= 0 and ``max_time`` None mean "no limit". ``start_step`` / ``start_elapsed`` are the
    values this session started from (a resumed run), so the step rate, and hence the ETA, is this session's.
    """
    steps_limit = max_steps if max_steps is not None and max_steps > 0 else None
    time_limit = max_time if max_time is not None and max_time > 0 else None
    step_fraction = step / steps_limit if steps_limit else None
    time_fraction = elapsed / time_limit if time_limit else None

    if time_fraction is not None and (step_fraction is None or time_fraction >= step_fraction):
        left = max(time_limit - elapsed, 0.0)
        steps = f"step {step}" + (f" (max {steps_limit})" if steps_limit else "")
        text = (f"time {format_duration(elapsed)}/{format_duration(time_limit)} ({format_duration(left)} left), "
                f"{steps}")
        return ProgressView("time", min(elapsed, time_limit), time_limit, text)
    if step_fraction is not None:
        eta = _step_eta(step, steps_limit, elapsed, start_step, start_elapsed)
        text = f"step {step}/{steps_limit} ({format_duration(eta)} left)"
        if time_limit:
            text += f", time budget {format_duration(elapsed)}/{format_duration(time_limit)}"
        return ProgressView("steps", step, steps_limit, text)
    return ProgressView(None, step, None, f"step {step}, {format_duration(elapsed)}")


def _timer(trainer: pl.Trainer) -> Timer | None:
    return next((c for c in trainer.callbacks if isinstance(c, Timer)), None)


class StepProgressBar(TQDMProgressBar):
    """One bar for the whole run, over iterations or over the time budget (see the module docstring).

    Lightning's default bar restarts every epoch; SR training is scheduled in iterations (an "epoch" of random
    crops means little), so the bar spans the whole run, starts at the resumed step and shows the current
    losses after the progress text.
    """

    # tqdm's own elapsed/remaining count from the bar's creation and in the bar's unit, so the bar shows only
    # the percentage and our text (tqdm's {desc} already ends in ": ").
    BAR_FORMAT = "{desc}{percentage:3.0f}%|{bar:20}| "

    def __init__(self, refresh_rate: int = 1, process_position: int = 0, leave: bool = False) -> None:
        super().__init__(refresh_rate, process_position, leave)
        self._start: tuple[int, float] = (0, 0.0)
        self._t0: float | None = None

    def _elapsed(self, trainer: pl.Trainer) -> tuple[float, float | None]:
        """Training seconds so far and the time budget. Lightning adds its Timer only with max_time set; it
        carries the elapsed time across a resume. Without one, this session's own clock."""
        timer = _timer(trainer)
        if timer is None:
            return (time.monotonic() - self._t0 if self._t0 is not None else 0.0), None
        return timer.time_elapsed("train"), timer._duration  # Timer has no public getter for its duration

    def view(self, trainer: pl.Trainer) -> ProgressView:
        elapsed, max_time = self._elapsed(trainer)
        return progress_view(trainer.global_step, trainer.max_steps, elapsed, max_time, *self._start)

    def on_train_start(self, trainer: pl.Trainer, *args: Any) -> None:
        super().on_train_start(trainer, *args)
        self._t0 = time.monotonic()
        # Where this session starts (a resume starts at its checkpoint's step and elapsed time): its ETA uses
        # this session's speed only.
        self._start = (trainer.global_step, self._elapsed(trainer)[0])

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # One bar for the whole run: an epoch boundary changes nothing on it (the losses stay shown).
        self.train_progress_bar.set_description("Training")
        self._show(trainer, pl_module)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        bar = self.train_progress_bar
        if bar is not None and self._should_update(trainer.global_step, trainer.max_steps):
            self._show(trainer, pl_module)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._show(trainer, pl_module)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._show(trainer, pl_module)
        super().on_train_end(trainer, pl_module)

    def _show(self, trainer: pl.Trainer, pl_module: pl.LightningModule | None) -> None:
        bar = self.train_progress_bar
        if bar is None or bar.disable:
            return
        view = self.view(trainer)
        metrics = self.get_metrics(trainer, pl_module) if pl_module is not None else {}
        losses = ", ".join(f"{k}={_short(v)}" for k, v in metrics.items() if k != "v_num")
        text = (view.text + (f" | {losses}" if losses else "")).replace("{", "{{").replace("}", "}}")
        bar.total, bar.n = view.total, view.n
        # Without a total there is no percentage to draw: the text alone.
        bar.bar_format = (self.BAR_FORMAT if view.total else "{desc}") + text
        bar.refresh()


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
