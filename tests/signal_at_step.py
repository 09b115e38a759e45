"""A Lightning callback that sends a signal to its own process after a given training step.

Used by test_interrupt.py in-process and, through `+callbacks.signal._target_=signal_at_step.SignalAtStep` with
tests/ on PYTHONPATH, inside a real CLI run: the signal then arrives at a known step instead of after a sleep.
"""
from __future__ import annotations

import os
import signal

import lightning.pytorch as pl


class SignalAtStep(pl.Callback):
    def __init__(self, step: int, signum: str = "SIGTERM", times: int = 1, job: int | None = None,
                 rank: int | None = None):
        self.step, self.signum, self.times, self.job, self.rank = step, getattr(signal, signum), times, job, rank

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step != self.step or (self.job is not None and self._job_num() != self.job):
            return
        if self.rank is not None and trainer.global_rank != self.rank:
            return
        for _ in range(self.times):
            os.kill(os.getpid(), self.signum)  # Python runs the handler before the next line

    @staticmethod
    def _job_num() -> int:
        from hydra.core.hydra_config import HydraConfig

        return int(HydraConfig.get().job.num)
