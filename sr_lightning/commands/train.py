"""`python -m sr_lightning train ...`: compose, validate, build, fit, and leave a summary.

Everything a user can get wrong (config values, missing data or weights, a bad checkpoint) is reported
before training starts as one line `error: ...`; the full traceback goes to `<run dir>/error.log`.
Every run ends with `<run dir>/summary.json` (status completed | failed), which `report` reads.
"""
from __future__ import annotations

import functools
import json
import logging
import os
import sys
import time
import traceback
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict

from sr_lightning.config import ConfigError, check_accelerator, validate_train_config
from sr_lightning.precision import resolve_precision

if TYPE_CHECKING:
    from sr_lightning.interrupt import StopRequests, TrainingInterrupted

log = logging.getLogger("sr_lightning.train")


class SetupError(RuntimeError):
    """Raised for problems found before the first training step (printed as one line)."""


def _output_dir() -> Path:
    return Path(HydraConfig.get().runtime.output_dir)


def _is_multirun() -> bool:
    return HydraConfig.get().mode == RunMode.MULTIRUN


def write_summary(run_dir: Path, **fields: Any) -> None:
    """summary.json, written atomically and by one process: under DDP every process reaches the end of `main`,
    and two renames of one temporary file race (the second finds it gone)."""
    if not _first_process():
        return
    path = run_dir / "summary.json"
    tmp = path.with_suffix(f".json.tmp{os.getpid()}")
    tmp.write_text(json.dumps(fields, indent=2, default=float))
    tmp.replace(path)


def _overrides(output_dir: Path) -> list[str]:
    path = output_dir / ".hydra" / "overrides.yaml"
    if not path.is_file():
        return []
    return [o for o in OmegaConf.load(path) if not o.split("=")[0].lstrip("+~") in ("resume", "ckpt_path")
            and not o.startswith("hydra.")]


def _completed_summary(cfg: DictConfig, output_dir: Path) -> dict[str, Any] | None:
    """This run dir's summary when it records a completed run that already reached `trainer.max_steps`."""
    path = output_dir / "summary.json"
    if not path.is_file():
        return None
    summary = json.loads(path.read_text())
    max_steps = int(OmegaConf.select(cfg, "trainer.max_steps", default=-1))
    if summary.get("status") != "completed" or max_steps < 0 or summary.get("global_step", -1) < max_steps:
        return None
    return summary


def find_resume_checkpoint(cfg: DictConfig, output_dir: Path) -> Path | None:
    """`resume=auto`: this run dir's last.ckpt, else the newest unfinished run with the same overrides."""
    own = output_dir / "checkpoints" / "last.ckpt"
    if own.is_file():
        return own
    wanted = _overrides(output_dir)
    root = Path(cfg.paths.log_dir)
    candidates = []
    for ckpt in root.glob("**/checkpoints/last.ckpt"):
        run_dir = ckpt.parent.parent
        if run_dir == output_dir:
            continue
        summary = run_dir / "summary.json"
        if summary.is_file() and json.loads(summary.read_text()).get("status") == "completed":
            continue
        if _overrides(run_dir) == wanted:
            candidates.append(ckpt)
    return max(candidates, key=lambda p: p.stat().st_mtime) if candidates else None


def init_generator_from(module, path: str) -> bool:
    """Start G (and its EMA) from another run's generator, e.g. SRGAN from a PSNR-trained SRResNet.

    The EMA weights are taken when the checkpoint has them (they are what that run validated and exported).
    Returns whether EMA weights were used.
    """
    from sr_lightning.checkpoint import generator_state, read_checkpoint

    state, used_ema = generator_state(read_checkpoint(path, key="init_from"), use_ema=True)
    if not state:
        raise SetupError(f"init_from={path}: no generator weights in this checkpoint")
    try:
        module.gen.load_state_dict(state)
        if module.gen_ema is not None:
            module.gen_ema.load_state_dict(state)
    except RuntimeError as err:
        raise SetupError(f"init_from={path}: weights do not fit gen={module.cfg['gen']['_target_']} "
                         f"({str(err).splitlines()[0]}); use a checkpoint of the same generator config") from err
    log.info("initialised G from %s (%s weights)", path, "EMA" if used_ema else "raw")
    return used_ema


def _task_overrides() -> dict[str, str]:
    """The command line's `key=value` overrides (`++`/`+`/`~` prefixes dropped): what the user set explicitly."""
    try:
        task = HydraConfig.get().overrides.task
    except ValueError:  # no Hydra run (a config composed by hand)
        return {}
    return {o.split("=", 1)[0].lstrip("+~"): o.split("=", 1)[1] for o in task if "=" in o}


