"""A Lightning callback that makes the disk "full" for checkpoint writes after a given training step.

Used by test_disk_full.py through `+callbacks.disk_full._target_=disk_full_at_step.DiskFullAtStep` with tests/ on
PYTHONPATH, inside a real CLI run (as signal_at_step.py does for signals). From then on `torch.save` into a real
file writes a few KiB and fails with ENOSPC, as a write on a full file system does; saving into memory (how the
checkpoint's size is counted for the message) still works.
"""
from __future__ import annotations

import errno
import os

import lightning.pytorch as pl
import torch

REAL_SAVE = torch.save


def full_disk_save(obj, f, *args, error: int = errno.ENOSPC, **kwargs):
    if not hasattr(f, "fileno"):  # an in-memory buffer: no disk involved
        return REAL_SAVE(obj, f, *args, **kwargs)
    f.write(b"PK\x03\x04" + b"\0" * 4096)  # the part that fitted
    f.flush()
    raise OSError(error, os.strerror(error))


class DiskFullAtStep(pl.Callback):
    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            torch.save = full_disk_save
