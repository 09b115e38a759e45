"""One training run as a library call: checks, resume, build (data, module, loggers, Trainer), fit, summary.

`run_training(cfg, output_dir)` is what `python -m sr_lightning train` does between reading the command line
and printing the result; the command adds only the one-line error handling and the failure records.
Everything a user can get wrong (config values, missing data or weights, a bad checkpoint) raises a `UserError`
before training starts.
"""
from __future__ import annotations

import functools
import logging
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, OmegaConf, open_dict

from sr_lightning import run_folder
from sr_lightning.config import check_accelerator, validate_train_config
from sr_lightning.init_from import InitialGenerator, SetupError, load_initial_weights, read_initial_generator
from sr_lightning.precision import accelerator_device_type, resolve_precision

if TYPE_CHECKING:
    from sr_lightning.interrupt import StopRequests

log = logging.getLogger("sr_lightning.train")


# ---------------------------------------------------------------------------------------------- resume checks
def read_resume_checkpoint(path: Path, key: str | None = "ckpt_path") -> dict[str, Any]:
    """A checkpoint to resume from, weights-only (a file with pickled code is refused, nothing of it runs) and
    memory-mapped (the weights are not read until used). A slim best.ckpt cannot resume: it lacks D and the
    optimiser states."""
    from sr_lightning.checkpoint import SLIM_MARKER, load_checkpoint_file

    checkpoint = load_checkpoint_file(path, key=key, mmap=True)
    label = f"{key}={path}" if key else str(path)
    if isinstance(checkpoint, dict) and checkpoint.get(SLIM_MARKER):
        last = Path(path).with_name(run_folder.LAST_CHECKPOINT)
        raise SetupError(f"{label}: a slim best.ckpt (generator weights only, no optimiser states) cannot resume a "
                         f"run; resume from {last} (ckpt_path={last} or resume=auto), or start a new run from its "
                         f"generator with init_from={path}")
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("global_step"), int) \
            or not isinstance(checkpoint.get("state_dict"), dict):
        raise SetupError(f"{label}: not a training checkpoint of `python -m sr_lightning train` (no global_step / "
                         f"state_dict); to start from a generator's weights use init_from=")
    return checkpoint


def checkpoint_step(path: Path, key: str | None = "ckpt_path") -> int:
    """The global step a checkpoint was written at (memory-mapped: the weights are not read)."""
    return int(read_resume_checkpoint(path, key)["global_step"])


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


# ---------------------------------------------------------------------------------------------- compile
@functools.cache
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
        if device_type not in _COMPILE_WARNED and run_folder.first_process():
            _COMPILE_WARNED.add(device_type)
            log.warning("module.compile=true: torch.compile does not work on %s here (%s); training runs "
                        "uncompiled", device_type, problem)
        return False
    module.gen.compile()
    if module.disc is not None:
        module.disc.compile()
    return True


# ---------------------------------------------------------------------------------------------- logs
# Lightning's INFO lines at every Trainer start and end that say nothing a user acts on: which accelerators exist
# (our own line names precision and device), the validation fraction, and why fit stopped (max_steps).
_NOISE = ("💡 Tip", "GPU available:", "TPU available:", "HPU available:", "IPU available:",
          "`Trainer(limit_val_batches=", "`Trainer(limit_train_batches=", "`Trainer(val_check_interval=",
          "`Trainer.fit` stopped: `max_steps=")