def _is_training_checkpoint(path: Path) -> bool:
    """Whether `init_from=path` is one of our training checkpoints (its config in hyper_parameters['cfg'])."""
    from sr_lightning.checkpoint import load_checkpoint_file
    from sr_lightning.commands.export import sidecar_path

    if path.suffix.lower() in (".safetensors", ".onnx") or sidecar_path(path).is_file():  # exports, model files
        return False
    checkpoint = load_checkpoint_file(path, key="init_from")
    return isinstance(checkpoint, dict) and bool((checkpoint.get("hyper_parameters") or {}).get("cfg"))


def init_from_model_file(cfg: DictConfig):
    """`init_from=<model file>` (a community .pth/.safetensors, or our export with its sidecar): the generator
    becomes the network in the file, replacing `cfg.gen`, `cfg.scale`, `cfg.color` and `cfg.value_range` before
    anything is built, so the run's checkpoint stores a config that rebuilds that network (eval, upscale, export,
    resume). The rest of the preset (disc, loss, optimiser) stays: a GAN preset adds its D.

    Returns the loaded generator, whose weights `_build` copies into G and its EMA; None when `init_from` is unset,
    missing (reported later) or one of our training checkpoints (`init_generator_from` loads those into the
    preset's generator). What the user set explicitly (scale=, color=, gen.arch=, gen.<argument>=) must agree
    with the file: one SetupError naming both otherwise.
    """
    from sr_lightning.checkpoint import CheckpointError, load_generator

    if not cfg.get("init_from"):
        return None
    path = Path(str(cfg.init_from)).expanduser()
    if not path.is_file() or _is_training_checkpoint(path):
        return None
    try:
        loaded = load_generator(path)
    except CheckpointError as err:
        raise SetupError(f"init_from={err}" if str(err).startswith(str(path)) else f"init_from={path}: {err}") from err
    gen = loaded.cfg.get("gen") if isinstance(loaded.cfg, dict) else None
    if loaded.meta.get("format") in ("onnx", "torchscript") or not isinstance(gen, dict):
        raise SetupError(f"init_from={path}: a {loaded.meta.get('format')} export holds a fixed graph, not trainable "
                         f"weights; give its .safetensors export or the run's checkpoint")
    gen = OmegaConf.to_container(OmegaConf.create(gen), resolve=True)
    _check_user_choices(cfg, path, loaded, gen)
    with open_dict(cfg):
        cfg.gen = gen
        cfg.scale = int(loaded.scale)
        cfg.color = str(loaded.color)
        cfg.value_range = [float(v) for v in loaded.value_range]
    what = loaded.meta.get("arch") or str(gen.get("_target_", "?")).rsplit(".", 1)[-1]
    print(f"init_from={path}: {what} x{loaded.scale} detected; it is this run's generator (gen config from the "
          f"file), starting from its weights", flush=True)
    return loaded.net


def _check_user_choices(cfg: DictConfig, path: Path, loaded, gen: dict[str, Any]) -> None:
    """scale=, color=, value_range=, gen.arch= and gen.<argument>= given on the command line must fit the file."""
    user = _task_overrides()
    label = f"init_from={path}"
    what = loaded.meta.get("arch") or str(gen.get("_target_", "?")).rsplit(".", 1)[-1]
    if "scale" in user and int(cfg.scale) != int(loaded.scale):
        raise SetupError(f"scale={cfg.scale} but {label} is a x{loaded.scale} {what} model; drop scale= (the file "
                         f"decides) or give a x{cfg.scale} model file")
    if "color" in user and str(cfg.color) != str(loaded.color):
        raise SetupError(f"color={cfg.color} but {label} is a {loaded.net.in_channels}-channel model "
                         f"(color={loaded.color}); drop color=")
    if "value_range" in user and [float(v) for v in cfg.value_range] != [float(v) for v in loaded.value_range]:
        raise SetupError(f"value_range={list(cfg.value_range)} but {label} works in {list(loaded.value_range)}; "
                         f"drop value_range=")
    user_arch = OmegaConf.select(cfg, "gen.arch", default=None) if "gen.arch" in user else None
    if user_arch is not None and user_arch != gen.get("arch"):
        raise SetupError(f"gen.arch={user_arch} but {label} holds a {what} model; drop gen.arch= (the file "
                         f"decides the architecture) or give a {user_arch} file")
    # an architecture argument given on the command line is checked against the file's network, not dropped
    from sr_lightning.models.spandrel_arch import plain_value as plain  # tuples and lists compare equal

    hyper = dict(getattr(getattr(loaded.net, "net", None), "hyperparameters", None) or {})
    for key in sorted(k[len("gen."):] for k in user if k.startswith("gen.") and k.count(".") == 1):
        if key in ("arch", "_target_", "scale"):
            continue
        wanted = plain(OmegaConf.to_container(cfg.gen, resolve=True).get(key))
        theirs = gen[key] if key in gen else hyper.get(key, _MISSING)
        if theirs is _MISSING:
            raise SetupError(f"gen.{key}={wanted}: the generator is {label}'s {what} model, which has no {key}; "
                             f"drop gen.{key}=")
        if plain(theirs) != wanted:
            raise SetupError(f"gen.{key}={wanted} but {label}'s {what} model has {key}={plain(theirs)}; drop "
                             f"gen.{key}= (the file decides the network's size)")


