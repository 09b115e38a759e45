"""A sweep's report: one table and a few plots for all jobs of a Hydra multirun (`sr_lightning report`).

Every job directory of a Hydra multirun (`<sweep dir>/<job num>/`) holds `.hydra/overrides.yaml` (what the
job was given), `.hydra/config.yaml` / `config_resolved.yaml` (the composed config), `summary.json`
(`sr_lightning.run_folder.RunSummary`: status, error, final and best metrics) and `metrics.csv` (Lightning's
CSV log). `build_report` reads them all and writes into `<sweep dir>/report/` (or `out_dir`):

* `report.csv`  one row per job: job, status, `swept` (the names of the swept columns), the swept keys, the
  reports' config columns (model, G blocks, D blocks, crop, lr, steps), final PSNR/SSIM (Y and RGB) with the
  bicubic baseline, best PSNR, parameter counts, run time, the error of a failed job, the run dir and its
  last validation image;
* `report.md`   the same as a markdown table shaped like the reports' tables (failed jobs marked);
* `metrics_vs_<key>.png` final PSNR(Y) and SSIM(Y) against every swept key (one line per combination of
  the other swept keys, bicubic as a dashed line);
* `loss_curves.png` the training losses and validation PSNR(Y) of every job against the step.
"""
from __future__ import annotations

import csv
import itertools
import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sr_lightning.errors import UserError
from sr_lightning.run_folder import SUMMARY_FILE, RunSummary, read_summary

# (column in the table, key in the run config): the config columns of the reports' tables.
CONFIG_COLUMNS = (
    ("model", "model_name"),
    ("gen.blocks", "gen.blocks"),
    ("disc.blocks", "disc.blocks"),
    ("crop", "crop"),
    ("lr", "lr"),
    ("steps", "trainer.max_steps"),
)
# Override keys that are the same thing as a config column (so a swept `model=...` is not listed twice).
OVERRIDE_ALIASES = {"model": "model", "trainer.max_steps": "steps"}
METRIC_COLUMNS = ("psnr_y", "ssim_y", "psnr_rgb", "ssim_rgb", "bicubic_psnr_y", "bicubic_ssim_y")
MARKDOWN_HEADERS = {"model": "model", "gen.blocks": "G blocks", "disc.blocks": "D blocks", "crop": "crop",
                    "lr": "lr", "steps": "steps", "psnr_y": "PSNR (Y)", "ssim_y": "SSIM (Y)",
                    "bicubic_psnr_y": "bicubic PSNR (Y)"}
PLOT_METRICS = (("psnr_y", "PSNR (Y) [dB]", "bicubic_psnr_y"), ("ssim_y", "SSIM (Y)", "bicubic_ssim_y"))


class ReportError(UserError, RuntimeError):
    """A problem with the folder given to `report` (printed as one line)."""


@dataclass
class Job:
    """What one job of the sweep left behind."""

    job: str
    run_dir: Path
    status: str                  # completed | failed | interrupted (Ctrl-C/SIGTERM) | incomplete (no summary.json)
    error: str | None = None
    overrides: dict[str, str] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)   # CONFIG_COLUMNS values
    summary: RunSummary | None = None

    @property
    def final(self) -> dict[str, float]:
        return self.summary.final if self.summary else {}

    def metric(self, name: str) -> float | None:
        value = self.final.get(f"val/{name}")
        return float(value) if value is not None else None

    @property
    def image(self) -> Path | None:
        """The last validation grid (LR | bicubic | SR | HR) the job saved."""
        images = sorted((self.run_dir / "images").glob("*.png"))
        return images[-1] if images else None


# ---------------------------------------------------------------------------------------------- reading
def _is_job_dir(path: Path) -> bool:
    return (path / ".hydra" / "config.yaml").is_file() or (path / SUMMARY_FILE).is_file()


