"""The command line as users type it: help, composition of every preset, bad-config messages."""
from __future__ import annotations

import re
import sys

import pytest
from hydra.utils import get_class
from omegaconf import OmegaConf

from sr_lightning.cli import COMMANDS, main
from sr_lightning.config import ConfigError, validate_train_config

from helpers import REPO_ROOT, compose_train

MODEL_PRESETS = sorted(p.stem for p in (REPO_ROOT / "conf" / "model").glob("*.yaml"))
EXPERIMENTS = sorted(str(p.relative_to(REPO_ROOT / "conf" / "experiment").with_suffix(""))
                     for p in (REPO_ROOT / "conf" / "experiment").rglob("*.yaml"))


def test_help_lists_commands_and_groups(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for command in COMMANDS:
        assert f"  {command}" in out
    for group in ("model", "gen", "disc", "loss", "data", "trainer", "logger", "experiment"):
        assert f"  {group}" in out
    assert "srgan" in out and "quickstart" in out


def test_unknown_command_is_one_clear_line(capsys):
    assert main(["trian"]) == 2
    err = capsys.readouterr().err
    assert "unknown command 'trian'" in err and "train" in err


HYDRA_COMMANDS = [name for name, command in COMMANDS.items() if command.config]


@pytest.mark.parametrize("name", HYDRA_COMMANDS)
@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_hydra_command_help_says_what_it_does_and_lists_its_own_keys(name, flag, capsys):
    from sr_lightning.cli import CONF_DIR

    assert main([name, flag]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{name}: {COMMANDS[name].summary}\n")
    primary = OmegaConf.to_container(OmegaConf.load(CONF_DIR / f"{COMMANDS[name].config}.yaml"))
    for key in primary:
        if key not in ("defaults", "hydra", "task_name", "model_name"):
            assert f"\n  {key}=" in out or f"\n  {key}." in out, key
    groups = [next(iter(e)) for e in primary.get("defaults", []) if isinstance(e, dict)
              and not next(iter(e)).startswith(("override", "hydra"))]
    section = out.split("Config groups")[1] if "Config groups" in out else ""
    listed = [line.split()[0] for line in section.splitlines()[1:] if line.startswith("  ")
              and not line.startswith("   ")]
    assert listed == groups


def test_export_help_lists_no_training_groups(capsys):
    assert main(["export", "--help"]) == 0
    out = capsys.readouterr().out
    assert "format=safetensors" in out and "safetensors | onnx | torchscript" in out and "opset=18" in out
    for group in ("trainer", "callbacks", "logger", "model", "data"):
        assert group not in out
    assert "Config groups" not in out


def test_train_help_shows_the_values_the_overrides_give(capsys):
    assert main(["train", "--help"]) == 0
    default = capsys.readouterr().out
    assert "  crop=96 " in default and "HR patch size" in default
    assert "  module.ema_decay=0.999" in default and "  module.g_optim.lr=${lr}" in default
    assert re.search(r"\n  disc +null\n +also: .*vgg", default)
    assert re.search(r"\n  model +srresnet +\(preset: picks gen/disc/loss", default)
    assert main(["model=srgan_mse", "crop=64", "--help"]) == 0  # no command: train, as when running
    chosen = capsys.readouterr().out
    assert "  crop=64 " in chosen and re.search(r"\n  disc +vgg\n", chosen)
    assert main(["train", "model=nosuch", "--help"]) == 0  # still help, with the defaults and why
    out = capsys.readouterr().out
    assert "model=nosuch did not compose" in out and "  crop=96 " in out


@pytest.mark.parametrize("name", [name for name, command in COMMANDS.items() if not command.config])
def test_argv_command_help_is_their_own_and_exits_0(name, capsys):
    assert main([name, "--help"]) == 0
    out = capsys.readouterr().out
    assert out.strip() and "Traceback" not in out


def test_a_user_error_escaping_a_command_is_one_error_line_and_exit_2(capsys, monkeypatch):
    from sr_lightning.commands import export, report
    from sr_lightning.errors import UserError

    def broken(_):
        raise UserError("weights.pth: not found")

    monkeypatch.setattr(report, "run", broken)
    assert main(["report", "somewhere"]) == 2
    assert capsys.readouterr().err == "error: weights.pth: not found\n"
    monkeypatch.setattr(export, "main", broken)  # inside Hydra's job, where Hydra would print it as exit 1
    monkeypatch.setattr(sys, "argv", list(sys.argv))  # the CLI hands Hydra its arguments through sys.argv
    # (Hydra in this process: its logging set-up would keep handlers on pytest's captured streams)
    assert main(["export", "ckpt=x.ckpt", "hydra/job_logging=none", "hydra/hydra_logging=none"]) == 2
    assert capsys.readouterr().err == "error: weights.pth: not found\n"


def test_ctrl_c_in_a_command_is_one_line_and_exit_130(capsys, monkeypatch):
    from sr_lightning.commands import report

    def interrupted(argv):
        raise KeyboardInterrupt

    monkeypatch.setattr(report, "run", interrupted)
    assert main(["report", "somewhere"]) == 130
    assert capsys.readouterr().err.strip() == "report: interrupted"


@pytest.mark.parametrize("preset", MODEL_PRESETS)
def test_every_model_preset_composes_validates_and_builds(preset, tmp_path):
    cfg = compose_train([f"model={preset}"], output_dir=tmp_path)
    if cfg.gen._target_.startswith("sr_lightning.models.interpolation."):
        with pytest.raises(ConfigError, match="nothing to train"):
            validate_train_config(cfg)
        return
    validate_train_config(cfg)
    assert cfg.model_name == preset
    gen_cls = get_class(cfg.gen._target_)
    assert cfg.scale in gen_cls.supported_scales
    if cfg.get("disc") is not None:
        assert cfg.loss.adversarial is not None
        get_class(cfg.disc._target_)
    # the short keys reach the nested config
    assert cfg.data.crop == cfg.crop and cfg.module.g_optim.lr == cfg.lr and cfg.gen.scale == cfg.scale


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes_and_validates(experiment, tmp_path):
    cfg = compose_train([f"experiment={experiment}"], output_dir=tmp_path)
    validate_train_config(cfg)
    # every interpolation of the run config resolves (Hydra's own node needs a running job)
    OmegaConf.to_container(OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]), resolve=True)


