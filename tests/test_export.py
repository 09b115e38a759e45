"""`export`: safetensors / ONNX / TorchScript + sidecar, loadable by `upscale` with the same pixels."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from sr_lightning.checkpoint import CheckpointError
from sr_lightning.commands import export as export_cmd
from sr_lightning.exporting import ExportError
from sr_lightning.inference import Upscaler
from sr_lightning.loading import load_exported, load_generator, sidecar_path

from helpers import TINY_GEN, write_checkpoint

TINY_LAPSRN = {"_target_": "sr_lightning.models.lapsrn.LapSRN", "scale": 4, "in_channels": 1, "channels": 8,
               "blocks": 1}



def _export(**kwargs):
    cfg = OmegaConf.create({"format": "safetensors", "output": None, "use_ema": True, "overwrite": False,
                            "opset": 18, "onnx_exporter": "auto", "check": True, **kwargs})
    return export_cmd.export(cfg)


def _image(h=23, w=31, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_safetensors_export_upscales_like_the_checkpoint(tmp_path):
    ckpt = write_checkpoint(tmp_path / "best.ckpt", TINY_GEN)
    path, meta = _export(ckpt=str(ckpt))
    assert path == tmp_path / "best.safetensors" and sidecar_path(path) == tmp_path / "best.safetensors.json"
    sidecar = json.loads(sidecar_path(path).read_text())
    assert sidecar == meta
    assert sidecar["gen"] == TINY_GEN and sidecar["scale"] == 2 and sidecar["color"] == "rgb"
    assert sidecar["value_range"] == [0.0, 1.0] and sidecar["used_ema"] is True
    assert sidecar["source"] == str(ckpt.resolve()) and sidecar["file"] == "best.safetensors"

    image = _image()
    from_ckpt = Upscaler(load_generator(ckpt)).upscale(image)
    from_export = Upscaler(load_generator(path)).upscale(image)  # the lead's loader dispatches to load_exported
    np.testing.assert_array_equal(from_export, from_ckpt)
    # the EMA weights were exported, not the raw generator's
    raw = Upscaler(load_generator(ckpt, use_ema=False)).upscale(image)
    assert not np.array_equal(from_export, raw)


def test_without_ema_the_trained_generator_is_exported(tmp_path):
    ckpt = write_checkpoint(tmp_path / "best.ckpt", TINY_GEN, ema=False)
    path, meta = _export(ckpt=str(ckpt), output=str(tmp_path / "out") + "/")
    assert path == tmp_path / "out" / "best.safetensors" and meta["used_ema"] is False
    image = _image(seed=1)
    np.testing.assert_array_equal(Upscaler(load_exported(path)).upscale(image),
                                  Upscaler(load_generator(ckpt)).upscale(image))


def test_y_channel_model_keeps_its_colour_mode(tmp_path):
    ckpt = write_checkpoint(tmp_path / "lap.ckpt", TINY_LAPSRN, color="y")
    path, meta = _export(ckpt=str(ckpt), format="torchscript")
    assert meta["color"] == "y" and meta["in_channels"] == 1 and meta["scale"] == 4
    assert max(meta["check"]["max_abs_diff"]) == 0.0
    loaded = load_exported(path)
    image = _image(11, 9, seed=2)
    np.testing.assert_array_equal(Upscaler(loaded).upscale(image), Upscaler(load_generator(ckpt)).upscale(image))


def test_onnx_has_dynamic_height_and_width(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    ckpt = write_checkpoint(tmp_path / "best.ckpt", TINY_GEN)
    path, meta = _export(ckpt=str(ckpt), format="onnx")
    assert path.suffix == ".onnx" and meta["check"]["against"] == "onnxruntime"
    assert len(meta["check"]["max_abs_diff"]) == 2 and max(meta["check"]["max_abs_diff"]) <= 1e-4
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    net = load_generator(ckpt).net
    for h, w in ((16, 16), (19, 40)):  # sizes other than the export's own checks
        x = torch.rand(1, 3, h, w)
        out = session.run(None, {"lr": x.numpy()})[0]
        assert out.shape == (1, 3, 2 * h, 2 * w)
        with torch.inference_mode():
            assert np.abs(out - net(x).numpy()).max() <= 1e-4
    # and upscale runs it (on onnxruntime) to the same pixels as the checkpoint, up to rounding
    image = _image(seed=3)
    diff = Upscaler(load_exported(path)).upscale(image).astype(int) - Upscaler(load_generator(ckpt)).upscale(image)
    assert np.abs(diff).max() <= 1


@pytest.mark.parametrize("fmt", ["safetensors", "onnx", "torchscript"])
def test_one_loader_gives_the_same_generator_from_a_checkpoint_and_its_exports(tmp_path, fmt):
    """`loading.load_generator` reads a .ckpt and what `export` made of it, and they compute the same."""
    if fmt == "onnx":
        pytest.importorskip("onnxruntime")
    ckpt = write_checkpoint(tmp_path / "best.ckpt", TINY_GEN, value_range=(-1.0, 1.0))
    path, _ = _export(ckpt=str(ckpt), format=fmt)
    want, got = load_generator(ckpt), load_generator(path)
    assert got.source == str(path) and want.source == str(ckpt)
    assert (got.scale, got.color, got.value_range, got.used_ema) == (2, "rgb", (-1.0, 1.0), True)
    assert (got.scale, got.color, got.value_range, got.used_ema) == (want.scale, want.color, want.value_range,
                                                                      want.used_ema)
    assert got.name == want.name == "tiny" and got.meta["global_step"] == want.meta["global_step"] == 5
    x = torch.rand(2, 3, 13, 17) * 2 - 1
    with torch.inference_mode():
        diff = (got.net(x) - want.net(x)).abs().max()
    assert diff <= (1e-5 if fmt == "onnx" else 0.0)


def test_sidecar_problems_are_explained(tmp_path):
    ckpt = write_checkpoint(tmp_path / "best.ckpt", TINY_GEN)
    path, _ = _export(ckpt=str(ckpt))
    with pytest.raises(ExportError, match="overwrite=true"):
        _export(ckpt=str(ckpt))
    # weights replaced behind the sidecar's back
    other = write_checkpoint(tmp_path / "other.ckpt", {**TINY_GEN, "channels": 4})
    other_path, _ = _export(ckpt=str(other))
    path.write_bytes(other_path.read_bytes())
    with pytest.raises(CheckpointError, match="sha256"):
        load_exported(path)
    sidecar_path(other_path).unlink()
    with pytest.raises(CheckpointError, match="model=<preset>"):
        load_exported(other_path)


def test_bad_options(tmp_path):
    ckpt = write_checkpoint(tmp_path / "best.ckpt", TINY_GEN)
    with pytest.raises(ExportError, match="format"):
        _export(ckpt=str(ckpt), format="tflite")
    with pytest.raises(ExportError, match=r"\.onnx"):
        _export(ckpt=str(ckpt), format="onnx", output=str(tmp_path / "x.safetensors"))
    with pytest.raises(ExportError, match="ckpt"):
        _export(ckpt=None)
    with pytest.raises(CheckpointError, match="not found"):
        _export(ckpt=str(tmp_path / "missing.ckpt"))


@pytest.mark.slow
def test_cli_export_then_upscale(tmp_path, cli):
    from PIL import Image

    write_checkpoint(tmp_path / "best.ckpt", TINY_GEN)
    Image.fromarray(_image()).save(tmp_path / "a.png")
    result = cli("export", "ckpt=best.ckpt", "format=safetensors", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "EMA weights" in result.stdout and "best.safetensors.json" in result.stdout
    for args, out in ((["weights=best.safetensors"], "w.png"), (["ckpt=best.ckpt"], "c.png")):
        result = cli("upscale", *args, "input=a.png", f"output={out}", cwd=tmp_path)
        assert result.returncode == 0, result.stderr
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "w.png")),
                                  np.asarray(Image.open(tmp_path / "c.png")))