_MISSING = object()


def load_initial_weights(module, initial) -> None:
    """init_from=<model file>: G and its EMA start from the file's weights (strict: cfg.gen was made from it)."""
    state = initial.state_dict()
    module.gen.load_state_dict(state)
    if module.gen_ema is not None:
        module.gen_ema.load_state_dict(state)


@functools.lru_cache(maxsize=None)
def compiler_problem(device_type: str) -> str | None:
    """Why torch.compile cannot run on `device_type` here (None: it works), found once per process by compiling
    a tiny function: inductor needs a working C++ compiler on CPUs and Triton on GPUs, and a network compiled
    without one fails at its first forward, deep inside training."""
    import torch

    try:
        probe = torch.compile(lambda x: x * 2.0 + 1.0, dynamic=False)
        probe(torch.ones(4, device=device_type))
    except Exception as err:  # noqa: BLE001 - BackendCompilerFailed, a missing compiler, an unsupported device
        text = " ".join(str(err).split())
        return f"{type(err).__name__}: {text[:300]}" if text else type(err).__name__
    return None


_COMPILE_WARNED: set[str] = set()


def compile_networks(module, device_type: str) -> bool:
    """`module.compile=true`: compile G and D in place (`nn.Module.compile`: the state_dict keys stay the same,
    `torch.compile(net)` would prefix them with `_orig_mod.`). Called before the Trainer wraps the module in DDP.
    Without a working compiler it warns once and leaves them eager. Returns whether they were compiled."""
    problem = compiler_problem(device_type)
    if problem is not None:
        if device_type not in _COMPILE_WARNED and _first_process():
            _COMPILE_WARNED.add(device_type)
            log.warning("module.compile=true: torch.compile does not work on %s here (%s); training runs "
                        "uncompiled", device_type, problem)
        return False
    module.gen.compile()
    if module.disc is not None:
        module.disc.compile()
    return True


def _device_type(cfg: DictConfig) -> str:
    import torch

    accelerator = str(OmegaConf.select(cfg, "trainer.accelerator", default="cpu"))
    return "cuda" if accelerator in ("gpu", "cuda", "auto") and torch.cuda.is_available() else "cpu"


