"""`python -m sr_lightning report dir=<multirun dir>`: one table and a few plots for a whole sweep.

Writes into `<sweep dir>/report/` (or `out=<folder>`): `report.csv` (one row per job), `report.md` (the same
as a markdown table), `metrics_vs_<key>.png` per swept key and `loss_curves.png`. What each file holds, and
how the jobs are read, is in `sr_lightning.sweep_report`; this module only parses the arguments and prints.
"""
from __future__ import annotations

from pathlib import Path

from sr_lightning.cli_args import Option, keys_help, parse_key_values
from sr_lightning.cli_help import asks_for_help
from sr_lightning.errors import UserError, report_user_error
from sr_lightning.sweep_report import ReportError, build_report, latest_sweep, status_counts

OPTIONS = {
    "dir": Option("", "sweep folder(s) outputs/multirun/<date>/<time>, comma-separated (default: the newest); "
                      "a path without key= is the same"),
    "out": Option("", "output folder (default: <first dir>/report)"),
    "plots": Option(True, "write the PNG plots (false: only the tables)"),
}


def _help() -> str:
    summary = (__doc__ or "").strip().splitlines()[0]
    usage = "usage: python -m sr_lightning report [dir=]<folder>[,<folder>...] [key=value ...]"
    return f"{summary}\n\n{usage}\n\n{keys_help(OPTIONS)}"


def _sweep_dirs(value: str, positional: list[str]) -> list[Path]:
    """dir=a,b and bare paths (the shorthand), in the order given; [] means the newest sweep."""
    unknown = [p for p in positional if p.startswith("-")]
    if unknown:
        raise ReportError(f"unknown option {unknown[0]}; report takes key=value: "
                          f"{', '.join(f'{k}=' for k in OPTIONS)} (e.g. out=<folder> plots=false)")
    return [Path(p) for p in [*(d for d in value.split(",") if d), *positional]]


def run(argv: list[str]) -> int:
    if asks_for_help(argv):
        print(_help())
        return 0
    try:
        values, positional = parse_key_values(argv, OPTIONS)
        dirs = _sweep_dirs(values["dir"], positional)
        if not dirs:
            dirs = [latest_sweep()]
            print(f"no folder given: using the newest sweep {dirs[0]}")
        result = build_report(dirs, Path(values["out"]) if values["out"] else None, plots=values["plots"])
    except UserError as err:
        return report_user_error(err)
    print(f"{len(result.jobs)} jobs ({status_counts(j.status for j in result.jobs)}); "
          f"swept: {', '.join(result.axes) or 'nothing'}")
    for job in result.jobs:
        if job.status != "completed":
            print(f"  job {job.job}: {job.status}: {job.error}")
    print(f"table: {result.csv}")
    print(f"table: {result.markdown}")
    for path in result.plots:
        print(f"plot:  {path}")
    return 0