def test_short_keys_are_interpolated(tmp_path):
    cfg = compose_train(["model=srgan", "crop=128", "lr=1e-5", "gen.blocks=8", "disc.blocks=4", "scale=2",
                         "batch_size=4"], output_dir=tmp_path)
    assert cfg.data.crop == 128 and cfg.data.scale == 2 and cfg.data.batch_size == 4
    assert cfg.module.g_optim.lr == 1e-5 and cfg.module.d_optim.lr == 1e-5
    assert cfg.gen.blocks == 8 and cfg.disc.blocks == 4 and cfg.gen.scale == 2


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        (["scale=3", "crop=100"], "crop"),
        (["gen.blocks=0"], "gen.blocks"),
        (["model=srgan", "disc.blocks=-1"], "disc.blocks"),
        (["lr=-1"], "lr"),
        (["color=y"], "gen.in_channels"),
        (["precision=fp8"], "precision"),
        (["model=lapsrn", "scale=3"], "scale"),
        (["model=srgan_mse", "trainer=ddp_cpu", "module.sync_bn=true"], "module.sync_bn"),
        (["model=srgan_mse", "trainer.accelerator=cpu", "trainer.devices=1", "+trainer.num_nodes=2",
          "module.sync_bn=true"], "module.sync_bn"),
    ],
)
def test_invalid_values_name_the_key(overrides, key, tmp_path):
    cfg = compose_train(overrides, output_dir=tmp_path)
    with pytest.raises(ConfigError) as info:
        validate_train_config(cfg)
    assert info.value.key == key
    assert "allowed" in str(info.value) or "supports" in str(info.value) or "needs" in str(info.value)


@pytest.mark.parametrize("devices", ["auto", "1", "'1'"])
def test_sync_bn_is_accepted_for_one_cpu_process(devices, tmp_path):
    """devices=auto is one process on CPU in Lightning, so sync_bn (a no-op there) must not be refused."""
    cfg = compose_train(["model=srgan_mse", "trainer.accelerator=cpu", f"trainer.devices={devices}",
                         "module.sync_bn=true"], output_dir=tmp_path)
    validate_train_config(cfg)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["train", "scale=3", "crop=100"], "crop: got 100, not divisible by scale=3"),
        (["train", "model=nosuchmodel"], "Could not find 'model/nosuchmodel'"),
        (["train", "lr_rate=1e-4"], "lr_rate"),
    ],
)
def test_bad_config_fails_before_training_without_traceback(cli, tmp_path, args, expected):
    result = cli(*args, f"hydra.run.dir={tmp_path}")
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert expected in output
    assert "Traceback" not in output
    assert not (tmp_path / "checkpoints").exists()


@pytest.mark.slow
def test_cfg_job_prints_composed_config(cli, tmp_path):
    result = cli("train", "model=srgan", "crop=128", "--cfg", "job")
    assert result.returncode == 0, result.stderr
    cfg = OmegaConf.create(result.stdout)
    assert cfg.crop == 128 and cfg.gen._target_.endswith("SRResNet") and cfg.disc._target_


@pytest.mark.slow
def test_srgan_without_vgg_weights_stops_before_training(cli, tmp_path):
    """The real SRGAN recipe needs ImageNet VGG19; offline it must say where to put it and what else to use."""
    result = cli("train", "model=srgan", "crop=128", f"hydra.run.dir={tmp_path}",
                 env={"TORCH_HOME": str(tmp_path / "torch_home")})
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert "vgg19" in output.lower() and str(tmp_path / "torch_home") in output
    assert "srgan_mse" in output
    assert "Traceback" not in output
    assert not (tmp_path / "checkpoints").exists()