def status_counts(statuses: Iterable[str]) -> str:
    """"4 completed, 1 failed, 0 incomplete" (+ "1 interrupted" when there is one; other values count as incomplete)."""
    counts = Counter(s if s in ("completed", "failed", "interrupted") else "incomplete" for s in statuses)
    shown = [s for s in ("completed", "failed", "interrupted", "incomplete") if counts[s] or s != "interrupted"]
    return ", ".join(f"{counts[s]} {s}" for s in shown)


def _job_sort_key(path: Path) -> tuple:
    return (0, int(path.name), "") if path.name.isdigit() else (1, 0, path.name)


def find_job_dirs(sweep_dir: Path) -> list[Path]:
    """The job folders of a multirun dir (`<sweep>/<n>/`), or the folder itself when it is a single run."""
    if not sweep_dir.exists():
        raise ReportError(f"{sweep_dir}: no such directory; pass the sweep folder a multirun printed at its end "
                          f"(outputs/multirun/<date>/<time>)")
    if not sweep_dir.is_dir():
        raise ReportError(f"{sweep_dir}: not a directory; pass a multirun folder (outputs/multirun/<date>/<time>)")
    if _is_job_dir(sweep_dir):
        return [sweep_dir]
    jobs = sorted((p for p in sweep_dir.iterdir() if p.is_dir() and _is_job_dir(p)), key=_job_sort_key)
    if jobs:
        return jobs
    # A date folder (outputs/multirun/<date>) holds sweeps: <date>/<time>/<job>/.hydra/config.yaml
    sweeps = sorted({str(p.parents[2]) for p in sweep_dir.glob("*/*/.hydra/config.yaml")})
    hint = (f"; it contains sweeps, pass one of: {', '.join(sweeps[:5])}" if sweeps else
            "; pass the sweep folder a multirun printed at its end (outputs/multirun/<date>/<time>)")
    raise ReportError(f"{sweep_dir}: no sweep jobs found (no <job>/.hydra/config.yaml or <job>/summary.json){hint}")


def latest_sweep(log_dir: Path = Path("outputs")) -> Path:
    """The newest `outputs/multirun/<date>/<time>` (what `report` without an argument reads)."""
    sweeps = [p for p in (log_dir / "multirun").glob("*/*") if p.is_dir()]
    if not sweeps:
        raise ReportError(f"no sweeps under {log_dir / 'multirun'}; run one (python -m sr_lightning -m lr=1e-4,1e-5) "
                          f"or pass a multirun folder: python -m sr_lightning report dir=<folder>")
    return max(sweeps, key=lambda p: (p.parent.name, p.name))


def _override_key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def _read_overrides(run_dir: Path) -> dict[str, str]:
    from omegaconf import OmegaConf

    path = run_dir / ".hydra" / "overrides.yaml"
    if not path.is_file():
        return {}
    overrides: dict[str, str] = {}
    for item in OmegaConf.to_container(OmegaConf.load(path)) or []:
        item = str(item)
        overrides[_override_key(item)] = item.split("=", 1)[1] if "=" in item else ""
    return overrides


def _read_config(run_dir: Path) -> dict[str, Any]:
    """The config columns, from the resolved config when the job got that far, else from Hydra's copy.

    `.hydra/config.yaml` is unresolved (`${hydra:...}` needs a live Hydra), so keys are read one by one and a
    key that cannot be resolved outside Hydra stays empty; the model name then comes from Hydra's choices.
    """
    from omegaconf import OmegaConf

    resolved, raw = run_dir / "config_resolved.yaml", run_dir / ".hydra" / "config.yaml"
    source = resolved if resolved.is_file() else raw
    if not source.is_file():
        return {}
    cfg = OmegaConf.load(source)
    values = {}
    for column, key in CONFIG_COLUMNS:
        value = OmegaConf.select(cfg, key, default=None, throw_on_resolution_failure=False)
        values[column] = value if isinstance(value, (int, float, str, bool)) or value is None else str(value)
    if values.get("model") is None:
        hydra_yaml = run_dir / ".hydra" / "hydra.yaml"
        if hydra_yaml.is_file():
            values["model"] = OmegaConf.select(OmegaConf.load(hydra_yaml), "hydra.runtime.choices.model",
                                               default=None, throw_on_resolution_failure=False)
    return values


