"""Validate a composed run config before anything expensive happens.

Hydra already rejects unknown keys and unknown group options (with the list of allowed options). What it
cannot know are the relations between values (crop divisible by scale, a Y-channel model with 3 input
channels, ...). Each check raises `ConfigError` with one line naming the key, the value and what is allowed.
"""
from __future__ import annotations

import math
from typing import Any

from omegaconf import DictConfig, OmegaConf

from sr_lightning.errors import UserError

PRECISIONS = ("auto", "32-true", "32", "bf16-mixed", "16-mixed", "bf16-true")
SCHEDULERS = (None, "multistep", "cosine")
COLORS = ("rgb", "y")


class ConfigError(UserError, ValueError):
    """A config value that cannot work; the message names the key and the allowed values."""

    def __init__(self, key: str, message: str):
        super().__init__(f"{key}: {message}")
        self.key = key


def _get(cfg: DictConfig, key: str, default: Any = None) -> Any:
    return OmegaConf.select(cfg, key, default=default)


def _cpu_processes(cfg: DictConfig) -> int:
    """Processes Lightning starts for a CPU run: trainer.devices ("auto" = 1, or a count) x trainer.num_nodes.

    A value Lightning itself rejects counts as 1 here, so Lightning's own error reaches the user.
    """
    def count(value: Any) -> int:
        if isinstance(value, int) and not isinstance(value, bool):
            return max(value, 1)
        return int(value) if isinstance(value, str) and value.strip().isdigit() and int(value) > 0 else 1

    return count(_get(cfg, "trainer.devices", "auto")) * count(_get(cfg, "trainer.num_nodes", 1))


def _positive_int(cfg: DictConfig, key: str) -> None:
    value = _get(cfg, key)
    if value is None:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(key, f"got {value!r}; allowed: an integer >= 1")


def _positive_float(cfg: DictConfig, key: str) -> None:
    value = _get(cfg, key)
    if value is None:
        return
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not (value > 0 and math.isfinite(value)):
        raise ConfigError(key, f"got {value!r}; allowed: a finite number > 0 (e.g. 1e-4)")


