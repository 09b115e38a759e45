"""End-to-end training through the real entry point, on the embedded sample photos."""
from __future__ import annotations

import csv
import json

import lightning.pytorch as pl
import pytest
import torch
from hydra.utils import instantiate

from sr_lightning.loading import load_generator
from sr_lightning.module import SRModule

from helpers import TINY as ANY_PRESET_TINY
from helpers import TINY_NET, compose_train

# Per-step rows in metrics.csv: several tests read them.
TINY = [*ANY_PRESET_TINY, *TINY_NET, "trainer.log_every_n_steps=1"]


def _read_metrics(run_dir):
    with open(run_dir / "metrics.csv") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.slow
def test_train_cli_leaves_every_artefact(cli, tmp_path):
    # trainer.log_every_n_steps stays at its default (50): a 2-step run must still log its losses
    result = cli("train", *[a for a in TINY if not a.startswith("trainer.log_every_n_steps=")],
                 f"hydra.run.dir={tmp_path}")
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [line for line in result.stdout.splitlines() if line.startswith("output directory:")]
    assert len(lines) == 2 and str(tmp_path) in lines[0]  # printed at the start and at the end
    output = result.stdout + result.stderr
    for notice in ("GPU available", "TPU available", "limit_val_batches", "`Trainer.fit` stopped", "litlogger"):
        assert notice not in output, notice  # Lightning's start-up notices and product tips, on every run
    assert "G SRResNet: 10,375 parameters" in result.stdout
    for name in (".hydra/config.yaml", "config_resolved.yaml", "checkpoints/last.ckpt", "checkpoints/best.ckpt",
                 "metrics.csv", "summary.json"):
        assert (tmp_path / name).is_file(), name
    assert list((tmp_path / "images").glob("*.png"))
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["global_step"] == 2
    assert summary["best"]["step"] == 2  # the validation after 2 steps is "step 2"
    assert summary["final"]["val/bicubic_psnr_y"] > 20  # bicubic on the held-out photo is a real number
    rows = _read_metrics(tmp_path)
    assert any(row.get("val/psnr_y") for row in rows) and any(row.get("train/g_loss") for row in rows)
    assert load_generator(tmp_path / "checkpoints" / "last.ckpt").scale == 4


@pytest.mark.slow
def test_a_fresh_run_in_a_used_folder_keeps_the_earlier_results(cli, tmp_path):
    assert cli("train", *TINY, f"hydra.run.dir={tmp_path}").returncode == 0
    first = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    result = cli("train", *TINY, "seed=7", f"hydra.run.dir={tmp_path}")  # same folder, no resume
    assert result.returncode == 0, result.stderr[-3000:]
    assert "held an earlier run" in result.stdout
    kept = tmp_path / "earlier-1"
    for name in ("checkpoints/last.ckpt", "checkpoints/best.ckpt", "metrics.csv", "summary.json"):
        assert (kept / name).is_file(), name
    kept_weights = torch.load(kept / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    assert all(torch.equal(first[k], kept_weights[k]) for k in first)
    second = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    assert any(not torch.equal(first[k], second[k]) for k in first)  # seed 7: a different run
    assert not (tmp_path / "metrics.prev.csv").exists()  # the folder move took the old log along


def test_a_run_killed_before_its_first_checkpoint_is_kept_too(tmp_path):
    from sr_lightning.run_folder import archive_earlier_run

    assert archive_earlier_run(tmp_path) is None  # an empty folder: nothing to keep
    (tmp_path / ".hydra").mkdir()  # Hydra's own files belong to the new run
    (tmp_path / "metrics.csv").write_text("step,train/g_loss\n1,0.5\n")
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "step0000001_a.png").write_bytes(b"png")
    assert archive_earlier_run(tmp_path) == tmp_path / "earlier-1"
    assert (tmp_path / "earlier-1" / "metrics.csv").read_text().endswith("1,0.5\n")
    assert (tmp_path / "earlier-1" / "images" / "step0000001_a.png").is_file()
    assert (tmp_path / ".hydra").is_dir() and not (tmp_path / "metrics.csv").exists()