def load_job(run_dir: Path, name: str | None = None) -> Job:
    summary = read_summary(run_dir)
    if summary is None:
        status, error = "incomplete", f"no {SUMMARY_FILE} (still running, killed, or out of time)"
    else:
        status, error = summary.status, summary.error
    config = _read_config(run_dir)
    if summary is not None and summary.model and summary.model != "?" and not config.get("model"):
        config["model"] = summary.model
    return Job(job=name or run_dir.name, run_dir=run_dir, status=status, error=error,
               overrides=_read_overrides(run_dir), config=config, summary=summary)


def load_jobs(dirs: list[Path]) -> list[Job]:
    jobs: list[Job] = []
    for sweep_dir in dirs:
        for run_dir in find_job_dirs(sweep_dir):
            # With several sweeps, name the rows <sweep>/<job> so they stay apart.
            name = f"{sweep_dir.name}/{run_dir.name}" if len(dirs) > 1 and run_dir != sweep_dir else run_dir.name
            jobs.append(load_job(run_dir, name))
    return jobs


def swept_keys(jobs: list[Job]) -> list[str]:
    """Override keys whose value differs between jobs (the sweep's axes), in command-line order."""
    keys: list[str] = []
    for job in jobs:
        keys += [k for k in job.overrides if k not in keys]
    return [k for k in keys if len({job.overrides.get(k) for job in jobs}) > 1]


def parse_value(text: str | None) -> Any:
    """An override value as a number when it is one (`1e-4` is a float, as Hydra reads it)."""
    if text is None:
        return None
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


# ---------------------------------------------------------------------------------------------- tables
def table_columns(axes: list[str]) -> list[str]:
    config = [c for c, _ in CONFIG_COLUMNS]
    extra_axes = [k for k in axes if k not in config and k not in OVERRIDE_ALIASES]
    return ["job", "status", "swept", *extra_axes, *config, "global_step", *METRIC_COLUMNS, "best_psnr_y", "best_step",
            "params_gen", "params_disc", "seconds", "overrides", "error", "run_dir", "image"]


def job_row(job: Job, axes: list[str]) -> dict[str, Any]:
    # `swept` names the table columns that hold the sweep's axes (the same in every row), for readers of the CSV.
    row: dict[str, Any] = {"job": job.job, "status": job.status,
                           "swept": " ".join(OVERRIDE_ALIASES.get(k, k) for k in axes)}
    for key in axes:
        row[key] = parse_value(job.overrides.get(key))
    row.update(job.config)
    for key in axes:  # a swept group (model=...) or step budget shows the override itself
        if key in OVERRIDE_ALIASES:
            row[OVERRIDE_ALIASES[key]] = parse_value(job.overrides.get(key))
    summary = job.summary or RunSummary(status=job.status, output_dir=str(job.run_dir))
    params = summary.params
    row.update({
        "global_step": summary.global_step,
        **{name: job.metric(name) for name in METRIC_COLUMNS},
        "best_psnr_y": summary.best_score, "best_step": summary.best_step,
        "params_gen": params.get("gen"), "params_disc": params.get("disc"),
        "seconds": summary.seconds,
        "overrides": " ".join(f"{k}={v}" for k, v in job.overrides.items()),
        "error": job.error or "",
        "run_dir": str(job.run_dir.resolve()),
        "image": str(job.image.resolve()) if job.image else "",
    })
    return row


def write_csv(rows: list[dict[str, Any]], columns: list[str], path: Path) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if row.get(k) is None else row.get(k) for k in columns})


def _fmt(value: Any, column: str) -> str:
    if value is None or value == "":
        return "—"
    if isinstance(value, float):
        if column.startswith("ssim") or "ssim" in column:
            return f"{value:.4f}"
        if "psnr" in column:
            return f"{value:.2f}"
        return f"{value:g}"
    return str(value).replace("|", "\\|")


