"""Sweeps: ablation presets, launcher configs, per-worker GPU pinning, and a real 2x2 multirun with one job
that fails inside the job while the others complete.

The tiny sweep (conftest's session fixture `tiny_sweep`, overrides in helpers.SWEEP_ARGS) runs once per test
session and is shared with test_report.py, test_wandb.py and test_notebook.py: `scale=3,4 x crop=24,32`, where
only (scale 3, crop 32) is invalid (32 is not a multiple of 3), so exactly job 1 fails in its own config
validation and jobs 0, 2, 3 complete.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra.utils import get_class
from omegaconf import OmegaConf

from sr_lightning import launchers
from sr_lightning.config import validate_train_config

from helpers import FAILED_JOB, REPO_ROOT, compose_train

# The grids the issue asks for (the reports' ablations), per preset.
ABLATION_GRIDS = {
    "ablation/gen_blocks": {"gen.blocks": [8, 16, 32]},
    "ablation/disc_blocks": {"disc.blocks": [4, 8, 16]},
    "ablation/crop": {"crop": [48, 64, 96, 128]},
    "ablation/lr": {"lr": [1e-4, 1e-5, 1e-6]},
    "ablation/activation": {"gen.activation": ["swish", "leakyrelu", "prelu"]},
}

@pytest.mark.slow
def test_sweep_records_the_failed_job_and_runs_the_others(tiny_sweep):
    output = tiny_sweep.result.stdout + tiny_sweep.result.stderr
    jobs = sorted(p.name for p in tiny_sweep.dir.iterdir() if p.is_dir() and p.name.isdigit())
    assert jobs == ["0", "1", "2", "3"], output[-3000:]
    failed = tiny_sweep.summary(FAILED_JOB)
    assert failed["status"] == "failed"
    assert "crop: got 32, not divisible by scale=3" in failed["error"]
    assert (tiny_sweep.dir / FAILED_JOB / "error.log").is_file()
    assert not (tiny_sweep.dir / FAILED_JOB / "checkpoints").exists()
    for job in ("0", "2", "3"):
        summary = tiny_sweep.summary(job)
        assert summary["status"] == "completed", summary
        assert summary["global_step"] == 1
        assert 0 < summary["final"]["val/psnr_y"] < 60
        assert (tiny_sweep.dir / job / "checkpoints" / "last.ckpt").is_file()
        assert (tiny_sweep.dir / job / "metrics.csv").is_file()
    # the job configs carry their own grid point
    assert OmegaConf.load(tiny_sweep.dir / "2" / ".hydra" / "config.yaml").crop == 24
    assert OmegaConf.load(tiny_sweep.dir / "2" / ".hydra" / "config.yaml").scale == 4
    # one line per job at the end, and the tiny_sweep's exit status says something failed
    assert f"job {FAILED_JOB}: failed" in output and "job 3: completed" in output
    assert f"python -m sr_lightning report dir={tiny_sweep.dir}" in output
    assert tiny_sweep.result.returncode == 1, output[-3000:]


# ---------------------------------------------------------------------------------------- ablation presets
@pytest.mark.parametrize("preset", sorted(ABLATION_GRIDS))
def test_ablation_grid_points_compose_and_validate(preset, tmp_path):
    cfg = compose_train([f"experiment={preset}"], output_dir=tmp_path)
    params = OmegaConf.to_container(cfg.hydra.sweeper.params)
    (key, expected), = ABLATION_GRIDS[preset].items()
    assert list(params) == [key]
    values = [v.strip() for v in str(params[key]).split(",")]
    assert [type(e)(v) for e, v in zip(expected, values)] == expected
    for value in values:  # every job of the grid is a valid training config
        job = compose_train([f"experiment={preset}", f"{key}={value}"], output_dir=tmp_path)
        validate_train_config(job)
        assert OmegaConf.select(job, key) == type(expected[0])(value)
        # every interpolation of the run config resolves (the hydra node needs a live sweep: job.num)
        OmegaConf.to_container(OmegaConf.masked_copy(job, [k for k in job if k != "hydra"]), resolve=True)


def test_ablations_share_the_seed000_recipe_and_step_budget(tmp_path):
    budgets = set()
    for preset in sorted(ABLATION_GRIDS) + ["ablation/base"]:
        cfg = compose_train([f"experiment={preset}"], output_dir=tmp_path)
        assert cfg.model_name == "seed000"
        assert cfg.gen.activation == "swish" and cfg.gen.channels == 20 and cfg.gen.blocks == 18
        assert cfg.disc._target_.endswith("VGGStyleDiscriminator") and cfg.loss.adversarial is not None
        budgets.add((cfg.trainer.max_steps, cfg.trainer.val_check_interval, cfg.batch_size, cfg.lr, cfg.crop))
    assert len(budgets) == 1, budgets
    assert next(iter(budgets))[0] >= 1000


def _grid(cfg, command_line: list[str]) -> list[list[str]]:
    """The jobs Hydra's BasicSweeper makes: preset params first, then command-line overrides (which win)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    params = [f"{k}={v}" for k, v in cfg.hydra.sweeper.params.items()]
    overrides = OverridesParser.create().parse_overrides(params + command_line)
    return BasicSweeper.split_arguments(overrides, max_batch_size=None)[0]