class _QuietLightning(logging.Filter):
    """Drops Lightning's start-up notices and product tips at INFO and below; warnings always pass."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno > logging.INFO or not str(record.msg).startswith(_NOISE)


def quiet_lightning_logs() -> None:
    """Print each Lightning log message once, without its start-up notices and product tips.

    The `lightning` package logger has its own stderr handler and also propagates to the root logger, where
    Hydra's handlers print the message again (and write it to the run's log file). Once Hydra has configured
    logging, the package's own console handler goes; with Hydra's job logging disabled it stays.
    Call after importing lightning: the import adds the handler.
    """
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        rank_zero_logger = logging.getLogger(name)
        if not any(isinstance(f, _QuietLightning) for f in rank_zero_logger.filters):
            rank_zero_logger.addFilter(_QuietLightning())
    if not logging.getLogger().handlers:
        return
    package_logger = logging.getLogger("lightning")
    for handler in list(package_logger.handlers):
        if type(handler) is logging.StreamHandler:  # a console handler, not a file handler
            package_logger.removeHandler(handler)


def flat_config(cfg: DictConfig) -> dict[str, Any]:
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


def make_logger(logger_cfg: DictConfig, output_dir: Path, resumed: tuple[Path, int] | None):
    from hydra.utils import instantiate

    from sr_lightning import wandb_utils

    if str(logger_cfg.get("_target_", "")).endswith("wandb_utils.wandb_logger") and logger_cfg.get("id") is None:
        # one W&B run per training run, also across resumes (see wandb_utils)
        run_id = wandb_utils.continued_run_id(output_dir, resumed[0] if resumed else None,
                                              write=run_folder.first_process())
        return instantiate(logger_cfg, id=run_id, resume="allow")
    return instantiate(logger_cfg)


# ---------------------------------------------------------------------------------------------- build
@dataclass
class BuiltRun:
    datamodule: Any
    module: Any
    trainer: Any
    checkpointer: Any
    params: dict[str, int]


def trainer_overrides(cfg: DictConfig) -> dict[str, Any]:
    """Trainer arguments derived from the config: a run shorter than `trainer.log_every_n_steps` would log no
    training loss at all, so the interval is at most the run's length."""
    every = int(OmegaConf.select(cfg, "trainer.log_every_n_steps", default=50) or 50)
    max_steps = int(OmegaConf.select(cfg, "trainer.max_steps", default=-1) or -1)
    return {"log_every_n_steps": min(every, max_steps) if max_steps > 0 else every}


def build_run(cfg: DictConfig, output_dir: Path, resumed: tuple[Path, int] | None = None,
              stop_requests: StopRequests | None = None, resume_check: tuple[dict, str, str] | None = None,
              initial: InitialGenerator | None = None) -> BuiltRun:
    """Data, module, trainer and checkpointer of a run; `resumed` = (run dir of the checkpoint, its step).

    With `stop_requests` a Ctrl-C / SIGTERM during training ends the run after the current step, with
    last.ckpt saved at that step. `resume_check` = (checkpoint, path, option): the checkpoint must hold the
    module's networks; checked before any logger touches the run's files."""
    from hydra.utils import instantiate

    from sr_lightning.callbacks import GracefulStop, SRCheckpoint
    from sr_lightning.checkpoint_io import AtomicCheckpointIO
    from sr_lightning.models import count_parameters
    from sr_lightning.module import SRModule

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
    if resume_check is not None:
        check_resume_architecture(module, *resume_check)
    compiled = bool(cfg.module.get("compile")) and compile_networks(
        module, accelerator_device_type(str(cfg.trainer.accelerator)))

    g_params = count_parameters(module.gen)
    d_params = count_parameters(module.disc) if module.disc is not None else 0
    print(f"model={cfg.model_name}  G {cfg.gen._target_.rsplit('.', 1)[-1]}: {g_params:,} parameters"
          + (f"  D {cfg.disc._target_.rsplit('.', 1)[-1]}: {d_params:,} parameters" if module.disc is not None
             else "  (no D)")
          + f"  precision={precision} channels_last={channels_last}" + ("  compiled" if compiled else ""), flush=True)

    loggers = [make_logger(c, output_dir, resumed) for c in (cfg.get("logger") or {}).values() if c]
    for logger in loggers:
        if resumed is not None and hasattr(logger, "continue_from"):
            logger.continue_from(*resumed)  # the CSV log continues instead of starting over
        if hasattr(logger, "log_hyperparams"):
            logger.log_hyperparams(flat_config(cfg))  # the one copy of the config the loggers get
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c]
    checkpointer = SRCheckpoint(output_dir / run_folder.CHECKPOINT_DIR, every_n_steps=cfg.checkpoint_every_n_steps)
    callbacks.append(checkpointer)
    if stop_requests is not None:
        callbacks.append(GracefulStop(stop_requests, checkpointer))  # after the checkpointer's periodic save
    trainer = instantiate(cfg.trainer, logger=loggers or False, callbacks=callbacks,
                          plugins=[AtomicCheckpointIO()], precision="32-true",
                          default_root_dir=str(output_dir), enable_checkpointing=False, **trainer_overrides(cfg))
    return BuiltRun(datamodule, module, trainer, checkpointer, {"gen": g_params, "disc": d_params})


def final_metrics(trainer) -> dict[str, float]:
    return {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}