def validate_train_config(cfg: DictConfig) -> None:
    """Checks of a `train` config; raises ConfigError on the first problem found."""
    scale = _get(cfg, "scale")
    if not isinstance(scale, int) or isinstance(scale, bool) or scale < 1:
        raise ConfigError("scale", f"got {scale!r}; allowed: 2, 3, 4 or 8 (what the generator supports)")
    supported = _supported_scales(cfg)
    if supported and scale not in supported:
        raise ConfigError("scale", f"got {scale}; gen={_get(cfg, 'gen._target_')} supports {list(supported)}")
    target = str(_get(cfg, "gen._target_", default=""))
    if target.startswith("sr_lightning.models.interpolation."):
        raise ConfigError("model", f"gen={target.rsplit('.', 1)[-1]} is an interpolation baseline with nothing to "
                          f"train; evaluate it instead: python -m sr_lightning eval model=bicubic data=set5")
    _positive_int(cfg, "crop")
    crop = _get(cfg, "crop")
    if crop % scale:
        lower, upper = crop - crop % scale, crop - crop % scale + scale
        raise ConfigError(
            "crop", f"got {crop}, not divisible by scale={scale}; allowed: multiples of {scale} (e.g. {lower or upper} or {upper})"
        )
    _positive_int(cfg, "batch_size")
    _positive_float(cfg, "lr")
    _positive_float(cfg, "module.g_optim.lr")
    _positive_float(cfg, "module.d_optim.lr")
    for key in ("gen.blocks", "disc.blocks", "gen.channels", "module.d_steps_per_g", "checkpoint_every_n_steps"):
        _positive_int(cfg, key)
    color = _get(cfg, "color")
    if color not in COLORS:
        raise ConfigError("color", f"got {color!r}; allowed: {', '.join(COLORS)}")
    in_channels = _get(cfg, "gen.in_channels")
    if in_channels is not None:
        wanted = 1 if color == "y" else 3
        if in_channels != wanted:
            raise ConfigError("gen.in_channels", f"got {in_channels} but color={color} needs {wanted}")
    value_range = _get(cfg, "value_range")
    if value_range is None or len(value_range) != 2 or not value_range[0] < value_range[1]:
        raise ConfigError("value_range", f"got {value_range!r}; allowed: [lo, hi] with lo < hi, e.g. [0, 1] or [-1, 1]")
    precision = str(_get(cfg, "precision"))
    if precision not in PRECISIONS:
        raise ConfigError("precision", f"got {precision!r}; allowed: {', '.join(PRECISIONS)}")
    kind = _get(cfg, "module.scheduler.kind")
    if kind not in SCHEDULERS:
        raise ConfigError("module.scheduler.kind", f"got {kind!r}; allowed: null, multistep, cosine")
    ema = _get(cfg, "module.ema_decay")
    if ema is not None and not (0.0 <= float(ema) < 1.0):
        raise ConfigError("module.ema_decay", f"got {ema!r}; allowed: null (off) or a number in [0, 1), e.g. 0.999")
    clip = _get(cfg, "module.grad_clip_norm")
    if clip is not None:
        _positive_float(cfg, "module.grad_clip_norm")
    channels_last = _get(cfg, "module.channels_last")
    if channels_last not in ("auto", True, False):
        raise ConfigError("module.channels_last", f"got {channels_last!r}; allowed: auto, true, false")
    if _get(cfg, "module.sync_bn") and _get(cfg, "trainer.accelerator") == "cpu" and _cpu_processes(cfg) > 1:
        # torch's SyncBatchNorm refuses CPU tensors once a process group exists: say so before DDP starts.
        raise ConfigError("module.sync_bn", "SyncBatchNorm needs GPUs; with trainer.accelerator=cpu and several "
                          "processes allowed: module.sync_bn=false (or trainer=ddp on GPUs)")
    gan_start = _get(cfg, "module.gan_start_step")
    if not isinstance(gan_start, int) or gan_start < 0:
        raise ConfigError("module.gan_start_step", f"got {gan_start!r}; allowed: an integer >= 0")
    max_steps = _get(cfg, "trainer.max_steps")
    if max_steps is not None and (not isinstance(max_steps, int) or (max_steps < 1 and max_steps != -1)):
        raise ConfigError("trainer.max_steps", f"got {max_steps!r}; allowed: an integer >= 1 (or -1 with max_epochs)")
    if _get(cfg, "disc") is not None and _get(cfg, "loss.adversarial") is None:
        raise ConfigError("loss", f"disc={_get(cfg, 'disc._target_')} is set but loss.adversarial is null; "
                          "choose a GAN loss preset (e.g. loss=srgan_mse) or disc=null")
    if _get(cfg, "disc") is None and _get(cfg, "loss.adversarial") is not None:
        raise ConfigError("disc", "loss.adversarial is set but there is no discriminator; choose e.g. disc=vgg")
    resume = _get(cfg, "resume")
    if resume not in (None, "auto"):
        raise ConfigError("resume", f"got {resume!r}; allowed: null or auto (or ckpt_path=<file>)")


def _supported_scales(cfg: DictConfig) -> tuple[int, ...]:
    target = _get(cfg, "gen._target_")
    if not target:
        return ()
    try:
        from hydra.utils import get_class

        return tuple(getattr(get_class(target), "supported_scales", ()))
    except Exception:  # an import problem is reported when the generator is built
        return ()


def check_accelerator(cfg: DictConfig, choice: str | None = None) -> None:
    """`trainer.accelerator=gpu` (trainer=gpu / trainer=ddp) needs a CUDA device: say so before anything is built.

    Lightning's own "No supported gpu backend found!" comes after the data and the model, and names neither the
    option nor the fix. `choice` is the trainer preset picked on the command line (e.g. "gpu"), when known.
    """
    accelerator = str(_get(cfg, "trainer.accelerator", "cpu")).lower()
    if accelerator not in ("gpu", "cuda"):
        return
    import os

    import torch

    if torch.cuda.is_available():
        return
    picked = f" (trainer={choice})" if choice else ""
    if torch.version.cuda is None:
        found = f"torch {torch.__version__} is built without CUDA"
    else:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        hidden = f", CUDA_VISIBLE_DEVICES={visible!r}" if visible is not None else ""
        found = f"no CUDA device found (torch {torch.__version__} is built with CUDA {torch.version.cuda}{hidden})"
    cpu = "trainer=ddp_cpu (several CPU processes) or trainer=cpu" if choice and "ddp" in choice else "trainer=cpu"
    raise ConfigError("trainer.accelerator", f"{accelerator}{picked} needs a CUDA GPU, but {found}; "
                                             f"use {cpu} on this machine")