def _build(cfg: DictConfig, output_dir: Path, resumed: tuple[Path, int] | None = None,
           stop_requests: StopRequests | None = None, resume_check: tuple[dict, str, str] | None = None,
           initial=None):
    """Data, module, trainer and checkpointer of a run; `resumed` = (run dir of the checkpoint, its step).

    With `stop_requests` a Ctrl-C / SIGTERM during training ends the run after the current step, with
    last.ckpt saved at that step. `resume_check` = (checkpoint, path, option): the checkpoint must hold the
    module's networks; checked before any logger touches the run's files."""
    from hydra.utils import instantiate

    from sr_lightning.callbacks import GracefulStop, SRCheckpoint
    from sr_lightning.checkpoint_io import AtomicCheckpointIO
    from sr_lightning.models import count_parameters
    from sr_lightning.module import SRModule

    if cfg.module.get("compile", False) not in (True, False):
        raise ConfigError("module.compile", f"got {cfg.module.compile!r}; allowed: true, false")
    precision, amp, channels_last = resolve_precision(str(cfg.precision), str(cfg.trainer.accelerator),
                                                      cfg.module.channels_last)
    with open_dict(cfg):  # the choice is recorded in the run config (config_resolved.yaml, checkpoint, W&B)
        cfg.precision = precision
        cfg.module.channels_last = channels_last
    (output_dir / "config_resolved.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))

    datamodule = instantiate(cfg.data)
    module = SRModule(cfg, amp_dtype=amp, channels_last=channels_last, output_dir=str(output_dir))
    if initial is not None:
        load_initial_weights(module, initial)
        log.info("initialised G from %s", cfg.init_from)
    elif cfg.init_from:
        init_generator_from(module, cfg.init_from)
    if resume_check is not None:
        check_resume_architecture(module, *resume_check)
    compiled = bool(cfg.module.get("compile")) and compile_networks(module, _device_type(cfg))

    g_params = count_parameters(module.gen)
    d_params = count_parameters(module.disc) if module.disc is not None else 0
    print(f"model={cfg.model_name}  G {cfg.gen._target_.rsplit('.', 1)[-1]}: {g_params:,} parameters"
          + (f"  D {cfg.disc._target_.rsplit('.', 1)[-1]}: {d_params:,} parameters" if module.disc is not None else "  (no D)")
          + f"  precision={precision} channels_last={channels_last}" + ("  compiled" if compiled else ""), flush=True)

    loggers = [_make_logger(c, output_dir, resumed) for c in (cfg.get("logger") or {}).values() if c]
    for logger in loggers:
        if resumed is not None and hasattr(logger, "continue_from"):
            logger.continue_from(*resumed)  # the CSV log continues instead of starting over
        if hasattr(logger, "log_hyperparams"):
            logger.log_hyperparams(_flat_hparams(cfg))
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c]
    checkpointer = SRCheckpoint(output_dir / "checkpoints", every_n_steps=cfg.checkpoint_every_n_steps)
    callbacks.append(checkpointer)
    if stop_requests is not None:
        callbacks.append(GracefulStop(stop_requests, checkpointer))  # after the checkpointer's periodic save
    trainer = instantiate(cfg.trainer, logger=loggers or False, callbacks=callbacks,
                          plugins=[AtomicCheckpointIO()], precision="32-true",
                          default_root_dir=str(output_dir), enable_checkpointing=False)
    return datamodule, module, trainer, checkpointer, {"gen": g_params, "disc": d_params}


def _make_logger(logger_cfg: DictConfig, output_dir: Path, resumed: tuple[Path, int] | None):
    from hydra.utils import instantiate

    from sr_lightning import wandb_utils

    if str(logger_cfg.get("_target_", "")).endswith("wandb_utils.wandb_logger") and logger_cfg.get("id") is None:
        # one W&B run per training run, also across resumes (see wandb_utils)
        run_id = wandb_utils.continued_run_id(output_dir, resumed[0] if resumed else None, write=_first_process())
        return instantiate(logger_cfg, id=run_id, resume="allow")
    return instantiate(logger_cfg)


def _first_process() -> bool:
    """False in every DDP process but the global first, before the Trainer exists.

    Lightning's own rank (read at import from RANK / LOCAL_RANK / SLURM_PROCID, as `wandb_utils` uses it) covers
    the processes its launcher, torchrun and SLURM start; NODE_RANK covers the first process of a later node.
    """
    from lightning.pytorch.utilities import rank_zero_only

    return rank_zero_only.rank == 0 and os.environ.get("NODE_RANK", "0") == "0"


def _flat_hparams(cfg: DictConfig) -> dict[str, Any]:
    """The whole config, flattened (`gen.blocks`, `crop`, `lr`, ...) so a dashboard can group runs by any key."""
    plain = OmegaConf.to_container(cfg, resolve=True)
    flat: dict[str, Any] = {}

    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(f"{prefix}.{key}" if prefix else str(key), value)
        else:
            flat[prefix] = node if isinstance(node, (int, float, str, bool)) or node is None else str(node)

    walk("", {k: v for k, v in plain.items() if k not in ("hydra",)})
    return flat


# What a finished or interrupted run leaves in its folder (besides .hydra/, which Hydra has already rewritten).
RUN_RESULTS = ("checkpoints", "metrics.csv", "summary.json", "images", "hparams.yaml", "config_resolved.yaml",
               "wandb_run_id")