def test_preset_grid_expands_and_combines_with_command_line_axes(tmp_path):
    cfg = compose_train(["experiment=ablation/gen_blocks"], output_dir=tmp_path)
    assert _grid(cfg, []) == [["gen.blocks=8"], ["gen.blocks=16"], ["gen.blocks=32"]]
    assert len(_grid(cfg, ["lr=1e-4,1e-5"])) == 6  # a second axis from the command line
    assert _grid(cfg, ["gen.blocks=2,4"]) == [["gen.blocks=2"], ["gen.blocks=4"]]  # the command line wins


# ---------------------------------------------------------------------------------------- launchers
def test_joblib_gpus_launcher_runs_one_worker_per_visible_gpu(tmp_path, monkeypatch):
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher", reason="pip install hydra-joblib-launcher")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5,6")
    cfg = compose_train(["hydra/launcher=joblib_gpus"], output_dir=tmp_path)
    launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    assert launcher["_target_"].endswith("JoblibLauncher")
    get_class(launcher["_target_"])  # the plugin is installed
    assert launcher["n_jobs"] == 3
    assert cfg.hydra.callbacks.gpu_slots._target_ == "sr_lightning.launchers.GPUSlotCallback"
    assert "sweep_summary" in cfg.hydra.callbacks  # the train command's own callback is kept


def test_slurm_launcher_composes(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="pip install hydra-submitit-launcher")
    cfg = compose_train(["hydra/launcher=slurm", "hydra.launcher.gpus_per_node=4"], output_dir=tmp_path)
    launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    assert launcher["_target_"].endswith("SlurmLauncher")
    get_class(launcher["_target_"])
    assert launcher["tasks_per_node"] == 4  # one rank per GPU for trainer=ddp
    assert launcher["submitit_folder"].startswith(str(Path(OmegaConf.select(cfg, "hydra.sweep.dir"))))


HOLD_SLOT = """
import sys
from pathlib import Path
from sr_lightning.launchers import acquire_slot
held = acquire_slot(Path(sys.argv[1]), 2)
print(held[0] if held else "none", flush=True)
sys.stdin.read()  # hold the lock until the test closes stdin
"""


def test_gpu_slots_are_exclusive_across_processes(tmp_path):
    holders = [subprocess.Popen([sys.executable, "-c", HOLD_SLOT, str(tmp_path)], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True, cwd=REPO_ROOT) for _ in range(2)]
    try:
        slots = sorted(int(p.stdout.readline()) for p in holders)
        assert slots == [0, 1]
        assert launchers.acquire_slot(tmp_path, 2) is None  # both GPUs taken
        holders[0].stdin.close()
        holders[0].wait(timeout=30)  # a worker that exits frees its GPU ...
        freed = launchers.acquire_slot(tmp_path, 2)
        assert freed is not None  # ... for the next worker
        freed[1].close()
    finally:
        for p in holders:
            if p.poll() is None:
                p.stdin.close()
                p.wait(timeout=30)


def test_gpu_slot_callback_pins_a_worker_to_one_gpu_for_all_its_jobs(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    monkeypatch.delenv("SR_SWEEP_GPUS", raising=False)  # restored after the test: the callback sets it
    monkeypatch.setattr(launchers, "_held", None)
    callback = launchers.GPUSlotCallback()
    callback.on_multirun_start(OmegaConf.create({}))
    assert callback.gpus == ["3", "5"]

    def job(num: int):
        return OmegaConf.create({"hydra": {"job": {"num": num},
                                           "runtime": {"output_dir": str(tmp_path / "sweep" / str(num))}}})

    other_worker = launchers.acquire_slot(tmp_path / "sweep" / ".gpu_slots", 2)  # slot 0 busy elsewhere
    try:
        callback.on_job_start(job(0))
        assert os.environ["CUDA_VISIBLE_DEVICES"] == "5"
        callback.on_job_start(job(2))  # the same worker's next job stays on its GPU
        assert os.environ["CUDA_VISIBLE_DEVICES"] == "5"
    finally:
        other_worker[1].close()
        if launchers._held is not None:
            launchers._held[1].close()
