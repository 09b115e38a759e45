"""W&B: offline by default, one group per sweep, full flattened config, final results table.

The slow test reads back the offline runs of the real sweep of test_sweep.py (run without `logger=`, so the
CLI's sweep default `logger=wandb` applies). wandb >= 0.20 has no Python reader for its `.wandb` files, so
`read_offline_run` below parses the LevelDB-style record log (32 KiB blocks of chunked records) into
wandb's own protobuf `Record`s.
"""
from __future__ import annotations

import json
import struct
import time
from pathlib import Path

import pytest
from lightning.pytorch.loggers import CSVLogger
from omegaconf import OmegaConf

from sr_lightning import wandb_utils

from helpers import FAILED_JOB, compose_train

BLOCK = 32768
HEADER = 7  # file header ":W&B" + magic + version; each record: crc32 (4), length (2), type (1)
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def _records(data: bytes):
    pos, pending = HEADER, b""
    while pos + HEADER <= len(data):
        if BLOCK - pos % BLOCK < HEADER:  # block trailer padding
            pos += BLOCK - pos % BLOCK
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + HEADER])
        if length == 0 and kind == 0:  # zero fill to the end of the block
            pos += BLOCK - pos % BLOCK
            continue
        chunk = data[pos + HEADER:pos + HEADER + length]
        pos += HEADER + length
        if kind == FULL:
            yield chunk
        elif kind == FIRST:
            pending = chunk
        elif kind == MIDDLE:
            pending += chunk
        elif kind == LAST:
            yield pending + chunk
            pending = b""


def read_offline_run(run_dir: Path, wait_s: float = 30.0) -> dict:
    """group, name, config (key -> value), summary (key -> value) and exit code of one offline run folder.

    wandb's service process writes the log asynchronously: `wandb.finish()` can return before the last
    records are on disk, so wait (a bounded time) until the run's exit record is there.
    """
    from wandb.proto import wandb_internal_pb2 as pb

    (path,) = run_dir.glob("run-*.wandb")
    deadline = time.monotonic() + wait_s
    while True:
        run = _parse_run_log(path, pb)
        if run["exit_code"] is not None or time.monotonic() > deadline:
            return run
        time.sleep(0.2)


