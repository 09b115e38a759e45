"""One sweep job per GPU with Hydra's joblib launcher (`hydra/launcher=joblib_gpus`).

The joblib launcher runs jobs in a pool of `n_jobs` loky worker processes and reuses a worker for several
jobs. CUDA reads `CUDA_VISIBLE_DEVICES` once, when a process first touches the GPU, so a device picked per
*job* (e.g. job number modulo the GPU count) cannot work: a reused worker stays on the GPU of its first
job, and with uneven job lengths two jobs whose numbers differ by the GPU count can run at the same time.

So the device is picked per *worker process*: on its first job a worker takes an exclusive `flock` on one
of the files `<sweep dir>/.gpu_slots/<k>.lock` (k = 0 .. GPUs-1, the first one that is free), keeps it for
the rest of its life and sets `CUDA_VISIBLE_DEVICES` to the k-th visible GPU before any CUDA call. With
`n_jobs` = number of GPUs no two workers share a GPU; a worker that dies (loky retires idle workers)
releases its lock automatically and its replacement takes the free slot.

`n_jobs: ${sr_gpu_count:}` in the launcher config counts the GPUs; the resolver is registered when this
module is imported, which Hydra does when it instantiates `GPUSlotCallback` (before the launcher).
"""
from __future__ import annotations

import fcntl
import logging
import os
from pathlib import Path
from typing import Any, TextIO

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger("sr_lightning.launchers")

_held: tuple[int, TextIO] | None = None  # (slot, open lock file) owned by this worker process


def visible_gpus() -> list[str]:
    """Device ids this process may use: the parent's CUDA_VISIBLE_DEVICES list, else 0 .. count-1."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None and env.strip() not in ("", "-1"):
        return [d.strip() for d in env.split(",") if d.strip()]
    try:
        import torch

        return [str(i) for i in range(torch.cuda.device_count())]
    except Exception:  # noqa: BLE001 - no torch/CUDA: no GPUs
        return []


def gpu_count() -> int:
    """`${sr_gpu_count:}`: number of usable GPUs, at least 1 (one worker when there is no GPU)."""
    return max(1, len(visible_gpus()))


if not OmegaConf.has_resolver("sr_gpu_count"):
    OmegaConf.register_new_resolver("sr_gpu_count", gpu_count)


def acquire_slot(lock_dir: Path, slots: int) -> tuple[int, TextIO] | None:
    """Lock the first free slot file in `lock_dir`; None when all `slots` are held by other processes."""
    lock_dir.mkdir(parents=True, exist_ok=True)
    for slot in range(slots):
        handle = open(lock_dir / f"{slot}.lock", "a+")  # noqa: SIM115 - kept open: the lock lives with it
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            continue
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}\n")
        handle.flush()
        return slot, handle
    return None


def _cuda_initialized() -> bool:
    import sys

    torch = sys.modules.get("torch")
    return bool(torch is not None and torch.cuda.is_initialized())


class GPUSlotCallback(Callback):
    """Hydra callback: pins each launcher worker process to one GPU (see the module docstring)."""

    def __init__(self, lock_dir: str | None = None) -> None:
        self.lock_dir = lock_dir  # default: <sweep dir>/.gpu_slots
        self.gpus: list[str] | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        # Counted here, in the launching process: in a worker, counting would initialise the CUDA driver,
        # which reads CUDA_VISIBLE_DEVICES once, before this callback could set it. The list reaches the
        # workers with this (pickled) callback and through the environment they inherit.
        self.gpus = visible_gpus()
        os.environ["SR_SWEEP_GPUS"] = ",".join(self.gpus)

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        global _held
        gpus = self.gpus if self.gpus is not None else [g for g in os.environ.get("SR_SWEEP_GPUS", "").split(",") if g]
        if not gpus:
            return  # CPU-only machine: nothing to pin
        if _held is None:
            # The job dir is <sweep dir>/<job num>; the lock files live beside the jobs.
            lock_dir = Path(self.lock_dir or Path(config.hydra.runtime.output_dir).parent / ".gpu_slots")
            _held = acquire_slot(lock_dir, len(gpus))
            if _held is None:
                slot = int(config.hydra.job.num) % len(gpus)
                log.warning("more parallel jobs than GPUs (%d): job %s shares GPU %s; set hydra.launcher.n_jobs=%d",
                            len(gpus), config.hydra.job.num, gpus[slot], len(gpus))
                self._pin(gpus[slot], config)
                return
        self._pin(gpus[_held[0]], config)

    @staticmethod
    def _pin(device: str, config: DictConfig) -> None:
        if os.environ.get("CUDA_VISIBLE_DEVICES") != device and _cuda_initialized():
            log.warning("CUDA was initialised in this worker before pinning; job %s may not run on GPU %s",
                        config.hydra.job.num, device)
        os.environ["CUDA_VISIBLE_DEVICES"] = device
        print(f"job {config.hydra.job.num}: GPU {device} (worker pid {os.getpid()})", flush=True)
