"""The run's CSV log (`<run dir>/metrics.csv`), kept across resumes.

Lightning's CSVLogger deletes an existing metrics.csv as soon as it opens a folder that is not empty. Every
run directory holds `.hydra/` before the logger starts, and a resumed run writes into the folder of the run it
continues, so Lightning's logger would delete the log of everything trained before the resume. This logger
instead:

* on a resume from step N (`continue_from(<run dir of the checkpoint>, N)`, called by the train command before
  anything is logged), keeps the rows of steps before N and drops later ones, which the resumed run logs again.
  When the checkpoint's run is in another folder (`resume=auto` from a new run directory), those rows are
  copied from that folder's metrics.csv, so each run folder holds the whole curve;
* on a fresh run in a folder that already has a metrics.csv, moves that file to `metrics.prev.csv`
  (`metrics.prev-2.csv`, ...) instead of deleting it.
"""
from __future__ import annotations

import csv
import os
from pathlib import Path

from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.utilities import rank_zero_warn

__all__ = ["RunCSVLogger"]


class _KeepingWriter(ExperimentWriter):
    def __init__(self, log_dir: str, continued: tuple[Path, int] | None) -> None:
        self._continued = continued
        super().__init__(log_dir=log_dir)

    def _check_log_dir_exists(self) -> None:  # called by the base __init__ in place of Lightning's deletion
        path = Path(self.metrics_file_path)
        if self._continued is None:
            if path.is_file():
                backup = _free_name(path)
                path.rename(backup)
                rank_zero_warn(f"{path} belonged to an earlier run in this folder; moved it to {backup.name}")
            return
        run_dir, keep_before = self._continued
        source = path if path.is_file() else Path(run_dir) / self.NAME_METRICS_FILE
        if not source.is_file():
            return
        with source.open(newline="") as handle:
            reader = csv.DictReader(handle)
            keys = list(reader.fieldnames or [])
            rows = [row for row in reader if _step(row) < keep_before]
        tmp = path.with_suffix(".csv.tmp")
        with tmp.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=keys)
            writer.writeheader()
            writer.writerows(rows)
        os.replace(tmp, path)  # atomic: a kill here leaves the old file or the trimmed one, never half of it
        self.metrics_keys = keys  # later rows with new keys make the base class rewrite the header


def _step(row: dict[str, str]) -> float:
    try:
        return float(row.get("step") or "inf")
    except ValueError:
        return float("inf")


def _free_name(path: Path) -> Path:
    candidate, n = path.with_name("metrics.prev.csv"), 1
    while candidate.exists():
        n += 1
        candidate = path.with_name(f"metrics.prev-{n}.csv")
    return candidate


class RunCSVLogger(CSVLogger):
    """Lightning's CSVLogger with the resume behaviour above (same arguments)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._continued: tuple[Path, int] | None = None

    def continue_from(self, run_dir: str | Path, step: int) -> None:
        """A resume from `step` of the run in `run_dir`: continue its metrics.csv; call before the first log."""
        if self._experiment is not None:
            raise RuntimeError("continue_from() must be called before the logger writes anything")
        self._continued = (Path(run_dir), int(step))

    @property
    @rank_zero_experiment
    def experiment(self) -> _KeepingWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _KeepingWriter(self.log_dir, self._continued)
        return self._experiment