def _parse_run_log(path: Path, pb) -> dict:
    data = path.read_bytes()
    assert data[:4] == b":W&B"[:len(data)], f"{path} is not a W&B run log"
    run: dict = {"config": {}, "summary": {}, "exit_code": None}
    for raw in _records(data):
        record = pb.Record()
        record.ParseFromString(raw)
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run.update(group=record.run.run_group, name=record.run.display_name, project=record.run.project,
                       run_id=record.run.run_id)
        elif kind == "config":
            for item in record.config.update:
                run["config"][item.key] = json.loads(item.value_json)
        elif kind == "summary":
            for item in record.summary.update:
                run["summary"][item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
        elif kind == "exit":
            run["exit_code"] = record.exit.exit_code
    return run


@pytest.mark.slow
def test_sweep_jobs_log_offline_runs_in_one_group(tiny_sweep):
    group = wandb_utils.sweep_group_name(tiny_sweep.dir)
    assert group == "multirun_sweep"
    assert not list((tiny_sweep.dir / FAILED_JOB).glob("wandb/offline-run-*"))  # failed before any logger existed
    for job in ("0", "2", "3"):
        (run_dir,) = (tiny_sweep.dir / job / "wandb").glob("offline-run-*")  # one offline run, in the job's folder
        run = read_offline_run(run_dir)
        summary = tiny_sweep.summary(job)
        job_config = OmegaConf.load(tiny_sweep.dir / job / "config_resolved.yaml")
        assert run["group"] == group and run["project"] == "sr-lightning"
        # the run's name: the swept keys and this job's values, nothing else
        assert run["name"] == {"0": "scale=3,crop=24", "2": "scale=4,crop=24", "3": "scale=4,crop=32"}[job]
        # the full config, flattened so the dashboard can group by any key, once (not also nested under cfg)
        config = run["config"]
        assert not [key for key in config if key == "cfg" or key.startswith("cfg.")]
        assert config["crop"] == job_config["crop"] and config["scale"] == job_config["scale"]
        assert config["gen.blocks"] == 1 and config["lr"] == pytest.approx(job_config["lr"])
        assert config["module.g_optim.lr"] == pytest.approx(job_config["lr"])
        assert config["data.crop"] == job_config["crop"] and config["model_name"] == "srresnet"
        # metrics, the image grid, the final numbers and the results table
        final = run["summary"]
        assert final["val/psnr_y"] == pytest.approx(summary["final"]["val/psnr_y"])
        assert final["final/val/psnr_y"] == pytest.approx(summary["final"]["val/psnr_y"])
        assert final["status"] == "completed" and final["params/gen"] == summary["params"]["gen"]
        assert "train/g_loss" in final
        assert final["val/chelsea/_type"] == "images/separated"
        assert list((run_dir / "files" / "media" / "images" / "val").glob("chelsea_*.png"))
        assert final["final_results/_type"] == "table-file"
        (table_file,) = (run_dir / "files" / "media" / "table").glob("final_results_*.table.json")
        table = json.loads(table_file.read_text())
        row = dict(zip(table["columns"], table["data"][0]))
        assert row["crop"] == job_config["crop"] and row["psnr_y"] == pytest.approx(summary["final"]["val/psnr_y"])
        assert run["exit_code"] == 0


@pytest.mark.slow
def test_a_resumed_run_continues_the_same_wandb_run(cli, tmp_path):
    tiny = ["logger=wandb", "gen.blocks=1", "gen.channels=8", "crop=32", "batch_size=2", "callbacks=none",
            "trainer.val_check_interval=2", "precision=32-true", f"hydra.run.dir={tmp_path}"]
    assert cli("train", *tiny, "trainer.max_steps=2").returncode == 0
    result = cli("train", *tiny, "trainer.max_steps=4", "resume=auto")
    assert result.returncode == 0, result.stderr[-3000:]
    legs = sorted((tmp_path / "wandb").glob("offline-run-*"))
    assert len(legs) == 2
    # the run says where its offline W&B run went and how to upload it
    assert f"W&B offline run: {legs[1]}\nupload it with: wandb sync {legs[1]}\n" in result.stdout
    first, second = (read_offline_run(leg) for leg in legs)
    run_id = (tmp_path / "wandb_run_id").read_text().strip()
    assert first["run_id"] == second["run_id"] == run_id  # one W&B run, resumed
    assert second["summary"]["trainer/global_step"] >= 2 and second["exit_code"] == 0


@pytest.mark.parametrize(
    ("offline", "env", "expected"),
    [(None, None, "offline"), (None, "online", "online"), (None, "offline", "offline"),
     (None, "disabled", "disabled"), (False, "offline", "online"), (True, "online", "offline")],
)
def test_mode_is_offline_unless_asked(offline, env, expected, monkeypatch):
    if env is None:
        monkeypatch.delenv("WANDB_MODE", raising=False)
    else:
        monkeypatch.setenv("WANDB_MODE", env)
    assert wandb_utils.resolve_mode(offline) == expected


def test_group_is_named_after_the_sweep():
    assert wandb_utils.sweep_group_name("outputs/multirun/2024-05-01/12-30-00") == "2024-05-01_12-30-00"
    assert (wandb_utils.sweep_group_name("outputs/multirun/2024-05-01/12-30-00", "ablation/gen_blocks")
            == "ablation-gen_blocks_2024-05-01_12-30-00")


def test_logger_config_single_run_has_no_group_and_sweep_job_has_the_sweep_group(tmp_path, monkeypatch):
    from hydra.utils import instantiate

    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_DIR", raising=False)
    cfg = compose_train(["logger=wandb", "crop=64"], output_dir=tmp_path / "run")
    single = instantiate(cfg.logger.wandb)
    init = single._wandb_init  # what goes to wandb.init (the run itself starts lazily, not here)
    assert init["mode"] == "offline" and init["group"] is None and init["name"] == "srresnet"  # no sweep: the model
    assert init["dir"] == str(tmp_path / "run")
    assert "csv" in cfg.logger  # report reads metrics.csv, so the CSV log stays on

    sweep_dir = tmp_path / "multirun" / "2024-05-01" / "12-30-00"
    job_args = ["logger=wandb", "crop=64", "gen.blocks=8", "lr=1e-4", "hydra.mode=MULTIRUN", "hydra.job.num=3",
                "logger.wandb.offline=false"]
    cfg = compose_train(job_args, output_dir=sweep_dir / "3")
    job = instantiate(cfg.logger.wandb)
    assert job._wandb_init["group"] == "2024-05-01_12-30-00" and job._wandb_init["mode"] == "online"
    assert job._wandb_init["name"] == "srresnet"  # no multirun.yaml in the sweep folder: nothing known to be swept

    # what Hydra writes into the sweep folder before the jobs: a preset's grid and the command line's sweeps
    sweep_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(OmegaConf.create({"hydra": {"sweeper": {"params": {"lr": "1e-4,1e-5"}},
                                               "overrides": {"task": ["crop=64", "gen.blocks=8,16", "logger=wandb"]}}}),
                   sweep_dir / "multirun.yaml")
    job = instantiate(compose_train(job_args, output_dir=sweep_dir / "3").logger.wandb)
    assert job._wandb_init["name"] == "lr=1e-4,gen.blocks=8"  # the swept keys only, in the sweep's order


def test_final_summary_is_a_no_op_without_a_wandb_logger(tmp_path):
    summary = {"status": "completed", "final": {"val/psnr_y": 20.0}}
    wandb_utils.log_final_summary([], summary)
    wandb_utils.log_final_summary([CSVLogger(tmp_path)], summary)
    wandb_utils.log_failure("nothing to mark")  # no open run: nothing happens
    assert not (tmp_path / "wandb").exists()


def test_results_row_has_the_report_columns():
    config = {"model_name": "seed000", "gen.blocks": 18, "disc.blocks": 8, "crop": 96, "lr": 1e-4,
              "trainer.max_steps": 20000}
    summary = {"status": "completed", "global_step": 20000, "final": {"val/psnr_y": 27.1, "val/ssim_y": 0.78},
               "best": {"val/psnr_y": 27.3}, "params": {"gen": 150000, "disc": 5000000}}
    columns, row = wandb_utils.results_row(config, summary)
    values = dict(zip(columns, row))
    assert values["model"] == "seed000" and values["gen.blocks"] == 18 and values["steps"] == 20000
    assert values["psnr_y"] == 27.1 and values["ssim_y"] == 0.78 and values["best_psnr_y"] == 27.3
    assert values["bicubic_psnr_y"] is None and values["params_disc"] == 5000000


def test_runs_left_open_by_failed_jobs_are_closed_as_failed(tmp_path, monkeypatch):
    """In a sequential sweep all jobs share one process: a run a failed job left open must not be reused."""
    import wandb

    monkeypatch.setenv("WANDB_MODE", "offline")
    for key in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(key, str(tmp_path / key.lower()))
    first = wandb.init(project="sr-lightning", dir=str(tmp_path / "a"), mode="offline")  # job 1 fails mid-run ...
    first_id = first.id
    logger = wandb_utils.wandb_logger(save_dir=str(tmp_path / "b"))  # ... job 2 builds its logger
    assert wandb.run is None
    (stale,) = (tmp_path / "a" / "wandb").glob("offline-run-*")
    run = read_offline_run(stale)
    assert run["summary"]["status"] == "failed" and run["exit_code"] == 1

    assert logger.experiment.id != first_id  # job 2 starts its own run (not job 1's), then fails with a message
    wandb_utils.log_failure("crop: got 30, not divisible by scale=4")
    assert wandb.run is None
    (failed,) = (tmp_path / "b" / "wandb").glob("offline-run-*")
    run = read_offline_run(failed)
    assert run["summary"]["error"] == "crop: got 30, not divisible by scale=4" and run["exit_code"] == 1
