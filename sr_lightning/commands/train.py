"""`python -m sr_lightning train ...`: compose, validate, build, fit, and leave a summary.

The run itself is `sr_lightning.training.run_training`; this command adds what a command line needs: a user
error is one line `error: ...` (exit 2) with the full traceback in `<run dir>/error.log`, and every run ends
with `<run dir>/summary.json` (completed | failed | interrupted; see `sr_lightning.run_folder`).
"""
from __future__ import annotations

import sys
import traceback
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from sr_lightning import run_folder
from sr_lightning.errors import EXIT_USER_ERROR, UserError
from sr_lightning.interrupt import TrainingInterrupted


def _is_multirun() -> bool:
    return HydraConfig.get().mode == RunMode.MULTIRUN


def _model_name(cfg: DictConfig) -> str:
    return str(OmegaConf.select(cfg, "model_name", default="?"))


def main(cfg: DictConfig) -> int:
    from sr_lightning.interrupt import StopRequests
    from sr_lightning.training import run_training

    output_dir = Path(HydraConfig.get().runtime.output_dir)
    print(f"output directory: {output_dir}", flush=True)
    try:
        with StopRequests() as stop_requests:
            summary = run_training(cfg, output_dir, HydraConfig.get().runtime.choices.get("trainer"), stop_requests)
    except (TrainingInterrupted, KeyboardInterrupt) as err:
        stop = err if isinstance(err, TrainingInterrupted) else TrainingInterrupted("SIGINT")
        return _record_interruption(cfg, output_dir, stop)
    except BaseException as err:  # noqa: BLE001 - every failure is recorded before it propagates
        return _record_failure(cfg, output_dir, err)
    run_folder.write_summary(output_dir, summary)
    final = summary.final
    if "val/psnr_y" in final:
        print(f"validation: PSNR(Y) {final['val/psnr_y']:.2f} dB (bicubic "
              f"{final.get('val/bicubic_psnr_y', float('nan')):.2f}), SSIM(Y) {final.get('val/ssim_y', float('nan')):.4f}"
              f" after {summary.global_step} steps", flush=True)
    print(f"output directory: {output_dir}", flush=True)
    return 0


def _record_failure(cfg: DictConfig, output_dir: Path, err: BaseException) -> int:
    """error.log (the traceback), summary.json (failed, the one-line message), the W&B run marked failed; then
    one line and exit 2 for a user error, the traceback for a bug during training, exit 1 for a sweep job."""
    from sr_lightning.wandb_utils import log_failure

    started = run_folder.last_checkpoint(output_dir).exists()
    err = _disk_full(err) or err  # a full disk is reported as such, whatever failed next because of it
    message = _one_line(err)
    _write_small(output_dir / "error.log", traceback.format_exc(), fallback=message + "\n")
    try:
        run_folder.write_summary(output_dir, run_folder.RunSummary(
            status=run_folder.FAILED, error=message, output_dir=str(output_dir), model=_model_name(cfg)))
    except OSError as write_error:  # a full disk may not even take the summary; say so, keep the real error
        print(f"(summary.json not written: {write_error.strerror or write_error})", file=sys.stderr)
    log_failure(message)  # marks an open W&B run failed and closes it (no-op without one)
    if _is_multirun():
        # Recorded as failed; the other jobs of the sweep still run (Hydra would stop at a raise).
        print(f"job failed: {message} (traceback: {output_dir / 'error.log'})", file=sys.stderr)
        return 1
    if started and not _is_user_error(err):
        raise err  # a bug during training: keep the whole traceback
    print(f"error: {message}", file=sys.stderr)
    print(f"(full traceback: {output_dir / 'error.log'})", file=sys.stderr)
    return EXIT_USER_ERROR


def _record_interruption(cfg: DictConfig, output_dir: Path, stop: TrainingInterrupted) -> int:
    """summary.json says where the run stopped and how to continue; a sweep stops too (no further jobs)."""
    from sr_lightning.training import checkpoint_step
    from sr_lightning.wandb_utils import log_failure

    last = run_folder.last_checkpoint(output_dir)
    resume = run_folder.resume_command(list(HydraConfig.get().overrides.task), output_dir)
    if stop.checkpoint is not None:
        kept = f"last.ckpt saved at step {stop.step}"
    elif last.is_file():
        kept = f"last.ckpt kept from step {checkpoint_step(last, key=None)}"
    else:
        kept, resume = "no checkpoint yet (stopped before training)", None
    run_folder.write_summary(output_dir, run_folder.RunSummary(
        status=run_folder.INTERRUPTED, error=str(stop), signal=stop.signal_name, global_step=stop.step,
        checkpoint=str(last) if last.is_file() else None, resume_command=resume, output_dir=str(output_dir),
        model=_model_name(cfg)))
    if run_folder.first_process():
        print(f"{stop}; {kept}" + (f"; resume with: {resume}" if resume and not _is_multirun() else ""),
              file=sys.stderr, flush=True)
    log_failure(str(stop), status="interrupted", exit_code=stop.exit_code)
    if _is_multirun():
        stop.sweep_dir = Path(HydraConfig.get().sweep.dir)
        raise stop  # out through Hydra's launcher: the remaining jobs of the sweep do not start
    return stop.exit_code


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


def _is_user_error(err: BaseException) -> bool:
    """Errors about the user's input or environment: one line, even after training started."""
    from sr_lightning.checkpoint import DISK_FULL_ERRNOS

    if isinstance(err, OSError) and err.errno in DISK_FULL_ERRNOS:  # the environment, not a bug
        return True
    # UserError: config, checkpoints, data, images, missing loss weights, a loss that went non-finite
    return isinstance(err, (UserError, FileNotFoundError))


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
