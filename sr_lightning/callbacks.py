"""Callbacks of the train command: checkpoints named the way users look for them.

`last.ckpt` every N iterations, at the end, and after the step a Ctrl-C / SIGTERM arrived in (interrupt.py):
the full training state, for resume. `best.ckpt` whenever validation PSNR (Y) improves: slim, only what eval,
upscale, export and `init_from=` read (see `slim_checkpoint`). Both writes go through the trainer's
`AtomicCheckpointIO`, so a kill mid-write never destroys the previous file and a full disk is one clear error.
"""
from __future__ import annotations

import math
import signal
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback

from sr_lightning.checkpoint import SLIM_MARKER
from sr_lightning.interrupt import StopRequests, TrainingInterrupted

GENERATOR_PREFIXES = ("gen.", "gen_ema.")


def slim_checkpoint(trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
    """The generator (and its EMA), the run config and the step: what a finished model is used for.

    A GAN run's full checkpoint is mostly D and both Adam states (SRGAN-MSE: 484 MB, the generators 13 MB).
    Those only matter for continuing the training, which `last.ckpt` is for, so `best.ckpt` leaves them out.
    """
    state = trainer.strategy.lightning_module_state_dict()  # gathers sharded strategies' weights
    return {
        "state_dict": {k: v for k, v in state.items() if k.startswith(GENERATOR_PREFIXES)},
        "hyper_parameters": dict(pl_module.hparams),  # as Lightning writes it: the run's cfg lives here
        "global_step": trainer.global_step,
        "epoch": trainer.current_epoch,
        SLIM_MARKER: True,
    }


class SRCheckpoint(Callback):
    def __init__(self, dirpath: str | Path, every_n_steps: int = 200, monitor: str = "val/psnr_y", mode: str = "max"):
        self.dirpath = Path(dirpath)
        self.every_n_steps = max(int(every_n_steps), 1)
        self.monitor = monitor
        self.sign = 1.0 if mode == "max" else -1.0
        self.best_score = -math.inf * self.sign
        self.best_step: int | None = None
        self._last_saved_step: int | None = None
        self.last_validated_step: int | None = None

    @property
    def last_path(self) -> Path:
        return self.dirpath / "last.ckpt"

    @property
    def best_path(self) -> Path:
        return self.dirpath / "best.ckpt"

    def save_last(self, trainer: pl.Trainer) -> None:
        if self._last_saved_step == trainer.global_step:
            return
        trainer.save_checkpoint(self.last_path, weights_only=False)  # full state for resume
        self._last_saved_step = trainer.global_step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step % self.every_n_steps == 0:
            self.save_last(trainer)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or self.monitor not in trainer.callback_metrics:
            return
        self.last_validated_step = trainer.global_step
        score = float(trainer.callback_metrics[self.monitor])
        if math.isfinite(score) and self.sign * score > self.sign * self.best_score:
            self.best_score, self.best_step = score, trainer.global_step
            self.save_best(trainer, pl_module)

    def save_best(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # The strategy writes on global rank 0 only, through the trainer's checkpoint IO (atomic, disk-full
        # message); the barrier keeps the other processes from running ahead of the write, as
        # trainer.save_checkpoint does.
        trainer.strategy.save_checkpoint(slim_checkpoint(trainer, pl_module), self.best_path)
        trainer.strategy.barrier("SRCheckpoint.save_best")

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.save_last(trainer)

    def state_dict(self) -> dict[str, Any]:
        return {"best_score": self.best_score, "best_step": self.best_step}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.best_score = float(state_dict.get("best_score", -math.inf))
        self.best_step = state_dict.get("best_step")


class GracefulStop(Callback):
    """Acts on a recorded stop request at the end of a training step: saves `last.ckpt`, then stops."""

    def __init__(self, requests: StopRequests, checkpointer: SRCheckpoint):
        self.requests = requests
        self.checkpointer = checkpointer  # it owns last.ckpt

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.requests.defer()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        requested = self.requests.requested or ("SIGTERM" if trainer.received_sigterm else None)
        if trainer.world_size > 1:  # every process stops after the same step (Ctrl-C may reach only one)
            requested = self._shared(trainer, requested)
        if not requested:
            return
        self.checkpointer.save_last(trainer)
        raise TrainingInterrupted(requested, trainer.global_step, self.checkpointer.last_path)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        # A second Ctrl-C stops this process mid-step; DDP processes it started would wait for it in the next
        # all-reduce until the timeout (30 min), so they go too (Lightning does the same for KeyboardInterrupt).
        launcher = trainer.strategy.launcher
        if isinstance(exception, TrainingInterrupted) and exception.checkpoint is None and launcher is not None:
            launcher.kill(signal.SIGKILL)

    @staticmethod
    def _shared(trainer: pl.Trainer, requested: str | None) -> str | None:
        """The request of any process, as a signal name (one all-reduce of one number per step)."""
        import torch

        number = torch.tensor(signal.Signals[requested].value if requested else 0, device=trainer.strategy.root_device)
        number = int(trainer.strategy.reduce(number, reduce_op="max"))
        return signal.Signals(number).name if number else None