def _archive_earlier_run(output_dir: Path) -> Path | None:
    """A fresh (not resumed) run in a folder holding another run's results moves them to `earlier-<n>/` first.

    That happens when `hydra.run.dir=` names a used folder without `resume=auto`; nothing is overwritten.
    """
    if not _first_process():
        return None  # DDP processes after the first start later and must not move the first one's files
    # any result counts: a run killed (SIGKILL, out of memory) before its first checkpoint leaves only a log
    if not any((output_dir / name).exists() for name in RUN_RESULTS):
        return None
    n = 1
    while (output_dir / f"earlier-{n}").exists():
        n += 1
    target = output_dir / f"earlier-{n}"
    target.mkdir()
    for name in RUN_RESULTS:
        if (output_dir / name).exists():
            (output_dir / name).rename(target / name)
    print(f"{output_dir} held an earlier run: its results are now in {target} (resume=auto continues a run instead)",
          flush=True)
    return target


def _read_resume_checkpoint(path: Path, key: str | None = "ckpt_path") -> dict[str, Any]:
    """A checkpoint to resume from, weights-only (a file with pickled code is refused, nothing of it runs) and
    memory-mapped (the weights are not read until used)."""
    from sr_lightning.checkpoint import load_checkpoint_file

    checkpoint = load_checkpoint_file(path, key=key, mmap=True)
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("global_step"), int) \
            or not isinstance(checkpoint.get("state_dict"), dict):
        label = f"{key}={path}" if key else str(path)
        raise SetupError(f"{label}: not a training checkpoint of `python -m sr_lightning train` (no global_step / "
                         f"state_dict); to start from a generator's weights use init_from=")
    return checkpoint


def _checkpoint_step(path: Path, key: str | None = "ckpt_path") -> int:
    """The global step a checkpoint was written at (memory-mapped: the weights are not read)."""
    return int(_read_resume_checkpoint(path, key)["global_step"])


def _short_arch(net_cfg: Any) -> str:
    """`SRResNet(blocks=16, channels=64, scale=4)`: a generator/discriminator config in one phrase."""
    if not isinstance(net_cfg, dict) or not net_cfg.get("_target_"):
        return "none"
    args = ", ".join(f"{k}={v}" for k, v in sorted(net_cfg.items()) if not k.startswith("_")
                     and k in ("blocks", "channels", "scale", "in_channels", "growth_channels", "levels",
                               "dense_features", "num_feat", "num_block"))
    return f"{str(net_cfg['_target_']).rsplit('.', 1)[-1]}({args})"


def _differences(theirs: Any, ours: Any) -> list[str]:
    """`blocks: 16 vs 1`, ... for the keys where two network configs differ."""
    if not isinstance(theirs, dict) or not isinstance(ours, dict):
        return []
    return [f"{k}: {theirs.get(k)!r} vs {ours.get(k)!r}" for k in sorted(set(theirs) | set(ours))
            if theirs.get(k) != ours.get(k)]


def check_resume_architecture(module, checkpoint: dict[str, Any], path: str, key: str = "ckpt_path") -> None:
    """`ckpt_path=` must hold this run's networks: compare tensor names and shapes before Lightning restores
    (its strict load prints every mismatching tensor, thousands of characters), and say which option fine-tunes."""
    own = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    saved = {k: tuple(v.shape) for k, v in checkpoint["state_dict"].items()}
    if own == saved:
        return
    tensors = next((f"{k} is {list(saved[k])} in the file, {list(own[k])} here" for k in own
                    if k in saved and saved[k] != own[k]), None)
    if tensors is None:
        only_file, only_run = sorted(set(saved) - set(own)), sorted(set(own) - set(saved))
        tensors = "; ".join(part for part in (
            f"{len(only_file)} tensors only in the file (e.g. {only_file[0]})" if only_file else "",
            f"{len(only_run)} tensors only in this run (e.g. {only_run[0]})" if only_run else "") if part)
        if all(k.startswith("gen_ema.") for k in only_file + only_run):
            tensors += "; module.ema_decay is null in one of them"
    their_cfg = (checkpoint.get("hyper_parameters") or {}).get("cfg") or {}
    described = []
    for net in ("gen", "disc"):
        theirs, ours = their_cfg.get(net), module.cfg.get(net)
        if theirs != ours:
            diffs = _differences(theirs, ours)
            described.append(f"{net} {_short_arch(theirs)} in the file vs {_short_arch(ours)} here"
                             + (f" ({', '.join(diffs[:4])})" if diffs else ""))
    arch = "; ".join(described) or (f"same gen {_short_arch(their_cfg.get('gen'))} and disc "
                                    f"{_short_arch(their_cfg.get('disc'))} configs")
    label = f"{key}={path}" if key == "ckpt_path" else f"{key} found {path}, which"
    raise SetupError(f"{label}: the checkpoint holds other networks than this run: {arch} [{tensors}]. "
                     f"ckpt_path= resumes the same run; to fine-tune from its generator use init_from={path} "
                     f"(or set this run's options to the checkpoint's)")