# ---------------------------------------------------------------------------------------------- run
def _resume_source(cfg: DictConfig, output_dir: Path) -> tuple[str | None, str, run_folder.RunSummary | None]:
    """(checkpoint to resume from or None, the option that named it, the summary of a run already done)."""
    if cfg.ckpt_path:
        if not Path(cfg.ckpt_path).is_file():
            raise SetupError(f"ckpt_path={cfg.ckpt_path}: file not found")
        return str(cfg.ckpt_path), "ckpt_path", None
    if cfg.resume != "auto":
        return None, "", None
    max_steps = int(OmegaConf.select(cfg, "trainer.max_steps", default=-1))
    done = run_folder.completed_summary(output_dir, max_steps)
    if done is not None:  # e.g. the finished jobs of a sweep that is being resumed
        return None, "resume=auto", done
    found = run_folder.find_resume_checkpoint(output_dir, Path(cfg.paths.log_dir))
    print(f"resume=auto: {'resuming from ' + str(found) if found else 'no unfinished run found, starting fresh'}",
          flush=True)
    return (str(found) if found else None), "resume=auto", None


def _silence_known_warnings() -> None:
    # The EMA copy of G is in eval mode on purpose (it is never trained); Lightning's notice about it is noise.
    warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode at the start of training.*")
    # Our sample stream restarts at the checkpoint's step (data/sampling.py), so a mid-epoch resume is exact;
    # Lightning cannot see that and warns that the loader is not resumable.
    warnings.filterwarnings("ignore", message=r".*resuming from a checkpoint that ended before the epoch ended.*")
    # lightning 2.6 calls an API torch 2.14 deprecated, once per run; nothing a user can act on.
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)` is deprecated.*")


def run_training(cfg: DictConfig, output_dir: Path, trainer_choice: str | None = None,
                 stop_requests: StopRequests | None = None,
                 user_overrides: dict[str, str] | None = None) -> run_folder.RunSummary:
    """Run one training job into `output_dir`; returns its summary (raises on failure, `TrainingInterrupted` on
    a signal). `trainer_choice` is the trainer preset picked (for the GPU check's message); `user_overrides`
    the command line's key=value (checked against an init_from model file; default: Hydra's)."""
    initial = read_initial_generator(cfg, user_overrides)  # first: a model file decides gen, scale, color, ...
    validate_train_config(cfg)
    check_accelerator(cfg, trainer_choice)  # before any data or model work
    # Lightning after the checks: its import is ~2.5 s of the ~3 s a config mistake would otherwise take to report.
    import lightning.pytorch as pl

    quiet_lightning_logs()
    pl.seed_everything(int(cfg.seed), workers=True, verbose=False)

    ckpt_path, option, done = _resume_source(cfg, output_dir)
    if done is not None:
        print(f"resume=auto: {output_dir} already completed {done.global_step} steps; nothing to do", flush=True)
        return done
    resume_check = None
    resumed = None
    if ckpt_path:  # weights-only: a file holding code is refused here, before anything is built
        checkpoint = read_resume_checkpoint(Path(ckpt_path), "ckpt_path" if option == "ckpt_path" else None)
        resume_check = (checkpoint, ckpt_path, option)
        # a checkpoint sits in <run dir>/checkpoints/: that run's log and W&B run are the ones to continue
        resumed = (Path(ckpt_path).resolve().parent.parent, int(checkpoint["global_step"]))
    else:
        run_folder.archive_earlier_run(output_dir)
    built = build_run(cfg, output_dir, resumed, stop_requests, resume_check, initial)
    del initial, resume_check  # memory-mapped; Lightning reads the file itself

    started = time.time()
    _silence_known_warnings()
    trainer, checkpointer = built.trainer, built.checkpointer
    trainer.fit(built.module, datamodule=built.datamodule, ckpt_path=ckpt_path)
    if trainer.interrupted:
        raise KeyboardInterrupt
    if checkpointer.last_validated_step != trainer.global_step:
        trainer.validate(built.module, datamodule=built.datamodule, verbose=False)  # final numbers at the final step
    summary = run_folder.RunSummary(
        status=run_folder.COMPLETED, output_dir=str(output_dir), model=str(cfg.model_name),
        global_step=int(trainer.global_step), seconds=round(time.time() - started, 1),
        final=final_metrics(trainer), best={run_folder.BEST_METRIC: checkpointer.best_score, "step": checkpointer.best_step},
        params=built.params, precision=str(cfg.precision))
    from sr_lightning.wandb_utils import log_final_summary, sync_hint

    offline = log_final_summary(trainer.loggers, summary.to_dict())  # no-op without a W&B logger
    if offline:
        print(sync_hint(offline), flush=True)
    return summary