@pytest.mark.slow
def test_best_ckpt_is_slim_and_evaluates_through_the_cli(cli, tmp_path):
    """best.ckpt holds G, EMA, config and step only (no D, no optimizer states); last.ckpt keeps everything."""
    import csv

    import numpy as np
    import torch
    from PIL import Image

    run = tmp_path / "run"
    result = cli("train", "model=srgan_mse", "gen.blocks=1", "gen.channels=8", "crop=32", "batch_size=2",
                 "trainer.max_steps=2", "trainer.val_check_interval=1", "callbacks=none", "logger=csv",
                 "precision=32-true", f"hydra.run.dir={run}")
    assert result.returncode == 0, result.stderr[-3000:]
    best_path, last_path = run / "checkpoints" / "best.ckpt", run / "checkpoints" / "last.ckpt"
    best = torch.load(best_path, weights_only=True)
    last = torch.load(last_path, weights_only=True)
    assert set(best) == {"state_dict", "hyper_parameters", "global_step", "epoch", "sr_lightning_slim"}
    assert best["sr_lightning_slim"] is True and best["global_step"] in (1, 2)
    prefixes = {k.split(".")[0] for k in best["state_dict"]}
    assert prefixes == {"gen", "gen_ema"}
    assert best["hyper_parameters"]["cfg"]["model_name"] == "srgan_mse"
    assert "optimizer_states" in last and any(k.startswith("disc.") for k in last["state_dict"])
    generators = {k: v for k, v in last["state_dict"].items() if k.startswith(("gen.", "gen_ema."))}
    assert best["state_dict"].keys() == generators.keys()
    # The generator is what is left: best.ckpt is the bytes of its tensors plus a little, last.ckpt far more.
    weights_bytes = sum(v.numel() * v.element_size() for v in generators.values())
    assert best_path.stat().st_size < weights_bytes + 200_000
    assert last_path.stat().st_size > 20 * best_path.stat().st_size

    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(images / f"im{i}.png")
    out = tmp_path / "eval"
    result = cli("eval", f"ckpt={best_path}", "data=folder", f"data.hr_dir={images}", "data.num_workers=0",
                 "comparison.images=0", "lpips=false", f"hydra.run.dir={out}")
    assert result.returncode == 0, result.stderr[-3000:]
    with (out / "results.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 2 and rows[1]["model"].startswith("srgan_mse")


@pytest.mark.slow
@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["train", "model=nosuch"], ["Could not find 'model/nosuch'", "Available options in 'model':",
                                     "srresnet, ", "srgan_mse"]),
        (["train", "nosuch=1"], ["Could not override 'nosuch'", "+nosuch=1", "Key 'nosuch' is not in struct"]),
        (["eval", "data=nosuch"], ["In 'eval': Could not find 'data/nosuch'", "Available options in 'data':",
                                   "set5, "]),
        (["train", "-m", "model=srresnet,nosuch"], ["Could not find 'model/nosuch'"]),  # a sweep's job
        (["train", "lr=[1"], ["lr=[1: ", "no viable alternative"]),  # an override that does not parse
    ],
)
def test_a_hydra_composition_error_is_one_error_line_and_exit_2(cli, tmp_path, args, expected):
    result = cli(*args, f"hydra.run.dir={tmp_path / 'run'}", f"hydra.sweep.dir={tmp_path / 'sweep'}")
    assert result.returncode == 2, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for text in expected:
        assert text in lines[0], text
    for noise in ("Traceback", "HYDRA_FULL_ERROR", "Config search path", "provider="):
        assert noise not in result.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_hydra_full_error_keeps_the_traceback_of_a_composition_error(cli, tmp_path):
    result = cli("train", "model=nosuch", f"hydra.run.dir={tmp_path}", env={"HYDRA_FULL_ERROR": "1"})
    assert result.returncode == 1
    assert "Traceback" in result.stderr and "MissingConfigException" in result.stderr
    assert "Could not find 'model/nosuch'" in result.stderr and not result.stderr.startswith("error:")


@pytest.mark.parametrize("users_full_error", [None, "0"])
def test_an_exception_in_a_job_keeps_its_traceback_and_exit_1(capsys, monkeypatch, tmp_path, users_full_error):
    """A bug is not a config error: Hydra's traceback and exit 1, and the job sees the user's HYDRA_FULL_ERROR
    (the CLI sets it only while Hydra composes)."""
    import os

    from sr_lightning.commands import export

    seen_in_job = []

    def buggy(_):
        seen_in_job.append(os.environ.get("HYDRA_FULL_ERROR"))
        raise RuntimeError("a bug in export")

    if users_full_error is None:
        monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    else:
        monkeypatch.setenv("HYDRA_FULL_ERROR", users_full_error)
    monkeypatch.setattr(export, "main", buggy)
    monkeypatch.setattr(sys, "argv", list(sys.argv))
    with pytest.raises(SystemExit) as exit_:
        main(["export", "ckpt=x.ckpt", f"hydra.run.dir={tmp_path}", "hydra/job_logging=none",
              "hydra/hydra_logging=none"])
    assert exit_.value.code == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "RuntimeError: a bug in export" in err and "error:" not in err
    assert seen_in_job == [users_full_error]
    assert os.environ.get("HYDRA_FULL_ERROR") == users_full_error  # restored after the run