@pytest.mark.slow
def test_train_cli_gan_preset_logs_both_networks(cli, tmp_path):
    result = cli("train", "model=srgan_mse", "disc.blocks=2", "disc.channels=8", "disc.dense_features=16", *TINY,
                 f"hydra.run.dir={tmp_path}")
    assert result.returncode == 0, result.stderr[-3000:]
    header = _read_metrics(tmp_path)[0].keys()
    for key in ("train/g_pixel", "train/g_adversarial", "train/d_loss", "train/d_real_mean", "train/d_fake_mean",
                "train/lr_g", "train/lr_d"):
        assert key in header, key
    assert "D VGGStyleDiscriminator" in result.stdout


def test_thirty_steps_on_sample_data_lower_the_pixel_loss(tmp_path):
    cfg = compose_train(["model=msrresnet", "gen.image_skip=none", "gen.blocks=1", "gen.channels=16", "crop=32", "batch_size=8",
                         "lr=1e-3", "module.ema_decay=null", "precision=32-true"], output_dir=tmp_path)
    pl.seed_everything(0)
    datamodule = instantiate(cfg.data)
    module = SRModule(cfg)
    losses = []
    original = module._backward_and_step

    def record(name, loss, optimizer, params, step):
        losses.append(float(loss.detach()))
        return original(name, loss, optimizer, params, step)

    module._backward_and_step = record
    trainer = pl.Trainer(max_steps=30, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         limit_val_batches=0, enable_model_summary=False, accelerator="cpu")
    trainer.fit(module, datamodule=datamodule)
    assert len(losses) == 30
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.7 * first, (first, last)


RESUME = ["model=srgan_mse", "disc.blocks=2", "disc.channels=8", "disc.dense_features=16", "gen.blocks=1",
          "gen.channels=8", "crop=32", "batch_size=2", "trainer.limit_val_batches=0", "callbacks=none",
          "precision=32-true", "checkpoint_every_n_steps=1", "module.ema_decay=0.9", "trainer.log_every_n_steps=1"]


@pytest.mark.slow
def test_resume_auto_through_the_cli_reproduces_a_straight_run(cli, tmp_path):
    """2N steps straight == N steps, stop, `resume=auto` for N more: G, D, EMA, optimizers, data stream."""
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert cli("train", *RESUME, "trainer.max_steps=4", f"hydra.run.dir={straight}").returncode == 0
    assert cli("train", *RESUME, "trainer.max_steps=2", f"hydra.run.dir={split}").returncode == 0
    result = cli("train", *RESUME, "trainer.max_steps=4", "resume=auto", f"hydra.run.dir={split}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resuming from" in result.stdout
    a = torch.load(straight / "checkpoints" / "last.ckpt", weights_only=False)
    b = torch.load(split / "checkpoints" / "last.ckpt", weights_only=False)
    assert a["global_step"] == b["global_step"] == 4
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), key
    for opt_a, opt_b in zip(a["optimizer_states"], b["optimizer_states"]):
        for pid, state in opt_a["state"].items():
            assert torch.equal(state["exp_avg"], opt_b["state"][pid]["exp_avg"])
    # the log continues too: the rows of the first leg survive the resume, at the same steps as a straight run
    def logged(run_dir):
        return [(row["step"], row["train/g_loss"]) for row in _read_metrics(run_dir) if row.get("train/g_loss")]

    assert logged(split) == logged(straight) and len(logged(split)) == 4


def test_summary_is_written_by_the_first_process_only(tmp_path, monkeypatch):
    """Under DDP every process ends in main(); two writers renaming one temporary file used to race."""
    from sr_lightning import run_folder

    summary = run_folder.RunSummary(status="completed", output_dir=str(tmp_path), global_step=2)
    monkeypatch.setattr(run_folder, "first_process", lambda: False)
    run_folder.write_summary(tmp_path, summary)
    assert not list(tmp_path.iterdir())
    monkeypatch.setattr(run_folder, "first_process", lambda: True)
    run_folder.write_summary(tmp_path, summary)
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]
    assert run_folder.read_summary(tmp_path) == summary  # every field written, read back the same


