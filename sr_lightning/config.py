"""Validate a composed run config before anything expensive happens: the one place config checks live.

Hydra already rejects unknown keys and unknown group options (with the list of allowed options). What it
cannot know are the relations between values (crop divisible by scale, a Y-channel model with 3 input
channels, ...) and whether a `_target_` is the kind of object its key needs. Each check raises `ConfigError`
with one line naming the key, the value and what is allowed.

`validate_train_config` checks a whole `train` config. The small public `check_*` functions check one value
each; library code built without a composed config (the data module, SRModule) calls them too, so a value
gets the same message whichever way it arrives.
"""
from __future__ import annotations

import inspect
import math
from collections.abc import Mapping, Sequence
from typing import Any

from omegaconf import DictConfig, OmegaConf

from sr_lightning.errors import UserError

PRECISIONS = ("auto", "32-true", "32", "bf16-mixed", "16-mixed", "bf16-true")
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
        if is_int(value):
            return max(value, 1)
        return int(value) if isinstance(value, str) and value.strip().isdigit() and int(value) > 0 else 1

    return count(_get(cfg, "trainer.devices", "auto")) * count(_get(cfg, "trainer.num_nodes", 1))


def is_int(value: Any) -> bool:
    """An integer, and not a bool (YAML's `true` is an int to Python)."""
    return isinstance(value, int) and not isinstance(value, bool)


def check_positive_int(value: Any, key: str) -> None:
    """`value` is an integer >= 1 (None is left to the caller)."""
    if not is_int(value) or value < 1:
        raise ConfigError(key, f"got {value!r}; allowed: an integer >= 1")


def _positive_int(cfg: DictConfig, key: str) -> None:
    value = _get(cfg, key)
    if value is not None:
        check_positive_int(value, key)


# ------------------------------------------------------------------------------------------------ image keys
def check_scale(scale: Any, key: str = "scale") -> None:
    if not is_int(scale) or scale < 1:
        raise ConfigError(key, f"got {scale!r}; allowed: an integer >= 1 (2, 3, 4 or 8, what the generator supports)")


def check_crop(crop: Any, scale: int, key: str = "crop") -> None:
    """The HR training crop: a whole number of LR pixels, i.e. a positive multiple of `scale`."""
    check_positive_int(crop, key)
    if crop % scale:
        lower = crop - crop % scale
        raise ConfigError(key, f"got {crop}, not divisible by scale={scale}; allowed: multiples of {scale} "
                               f"(e.g. {lower or scale} or {lower + scale if lower else 2 * scale})")


def check_color(color: Any, key: str = "color") -> None:
    if color not in COLORS:
        raise ConfigError(key, f"got {color!r}; allowed: {', '.join(COLORS)}")


def check_value_range(value_range: Any, key: str = "value_range") -> None:
    pair = isinstance(value_range, Sequence) and not isinstance(value_range, str) and len(value_range) == 2
    if not pair or not value_range[0] < value_range[1]:
        shown = list(value_range) if isinstance(value_range, Sequence) and not isinstance(value_range, str) \
            else value_range
        raise ConfigError(key, f"got {shown!r}; allowed: [lo, hi] with lo < hi, e.g. [0, 1] or [-1, 1]")


# --------------------------------------------------------------------------------- losses and optimizers
def _locate(target: Any, key: str) -> Any:
    """The object a `_target_` names; ConfigError naming `key` when it is missing or cannot be imported."""
    if not isinstance(target, str) or not target:
        raise ConfigError(key, f"got {target!r}; allowed: a dotted import path, e.g. torch.nn.MSELoss")
    import importlib

    parts = target.split(".")
    for end in range(len(parts), 0, -1):  # the longest importable module, then attributes (as Hydra does)
        module_name = ".".join(parts[:end])
        try:
            obj = importlib.import_module(module_name)
            break
        except ModuleNotFoundError as err:
            if err.name is None or not module_name.startswith(err.name):
                raise  # a module that exists but fails to import: a bug to see in full
    else:
        raise ConfigError(key, f"got {target!r}, which cannot be imported (no module named {parts[0]!r})")
    for index in range(end, len(parts)):
        if not hasattr(obj, parts[index]):
            raise ConfigError(key, f"got {target!r}, which cannot be imported ({'.'.join(parts[:index])} has no "
                                   f"{parts[index]!r})")
        obj = getattr(obj, parts[index])
    return obj


