"""Checkpoint writing that never corrupts the previous file, and loading a generator for inference.

`load_generator` is the single entry point of eval, upscale and export: it accepts a training checkpoint
(`.ckpt`, the composed config lives in `hyper_parameters["cfg"]`), exported weights (`.safetensors`
with a `.json` sidecar, see `sr_lightning.commands.export`), or a community model file (`.pth`/`.safetensors`
without a sidecar, e.g. a downloaded ESRGAN/SPAN/Compact model: spandrel detects architecture, size and scale,
see `sr_lightning.models.spandrel_arch.load_model_file`).

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

# The only package a config read from a file may instantiate from (see check_generator_config).
MODELS_PACKAGE = "sr_lightning.models."
DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


class CheckpointError(RuntimeError):
    """A checkpoint or weights file that cannot be used; the message names the file and the remedy."""


class UnsafeCheckpointError(CheckpointError):
    """A file holding pickled Python objects besides weights: it was refused without running any of them."""


class DiskFullError(OSError):
    """No room (ENOSPC / EDQUOT) for a checkpoint; the message names the folder and the bytes it needs."""


def __getattr__(name: str):
    # The Lightning import costs ~0.3 GB and seconds: eval/upscale/export load generators and never need it.
    if name == "AtomicCheckpointIO":
        from sr_lightning.checkpoint_io import AtomicCheckpointIO

        return AtomicCheckpointIO
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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


@dataclass
class LoadedGenerator:
    net: nn.Module
    scale: int
    value_range: tuple[float, float]
    color: str
    cfg: dict[str, Any]
    source: str
    used_ema: bool = False
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return str(self.meta.get("name") or Path(self.source).stem)


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
    text = str(err)
    found = re.search(r"GLOBAL ([\w.]+)", text)
    if found or "Unsupported global" in text or "Unsupported class" in text:
        what = f" ({found.group(1)})" if found else ""
        return UnsafeCheckpointError(
            f"{label}: refused: the file holds Python objects that are not weights{what}, so it was not loaded "
            f"(unpickling them could run code); use a checkpoint written by `python -m sr_lightning train` or "
            f"exported .safetensors")
    # torch's weights-only message suggests weights_only=False; the cause is the line after "error:"
    found = re.search(r"WeightsUnpickler error:\s*(.+)", text)
    first = found.group(1).strip() if found else " ".join(text.split())[:200]
    return CheckpointError(f"cannot read checkpoint {label}: {err.__class__.__name__}: {first}. The file is corrupt "
                           f"or not a Lightning checkpoint; use another one (last.ckpt / best.ckpt).")


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


def generator_state(checkpoint: dict[str, Any], use_ema: bool = True) -> tuple[dict[str, torch.Tensor], bool]:
    """The generator's weights from a training checkpoint: the EMA copy when present and asked for."""
    state = checkpoint["state_dict"]
    for prefix, is_ema in (("gen_ema.", True), ("gen.", False)):
        if is_ema and not use_ema:
            continue
        sub = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        if sub:
            return sub, is_ema
    return {}, False