# --- setup mistakes that used to surface late or as walls of text (issue 15, section 5) ---

def _error_lines(result) -> list[str]:
    return [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("error:")]


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a CUDA device")
def test_trainer_gpu_without_a_gpu_stops_before_any_work(cli, tmp_path):
    result = cli("train", "trainer=gpu", f"hydra.run.dir={tmp_path}")
    assert result.returncode == 2, result.stderr[-3000:]
    (line,) = _error_lines(result)
    assert line.startswith("error: trainer.accelerator: gpu (trainer=gpu) needs a CUDA GPU")
    assert "CUDA" in line.split("but", 1)[1] and "use trainer=cpu" in line
    assert "parameters" not in result.stdout  # stopped before the model was built
    assert "No supported gpu backend" not in result.stdout + result.stderr


@pytest.mark.parametrize(("choice", "built_with", "expected"), [
    ("gpu", "13.0", r"gpu \(trainer=gpu\) needs a CUDA GPU, but no CUDA device found \(torch .* built with CUDA 13.0"),
    ("ddp", None, r"gpu \(trainer=ddp\) .* torch .* is built without CUDA; use trainer=ddp_cpu .* or trainer=cpu"),
])
def test_gpu_presets_without_cuda_name_the_key_the_finding_and_the_fix(monkeypatch, choice, built_with, expected):
    from sr_lightning.config import ConfigError, check_accelerator

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.version, "cuda", built_with)
    cfg = compose_train([f"trainer={choice}"])
    with pytest.raises(ConfigError, match=expected) as info:
        check_accelerator(cfg, choice)
    assert info.value.key == "trainer.accelerator"
    check_accelerator(compose_train(["trainer=cpu"]), "cpu")  # nothing to say