def _final_metrics(trainer) -> dict[str, float]:
    return {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}


class _NoProductTips(logging.Filter):
    """Drops Lightning's "💡 Tip: ... install litlogger" advert, printed at every Trainer start."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("💡 Tip")


def _one_line_per_log_message() -> None:
    """Print each Lightning log message once, and not its product tips.

    The `lightning` package logger has its own stderr handler and also propagates to the root logger, where
    Hydra's handlers print the message again (and write it to the run's log file). Once Hydra has configured
    logging, the package's own console handler goes; with Hydra's job logging disabled it stays.
    Call after importing lightning: the import adds the handler.
    """
    rank_zero_logger = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if not any(isinstance(f, _NoProductTips) for f in rank_zero_logger.filters):
        rank_zero_logger.addFilter(_NoProductTips())
    if not logging.getLogger().handlers:
        return
    package_logger = logging.getLogger("lightning")
    for handler in list(package_logger.handlers):
        if type(handler) is logging.StreamHandler:  # a console handler, not a file handler
            package_logger.removeHandler(handler)


def train(cfg: DictConfig, stop_requests: StopRequests | None = None) -> dict[str, Any]:
    """Run one training job; returns the summary (raises on failure, `TrainingInterrupted` on a signal)."""
    import lightning.pytorch as pl

    _one_line_per_log_message()
    output_dir = _output_dir()
    initial = init_from_model_file(cfg)  # before validation: the file decides gen, scale, color, value_range
    validate_train_config(cfg)
    check_accelerator(cfg, HydraConfig.get().runtime.choices.get("trainer"))  # before any data or model work
    pl.seed_everything(int(cfg.seed), workers=True, verbose=False)

    ckpt_path = cfg.ckpt_path
    if ckpt_path and not Path(ckpt_path).is_file():
        raise SetupError(f"ckpt_path={ckpt_path}: file not found")
    if cfg.init_from and not Path(cfg.init_from).is_file():  # before the model is built
        raise SetupError(f"init_from={cfg.init_from}: file not found (give init_from=<a run's checkpoint>, e.g. "
                         f"outputs/<date>/<time>/checkpoints/best.ckpt, or a model file .pth/.safetensors)")
    if cfg.resume == "auto" and not ckpt_path:
        done = _completed_summary(cfg, output_dir)
        if done is not None:  # e.g. the finished jobs of a sweep that is being resumed
            print(f"resume=auto: {output_dir} already completed {done['global_step']} steps; nothing to do",
                  flush=True)
            return done
        found = find_resume_checkpoint(cfg, output_dir)
        ckpt_path = str(found) if found else None
        print(f"resume=auto: {'resuming from ' + ckpt_path if found else 'no unfinished run found, starting fresh'}",
              flush=True)
    resume_from = None
    if ckpt_path:  # weights-only: a file holding code is refused here, before anything is built
        resume_from = _read_resume_checkpoint(Path(ckpt_path), "ckpt_path" if cfg.ckpt_path else None)
    # a checkpoint sits in <run dir>/checkpoints/: that run's log and W&B run are the ones to continue
    resumed = (Path(ckpt_path).resolve().parent.parent, int(resume_from["global_step"])) if ckpt_path else None
    if ckpt_path is None:
        _archive_earlier_run(output_dir)
    resume_check = (resume_from, ckpt_path, "ckpt_path" if cfg.ckpt_path else "resume=auto") if ckpt_path else None
    datamodule, module, trainer, checkpointer, params = _build(cfg, output_dir, resumed, stop_requests, resume_check,
                                                               initial)
    del initial
    del resume_from, resume_check  # memory-mapped; Lightning reads the file itself

    started = time.time()
    # The EMA copy of G is in eval mode on purpose (it is never trained); Lightning's notice about it is noise.
    warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode at the start of training.*")
    # Our sample stream restarts at the checkpoint's step (data/sampling.py), so a mid-epoch resume is exact;
    # Lightning cannot see that and warns that the loader is not resumable.
    warnings.filterwarnings("ignore", message=r".*resuming from a checkpoint that ended before the epoch ended.*")
    # lightning 2.6 calls an API torch 2.14 deprecated, once per run; nothing a user can act on.
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)` is deprecated.*")
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    if trainer.interrupted:
        raise KeyboardInterrupt
    metrics = _final_metrics(trainer)
    if checkpointer.last_validated_step != trainer.global_step:
        trainer.validate(module, datamodule=datamodule, verbose=False)  # final numbers at the final step
        metrics = _final_metrics(trainer)
    summary = {
        "status": "completed", "error": None, "output_dir": str(output_dir),
        "global_step": int(trainer.global_step), "seconds": round(time.time() - started, 1),
        "final": metrics, "best": {"val/psnr_y": checkpointer.best_score, "step": checkpointer.best_step},
        "params": params, "precision": str(cfg.precision), "model": str(cfg.model_name),
    }
    from sr_lightning.wandb_utils import log_final_summary

    log_final_summary(trainer.loggers, summary)  # no-op without a W&B logger
    return summary


def main(cfg: DictConfig) -> int:
    from sr_lightning.interrupt import StopRequests, TrainingInterrupted

    output_dir = _output_dir()
    print(f"output directory: {output_dir}", flush=True)
    started = False
    try:
        with StopRequests() as stop_requests:
            summary = train(cfg, stop_requests)
    except (TrainingInterrupted, KeyboardInterrupt) as err:
        stop = err if isinstance(err, TrainingInterrupted) else TrainingInterrupted("SIGINT")
        return _record_interruption(cfg, output_dir, stop)
    except BaseException as err:  # noqa: BLE001 - every failure is recorded before it propagates
        started = _training_started(output_dir)
        err = _disk_full(err) or err  # a full disk is reported as such, whatever failed next because of it
        message = _one_line(err)
        _write_small(output_dir / "error.log", traceback.format_exc(), fallback=message + "\n")
        try:
            write_summary(output_dir, status="failed", error=message, output_dir=str(output_dir),
                          model=str(OmegaConf.select(cfg, "model_name", default="?")))
        except OSError as write_error:  # a full disk may not even take the summary; say so, keep the real error
            print(f"(summary.json not written: {write_error.strerror or write_error})", file=sys.stderr)
        from sr_lightning.wandb_utils import log_failure

        log_failure(message)  # marks an open W&B run failed and closes it (no-op without one)
        if _is_multirun():
            # Recorded as failed; the other jobs of the sweep still run (Hydra would stop at a raise).
            print(f"job failed: {message} (traceback: {output_dir / 'error.log'})", file=sys.stderr)
            return 1
        if started and not _is_user_error(err):
            raise  # a bug during training: keep the whole traceback
        print(f"error: {message}", file=sys.stderr)
        print(f"(full traceback: {output_dir / 'error.log'})", file=sys.stderr)
        return 2
    write_summary(output_dir, **summary)
    final = summary["final"]
    if "val/psnr_y" in final:
        print(f"validation: PSNR(Y) {final['val/psnr_y']:.2f} dB (bicubic {final.get('val/bicubic_psnr_y', float('nan')):.2f}), "
              f"SSIM(Y) {final.get('val/ssim_y', float('nan')):.4f} after {summary['global_step']} steps", flush=True)
    print(f"output directory: {output_dir}", flush=True)
    return 0


def _record_interruption(cfg: DictConfig, output_dir: Path, stop: TrainingInterrupted) -> int:
    """summary.json says where the run stopped and how to continue; a sweep stops too (no further jobs)."""
    from sr_lightning.wandb_utils import log_failure

    last = output_dir / "checkpoints" / "last.ckpt"
    resume = _resume_command(output_dir)
    if stop.checkpoint is not None:
        kept = f"last.ckpt saved at step {stop.step}"
    elif last.is_file():
        kept = f"last.ckpt kept from step {_checkpoint_step(last, key=None)}"
    else:
        kept, resume = "no checkpoint yet (stopped before training)", None
    write_summary(output_dir, status="interrupted", error=str(stop), signal=stop.signal_name,
                  global_step=stop.step, checkpoint=str(last) if last.is_file() else None,
                  resume_command=resume, output_dir=str(output_dir),
                  model=str(OmegaConf.select(cfg, "model_name", default="?")))
    if _first_process():
        print(f"{stop}; {kept}" + (f"; resume with: {resume}" if resume and not _is_multirun() else ""),
              file=sys.stderr, flush=True)
    log_failure(str(stop), status="interrupted", exit_code=stop.exit_code)
    if _is_multirun():
        stop.sweep_dir = Path(HydraConfig.get().sweep.dir)
        raise stop  # out through Hydra's launcher: the remaining jobs of the sweep do not start
    return stop.exit_code


def _resume_command(output_dir: Path) -> str:
    """The run's own command line again, in its folder, with resume=auto."""
    import shlex

    task = [o for o in HydraConfig.get().overrides.task if o.split("=")[0].lstrip("+~") not in ("resume", "ckpt_path")]
    return shlex.join(["python", "-m", "sr_lightning", "train", *task, f"hydra.run.dir={output_dir}", "resume=auto"])