def markdown_table(rows: list[dict[str, Any]], axes: list[str], title: str) -> str:
    config = [c for c, _ in CONFIG_COLUMNS]
    extra_axes = [k for k in axes if k not in config and k not in OVERRIDE_ALIASES]
    columns = ["job", *extra_axes, *config, "psnr_y", "ssim_y", "bicubic_psnr_y", "status"]
    swept = {OVERRIDE_ALIASES.get(k, k) for k in axes}
    headers = [MARKDOWN_HEADERS.get(c, c) + (" *" if c in swept else "") for c in columns]
    completed = [r for r in rows if r["status"] == "completed" and r.get("psnr_y") is not None]
    best = max(completed, key=lambda r: r["psnr_y"]) if completed else None
    lines = [f"# {title}", "",
             f"{len(rows)} jobs: {status_counts(r['status'] for r in rows)}. "
             "Final validation numbers (Y channel, `scale` px border cropped); * = swept.", "",
             "| " + " | ".join(headers) + " |",
             "|" + "|".join("---" if c in ("job", "model", "status") or c in extra_axes else "---:"
                            for c in columns) + "|"]
    for row in rows:
        cells = []
        for column in columns:
            if column == "status":
                cells.append("completed" if row["status"] == "completed" else
                             f"**{row['status']}**: {_fmt(row.get('error'), 'error')}")
                continue
            text = _fmt(row.get(column), column)
            if row is best and column == "psnr_y":
                text = f"**{text}**"
            cells.append(text)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------- plots
def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only; no display needed (headless servers, tests)
    import matplotlib.pyplot as plt

    return plt


def _safe_name(key: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in key)


def plot_metric_vs_key(rows: list[dict[str, Any]], key: str, axes: list[str], out_dir: Path) -> Path | None:
    """Final PSNR(Y) and SSIM(Y) against one swept key; one line per combination of the other swept keys."""
    column = OVERRIDE_ALIASES.get(key, key)
    done = [r for r in rows if r["status"] == "completed" and r.get("psnr_y") is not None]
    if not done:
        return None
    plt = _pyplot()
    values = list(dict.fromkeys(r[column] for r in done))
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    positions = {v: (v if numeric else i) for i, v in enumerate(values)}
    others = [k for k in axes if k != key]
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for row in done:
        groups.setdefault(tuple(row[OVERRIDE_ALIASES.get(k, k)] for k in others), []).append(row)

    fig, panels = plt.subplots(1, len(PLOT_METRICS), figsize=(5.5 * len(PLOT_METRICS), 4), squeeze=False)
    for panel, (metric, label, baseline) in zip(panels[0], PLOT_METRICS):
        for group, members in groups.items():
            members = sorted(members, key=lambda r: positions[r[column]])
            name = ", ".join(f"{k}={v}" for k, v in zip(others, group)) or None
            panel.plot([positions[r[column]] for r in members], [r[metric] for r in members], "o-", label=name)
        base = [r[baseline] for r in done if r.get(baseline) is not None]
        if base:
            panel.axhline(sum(base) / len(base), color="gray", linestyle="--", label="bicubic")
        if numeric:
            positive = [v for v in values if v > 0]
            if len(positive) == len(values) and max(values) / min(values) >= 100:
                panel.set_xscale("log")  # learning rates: 1e-4, 1e-5, 1e-6
            panel.set_xticks(values)
            panel.set_xticklabels([f"{v:g}" for v in values])
        else:
            panel.set_xticks(list(range(len(values))))
            panel.set_xticklabels([str(v) for v in values])
        panel.set_xlabel(key)
        panel.set_ylabel(label)
        panel.grid(alpha=0.3)
        if panel.get_legend_handles_labels()[0]:
            panel.legend(fontsize=8)
    fig.suptitle(f"final validation vs {key}")
    fig.tight_layout()
    path = out_dir / f"metrics_vs_{_safe_name(key)}.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def read_metrics_csv(path: Path) -> dict[str, list[tuple[int, float]]]:
    """Lightning's CSV log as {column: [(step, value), ...]} (each row holds only some columns)."""
    curves: dict[str, list[tuple[int, float]]] = {}
    with path.open(newline="") as handle:
        for record in csv.DictReader(handle):
            try:
                step = int(float(record.get("step") or ""))
            except ValueError:
                continue
            for key, text in record.items():
                if key in ("step", "epoch") or not text:
                    continue
                try:
                    value = float(text)
                except ValueError:
                    continue
                if math.isfinite(value):
                    curves.setdefault(key, []).append((step, value))
    return curves