def _check_arguments(node: Mapping, factory: Any, key: str) -> None:
    """Every key of `node` other than Hydra's `_..._` keys is an argument `factory` takes."""
    arguments = {k: v for k, v in node.items() if not (str(k).startswith("_") and str(k).endswith("_"))}
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):  # a builtin without a signature: leave it to the call
        return
    if any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values()):
        return
    unknown = sorted(set(arguments) - set(signature.parameters))
    if unknown:
        name = getattr(factory, "__qualname__", str(factory))
        raise ConfigError(f"{key}.{unknown[0]}", f"{name} takes no argument {unknown[0]!r}; remove it with "
                                                  f"~{key}.{unknown[0]} (it takes: {', '.join(signature.parameters)})")


def _check_partial(node: Mapping, key: str, what: str) -> None:
    if node.get("_partial_") is not True:
        raise ConfigError(f"{key}._partial_", f"got {node.get('_partial_')!r}; allowed: true ({what})")


def check_optimizer(node: Any, key: str) -> None:
    """`module.g_optim` / `module.d_optim`: a `_partial_` torch.optim.Optimizer target with an `lr`."""
    import torch

    if not isinstance(node, Mapping):
        raise ConfigError(key, f"got {node!r}; allowed: {{_target_: torch.optim.Adam, _partial_: true, lr: ...}}")
    cls = _locate(node.get("_target_"), f"{key}._target_")
    if not (isinstance(cls, type) and issubclass(cls, torch.optim.Optimizer)):
        raise ConfigError(f"{key}._target_", f"got {node.get('_target_')!r}, not an optimizer; allowed: a "
                                             f"torch.optim.Optimizer class, e.g. torch.optim.Adam or torch.optim.AdamW")
    _check_partial(node, key, "the module passes the parameters")
    _check_arguments(node, cls, key)
    lr = node.get("lr")
    if not isinstance(lr, (int, float)) or isinstance(lr, bool) or not (lr > 0 and math.isfinite(lr)):
        raise ConfigError(f"{key}.lr", f"got {lr!r}; allowed: a finite number > 0 (e.g. 1e-4)")


def check_scheduler(node: Any, key: str = "module.scheduler") -> None:
    """null, or a `_partial_` iteration-based torch.optim.lr_scheduler target (stepped once per G update)."""
    if node is None:
        return
    import torch

    allowed = "null or an iteration-based torch.optim.lr_scheduler class, e.g. MultiStepLR or CosineAnnealingLR"
    if not isinstance(node, Mapping):
        raise ConfigError(key, f"got {node!r}; allowed: {allowed}")
    cls = _locate(node.get("_target_"), f"{key}._target_")
    lr_scheduler = torch.optim.lr_scheduler
    if not (isinstance(cls, type) and issubclass(cls, lr_scheduler.LRScheduler)) \
            or issubclass(cls, lr_scheduler.ReduceLROnPlateau):  # needs a metric: stepped per validation, not here
        raise ConfigError(f"{key}._target_", f"got {node.get('_target_')!r}; allowed: {allowed}")
    _check_partial(node, key, "the module passes the optimizer")
    _check_arguments(node, cls, key)
    own_check = getattr(cls, "check_arguments", None)
    if own_check is not None:  # a schedule of ours knows what its arguments must satisfy (schedules.CosineToBudget)
        own_check(node, key)
    t_max = node.get("T_max", 1)
    if not is_int(t_max) or t_max < 1:  # the cosine presets take it from trainer.max_steps, -1 with max_epochs
        raise ConfigError(f"{key}.T_max", f"got {t_max!r}; allowed: an integer >= 1 (the presets set it to "
                                          f"trainer.max_steps: set trainer.max_steps, or {key}.T_max itself)")