def load_generator(path: str | os.PathLike, use_ema: bool = True, map_location: str | torch.device = "cpu") -> LoadedGenerator:
    """Rebuild the generator of a `.ckpt`, exported weights (`.safetensors`/`.pt`/`.onnx` with their sidecar) or
    a community model file (architecture detected by spandrel) in eval mode."""
    from hydra.utils import instantiate

    from sr_lightning.commands.export import load_exported, sidecar_path

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".onnx" or (suffix in (".safetensors", ".pt") and sidecar_path(path).is_file()):
        return load_exported(path, map_location=map_location)  # our export: the sidecar rebuilds it exactly
    if suffix in (".safetensors", ".pt"):  # no sidecar: a community file, or our export without its sidecar
        return load_model_file_generator(path, map_location)
    checkpoint = read_checkpoint(path)
    cfg = (checkpoint.get("hyper_parameters") or {}).get("cfg") if isinstance(checkpoint, dict) else None
    if not cfg or "gen" not in cfg:
        if is_bare_weights(checkpoint):  # a community .pth (state dict, or BasicSR's params/params_ema, ...)
            return load_model_file_generator(path, map_location, contents=checkpoint)
        raise CheckpointError(f"{path} has no sr-lightning config (hyper_parameters['cfg']); it was not written "
                              f"by `python -m sr_lightning train`. Export weights with their config instead.")
    check_generator_config(cfg["gen"], path)
    net = instantiate(cfg["gen"])
    state, used_ema = generator_state(checkpoint, use_ema)
    if state:
        missing, unexpected = net.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise CheckpointError(f"{path}: generator weights do not match gen={cfg['gen'].get('_target_')} "
                                  f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    net.eval().to(map_location)
    return LoadedGenerator(
        net=net, scale=int(cfg["scale"]), value_range=tuple(cfg.get("value_range", (0.0, 1.0))),
        color=str(cfg.get("color", "rgb")), cfg=cfg, source=str(path), used_ema=used_ema,
        meta={"name": cfg.get("model_name"), "global_step": checkpoint.get("global_step")},
    )


# --- community model files ------------------------------------------------------------------------------------

LIGHTNING_KEYS = ("pytorch-lightning_version", "hyper_parameters", "global_step", "optimizer_states")


def is_bare_weights(checkpoint: Any) -> bool:
    """A file holding only a model's tensors (as the SR community publishes them), not a training checkpoint.

    Lightning checkpoints of other projects are not: their message stays "not written by sr-lightning train".
    spandrel's own unwrapping (``params_ema``, ``state_dict``, ``module.`` prefixes) decides what the tensors are.
    """
    from spandrel import canonicalize_state_dict

    if not isinstance(checkpoint, dict) or any(k in checkpoint for k in LIGHTNING_KEYS):
        return False
    try:
        state = canonicalize_state_dict(dict(checkpoint))
    except Exception:  # noqa: BLE001 - any structure spandrel cannot unwrap is not a weights file
        return False
    return bool(state) and all(isinstance(v, torch.Tensor) for v in state.values())


def load_model_file_generator(path: str | os.PathLike, map_location: str | torch.device = "cpu",
                              contents: Any = None) -> LoadedGenerator:
    """A community `.pth`/`.safetensors` (no sidecar) as a `LoadedGenerator`: spandrel detects the architecture,
    size and scale; the tensors are read weights-only (`contents`: already read, not read again). Every problem is
    one `CheckpointError` naming the file."""
    from sr_lightning.models.spandrel_arch import ModelFileError, load_model_file

    path = Path(path)
    try:
        net, info = load_model_file(path, contents)
    except ModelFileError as err:
        from spandrel import UnsupportedModelError

        from sr_lightning.commands.export import sidecar_path

        hint = ""
        if isinstance(err.__cause__, UnsupportedModelError) and path.suffix.lower() in (".safetensors", ".pt"):
            hint = (f" (an sr-lightning export needs its sidecar {sidecar_path(path).name} next to it; bare weights "
                    f"of one of our presets: upscale weights={path.name} model=<preset> scale=<n>)")
        raise CheckpointError(f"{err}{hint}") from err
    except ValueError as err:  # the detected network is one our generator refuses (e.g. a x1 restoration model)
        raise CheckpointError(f"{path}: spandrel reads it, but not as a super-resolution generator here "
                              f"({err})") from err
    # 1-channel community models are grayscale: eval/upscale feed them luma (Y) and merge bicubic chroma
    color = "rgb" if info["in_channels"] == 3 else "y"
    cfg = {"gen": info["gen"], "scale": int(info["scale"]), "value_range": [0.0, 1.0], "color": color,
           "model_name": path.stem}
    return LoadedGenerator(
        net=net.eval().to(map_location), scale=int(info["scale"]), value_range=(0.0, 1.0), color=color, cfg=cfg,
        source=str(path), used_ema=False,
        meta={"name": path.stem, "global_step": None, "arch": info["arch"], "format": "model file"},
    )
