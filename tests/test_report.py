"""`python -m sr_lightning report dir=<multirun dir>`: table, markdown, plots, and clear errors.

The slow test reports on the real 2x2 sweep of test_sweep.py; the others build small job folders by hand
(the files a training job leaves), which is enough to check how they are read.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from PIL import Image

from sr_lightning import sweep_report
from sr_lightning.commands import report
from sr_lightning.sweep_report import read_metrics_csv

from helpers import FAILED_JOB, run_cli


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.slow
def test_report_of_a_2x2_sweep_has_four_rows_and_plots(tiny_sweep, tmp_path):
    result = run_cli("report", f"dir={tiny_sweep.dir}", f"out={tmp_path / 'rep'}")
    assert result.returncode == 0, result.stderr
    out = tmp_path / "rep"
    assert f"table: {out / 'report.csv'}" in result.stdout
    assert "4 jobs (3 completed, 1 failed, 0 incomplete); swept: scale, crop" in result.stdout

    rows = _read_csv(out / "report.csv")
    assert [r["job"] for r in rows] == ["0", "1", "2", "3"]
    assert [(r["scale"], r["crop"]) for r in rows] == [("3", "24"), ("3", "32"), ("4", "24"), ("4", "32")]
    assert all(r["swept"] == "scale crop" for r in rows)
    failed = rows[int(FAILED_JOB)]
    assert failed["status"] == "failed" and "not divisible by scale=3" in failed["error"]
    assert failed["psnr_y"] == "" and failed["model"] == "srresnet"  # config read although the job never trained
    for row in rows:
        if row["job"] == FAILED_JOB:
            continue
        summary = tiny_sweep.summary(row["job"])
        assert row["status"] == "completed"
        assert float(row["psnr_y"]) == pytest.approx(summary["final"]["val/psnr_y"])
        assert float(row["bicubic_psnr_y"]) == pytest.approx(summary["final"]["val/bicubic_psnr_y"])
        assert row["gen.blocks"] == "1" and row["steps"] == "1" and row["model"] == "srresnet"
        assert int(row["params_gen"]) == summary["params"]["gen"]
        assert Path(row["image"]).is_file()

    markdown = (out / "report.md").read_text()
    table = [line for line in markdown.splitlines() if line.startswith("| ") and "---" not in line]
    assert len(table) == 1 + 4  # header + one line per job
    assert "G blocks" in table[0] and "scale *" in table[0] and "crop *" in table[0]
    assert "**failed**: crop: got 32, not divisible by scale=3" in table[1 + int(FAILED_JOB)]

    for name in ("metrics_vs_scale.png", "metrics_vs_crop.png", "loss_curves.png"):
        assert f"plot:  {out / name}" in result.stdout
        with Image.open(out / name) as image:
            assert image.width > 300 and image.height > 200


def _fake_job(root: Path, name: str, overrides: list[str], status: str | None, psnr: float | None = None,
              steps: list[tuple[int, float]] = (), error: str | None = None) -> Path:
    """The files a training job leaves behind (see sr_lightning/run_folder.py)."""
    run_dir = root / name
    (run_dir / ".hydra").mkdir(parents=True)
    values = dict(o.split("=", 1) for o in overrides)
    config = {"model_name": "${hydra:runtime.choices.model}", "crop": int(values.get("crop", 96)),
              "lr": float(values.get("lr", 1e-4)), "gen": {"blocks": int(values.get("gen.blocks", 16))},
              "disc": None, "trainer": {"max_steps": 100}}
    OmegaConf.save(OmegaConf.create(config), run_dir / ".hydra" / "config.yaml")
    OmegaConf.save(OmegaConf.create({"hydra": {"runtime": {"choices": {"model": "srresnet"}}}}),
                   run_dir / ".hydra" / "hydra.yaml")
    OmegaConf.save(OmegaConf.create(overrides), run_dir / ".hydra" / "overrides.yaml")
    if status is not None:
        summary = {"status": status, "error": error, "output_dir": str(run_dir), "model": "srresnet"}
        if psnr is not None:
            summary.update(global_step=100, final={"val/psnr_y": psnr, "val/ssim_y": 0.8, "val/bicubic_psnr_y": 25.0},
                           best={"val/psnr_y": psnr, "step": 100}, params={"gen": 1000, "disc": 0})
        (run_dir / "summary.json").write_text(json.dumps(summary))
    if steps:
        lines = ["epoch,step,train/g_loss,val/psnr_y"]
        lines += [f"0,{s},{v}," for s, v in steps] + [f"0,{steps[-1][0]},,{psnr}"]
        (run_dir / "metrics.csv").write_text("\n".join(lines) + "\n")
    return run_dir


def test_report_reads_jobs_swept_keys_and_marks_failed_and_incomplete(tmp_path):
    sweep = tmp_path / "sweep"
    common = ["trainer.max_steps=100", "crop=48"]
    _fake_job(sweep, "0", common + ["lr=1e-4", "gen.blocks=8"], "completed", 26.5, [(0, 0.5), (50, 0.2)])
    _fake_job(sweep, "1", common + ["lr=1e-6", "gen.blocks=8"], "completed", 25.1, [(0, 0.5), (50, 0.4)])
    _fake_job(sweep, "2", common + ["lr=1e-5", "gen.blocks=8"], "failed", error="CUDA out of memory")
    _fake_job(sweep, "10", common + ["lr=1e-5", "gen.blocks=16"], None)  # killed: no summary.json
    (sweep / "multirun.yaml").write_text("{}")

    files = sweep_report.build_report([sweep])
    assert files.csv == sweep / "report" / "report.csv"
    assert files.axes == ["lr", "gen.blocks"]  # crop and the step budget are the same in every job
    rows = _read_csv(files.csv)
    assert [r["job"] for r in rows] == ["0", "1", "2", "10"]  # numeric job order
    assert [r["status"] for r in rows] == ["completed", "completed", "failed", "incomplete"]
    assert rows[2]["error"] == "CUDA out of memory" and "no summary.json" in rows[3]["error"]
    assert [r["lr"] for r in rows] == ["0.0001", "1e-06", "1e-05", "1e-05"]
    assert [r["gen.blocks"] for r in rows] == ["8", "8", "8", "16"]
    assert rows[0]["model"] == "srresnet"  # from Hydra's choices: the raw config needs a live Hydra
    markdown = files.markdown.read_text()
    assert "| 0 | srresnet | 8 | — | 48 | 0.0001 | 100 | **26.50** |" in markdown  # best PSNR in bold
    assert "**failed**: CUDA out of memory" in markdown and "**incomplete**" in markdown
    names = sorted(p.name for p in files.plots)
    assert names == ["loss_curves.png", "metrics_vs_gen.blocks.png", "metrics_vs_lr.png"]


def test_metrics_csv_rows_hold_only_some_columns(tmp_path):
    path = tmp_path / "metrics.csv"
    path.write_text("epoch,step,train/g_loss,val/psnr_y\n0,9,0.5,\n0,19,0.25,\n0,19,,21.5\n0,29,nan,\n")
    curves = read_metrics_csv(path)
    assert curves == {"train/g_loss": [(9, 0.5), (19, 0.25)], "val/psnr_y": [(19, 21.5)]}


def test_a_single_run_dir_is_a_one_job_report(tmp_path):
    run_dir = _fake_job(tmp_path, "2024-05-01_12-00-00", ["crop=64"], "completed", 27.0)
    files = sweep_report.build_report([run_dir], tmp_path / "out")
    assert len(files.jobs) == 1 and files.axes == []
    assert _read_csv(files.csv)[0]["crop"] == "64"


def test_two_sweeps_in_one_report_keep_their_rows_apart(tmp_path):
    _fake_job(tmp_path / "a", "0", ["crop=48"], "completed", 26.0)
    _fake_job(tmp_path / "b", "0", ["crop=96"], "completed", 27.0)
    files = sweep_report.build_report([tmp_path / "a", tmp_path / "b"], tmp_path / "out")
    assert [r["job"] for r in _read_csv(files.csv)] == ["a/0", "b/0"]
    assert files.axes == ["crop"]


def test_missing_or_empty_folder_is_one_clear_error(tmp_path, capsys):
    assert report.run([str(tmp_path / "nope")]) == 2
    assert f"error: {tmp_path / 'nope'}: no such directory" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert report.run([str(tmp_path / "empty")]) == 2
    assert "no sweep jobs found" in capsys.readouterr().err
    # a date folder holding sweeps: say which sweeps to pass
    _fake_job(tmp_path / "multirun" / "2024-05-01" / "12-00-00", "0", ["crop=48"], "completed", 26.0)
    assert report.run([str(tmp_path / "multirun" / "2024-05-01")]) == 2
    assert f"pass one of: {tmp_path / 'multirun' / '2024-05-01' / '12-00-00'}" in capsys.readouterr().err


def test_without_argument_the_newest_sweep_is_reported(tmp_path, monkeypatch, capsys):
    for stamp in (("2024-05-01", "23-00-00"), ("2024-05-02", "01-00-00")):
        _fake_job(tmp_path / "outputs" / "multirun" / stamp[0] / stamp[1], "0", ["crop=48"], "completed", 26.0)
    monkeypatch.chdir(tmp_path)
    assert report.run(["plots=false"]) == 0
    out = capsys.readouterr().out
    assert "newest sweep outputs/multirun/2024-05-02/01-00-00" in out
    assert (tmp_path / "outputs" / "multirun" / "2024-05-02" / "01-00-00" / "report" / "report.csv").is_file()


def test_status_counts_name_interrupted_jobs_and_fold_unknown_values_into_incomplete():
    from sr_lightning.sweep_report import status_counts

    assert status_counts(["completed", "failed", "completed"]) == "2 completed, 1 failed, 0 incomplete"
    assert status_counts(["interrupted", "completed", "running?"]) == "1 completed, 0 failed, 1 interrupted, 1 incomplete"


def test_report_takes_key_value_and_a_path_as_shorthand(tmp_path, capsys):
    _fake_job(tmp_path / "a", "0", ["crop=48"], "completed", 26.0)
    _fake_job(tmp_path / "b", "0", ["crop=96"], "completed", 27.0)
    out = tmp_path / "out"
    assert report.run([f"dir={tmp_path / 'a'},{tmp_path / 'b'}", f"out={out}", "plots=false"]) == 0
    assert [r["job"] for r in _read_csv(out / "report.csv")] == ["a/0", "b/0"]
    assert not list(out.glob("*.png"))  # plots=false
    # bare paths are the shorthand for dir=, also several of them
    assert report.run([str(tmp_path / "a"), str(tmp_path / "b"), f"out={tmp_path / 'out2'}", "plots=false"]) == 0
    assert [r["job"] for r in _read_csv(tmp_path / "out2" / "report.csv")] == ["a/0", "b/0"]
    capsys.readouterr()
    # argparse-style flags and unknown keys are one line naming the key=value form, exit 2
    assert report.run([str(tmp_path / "a"), "--out", "x"]) == 2
    assert capsys.readouterr().err.strip() == ("error: unknown option --out; report takes key=value: dir=, out=, "
                                               "plots= (e.g. out=<folder> plots=false)")
    assert report.run([str(tmp_path / "a"), "outdir=x"]) == 2
    assert capsys.readouterr().err.startswith("error: outdir: unknown key; allowed: dir, out, plots")
    assert report.run([str(tmp_path / "a"), "plots=maybe"]) == 2
    assert "error: plots: got 'maybe'; expected true or false" in capsys.readouterr().err


def test_report_help_says_what_it_does_and_lists_its_keys(capsys):
    assert report.run(["--help"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].endswith("one table and a few plots for a whole sweep.")
    for key in report.OPTIONS:
        assert f"  {key}=" in out
    assert "trainer" not in out and "--out" not in out


def test_an_unreadable_summary_is_one_line(tmp_path, capsys):
    run_dir = _fake_job(tmp_path, "0", ["crop=48"], "completed", 26.0)
    (run_dir / "summary.json").write_text("{not json")
    assert report.run([str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {run_dir / 'summary.json'}: not valid JSON") and err.count("\n") == 1
