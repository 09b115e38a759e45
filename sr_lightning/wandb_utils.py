"""Weights & Biases for runs and sweeps: offline by default, one group per sweep, a final results table.

`conf/logger/wandb.yaml` builds the logger with `wandb_logger(...)`:
* mode: offline unless `logger.wandb.offline=false` or `WANDB_MODE=online` says otherwise, so a fresh
  machine needs no account; `wandb sync <run dir>/wandb/offline-run-*` uploads later.
* group: the jobs of one sweep share the group `sweep_group_name(<sweep dir>)` (e.g. `2024-05-01_12-30-00`,
  prefixed by the experiment: `ablation-gen_blocks_2024-05-01_12-30-00`), so the dashboard shows them side by
  side; a single run has no group unless `logger.wandb.group=...` names one.
* the run folder is `<run dir>/wandb/` (or `$WANDB_DIR` when set), beside checkpoints and metrics.csv.
* resume: the run id is kept in `<run dir>/wandb_run_id`; a resumed training run reuses the id of the run it
  continues (`continued_run_id`) with `resume="allow"`, so the dashboard shows one run with one curve.

* name: the swept keys and this job's values (`lr=1e-4,gen.blocks=8`); the model name outside a sweep.

The train command logs the config once, flattened (`gen.blocks`, `crop`, `lr`, ... as config keys), the module
logs metrics and image grids, and `log_final_summary` adds the final numbers and a results table at the end
and returns where an offline run was written (for the `wandb sync` line the run prints).
"""
from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

ONLINE_MODES = ("online", "run")  # WANDB_MODE values that mean "upload"
RUN_ID_FILE = "wandb_run_id"
# Final metrics in the per-run results table (the columns of the reports' tables follow the config columns).
TABLE_METRICS = ("val/psnr_y", "val/ssim_y", "val/bicubic_psnr_y", "val/bicubic_ssim_y", "val/psnr_rgb", "val/ssim_rgb")


def resolve_mode(offline: bool | None) -> str:
    """W&B mode: an explicit `offline` wins, then WANDB_MODE, then offline (no account needed)."""
    if offline is not None:
        return "offline" if offline else "online"
    env = os.environ.get("WANDB_MODE", "").strip().lower()
    if env in ONLINE_MODES:
        return "online"
    if env == "disabled":
        return "disabled"
    return "offline"


def continued_run_id(output_dir: Path, continued_dir: Path | None = None, write: bool = True) -> str:
    """The W&B run id of the run in `output_dir`: the id of the run it continues, if that one had an id, else new.

    The id is written to `<output_dir>/wandb_run_id` (`write=False` in the DDP processes after the first, which
    only read), so a later resume of this folder continues the same W&B run.
    """
    import secrets

    own = Path(output_dir) / RUN_ID_FILE
    source = Path(continued_dir) / RUN_ID_FILE if continued_dir is not None else None
    if source is not None and source.is_file():
        run_id = source.read_text().strip()
    elif not write and own.is_file():
        run_id = own.read_text().strip()
    else:
        run_id = secrets.token_hex(4)  # wandb's own ids are 8 characters of [a-z0-9] too
    if write:
        own.parent.mkdir(parents=True, exist_ok=True)
        own.write_text(run_id + "\n")
    return run_id


def sweep_group_name(sweep_dir: str | Path, experiment: str | None = None) -> str:
    """Group shared by the jobs of one sweep: `<experiment>_<date>_<time>` from `.../multirun/<date>/<time>`."""
    sweep_dir = Path(sweep_dir)
    stamp = f"{sweep_dir.parent.name}_{sweep_dir.name}" if sweep_dir.parent.name else sweep_dir.name
    return f"{experiment.replace('/', '-')}_{stamp}" if experiment else stamp


def _hydra_run_info() -> dict[str, Any]:
    """What the Hydra job knows about itself (empty outside a Hydra job)."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hydra_cfg = HydraConfig.get()
    except (ImportError, ValueError):
        return {}
    output_dir = Path(hydra_cfg.runtime.output_dir)
    return {
        "multirun": hydra_cfg.mode == RunMode.MULTIRUN,
        "output_dir": output_dir,
        # <sweep dir>/<job num>: the parent of the job dir is the sweep dir (`hydra.sweep.dir` itself may
        # hold a `${now:...}` that a job would resolve to its own start time).
        "sweep_dir": output_dir.parent,
        "job_num": hydra_cfg.job.get("num"),
        # The job's own overrides, minus the logger choice the CLI adds to sweeps and Hydra's own settings.
        "overrides": [str(o) for o in hydra_cfg.overrides.task
                      if not str(o).lstrip("+~").startswith(("logger=", "logger.", "hydra."))],
        "experiment": hydra_cfg.runtime.choices.get("experiment"),
        "model": hydra_cfg.runtime.choices.get("model"),
    }


def run_name(info: dict[str, Any]) -> str:
    """A sweep job: its values of the swept keys (`lr=1e-4,gen.blocks=8`), the keys that tell the jobs of one
    group apart; a single run (or a sweep that varies nothing): the model name."""
    from sr_lightning.sweep import sweep_axes

    name = info.get("model") or "run"
    if info.get("multirun"):
        values = {o.split("=", 1)[0].lstrip("+~"): o.split("=", 1)[1] for o in info.get("overrides", []) if "=" in o}
        swept = [f"{key}={values[key]}" for key in sweep_axes(info["sweep_dir"]) if key in values]
        name = ",".join(swept) or name
    return name[:128]


def _finish_stale_run() -> None:
    """A run still open when the next job of a sequential sweep starts belongs to a job that failed."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and wandb.run is not None:
        if "status" not in wandb.run.summary.keys():
            wandb.run.summary["status"] = "failed"
        wandb.finish(exit_code=1)


