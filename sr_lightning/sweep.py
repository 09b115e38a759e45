"""Hydra callback for sweeps (`-m`): one line per job at the end, read from each job's summary.json."""
from __future__ import annotations

from pathlib import Path

from hydra.experimental.callback import Callback

from sr_lightning.run_folder import COMPLETED, SUMMARY_FILE, SummaryError, read_summary


class SweepSummaryCallback(Callback):
    """After a multirun, one line per job (completed / failed / interrupted) and the `report` command."""

    failed_jobs = 0  # read by cli.py in the main process: parallel launchers run jobs in other processes

    def on_multirun_end(self, config, **kwargs) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        rows = []
        SweepSummaryCallback.failed_jobs = 0
        for path in sorted(sweep_dir.glob(f"*/{SUMMARY_FILE}"), key=lambda p: p.parent.name):
            try:
                summary = read_summary(path.parent)
            except SummaryError as err:
                SweepSummaryCallback.failed_jobs += 1
                rows.append(f"  job {path.parent.name}: unreadable summary ({err})")
                continue
            SweepSummaryCallback.failed_jobs += summary.status != COMPLETED
            psnr = summary.final.get("val/psnr_y")
            rows.append(f"  job {path.parent.name}: {summary.status}"
                        + (f"  PSNR(Y) {psnr:.2f}" if psnr is not None else "")
                        + (f"  error: {summary.error}" if summary.error else ""))
        if rows:
            print(f"sweep {sweep_dir}:\n" + "\n".join(rows) +
                  f"\ntable and plots: python -m sr_lightning report dir={sweep_dir}", flush=True)


MULTIRUN_FILE = "multirun.yaml"  # Hydra's copy of the sweep's config, in the sweep folder, before any job runs


def sweep_axes(sweep_dir: Path) -> list[str]:
    """The keys a sweep varies (`lr=1e-4,1e-5`, `gen.blocks=range(8,33,8)`, a preset's `hydra.sweeper.params`),
    in the order they were given; [] when the folder holds no Hydra multirun.yaml."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    path = Path(sweep_dir) / MULTIRUN_FILE
    if not path.is_file():
        return []
    hydra_cfg = OmegaConf.load(path).get("hydra") or {}
    params = OmegaConf.select(hydra_cfg, "sweeper.params", default=None) or {}
    arguments = [f"{k}={v}" for k, v in params.items()]
    arguments += [str(o) for o in (OmegaConf.select(hydra_cfg, "overrides.task", default=None) or [])]
    axes: list[str] = []
    for override in OverridesParser.create().parse_overrides(arguments):
        if override.is_sweep_override() and override.key_or_group not in axes:
            axes.append(override.key_or_group)
    return axes
