"""Community model files (.pth/.safetensors without our sidecar) through eval, upscale, export and init_from."""
from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import spandrel
import torch
from omegaconf import OmegaConf
from safetensors.torch import save_file

from sr_lightning.checkpoint import CheckpointError
from sr_lightning.loading import load_generator

from helpers import TINY, TINY_GEN, compose_train, run_cli, write_checkpoint

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # spandrel constructors' notices
# the tiny training overrides without scale=: with init_from=<model file> the file decides the scale
TINY_FILE = [o for o in TINY if not o.startswith("scale=")]


def _span_file(path, scale=2, seed=0):
    from spandrel.architectures.SPAN import SPAN

    torch.manual_seed(seed)
    state = SPAN(num_in_ch=3, num_out_ch=3, feature_channels=8, upscale=scale).state_dict()
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return path


def _compact_file(path, scale=2, seed=1, num_feat=8):
    from spandrel.architectures.Compact import Compact

    torch.manual_seed(seed)
    torch.save({"params": Compact(num_feat=num_feat, num_conv=2, upscale=scale).state_dict()}, path)  # BasicSR layout
    return path


def _folder(path, n=2):
    from PIL import Image

    path.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (36, 40, 3), dtype=np.uint8)).save(path / f"im{i}.png")
    return path


def _spandrel_output(path, x):
    with torch.no_grad():
        return spandrel.ModelLoader().load_from_file(path)(x.clone())


# --- load_generator (eval, upscale and export all read files through it) ---------------------------------------

def test_community_files_load_with_the_output_spandrel_gives(tmp_path):
    for path, arch in ((_span_file(tmp_path / "2x_span.safetensors"), "SPAN"),
                       (_compact_file(tmp_path / "2x_compact.pth"), "Compact")):
        loaded = load_generator(path)
        assert (loaded.scale, loaded.color, loaded.value_range) == (2, "rgb", (0.0, 1.0))
        assert loaded.meta["arch"] == arch and loaded.cfg["gen"]["arch"] == arch
        x = torch.rand(1, 3, 11, 9, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            ours = loaded.net(x).clamp(0, 1)
        assert torch.allclose(ours, _spandrel_output(path, x), atol=1e-6)


def test_unrecognised_and_non_sr_files_are_one_line_errors(tmp_path):
    from spandrel.architectures.Compact import Compact
    from spandrel.architectures.DnCNN import DnCNN

    junk = tmp_path / "junk.pth"
    torch.save({"foo.weight": torch.zeros(3, 3)}, junk)
    with pytest.raises(CheckpointError, match=r"junk\.pth: spandrel does not recognise these weights.*"
                                              r"python -m sr_lightning list"):
        load_generator(junk)
    dncnn = tmp_path / "dncnn.pth"
    torch.save(DnCNN(in_nc=3, out_nc=3, nc=8, nb=17).state_dict(), dncnn)
    with pytest.raises(CheckpointError, match=r"dncnn\.pth: a DnCNN model, which sr-lightning cannot use"):
        load_generator(dncnn)
    x1 = tmp_path / "1x_compact.pth"
    torch.save(Compact(num_feat=8, num_conv=2, upscale=1).state_dict(), x1)
    with pytest.raises(CheckpointError, match=r"1x_compact\.pth: .*not as a super-resolution generator.*scale: got 1"):
        load_generator(x1)
    for err in (pytest.raises(CheckpointError),):
        with err as info:
            load_generator(junk)
        assert "\n" not in str(info.value)
    # a Lightning checkpoint of another project keeps its own message
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "global_step": 3}, foreign)
    with pytest.raises(CheckpointError, match="not written by `python -m sr_lightning train`"):
        load_generator(foreign)


# --- eval -----------------------------------------------------------------------------------------------------

