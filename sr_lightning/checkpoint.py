"""Checkpoint writing that never corrupts the previous file, and loading a generator for inference.

`load_generator` is the single entry point of eval, upscale and export: it accepts a training checkpoint
(`.ckpt`, the composed config lives in `hyper_parameters["cfg"]`) or exported weights (`.safetensors`
with a `.json` sidecar, see `sr_lightning.commands.export`).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.utilities.cloud_io import _atomic_save
from lightning.pytorch.plugins.io import TorchCheckpointIO
from torch import nn


class CheckpointError(RuntimeError):
    """A checkpoint or weights file that cannot be used; the message names the file and the remedy."""


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write to `<file>.tmp` in the same directory, fsync, then `os.replace`.

    A kill during the write leaves the previous `last.ckpt` untouched; `os.replace` is atomic on POSIX and
    Windows when both paths are on one file system, which the same directory guarantees.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options=None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        _atomic_save(checkpoint, tmp)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)


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


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path} (give ckpt=<path to a .ckpt file>, e.g. "
                              f"outputs/<date>/<time>/checkpoints/best.ckpt)")
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # truncated / not a torch file
        raise CheckpointError(f"cannot read checkpoint {path}: {err.__class__.__name__}: {err}. The file is "
                              f"corrupt or not a Lightning checkpoint; use another one (last.ckpt / best.ckpt).") from err


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
    """Rebuild the generator of a `.ckpt` (or exported `.safetensors`/`.pt`/`.onnx` weights) in eval mode."""
    from hydra.utils import instantiate

    path = Path(path)
    if path.suffix in (".safetensors", ".pt", ".onnx"):  # exported weights with their JSON sidecar
        from sr_lightning.commands.export import load_exported

        return load_exported(path, map_location=map_location)
    checkpoint = read_checkpoint(path)
    cfg = (checkpoint.get("hyper_parameters") or {}).get("cfg")
    if not cfg or "gen" not in cfg:
        raise CheckpointError(f"{path} has no sr-lightning config (hyper_parameters['cfg']); it was not written "
                              f"by `python -m sr_lightning train`. Export weights with their config instead.")
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