def _disk_full(err: BaseException) -> OSError | None:
    """The disk-full error behind `err` (its cause or context chain), preferring our checkpoint's message
    (folder + bytes needed) to the OSError of whatever wrote next (Lightning's logger teardown, error.log)."""
    from sr_lightning.checkpoint import DISK_FULL_ERRNOS, DiskFullError

    chain, seen = [], set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        chain.append(err)
        err = err.__cause__ or err.__context__
    found = [e for e in chain if isinstance(e, OSError) and e.errno in DISK_FULL_ERRNOS]
    ours = [e for e in found if isinstance(e, DiskFullError)]
    return (ours or found or [None])[0]


def _write_small(path: Path, text: str, fallback: str) -> None:
    """A small file on a disk that may be full: the text, else the one-line fallback, never an empty file."""
    for content in (text, fallback):
        try:
            path.write_text(content)
            return
        except OSError:
            continue
    path.unlink(missing_ok=True)


def _training_started(output_dir: Path) -> bool:
    return (output_dir / "checkpoints" / "last.ckpt").exists()


def _is_user_error(err: BaseException) -> bool:
    """Errors about the user's input or environment: one line, even after training started."""
    from sr_lightning.checkpoint import CheckpointError
    from sr_lightning.data.datasets import DatasetError
    from sr_lightning.data.imageio import ImageReadError
    from sr_lightning.losses import MissingWeightsError
    from sr_lightning.module import NonFiniteLossError

    from sr_lightning.checkpoint import DISK_FULL_ERRNOS

    if isinstance(err, OSError) and err.errno in DISK_FULL_ERRNOS:  # the environment, not a bug
        return True
    return isinstance(err, (ConfigError, SetupError, NonFiniteLossError, FileNotFoundError, CheckpointError,
                            DatasetError, ImageReadError, MissingWeightsError))