def test_eval_one_table_with_model_files_bicubic_and_a_run(tmp_path):
    """`eval weights=[a.safetensors,b.pth] ckpt=run.ckpt model=bicubic` through the real CLI."""
    span = _span_file(tmp_path / "2x_span.safetensors")
    compact = _compact_file(tmp_path / "mine.pth")
    run = write_checkpoint(tmp_path / "best.ckpt", TINY_GEN)  # an x2 run of ours
    hr_dir = _folder(tmp_path / "imgs")
    out = tmp_path / "eval"
    result = run_cli("eval", f"weights=[{span},{compact}]", f"ckpt={run}", "model=bicubic", "data=folder",
                     f"data.hr_dir={hr_dir}", "data.num_workers=0", "lpips=false", "comparison.images=0",
                     f"hydra.run.dir={out}")
    assert result.returncode == 0, result.stderr[-3000:]
    with open(out / "results.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["model"] for r in rows] == ["2x_span", "mine [Compact]", "tiny", "bicubic"]
    assert {r["scale"] for r in rows} == {"2"}  # scale taken from the files
    assert all(math.isfinite(float(r["psnr_y"])) for r in rows)
    assert rows[0]["source"] == str(span) and rows[0]["psnr_y"] != rows[3]["psnr_y"]
    assert "| 2x_span |" in (out / "results.md").read_text()


def test_eval_unrecognised_file_is_one_error_line(tmp_path, capsys):
    from hydra import compose, initialize_config_dir

    from sr_lightning.commands import evaluate as ev

    from helpers import REPO_ROOT

    junk = tmp_path / "junk.safetensors"
    save_file({"foo.weight": torch.zeros(3, 3)}, str(junk))
    with initialize_config_dir(config_dir=str(REPO_ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="eval", overrides=[f"weights={junk}"])
    assert ev.main(cfg) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err
    assert "junk.safetensors: spandrel does not recognise these weights" in err and "sr_lightning list" in err
    with initialize_config_dir(config_dir=str(REPO_ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="eval", overrides=[f"weights={tmp_path / 'missing.pth'}"])
    assert ev.main(cfg) == 2 and "error: weights=" in capsys.readouterr().err


# --- upscale --------------------------------------------------------------------------------------------------

def test_upscale_a_community_file_through_the_cli(tmp_path):
    from PIL import Image

    compact = _compact_file(tmp_path / "2x_compact.pth")
    image = np.random.default_rng(1).integers(0, 256, (13, 17, 3), dtype=np.uint8)
    Image.fromarray(image).save(tmp_path / "a.png")
    result = run_cli("upscale", f"weights={compact}", "input=a.png", "output=a_x2.png", "precision=32-true",
                     "channels_last=false", "progress=false", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    ours = np.asarray(Image.open(tmp_path / "a_x2.png")).astype(int)
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
    theirs = (_spandrel_output(compact, x)[0].permute(1, 2, 0).numpy() * 255).round().astype(int)
    assert ours.shape == (26, 34, 3) and np.abs(ours - theirs).max() <= 1


# --- export ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("arch_file", ["span", "compact"])
def test_onnx_export_of_a_spandrel_model_has_dynamic_batch_and_size(tmp_path, arch_file):
    ort = pytest.importorskip("onnxruntime")
    from sr_lightning.commands import export as export_cmd

    path = (_span_file(tmp_path / "2x_span.safetensors") if arch_file == "span"
            else _compact_file(tmp_path / "2x_compact.pth"))
    cfg = OmegaConf.create({"ckpt": str(path), "format": "onnx", "output": str(tmp_path / "m.onnx"), "use_ema": True,
                            "overwrite": False, "opset": 18, "onnx_exporter": "auto", "check": True})
    out, meta = export_cmd.export(cfg)
    assert meta["io"]["dynamic"] == ["batch", "height", "width"] and meta["gen"]["arch"] in ("SPAN", "Compact")
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    net = load_generator(path).net
    x = torch.rand(2, 3, 19, 27, generator=torch.Generator().manual_seed(5))  # batch 2, not the example's size
    y = session.run(None, {"lr": x.numpy()})[0]
    with torch.no_grad():
        assert y.shape == (2, 3, 38, 54) and np.abs(y - net(x).numpy()).max() <= 1e-4


# --- train init_from=<model file> -----------------------------------------------------------------------------

def _init_cfg(tmp_path, *overrides):
    return compose_train(["model=spandrel", *TINY_FILE, *overrides], output_dir=tmp_path)


def test_init_from_a_model_file_makes_it_the_generator_with_its_weights(tmp_path):
    from sr_lightning.init_from import load_initial_weights, read_initial_generator
    from sr_lightning.module import SRModule

    compact = _compact_file(tmp_path / "2x_compact.pth")
    cfg = _init_cfg(tmp_path, f"init_from={compact}")
    assert cfg.scale == 4 and cfg.gen.arch is None
    initial = read_initial_generator(cfg)
    assert cfg.scale == 2  # the file's scale replaces the default 4
    assert OmegaConf.to_container(cfg.gen) == {"_target_": "sr_lightning.models.spandrel_arch.SpandrelGenerator",
                                               "arch": "Compact", "scale": 2, "in_channels": 3, "num_feat": 8,
                                               "num_conv": 2}
    module = SRModule(cfg, output_dir=str(tmp_path))  # what `train` builds next, from the replaced config
    load_initial_weights(module, initial)
    state = torch.load(compact, weights_only=True)["params"]
    for net in (module.gen, module.gen_ema):
        assert all(torch.equal(net.state_dict()[k], v) for k, v in state.items())
    assert module.hparams["cfg"]["gen"]["arch"] == "Compact" and module.hparams["cfg"]["scale"] == 2


def test_init_from_a_model_file_keeps_the_presets_discriminator_and_loss(tmp_path):
    from sr_lightning.init_from import read_initial_generator

    compact = _compact_file(tmp_path / "2x_compact.pth")
    cfg = compose_train(["model=esrgan", f"init_from={compact}"], output_dir=tmp_path)
    disc, loss = OmegaConf.to_container(cfg.disc), OmegaConf.to_container(cfg.loss)
    read_initial_generator(cfg)
    assert cfg.gen.arch == "Compact" and cfg.scale == 2
    assert OmegaConf.to_container(cfg.disc) == disc and OmegaConf.to_container(cfg.loss) == loss


@pytest.mark.parametrize("overrides, message", [
    (["scale=4"], r"scale=4 but init_from=.*2x_compact\.pth is a x2 Compact model; drop scale="),
    (["gen.arch=SPAN"], r"gen\.arch=SPAN but init_from=.* holds a Compact model"),
    (["++gen.num_feat=16"], r"gen\.num_feat=16 but init_from=.*'s Compact model has num_feat=8"),
    (["++gen.act_type=relu"], r"gen\.act_type=relu but init_from=.*'s Compact model has act_type=prelu"),
    (["color=y"], r"color=y but init_from=.* is a 3-channel model"),
])
def test_init_from_choices_that_contradict_the_file(tmp_path, overrides, message):
    from sr_lightning.init_from import SetupError, read_initial_generator

    compact = _compact_file(tmp_path / "2x_compact.pth")
    cfg = compose_train(["model=spandrel", f"init_from={compact}", *overrides], output_dir=tmp_path)
    with pytest.raises(SetupError, match=message):
        read_initial_generator(cfg)


def test_init_from_choices_that_agree_with_the_file_pass(tmp_path):
    from sr_lightning.init_from import read_initial_generator

    compact = _compact_file(tmp_path / "2x_compact.pth")
    cfg = compose_train(["model=spandrel", f"init_from={compact}", "scale=2", "gen.arch=Compact",
                         "++gen.num_feat=8"], output_dir=tmp_path)
    assert read_initial_generator(cfg).model_file and cfg.gen.num_feat == 8


def test_init_from_our_checkpoint_keeps_the_presets_generator(tmp_path):
    from sr_lightning.init_from import read_initial_generator

    ckpt = tmp_path / "run.ckpt"
    write_checkpoint(ckpt, TINY_GEN)
    torch.save({**torch.load(ckpt, weights_only=True), "global_step": 5}, ckpt)
    cfg = compose_train(["model=srresnet", f"init_from={ckpt}"], output_dir=tmp_path)
    gen = OmegaConf.to_container(cfg.gen)
    assert not read_initial_generator(cfg).model_file and OmegaConf.to_container(cfg.gen) == gen


@pytest.mark.slow
def test_train_init_from_a_community_file_through_the_cli_then_eval_and_resume(tmp_path):
    span = _span_file(tmp_path / "2x_span.safetensors")
    run = tmp_path / "run"
    result = run_cli("train", "model=spandrel", f"init_from={span}", *TINY_FILE, f"hydra.run.dir={run}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "SPAN x2 detected" in result.stdout
    last = run / "checkpoints" / "last.ckpt"
    ckpt = torch.load(last, map_location="cpu", weights_only=True)
    cfg = ckpt["hyper_parameters"]["cfg"]
    assert cfg["scale"] == 2 and cfg["gen"]["arch"] == "SPAN" and cfg["gen"]["feature_channels"] == 8
    loaded = load_generator(last)  # the stored config rebuilds the same network for eval/upscale/export
    assert loaded.scale == 2 and loaded.meta["global_step"] == 2
    # resume: same command, ckpt_path= the run's last.ckpt, two more steps
    result = run_cli("train", "model=spandrel", f"init_from={span}", *TINY_FILE, "trainer.max_steps=4",
                     f"ckpt_path={last}", f"hydra.run.dir={run}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((run / "summary.json").read_text())["global_step"] == 4


def test_train_init_from_with_another_scale_is_one_error_line(tmp_path):
    compact = _compact_file(tmp_path / "2x_compact.pth")
    result = run_cli("train", "model=spandrel", f"init_from={compact}", "scale=4", "trainer.max_steps=1",
                     f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "scale=4 but init_from=" in errors[0] and "x2 Compact model" in errors[0]