def check_training_objects(cfg: Mapping) -> None:
    """What SRModule builds from targets: `loss:`, `module.g_optim`, `module.d_optim`, `module.scheduler`."""
    check_loss(cfg["loss"])
    for key in ("g_optim", "d_optim"):
        check_optimizer(cfg["module"][key], f"module.{key}")
    check_scheduler(cfg["module"]["scheduler"])


def check_loss(loss: Any, key: str = "loss") -> None:
    """`loss:` maps names to null or {_target_, weight, ...}; at least one term has a weight other than 0."""
    if not isinstance(loss, Mapping):
        raise ConfigError(key, f"got {loss!r}; allowed: a mapping of names to {{_target_: ..., weight: ...}}")
    active = []
    for name, entry in loss.items():
        entry_key = f"{key}.{name}"
        if entry is None:
            continue
        if not isinstance(entry, Mapping) or "_target_" not in entry or "weight" not in entry:
            got = sorted(entry) if isinstance(entry, Mapping) else repr(entry)
            raise ConfigError(entry_key, f"needs _target_ and weight, e.g. {{_target_: torch.nn.MSELoss, weight: "
                                         f"0.5}}, or null to turn it off; got {got}")
        weight = entry["weight"]
        if not isinstance(weight, (int, float)) or isinstance(weight, bool) or not (weight >= 0 and math.isfinite(weight)):
            raise ConfigError(f"{entry_key}.weight", f"got {weight!r}; allowed: a finite number >= 0 (0 turns it off)")
        factory = _locate(entry["_target_"], f"{entry_key}._target_")
        _check_arguments({k: v for k, v in entry.items() if k != "weight"}, factory, entry_key)
        if weight:
            active.append(name)
    if not active:
        raise ConfigError(key, "every term is null or has weight 0; set at least loss.pixel (e.g. loss=l1)")


def _positive_float(cfg: DictConfig, key: str) -> None:
    value = _get(cfg, key)
    if value is None:
        return
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not (value > 0 and math.isfinite(value)):
        raise ConfigError(key, f"got {value!r}; allowed: a finite number > 0 (e.g. 1e-4)")


def check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise ConfigError("precision", f"got {precision!r}; allowed: {', '.join(PRECISIONS)}")


def validate_train_config(cfg: DictConfig) -> None:
    """Checks of a `train` config; raises ConfigError on the first problem found."""
    scale = _get(cfg, "scale")
    check_scale(scale)
    supported = _supported_scales(cfg)
    if supported and scale not in supported:
        raise ConfigError("scale", f"got {scale}; gen={_get(cfg, 'gen._target_')} supports {list(supported)}")
    target = str(_get(cfg, "gen._target_", default=""))
    if target.startswith("sr_lightning.models.interpolation."):
        raise ConfigError("model", f"gen={target.rsplit('.', 1)[-1]} is an interpolation baseline with nothing to "
                          f"train; evaluate it instead: python -m sr_lightning eval model=bicubic data=set5")
    check_crop(_get(cfg, "crop"), scale)
    _positive_int(cfg, "batch_size")
    _positive_float(cfg, "lr")
    check_training_objects(cfg)
    for key in ("gen.blocks", "disc.blocks", "gen.channels", "module.d_steps_per_g", "checkpoint_every_n_steps"):
        _positive_int(cfg, key)
    color = _get(cfg, "color")
    check_color(color)
    in_channels = _get(cfg, "gen.in_channels")
    if in_channels is not None:
        wanted = 1 if color == "y" else 3
        if in_channels != wanted:
            raise ConfigError("gen.in_channels", f"got {in_channels} but color={color} needs {wanted}")
    check_value_range(_get(cfg, "value_range"))
    check_precision(str(_get(cfg, "precision")))
    if _get(cfg, "module.compile") not in (True, False):
        raise ConfigError("module.compile", f"got {_get(cfg, 'module.compile')!r}; allowed: true, false")
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