def wandb_logger(project: str = "sr-lightning", name: str | None = None, group: str | None = None,
                 offline: bool | None = None, save_dir: str | None = None, job_type: str = "train",
                 tags: Iterable[str] | None = None, log_model: bool = False, **kwargs: Any):
    """A Lightning WandbLogger with this project's defaults (see the module docstring).

    `name`/`group`/`save_dir` left `None` are derived from the Hydra job: name `run_name`, the sweep's group in
    a multirun, the run directory.
    """
    from lightning.pytorch.loggers import WandbLogger

    info = _hydra_run_info()
    mode = resolve_mode(offline)
    if log_model and mode != "online":
        raise ValueError("logger.wandb.log_model needs an online run (checkpoints are uploaded); "
                         "set logger.wandb.offline=false or keep log_model=false")
    if group is None and info.get("multirun"):
        group = sweep_group_name(info["sweep_dir"], info.get("experiment"))
    if name is None and info:
        name = run_name(info)
    if save_dir is None:
        save_dir = os.environ.get("WANDB_DIR") or (str(info["output_dir"]) if info else None)
    if save_dir is not None:
        Path(save_dir).mkdir(parents=True, exist_ok=True)
    _finish_stale_run()
    # `offline=False` keeps Lightning from forcing WANDB_MODE=dryrun process-wide; the mode goes to wandb.init.
    logger = WandbLogger(project=project, name=name, group=group, save_dir=save_dir, job_type=job_type,
                         tags=list(tags or []), log_model=log_model, offline=False, mode=mode, **kwargs)
    # Lightning always passes `anonymous=None`, which current wandb answers with a deprecation warning per run.
    init_args = getattr(logger, "_wandb_init", {})
    if init_args.get("anonymous") is None:
        init_args.pop("anonymous", None)
    return logger


def _wandb_loggers(loggers: Iterable[Any]) -> list[Any]:
    from lightning.pytorch.loggers import WandbLogger  # does not import wandb itself
    from lightning.pytorch.utilities import rank_zero_only

    if rank_zero_only.rank != 0:
        return []
    return [logger for logger in loggers or [] if isinstance(logger, WandbLogger)]


def results_row(config: dict[str, Any], summary: dict[str, Any]) -> tuple[list[str], list[Any]]:
    """One row of the final results table: the reports' config columns, then the final metrics."""
    final = summary.get("final") or {}
    params = summary.get("params") or {}
    columns = ["model", "gen.blocks", "disc.blocks", "crop", "lr", "steps", "status", "global_step",
               *[m.removeprefix("val/") for m in TABLE_METRICS], "best_psnr_y", "params_gen", "params_disc"]
    model = summary.get("model") or config.get("model_name")
    row = [model, config.get("gen.blocks"), config.get("disc.blocks"), config.get("crop"), config.get("lr"),
           config.get("trainer.max_steps"), summary.get("status"), summary.get("global_step"),
           *[final.get(m) for m in TABLE_METRICS], (summary.get("best") or {}).get("val/psnr_y"),
           params.get("gen"), params.get("disc")]
    return columns, row


def log_final_summary(loggers: Iterable[Any], summary: dict[str, Any]) -> list[Path]:
    """At the end of a run: final numbers into the W&B summary, a one-row `final_results` table, then close
    the run (the next job of a sequential sweep starts its own). Returns the folders of offline runs (what
    `wandb sync <folder>` uploads). No-op without a WandbLogger."""
    offline: list[Path] = []
    for logger in _wandb_loggers(loggers):
        run = logger.experiment
        flat: dict[str, Any] = {"status": summary.get("status"), "global_step": summary.get("global_step"),
                                "seconds": summary.get("seconds")}
        flat.update({f"final/{k}": v for k, v in (summary.get("final") or {}).items()})
        flat.update({f"best/{k}": v for k, v in (summary.get("best") or {}).items()})
        flat.update({f"params/{k}": v for k, v in (summary.get("params") or {}).items()})
        run.summary.update({k: v for k, v in flat.items() if v is not None})
        columns, row = results_row(dict(run.config), summary)
        logger.log_table(key="final_results", columns=columns, data=[row])
        if run.settings.mode == "offline":
            offline.append(Path(run.settings.sync_dir))
        run.finish()
    return offline


def sync_hint(offline_dirs: Iterable[Path]) -> str:
    """The lines a run prints after an offline W&B run: where it went and the command that uploads it."""
    import shlex

    return "\n".join(f"W&B offline run: {d}\nupload it with: wandb sync {shlex.quote(str(d))}" for d in offline_dirs)


def log_failure(error: str, status: str = "failed", exit_code: int = 1) -> None:
    """Mark the open W&B run (if any) as failed (or `status`, e.g. interrupted) with the one-line error, and
    close it. Safe to call always. An interrupted run keeps its id, so `resume=auto` continues it."""
    wandb = sys.modules.get("wandb")
    if wandb is None or wandb.run is None:
        return
    wandb.run.summary.update({"status": status, "error": error})
    wandb.finish(exit_code=exit_code)
