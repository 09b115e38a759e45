"""The run folder contract: what `train` leaves in `<run dir>` and what `report`, sweeps and `resume=auto` read.

A run folder (`outputs/<date>/<time>` or `<sweep dir>/<job num>`) holds Hydra's `.hydra/` (the command line in
`overrides.yaml`), `config_resolved.yaml`, `checkpoints/last.ckpt` (+ `best.ckpt`), `metrics.csv`, `images/`,
and at the end `summary.json`: one `RunSummary` (status completed | failed | interrupted, final and best
metrics, ...). This module is the only place that knows those names; `train` writes, the others read.
"""
from __future__ import annotations

import json
import os
import shlex
import sys
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from sr_lightning.errors import UserError

SUMMARY_FILE = "summary.json"
CHECKPOINT_DIR = "checkpoints"
LAST_CHECKPOINT = "last.ckpt"
BEST_CHECKPOINT = "best.ckpt"
OVERRIDES_FILE = Path(".hydra") / "overrides.yaml"

COMPLETED, FAILED, INTERRUPTED = "completed", "failed", "interrupted"
BEST_METRIC = "val/psnr_y"  # what `best` ranks by (and best.ckpt is chosen by)

# What a finished or interrupted run leaves in its folder (besides .hydra/, which Hydra has already rewritten).
RUN_RESULTS = ("checkpoints", "metrics.csv", SUMMARY_FILE, "images", "hparams.yaml", "config_resolved.yaml",
               "wandb_run_id")
# Overrides that say how a run was started, not what it trains: two runs differing only in these are one run.
_START_KEYS = ("resume", "ckpt_path")


class SummaryError(UserError, ValueError):
    """A summary.json that cannot be read."""


@dataclass
class RunSummary:
    """summary.json. Every field is written (None where it does not apply), so readers need no defaults.

    `best` is `{BEST_METRIC: value, "step": N}`: the validation after N training steps; `final` holds the
    `val/*` metrics at the last step. `signal`/`checkpoint`/`resume_command` describe an interrupted run.
    """

    status: str
    output_dir: str
    model: str = "?"
    error: str | None = None
    global_step: int | None = None
    seconds: float | None = None
    final: dict[str, float] = field(default_factory=dict)
    best: dict[str, Any] = field(default_factory=dict)
    params: dict[str, int] = field(default_factory=dict)
    precision: str | None = None
    signal: str | None = None
    checkpoint: str | None = None
    resume_command: str | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunSummary:
        """Unknown keys (a newer version's) are ignored; missing ones (an older version's) get the defaults."""
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values.setdefault("status", "incomplete")
        values.setdefault("output_dir", "")
        for key in ("final", "best", "params"):  # older summaries of failed runs have no such keys / null
            values[key] = values.get(key) or {}
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def best_score(self) -> float | None:
        return self.best.get(BEST_METRIC)

    @property
    def best_step(self) -> int | None:
        return self.best.get("step")


_RANK_VARIABLES = ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK")  # Lightning's order (rank_zero.py)


def first_process() -> bool:
    """False in every DDP process but the global first, before the Trainer exists: only that one writes here.

    Lightning's own rank (read at import from RANK / LOCAL_RANK / SLURM_PROCID, as `wandb_utils` uses it) covers
    the processes its launcher, torchrun and SLURM start; NODE_RANK covers the first process of a later node.
    """
    if "lightning.pytorch" in sys.modules:
        from lightning.pytorch.utilities import rank_zero_only

        rank = rank_zero_only.rank
    else:  # a mistake reported before training: the variables Lightning would read, without its ~2.5 s import
        rank = next((int(os.environ[k]) for k in _RANK_VARIABLES if os.environ.get(k, "").isdigit()), 0)
    return rank == 0 and os.environ.get("NODE_RANK", "0") == "0"


def summary_path(run_dir: Path) -> Path:
    return Path(run_dir) / SUMMARY_FILE


def last_checkpoint(run_dir: Path) -> Path:
    return Path(run_dir) / CHECKPOINT_DIR / LAST_CHECKPOINT


def write_summary(run_dir: Path, summary: RunSummary) -> None:
    """summary.json, written atomically and by one process: under DDP every process reaches the end of the run,
    and two renames of one temporary file race (the second finds it gone)."""
    if not first_process():
        return
    path = summary_path(run_dir)
    tmp = path.with_suffix(f".json.tmp{os.getpid()}")
    tmp.write_text(json.dumps(summary.to_dict(), indent=2, default=float))
    tmp.replace(path)


def read_summary(run_dir: Path) -> RunSummary | None:
    """The run's summary; None when it has none (still running, killed, out of time)."""
    path = summary_path(run_dir)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise SummaryError(f"{path}: not valid JSON ({err}); delete it or rerun the job") from err
    if not isinstance(data, dict):
        raise SummaryError(f"{path}: not a run summary (a JSON object); delete it or rerun the job")
    return RunSummary.from_dict(data)


def completed_summary(run_dir: Path, max_steps: int) -> RunSummary | None:
    """The run's summary when it records a completed run that already reached `max_steps` (-1: unbounded)."""
    summary = read_summary(run_dir)
    if summary is None or summary.status != COMPLETED or max_steps < 0:
        return None
    if summary.global_step is None or summary.global_step < max_steps:
        return None
    return summary


def run_overrides(run_dir: Path) -> list[str]:
    """The run's command-line overrides (from Hydra's copy), without how it was started or Hydra's settings."""
    from omegaconf import OmegaConf

    path = Path(run_dir) / OVERRIDES_FILE
    if not path.is_file():
        return []
    return [str(o) for o in OmegaConf.load(path) if str(o).split("=")[0].lstrip("+~") not in _START_KEYS
            and not str(o).startswith("hydra.")]


def find_resume_checkpoint(output_dir: Path, log_dir: Path) -> Path | None:
    """`resume=auto`: this run dir's last.ckpt, else the newest unfinished run under `log_dir` with the same
    overrides."""
    own = last_checkpoint(output_dir)
    if own.is_file():
        return own
    wanted = run_overrides(output_dir)
    candidates = []
    for ckpt in Path(log_dir).glob(f"**/{CHECKPOINT_DIR}/{LAST_CHECKPOINT}"):
        run_dir = ckpt.parent.parent
        if run_dir == output_dir:
            continue
        try:
            summary = read_summary(run_dir)
        except SummaryError:
            summary = None  # a half-written summary: the run did not finish cleanly
        if summary is not None and summary.status == COMPLETED:
            continue
        if run_overrides(run_dir) == wanted:
            candidates.append(ckpt)
    return max(candidates, key=lambda p: p.stat().st_mtime) if candidates else None


def resume_command(task_overrides: list[str], output_dir: Path) -> str:
    """The run's own command line again, in its folder, with resume=auto."""
    task = [o for o in task_overrides if o.split("=")[0].lstrip("+~") not in _START_KEYS]
    return shlex.join(["python", "-m", "sr_lightning", "train", *task, f"hydra.run.dir={output_dir}", "resume=auto"])


def archive_earlier_run(output_dir: Path) -> Path | None:
    """A fresh (not resumed) run in a folder holding another run's results moves them to `earlier-<n>/` first.

    That happens when `hydra.run.dir=` names a used folder without `resume=auto`; nothing is overwritten.
    """
    if not first_process():
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
