"""The train command's checkpoint writer: one write beside the target, atomic replace, weights-only loads.

Kept apart from `sr_lightning.checkpoint` so that reading a generator (eval, upscale, export) does not import
Lightning.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from sr_lightning.checkpoint import DISK_FULL_ERRNOS, disk_full_error, load_checkpoint_file


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write to `.<file>.tmp` in the same directory, fsync, then `os.replace`; load weights-only.

    A kill during the write leaves the previous `last.ckpt` untouched; `os.replace` is atomic on POSIX and
    Windows when both paths are on one file system, which the same directory guarantees. The checkpoint is
    serialised straight into the temporary file (Lightning's own save builds it in memory and writes it through
    fsspec's transaction, a second copy), and a failed write removes the temporary file, which on a full
    disk would otherwise keep the space taken.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options=None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        try:
            with open(tmp, "wb") as handle:
                torch.save(checkpoint, handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException as err:  # a full disk, a kill (KeyboardInterrupt), anything: no partial file stays
            tmp.unlink(missing_ok=True)
            if isinstance(err, OSError) and err.errno in DISK_FULL_ERRNOS:
                raise disk_full_error(path, checkpoint, err) from err
            raise

    def load_checkpoint(self, path, map_location=lambda storage, loc: storage, weights_only=None):
        # Lightning passes weights_only=None (torch's default, which an environment variable can turn off):
        # `ckpt_path=` / `resume=auto` files are user input, so never anything but weights.
        return load_checkpoint_file(path, key=None, map_location=map_location)
