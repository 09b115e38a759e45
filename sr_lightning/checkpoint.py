"""Reading checkpoint files a user names, safely, and saying clearly why one cannot be used.

Rebuilding a generator from a file (checkpoint, export, community model) is `sr_lightning.loading`; writing
checkpoints atomically is `sr_lightning.checkpoint_io` (here: the disk-full message it raises).

Every file a user names is untrusted: checkpoints are read with `torch.load(weights_only=True)` (tensors,
numbers, strings, lists, dicts; never a Python object whose unpickling runs code), and a generator config
read from a file may only build classes of `sr_lightning.models` (`check_generator_config`), since Hydra's
`_target_` can name any callable.
"""
from __future__ import annotations

import errno
import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sr_lightning.errors import UserError

# The only package a config read from a file may instantiate from (see check_generator_config).
MODELS_PACKAGE = "sr_lightning.models."
DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


SLIM_MARKER = "sr_lightning_slim"  # best.ckpt: generator weights + config only; readers tell it from a resumable one


class CheckpointError(UserError, RuntimeError):
    """A checkpoint or weights file that cannot be used; the message names the file and the remedy."""


class UnsafeCheckpointError(CheckpointError):
    """A file holding pickled Python objects besides weights: it was refused without running any of them."""


class DiskFullError(OSError):
    """No room (ENOSPC / EDQUOT) for a checkpoint; the message names the folder and the bytes it needs."""


def checkpoint_size(checkpoint: dict[str, Any]) -> int | None:
    """Bytes `torch.save` writes for `checkpoint`, counted without storing them (None if it cannot be saved)."""

    class _Count:
        n = 0

        def write(self, data) -> int:
            self.n += len(data)
            return len(data)

        def flush(self) -> None:
            pass

    sink = _Count()
    try:
        torch.save(checkpoint, sink)
    except Exception:  # noqa: BLE001 - only for the message; the write's own error is what is reported
        return None
    return sink.n


def _mb(n: int) -> str:
    """`1.2 GB (1,234,567,890 bytes)`: readable, and exact for whoever frees the space."""
    unit, scale = next(((u, s) for u, s in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)) if n >= s), ("B", 1))
    return f"{n / scale:.1f} {unit} ({n:,} bytes)" if scale > 1 else f"{n:,} bytes"


def disk_full_error(path: Path, checkpoint: dict[str, Any], err: OSError) -> DiskFullError:
    """One line: the folder, what the checkpoint needs (its exact size, counted again in memory) and what is free.

    Called after the partial file is removed, so "free" is what the next try would have. The previous file
    stays until the new one is complete (atomic replace), so the whole checkpoint size must be free.
    """
    needed = checkpoint_size(checkpoint)
    try:
        free = shutil.disk_usage(path.parent).free
    except OSError:
        free = None
    what = "disk full" if err.errno == errno.ENOSPC else "disk quota exceeded"
    parts = [f"{what} while saving {path.name} in {path.parent}:"]
    parts.append(f"the checkpoint needs {_mb(needed)}" if needed is not None else "the checkpoint did not fit")
    if free is not None:
        parts.append(f"and {_mb(free)} are free" + (" (the quota may be lower)" if err.errno != errno.ENOSPC else ""))
    kept = f"the previous {path.name} is kept" if path.is_file() else f"no {path.name} was written"
    message = (" ".join(parts) + f"; {kept} and the partial file was removed. Free space there (or give "
               f"hydra.run.dir= on another disk), then continue with resume=auto")
    error = DiskFullError(err.errno, message)
    error.filename = str(path.parent)
    return error


def _label(path: Path, key: str | None) -> str:
    return f"{key}={path}" if key else str(path)


def load_checkpoint_file(path: str | os.PathLike, key: str | None = "ckpt", map_location: Any = "cpu",
                         mmap: bool = False) -> dict[str, Any]:
    """`torch.load(weights_only=True)` of a user-supplied file; every problem is a `CheckpointError` naming
    `key=path` (the option the file came from, e.g. ckpt_path or init_from)."""
    path = Path(path)
    label = _label(path, key)
    if not path.is_file():
        raise CheckpointError(f"{label}: file not found")
    try:
        return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except Exception as err:  # noqa: BLE001 - truncated, foreign, or holding code
        raise _load_error(label, err) from err


