"""A checkpoint never runs code: every entry point that reads a user's file refuses pickled objects (issue 15).

The crafted file is the issue's: a Lightning-looking dict with one object whose unpickling runs a shell command
(here: it creates a marker file). Each entry point must refuse it with one `error:` line naming the file, exit
non-zero, and never create the marker; a genuine checkpoint written by `train` must still load in each.
"""
from __future__ import annotations

import json
import os
import shlex
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import TINY as ANY_PRESET_TINY
from helpers import TINY_NET, run_cli

# Each run sets its own trainer.max_steps after these (a later override wins).
TINY = [*ANY_PRESET_TINY, *TINY_NET, "trainer.log_every_n_steps=1"]
REFUSED = "holds Python objects that are not weights"


class _RunsCode:
    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def write_evil(path, marker):
    """The issue's file: looks like a checkpoint, and unpickling it with weights_only=False runs a command."""
    torch.save({"global_step": 1, "state_dict": {}, "hyper_parameters": {"cfg": {"gen": {}}},
                "x": _RunsCode(f"touch {shlex.quote(str(marker))}")}, path)
    return path


@pytest.fixture
def evil(tmp_path):
    marker = tmp_path / "PWNED"
    return write_evil(tmp_path / "evil.ckpt", marker), marker


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A real 2-step run: its last.ckpt holds everything train writes (optimizers, RNG tuples, callback state)."""
    run_dir = tmp_path_factory.mktemp("trained")
    result = run_cli("train", *TINY, "trainer.max_steps=2", f"hydra.run.dir={run_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir


def _error_lines(result) -> list[str]:
    return [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("error:")]


def assert_refused(result, evil_path, marker, code):
    assert not marker.exists(), "the checkpoint ran code"
    assert result.returncode == code, result.stderr[-3000:]
    lines = _error_lines(result)
    assert len(lines) == 1, result.stderr[-3000:]
    assert str(evil_path) in lines[0] and REFUSED in lines[0] and "posix.system" in lines[0], lines[0]
    assert "Traceback" not in result.stderr


def _image(path, size=(40, 36)):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(path)
    return path


# --------------------------------------------------------------------------- in-process (cheap, every loader)

def test_every_loader_refuses_pickled_code(evil):
    from sr_lightning.checkpoint import UnsafeCheckpointError, load_checkpoint_file, read_checkpoint
    from sr_lightning.checkpoint_io import AtomicCheckpointIO
    from sr_lightning.loading import load_generator
    from sr_lightning.training import checkpoint_step

    path, marker = evil
    for load in (read_checkpoint, load_generator, load_checkpoint_file, AtomicCheckpointIO().load_checkpoint,
                 checkpoint_step):
        with pytest.raises(UnsafeCheckpointError, match=REFUSED):
            load(path)
    assert not marker.exists()


def test_our_own_checkpoints_load_weights_only(trained):
    """What train writes (RNG state as tuples/tensors, callback state, schedulers) passes weights_only=True."""
    from sr_lightning.checkpoint_io import AtomicCheckpointIO
    from sr_lightning.loading import load_generator

    last = AtomicCheckpointIO().load_checkpoint(trained / "checkpoints" / "last.ckpt")
    assert last["global_step"] == 2 and last["rng_states"]["python"]
    assert "SRCheckpoint" in last["callbacks"]
    best = AtomicCheckpointIO().load_checkpoint(trained / "checkpoints" / "best.ckpt")  # slim: G, EMA, config
    assert best["global_step"] == 2
    for name in ("last.ckpt", "best.ckpt"):
        assert load_generator(trained / "checkpoints" / name).scale == 4


def test_a_slim_checkpoint_loads_in_eval_upscale_and_export_like_the_full_one(trained, tmp_path):
    """A slim best.ckpt holds only the gen.*/gen_ema.* weights, the config and the step: built here from the real
    last.ckpt by deleting everything else, it must give eval, upscale and export the same generator."""
    from omegaconf import OmegaConf

    from sr_lightning.commands import upscale as upscale_cmd
    from sr_lightning.exporting import export_generator
    from sr_lightning.inference import evaluation
    from sr_lightning.loading import load_generator

    full_path = trained / "checkpoints" / "last.ckpt"
    full = torch.load(full_path, map_location="cpu", weights_only=True)
    slim = {"state_dict": {k: v for k, v in full["state_dict"].items() if k.startswith(("gen.", "gen_ema."))},
            "hyper_parameters": full["hyper_parameters"], "global_step": full["global_step"],
            "epoch": full["epoch"], "sr_lightning_slim": True}
    assert set(full) - set(slim) >= {"optimizer_states", "loops", "callbacks"}  # what a slim file lacks
    slim_path = tmp_path / "slim.ckpt"
    torch.save(slim, slim_path)

    x = torch.rand(1, 3, 12, 10)
    for use_ema in (True, False):
        want, got = load_generator(full_path, use_ema=use_ema), load_generator(slim_path, use_ema=use_ema)
        assert (got.scale, got.color, got.value_range, got.used_ema) == (want.scale, want.color, want.value_range,
                                                                          want.used_ema)
        with torch.inference_mode():
            assert torch.equal(got.net(x), want.net(x))
    reference = load_generator(full_path)
    with torch.inference_mode():
        expected = reference.net(x)
    evaluated, = evaluation.load_checkpoints([str(slim_path)])
    assert evaluated.info["steps"] == 2 and evaluated.scale == 4
    upscaling = upscale_cmd.load_model(OmegaConf.create({"ckpt": str(slim_path), "weights": None, "use_ema": True}))
    exported, meta = export_generator(slim_path, "safetensors", f"{tmp_path}/out/")
    assert meta["global_step"] == 2 and meta["used_ema"] == reference.used_ema
    with torch.inference_mode():
        for loaded in (evaluated, upscaling, load_generator(exported)):
            assert torch.equal(loaded.net(x), expected)


def test_a_config_in_a_file_may_only_build_model_classes(tmp_path):
    """weights_only keeps pickles out, but the stored config is data Hydra turns into calls (`_target_`)."""
    from sr_lightning.checkpoint import UnsafeCheckpointError
    from sr_lightning.loading import load_exported, load_generator

    marker = tmp_path / "PWNED"
    bad_gens = [
        {"_target_": "os.system", "_args_": [f"touch {marker}"]},
        {"_target_": "sr_lightning.models.srresnet.os.system", "_args_": [f"touch {marker}"]},
        {"_target_": "sr_lightning.models.srresnet.SRResNet", "scale": 2, "channels": 8, "blocks": 1,
         "activation": {"_target_": "subprocess.call", "args": ["touch", str(marker)]}},
    ]
    for i, gen in enumerate(bad_gens):
        path = tmp_path / f"cfg{i}.ckpt"
        torch.save({"state_dict": {}, "hyper_parameters": {"cfg": {"gen": gen, "scale": 2}}, "global_step": 1}, path)
        with pytest.raises(UnsafeCheckpointError, match="not a model class of sr_lightning.models"):
            load_generator(path)
    # an export's JSON sidecar is a file too
    weights = tmp_path / "w.safetensors"
    weights.write_bytes(b"")
    (tmp_path / "w.safetensors.json").write_text(json.dumps({
        "sr_lightning_export": 1, "format": "safetensors", "scale": 2, "value_range": [0, 1], "color": "rgb",
        "gen": bad_gens[0]}))
    with pytest.raises(UnsafeCheckpointError, match="refused.*os.system"):
        load_exported(weights)
    assert not marker.exists()


# --------------------------------------------------------------------------- through the real CLI

@pytest.mark.slow
def test_eval_refuses_the_file_and_loads_a_real_checkpoint(cli, tmp_path, evil, trained):
    path, marker = evil
    folder = tmp_path / "hr"
    folder.mkdir()
    _image(folder / "a.png")
    common = ["data=folder", f"data.hr_dir={folder}", "data.num_workers=0", "comparison.size=16"]
    result = cli("eval", f"ckpt={path}", *common, f"hydra.run.dir={tmp_path / 'bad'}", cwd=tmp_path)
    assert_refused(result, path, marker, code=2)
    good = cli("eval", f"ckpt={trained / 'checkpoints' / 'last.ckpt'}", *common, f"hydra.run.dir={tmp_path / 'ok'}",
               cwd=tmp_path, env={"TORCH_HOME": str(tmp_path / "torch")})
    assert good.returncode == 0, good.stderr[-3000:]


@pytest.mark.slow
def test_upscale_refuses_the_file_and_loads_a_real_checkpoint(cli, tmp_path, evil, trained):
    path, marker = evil
    _image(tmp_path / "in.png")
    result = cli("upscale", f"ckpt={path}", "input=in.png", "output=out", cwd=tmp_path)
    assert_refused(result, path, marker, code=2)
    assert not (tmp_path / "out" / "in.png").exists()
    good = cli("upscale", f"ckpt={trained / 'checkpoints' / 'best.ckpt'}", "input=in.png", "output=out", cwd=tmp_path)
    assert good.returncode == 0, good.stderr[-3000:]
    assert Image.open(tmp_path / "out" / "in.png").size == (36 * 4, 40 * 4)


@pytest.mark.slow
def test_export_refuses_the_file_and_exports_a_real_checkpoint(cli, tmp_path, evil, trained):
    path, marker = evil
    result = cli("export", f"ckpt={path}", "format=safetensors", cwd=tmp_path)
    assert_refused(result, path, marker, code=2)
    assert not list(tmp_path.glob("*.safetensors*"))
    good = cli("export", f"ckpt={trained / 'checkpoints' / 'last.ckpt'}", "format=safetensors",
               f"output={tmp_path}/", cwd=tmp_path)
    assert good.returncode == 0, good.stderr[-3000:]
    assert (tmp_path / "last.safetensors").is_file()


@pytest.mark.slow
def test_train_init_from_refuses_the_file_and_starts_from_a_real_checkpoint(cli, tmp_path, evil, trained):
    path, marker = evil
    result = cli("train", *TINY, "trainer.max_steps=1", f"init_from={path}", f"hydra.run.dir={tmp_path / 'bad'}")
    assert_refused(result, path, marker, code=2)
    assert "init_from=" in _error_lines(result)[0]
    assert json.loads((tmp_path / "bad" / "summary.json").read_text())["status"] == "failed"
    good = cli("train", *TINY, "trainer.max_steps=1", f"init_from={trained / 'checkpoints' / 'last.ckpt'}",
               f"hydra.run.dir={tmp_path / 'ok'}")
    assert good.returncode == 0, good.stderr[-3000:]
    assert "initialised G from" in good.stdout + good.stderr


@pytest.mark.slow
def test_train_ckpt_path_refuses_the_file_and_resumes_a_real_checkpoint(cli, tmp_path, evil, trained):
    path, marker = evil
    result = cli("train", *TINY, "trainer.max_steps=3", f"ckpt_path={path}", f"hydra.run.dir={tmp_path / 'bad'}")
    assert_refused(result, path, marker, code=2)
    assert "ckpt_path=" in _error_lines(result)[0]
    good = cli("train", *TINY, "trainer.max_steps=3", f"ckpt_path={trained / 'checkpoints' / 'last.ckpt'}",
               f"hydra.run.dir={tmp_path / 'ok'}")
    assert good.returncode == 0, good.stderr[-3000:]
    assert json.loads((tmp_path / "ok" / "summary.json").read_text())["global_step"] == 3


@pytest.mark.slow
def test_train_resume_auto_refuses_a_planted_last_ckpt_and_resumes_a_real_one(cli, tmp_path, trained):
    marker = tmp_path / "PWNED"
    bad_run = tmp_path / "bad"
    planted = write_evil((bad_run / "checkpoints").mkdir(parents=True) or bad_run / "checkpoints" / "last.ckpt",
                         marker)
    result = cli("train", *TINY, "trainer.max_steps=3", "resume=auto", f"hydra.run.dir={bad_run}")
    assert_refused(result, planted, marker, code=2)
    good_run = tmp_path / "good"
    shutil.copytree(trained, good_run)
    good = cli("train", *TINY, "trainer.max_steps=3", "resume=auto", f"hydra.run.dir={good_run}")
    assert good.returncode == 0, good.stderr[-3000:]
    assert "resuming from" in good.stdout
    assert json.loads((good_run / "summary.json").read_text())["global_step"] == 3
