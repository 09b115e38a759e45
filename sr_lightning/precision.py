"""Precision and device choice, one set of rules for train, eval, upscale and the benchmarks.

`precision=auto` picks bf16 autocast where the hardware runs it natively (CUDA with bf16, or a CPU with
AVX512-BF16 / AMX), fp16 on older GPUs, and fp32 elsewhere. `device=auto` picks CUDA when present.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from sr_lightning.config import PRECISIONS, ConfigError, check_precision

# Autocast dtype (by name, so this module imports torch lazily) for each precision; None = fp32.
_AMP = {"32-true": None, "32": None, "bf16-mixed": "bfloat16", "bf16-true": "bfloat16", "16-mixed": "float16"}


def cpu_supports_bf16() -> bool:
    """bf16 autocast only pays off on CPUs with native bf16 (AVX512-BF16 / AMX).

    Measured on the project's reference 2-core AVX2 EPYC: a 6-conv stack ran 6x *slower* in bf16 than fp32,
    so `precision=auto` keeps fp32 there.
    """
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(flag in flags for flag in ("avx512_bf16", "amx_bf16"))


def accelerator_device_type(accelerator: str) -> str:
    """"cuda" when the trainer's accelerator asks for (or allows, `auto`) a GPU and one is present, else "cpu"."""
    import torch

    return "cuda" if str(accelerator) in ("gpu", "cuda", "auto") and torch.cuda.is_available() else "cpu"


def resolve_precision(requested: str, accelerator: str, channels_last: Any) -> tuple[str, str | None, bool]:
    """Return (precision name recorded in the config, autocast dtype name or None, channels_last)."""
    import torch  # lazily: Hydra's sweep callback imports modules that import this one

    requested = str(requested)
    check_precision(requested)
    on_gpu = accelerator_device_type(accelerator) == "cuda"
    if requested == "auto":
        if on_gpu:
            requested = "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
        else:
            requested = "bf16-mixed" if cpu_supports_bf16() else "32-true"
    if requested == "16-mixed" and not on_gpu:
        raise ConfigError("precision", "16-mixed needs a CUDA GPU; on CPU use bf16-mixed or 32-true")
    amp = _AMP[requested]
    if channels_last == "auto":
        # channels_last was faster on the reference CPU even in fp32 (0.53 s vs 0.72 s per conv-stack step);
        # on GPUs it pays off with tensor-core (mixed) precision.
        channels_last = (not on_gpu) or amp is not None
    return requested, amp, bool(channels_last)


def autocast_dtype(precision: str):
    """The torch dtype autocast runs in for an explicit precision name (None = fp32)."""
    import torch

    if str(precision) not in _AMP:
        allowed = ", ".join(p for p in PRECISIONS if p != "auto")
        raise ConfigError("precision", f"got {precision!r}; allowed: {allowed}")
    name = _AMP[str(precision)]
    return getattr(torch, name) if name else None


def resolve_device(name: Any, key: str = "device"):
    """`auto` -> CUDA when present, else CPU; an explicit device is checked to exist (ConfigError naming `key`)."""
    import torch

    name = str(name or "auto")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(key, f"got {name!r}; allowed: auto, cpu, cuda, cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(key, f"{name}: no CUDA GPU is available here; use {key}=cpu or {key}=auto")
    return device