def _load_error(label: str, err: Exception) -> CheckpointError:
    refused = refused_global(err)
    if refused is not None:
        return UnsafeCheckpointError(f"{label}: {refusal(refused)}; use a checkpoint written by "
                                     f"`python -m sr_lightning train` or exported .safetensors")
    return CheckpointError(f"cannot read checkpoint {label}: {load_failure(err)}. The file is corrupt or not a "
                           f"Lightning checkpoint; use another one (last.ckpt / best.ckpt).")


# Why a weights-only torch.load failed, for every reader of user files (checkpoints here, community model files in
# sr_lightning.models.spandrel_arch): a refused Python object and a truncated or foreign file both raise
# UnpicklingError, and only the first is a file that tried to run code.

def refused_global(err: Exception) -> str | None:
    """The Python object torch's weights-only unpickler refused (e.g. ``posix.system``; ``""`` when it is not
    named), or None when ``err`` is no such refusal (a truncated, corrupt or foreign file)."""
    text = str(err)
    found = re.search(r"GLOBAL ([\w.]+)", text)
    if found:
        return found.group(1)
    return "" if "Unsupported global" in text or "Unsupported class" in text else None


def refusal(name: str) -> str:
    """The message for a file `refused_global` named ``name`` for (without the file and the remedy)."""
    what = f" ({name})" if name else ""
    return (f"refused: the file holds Python objects that are not weights{what}, so it was not loaded "
            f"(unpickling them could run code)")


def load_failure(err: Exception) -> str:
    """`UnpicklingError: <the cause>`: one line, without torch's advice to retry with weights_only=False."""
    text = str(err)
    found = re.search(r"WeightsUnpickler error:\s*(.+)", text)  # the cause is the line after "error:"
    first = found.group(1).strip() if found else " ".join(text.split())[:200]
    return f"{err.__class__.__name__}: {first}"


def read_checkpoint(path: str | os.PathLike, key: str = "ckpt") -> dict[str, Any]:
    """A training checkpoint given as `key=path` (eval/upscale/export: ckpt; train: init_from)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path} (give {key}=<path to a .ckpt file>, e.g. "
                              f"outputs/<date>/<time>/checkpoints/best.ckpt)")
    return load_checkpoint_file(path, key=None if key == "ckpt" else key)


def check_generator_config(gen: Any, where: str | os.PathLike) -> None:
    """Refuse a generator config from a file unless every `_target_` in it is a class of sr_lightning.models.

    Loading weights-only keeps pickled code out, but the config in a checkpoint (or an export's sidecar) is
    plain data that Hydra turns into calls: `{"_target_": "os.system", "_args_": [...]}` would run a command.
    Only modules of sr_lightning.models are imported to check a name (importing any other module can run code).
    """
    for target in _targets(gen):
        if _model_class(target) is None:
            raise UnsafeCheckpointError(
                f"{where}: refused: its generator config names _target_={target!r}, which is not a model class of "
                f"sr_lightning.models (in this version); it was not built (a config read from a file may only "
                f"build those)")


def _model_class(target: Any) -> type | None:
    """The nn.Module class `target` names when it is defined in sr_lightning.models, else None."""
    import importlib

    package = MODELS_PACKAGE.rstrip(".")
    if not isinstance(target, str) or not re.fullmatch(r"[A-Za-z_][\w.]*[\w]", target):
        return None
    module_name, _, name = target.rpartition(".")
    if module_name != package and not module_name.startswith(MODELS_PACKAGE):
        return None
    try:
        cls = getattr(importlib.import_module(module_name), name, None)
    except ImportError:  # e.g. "sr_lightning.models.srresnet.os": not one of our modules
        return None
    # defined there, not merely imported there: `sr_lightning.models.x.nn.Sequential` and the like do not pass
    if isinstance(cls, type) and issubclass(cls, nn.Module) and (cls.__module__ == package
                                                                 or cls.__module__.startswith(MODELS_PACKAGE)):
        return cls
    return None


def _targets(node: Any) -> list[Any]:
    if isinstance(node, dict):
        found = [node["_target_"]] if "_target_" in node else []
        return found + [t for value in node.values() for t in _targets(value)]
    if isinstance(node, (list, tuple)):
        return [t for value in node for t in _targets(value)]
    return []