def _one_line(err: BaseException) -> str:
    """Hydra wraps errors raised while instantiating `_target_`s; show the cause, on one line."""
    from hydra.errors import InstantiationException

    from sr_lightning.checkpoint import DISK_FULL_ERRNOS, DiskFullError

    while isinstance(err, InstantiationException) and err.__cause__ is not None:
        err = err.__cause__
    if isinstance(err, DiskFullError):
        return str(err.strerror)  # str(OSError) would prefix "[Errno 28]"
    if isinstance(err, OSError) and err.errno in DISK_FULL_ERRNOS:  # e.g. while writing metrics.csv or an image
        return (f"disk full while writing {err.filename or 'a file of the run'} ({err.strerror}); free space there "
                f"(or give hydra.run.dir= on another disk), then continue with resume=auto")
    return " ".join(str(err).split()) or err.__class__.__name__


class SweepSummaryCallback(Callback):
    """Hydra callback: after a multirun, one line per job (completed / failed) from each summary.json."""

    failed_jobs = 0  # read by cli.py in the main process: parallel launchers run jobs in other processes

    def on_multirun_end(self, config, **kwargs) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        rows = []
        SweepSummaryCallback.failed_jobs = 0
        for summary in sorted(sweep_dir.glob("*/summary.json"), key=lambda p: p.parent.name):
            data = json.loads(summary.read_text())
            SweepSummaryCallback.failed_jobs += data.get("status") != "completed"
            psnr = (data.get("final") or {}).get("val/psnr_y")
            rows.append(f"  job {summary.parent.name}: {data.get('status')}"
                        + (f"  PSNR(Y) {psnr:.2f}" if psnr is not None else "")
                        + (f"  error: {data['error']}" if data.get("error") else ""))
        if rows:
            print(f"sweep {sweep_dir}:\n" + "\n".join(rows) +
                  f"\ntable and plots: python -m sr_lightning report {sweep_dir}", flush=True)