def plot_loss_curves(jobs: list[Job], axes: list[str], out_dir: Path) -> Path | None:
    """Every `train/*` loss and val/psnr_y of every job against the step, one panel per quantity."""
    curves = {job.job: read_metrics_csv(job.run_dir / "metrics.csv") for job in jobs
              if (job.run_dir / "metrics.csv").is_file()}
    # Losses only: learning rates, gradient norms, D's mean logits and the collapse flag are logged under
    # train/ too, but are no loss curves.
    keys = sorted({k for c in curves.values() for k in c if k.startswith("train/")
                   and not any(t in k for t in ("lr_", "grad_norm", "_mean", "collapsed"))},
                  key=lambda k: (k not in ("train/g_loss", "train/d_loss"), k))
    keys += [k for k in ("val/psnr_y",) if any(k in c for c in curves.values())]
    if not keys:
        return None
    plt = _pyplot()
    cols = min(3, len(keys))
    rows = math.ceil(len(keys) / cols)
    fig, panels = plt.subplots(rows, cols, figsize=(5 * cols, 3.6 * rows), squeeze=False)
    labels = {job.job: f"job {job.job}" + "".join(f" {k}={job.overrides.get(k)}" for k in axes) for job in jobs}
    for panel, key in zip(itertools.chain.from_iterable(panels), keys):
        for job_name, job_curves in curves.items():
            points = sorted(job_curves.get(key, []))
            if points:
                panel.plot([s for s, _ in points], [v for _, v in points], "o-" if len(points) < 3 else "-",
                           markersize=3, label=labels[job_name])
        panel.set_title(key)
        panel.set_xlabel("step")
        panel.grid(alpha=0.3)
        if key.startswith("train/") and all(v > 0 for c in curves.values() for _, v in c.get(key, [])):
            panel.set_yscale("log")
    for panel in list(itertools.chain.from_iterable(panels))[len(keys):]:
        panel.set_visible(False)
    handles, names = panels[0][0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, names, loc="lower center", ncol=min(4, len(names)), fontsize=8)
        fig.tight_layout(rect=(0, 0.04 + 0.03 * math.ceil(len(names) / 4), 1, 1))
    else:
        fig.tight_layout()
    path = out_dir / "loss_curves.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


# ---------------------------------------------------------------------------------------------- report
@dataclass
class ReportFiles:
    """What `build_report` wrote, and the jobs and swept keys it found (for the caller to print)."""

    csv: Path
    markdown: Path
    plots: list[Path]
    jobs: list[Job]
    axes: list[str]


def build_report(dirs: list[Path], out_dir: Path | None = None, plots: bool = True) -> ReportFiles:
    """Read the jobs of `dirs`, write the tables (and plots) into `out_dir` (default `<first dir>/report`)."""
    jobs = load_jobs(dirs)
    axes = swept_keys(jobs)
    out_dir = out_dir or (dirs[0] / "report")
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = [job_row(job, axes) for job in jobs]
    csv_path, md_path = out_dir / "report.csv", out_dir / "report.md"
    write_csv(rows, table_columns(axes), csv_path)
    title = "Sweep " + ", ".join(str(d) for d in dirs)
    md_path.write_text(markdown_table(rows, axes, title))
    written: list[Path] = []
    if plots:
        for key in axes:
            path = plot_metric_vs_key(rows, key, axes, out_dir)
            if path:
                written.append(path)
        path = plot_loss_curves(jobs, axes, out_dir)
        if path:
            written.append(path)
    return ReportFiles(csv_path, md_path, written, jobs, axes)