@pytest.mark.slow
def test_ckpt_path_of_another_architecture_is_one_line_that_suggests_init_from(cli, tmp_path):
    from helpers import TINY_GEN, write_checkpoint

    other = write_checkpoint(tmp_path / "other.ckpt", {**TINY_GEN, "scale": 4, "channels": 16, "blocks": 2})
    result = cli("train", *TINY, "scale=4", f"ckpt_path={other}", f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode == 2, result.stderr[-3000:]
    (line,) = _error_lines(result)
    assert line.startswith(f"error: ckpt_path={other}: the checkpoint holds other networks than this run")
    assert "SRResNet(blocks=2, channels=16" in line and "SRResNet(blocks=1, channels=8" in line
    assert f"init_from={other}" in line and len(line) < 1000
    assert "size mismatch" not in result.stdout + result.stderr  # Lightning's strict load never ran
    assert "Traceback" not in result.stderr


def test_a_checkpoint_of_the_same_networks_passes_the_check(tmp_path):
    from sr_lightning.init_from import SetupError
    from sr_lightning.training import check_resume_architecture

    cfg = compose_train(TINY, output_dir=tmp_path)
    module = SRModule(cfg)
    checkpoint = {"state_dict": module.state_dict(), "hyper_parameters": {"cfg": module.cfg}}
    check_resume_architecture(module, checkpoint, "same.ckpt")
    del checkpoint["state_dict"]["gen_ema." + next(iter(module.gen.state_dict()))]
    with pytest.raises(SetupError, match="1 tensors only in this run .*module.ema_decay"):
        check_resume_architecture(module, checkpoint, "same.ckpt")


@pytest.mark.slow
def test_a_missing_init_from_file_names_init_from(cli, tmp_path):
    result = cli("train", *TINY, f"init_from={tmp_path / 'nope.ckpt'}", f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode == 2, result.stderr[-3000:]
    (line,) = _error_lines(result)
    assert line.startswith(f"error: init_from={tmp_path / 'nope.ckpt'}: file not found") and "ckpt=" not in line
    assert "parameters" not in result.stdout  # before the model was built


def test_read_checkpoint_names_the_option_it_was_given_as(tmp_path):
    from sr_lightning.checkpoint import CheckpointError, read_checkpoint

    with pytest.raises(CheckpointError, match=r"give init_from=") as info:
        read_checkpoint(tmp_path / "nope.ckpt", key="init_from")
    assert "ckpt=" not in str(info.value).replace("init_from=", "")


# --- library pieces of a run (issue 16): resume from a slim best.ckpt, short runs, init_from read once ---

def _slim_best(path, module):
    """best.ckpt as the checkpointer writes it: generator weights and config only, no D or optimiser states."""
    state = {k: v for k, v in module.state_dict().items() if k.startswith(("gen.", "gen_ema."))}
    torch.save({"state_dict": state, "hyper_parameters": {"cfg": module.cfg}, "global_step": 2, "epoch": 0,
                "sr_lightning_slim": True}, path)
    return path


def test_a_slim_best_ckpt_cannot_resume_and_the_message_names_last_ckpt_and_init_from(tmp_path):
    from sr_lightning.init_from import SetupError
    from sr_lightning.training import read_resume_checkpoint

    (tmp_path / "checkpoints").mkdir()
    best = _slim_best(tmp_path / "checkpoints" / "best.ckpt", SRModule(compose_train(TINY, output_dir=tmp_path)))
    with pytest.raises(SetupError) as info:
        read_resume_checkpoint(best, "ckpt_path")
    message = str(info.value)
    assert message.startswith(f"ckpt_path={best}: a slim best.ckpt") and "\n" not in message
    assert f"{tmp_path / 'checkpoints' / 'last.ckpt'}" in message and f"init_from={best}" in message


@pytest.mark.slow
def test_ckpt_path_of_a_slim_best_ckpt_is_one_line_before_anything_is_built(cli, tmp_path):
    best = _slim_best(tmp_path / "best.ckpt", SRModule(compose_train(TINY, output_dir=tmp_path)))
    result = cli("train", *TINY, f"ckpt_path={best}", f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode == 2, result.stderr[-3000:]
    (line,) = _error_lines(result)
    assert line.startswith(f"error: ckpt_path={best}: a slim best.ckpt") and f"init_from={best}" in line
    assert "parameters" not in result.stdout and "Traceback" not in result.stderr


@pytest.mark.parametrize(("overrides", "expected"), [
    (["trainer.max_steps=2", "trainer.log_every_n_steps=50"], 2),      # a short run still logs its losses
    (["trainer.max_steps=1000", "trainer.log_every_n_steps=50"], 50),  # a long one keeps the interval
    (["trainer.max_steps=-1", "trainer.log_every_n_steps=50"], 50),    # no step budget (epochs)
])
def test_log_interval_is_at_most_the_run_length(overrides, expected):
    from sr_lightning.training import trainer_overrides

    assert trainer_overrides(compose_train(overrides)) == {"log_every_n_steps": expected}


def test_init_from_reads_its_file_once(tmp_path, monkeypatch):
    """A training checkpoint and a community .pth are each read once: the kind is decided from what was read."""
    from spandrel.architectures.Compact import Compact

    from sr_lightning.init_from import load_initial_weights, read_initial_generator

    from helpers import TINY_GEN, write_checkpoint

    reads = []
    real_load = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: reads.append(a[0]) or real_load(*a, **k))

    ours = write_checkpoint(tmp_path / "run.ckpt", {**TINY_GEN, "scale": 4})
    cfg = compose_train([*TINY, f"init_from={ours}"], output_dir=tmp_path)
    initial = read_initial_generator(cfg, user_overrides={})
    assert len(reads) == 1 and not initial.model_file and initial.used_ema
    module = SRModule(cfg)
    load_initial_weights(module, initial)
    assert all(torch.equal(module.gen.state_dict()[k], v) for k, v in initial.state.items())

    reads.clear()
    community = tmp_path / "2x_compact.pth"
    torch.save({"params": Compact(num_feat=8, num_conv=2, upscale=2).state_dict()}, community)
    cfg = compose_train(["model=spandrel", *[o for o in ANY_PRESET_TINY if not o.startswith("scale=")],
                         f"init_from={community}"], output_dir=tmp_path)
    initial = read_initial_generator(cfg, user_overrides={})
    assert len(reads) == 1 and initial.model_file and cfg.scale == 2 and cfg.gen.arch == "Compact"
