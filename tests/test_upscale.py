"""`upscale`: every kind of input file comes out `scale` x larger with the right mode and bit depth."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from PIL import Image

from sr_lightning.checkpoint import CheckpointError
from sr_lightning.commands import upscale as upscale_cmd
from sr_lightning.data.imageio import read_image
from sr_lightning.inference import Upscaler, batch
from sr_lightning.loading import LoadedGenerator, load_generator
from sr_lightning.models.interpolation import Nearest
from sr_lightning.models.lapsrn import LapSRN
from sr_lightning.models.srresnet import SRResNet
from sr_lightning.ops.color import rgb2ycbcr, ycbcr2rgb
from sr_lightning.ops.imresize import imresize, imresize_np

from helpers import TINY_GEN, write_checkpoint

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"



def _rgb(h, w, seed=0, dtype=np.uint8):
    top = 255 if dtype == np.uint8 else 65535
    return np.random.default_rng(seed).integers(0, top + 1, (h, w, 3)).astype(dtype)


def _loaded(net, scale, color="rgb", value_range=(0.0, 1.0)):
    return LoadedGenerator(net=net.eval(), scale=scale, value_range=value_range, color=color, cfg={}, source="test")


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return SRResNet(scale=2, blocks=1, channels=8).eval()


def _reference_rgb(net, image: np.ndarray) -> np.ndarray:
    """The network applied by hand: uint8 (H,W,3) -> uint8 (2H,2W,3)."""
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
    with torch.inference_mode():
        y = net(x)[0].clamp(0, 1)
    return (y * 255).round().permute(1, 2, 0).numpy().astype(np.uint8)


def test_rgb_is_the_network_output(tiny):
    image = _rgb(21, 30)
    out = Upscaler(_loaded(tiny, 2)).upscale(image)
    assert out.shape == (42, 60, 3) and out.dtype == np.uint8
    assert np.abs(out.astype(int) - _reference_rgb(tiny, image)).max() <= 1


@pytest.mark.parametrize("color,channels", [("rgb", 4), ("y", 3), ("rgb", 1)])
def test_tiled_strips_assemble_exactly(color, channels):
    """With a network free of border effects, tiling (strips of output rows, strip-wise bicubic for alpha and
    chroma) must reproduce the untiled result bit for bit."""
    net = Nearest(scale=3, in_channels=1 if color == "y" else 3)
    image = _rgb(41, 37, seed=3)
    image = np.dstack([image, image[:, :, 0]]) if channels == 4 else image[:, :, 0] if channels == 1 else image
    whole = Upscaler(_loaded(net, 3, color=color)).upscale(image)
    tiled = Upscaler(_loaded(net, 3, color=color), tile=12, tile_overlap=3).upscale(image)
    np.testing.assert_array_equal(tiled, whole)


def test_gray_stays_gray(tiny):
    gray = _rgb(17, 23)[:, :, 0]
    out = Upscaler(_loaded(tiny, 2)).upscale(gray)
    assert out.shape == (34, 46) and out.dtype == np.uint8
    # gray = BT.601 luma of the network's RGB result for the replicated input
    ref = _reference_rgb(tiny, np.repeat(gray[:, :, None], 3, axis=2)).astype(float)
    luma = ref @ np.array([0.299, 0.587, 0.114])
    assert np.abs(out - luma).max() <= 1.0


def test_rgba_alpha_is_bicubic_and_colour_is_unchanged(tiny):
    rgb = _rgb(19, 26, seed=1)
    alpha = np.linspace(0, 255, 19 * 26).reshape(19, 26).astype(np.uint8)
    out = Upscaler(_loaded(tiny, 2)).upscale(np.dstack([rgb, alpha]))
    assert out.shape == (38, 52, 4) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[:, :, :3], Upscaler(_loaded(tiny, 2)).upscale(rgb))
    assert np.abs(out[:, :, 3].astype(int) - imresize_np(alpha, scale=2).astype(int)).max() <= 1


def test_16_bit_in_16_bit_out(tiny):
    image = _rgb(15, 18, seed=2, dtype=np.uint16)
    out = Upscaler(_loaded(tiny, 2)).upscale(image)
    assert out.dtype == np.uint16 and out.shape == (30, 36, 3)
    # real 16-bit precision, not 8-bit values scaled up
    assert np.any(out % 257 != 0)
    ref = torch.from_numpy(image.astype(np.float32) / 65535).permute(2, 0, 1)[None]
    with torch.inference_mode():
        expected = (tiny(ref)[0].clamp(0, 1) * 65535).round().permute(1, 2, 0).numpy()
    assert np.abs(out - expected).max() <= 2


def test_value_range_is_mapped_in_and_out():
    """A [-1, 1] model gets [-1, 1] input and its output is mapped back: nearest upsampling stays exact."""
    image = _rgb(9, 11, seed=4)
    for value_range in ((0.0, 1.0), (-1.0, 1.0)):
        out = Upscaler(_loaded(Nearest(scale=3), 3, value_range=value_range)).upscale(image)
        np.testing.assert_array_equal(out, image.repeat(3, axis=0).repeat(3, axis=1))


def test_y_model_upscales_y_and_merges_bicubic_chroma():
    torch.manual_seed(0)
    net = LapSRN(scale=4, in_channels=1, channels=8, blocks=1).eval()
    image = _rgb(12, 14, seed=5)
    out = Upscaler(_loaded(net, 4, color="y")).upscale(image)
    assert out.shape == (48, 56, 3) and out.dtype == np.uint8
    rgb = torch.from_numpy(image).permute(2, 0, 1).float() / 255
    ycc = rgb2ycbcr(rgb)
    with torch.inference_mode():
        y_sr = net(ycc[None, :1])[-1][0]  # the last pyramid level
    chroma = imresize(ycc[1:], scale=4)
    expected = ycbcr2rgb(torch.cat([y_sr, chroma])).clamp(0, 1)
    expected = (expected * 255).round().permute(1, 2, 0).numpy()
    assert np.abs(out - expected).max() <= 1
    # and the chroma really is bicubic, not the network's: a constant-Y net would not change it
    got = rgb2ycbcr(torch.from_numpy(out).permute(2, 0, 1).float() / 255)
    inside = ((expected > 2) & (expected < 253)).all(axis=2)  # where clamping did not move the colour
    assert (got[1:] - chroma).abs().amax(dim=0)[torch.from_numpy(inside)].max() * 255 <= 2.0


def _write_exif_rotated(path: Path, image: np.ndarray, orientation: int = 6) -> None:
    exif = Image.Exif()
    exif[274] = orientation
    Image.fromarray(image).save(path, exif=exif)


def _cfg(**overrides):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="upscale", overrides=[f"{k}={v}" for k, v in overrides.items()])


def test_files_round_trip_with_size_mode_and_depth(tmp_path):
    """Each input kind through the command: size x2, same mode, same bit depth, EXIF orientation applied."""
    cv2 = pytest.importorskip("cv2")
    ckpt = write_checkpoint(tmp_path / "tiny.ckpt", TINY_GEN)
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(_rgb(10, 12)).save(src / "rgb.png")
    Image.fromarray(_rgb(10, 12)).save(src / "photo.jpg", quality=95)
    Image.fromarray(_rgb(9, 7)[:, :, 0]).save(src / "gray.png")
    Image.fromarray(np.dstack([_rgb(8, 6), np.full((8, 6), 128, np.uint8)])).save(src / "alpha.png")
    Image.fromarray((np.arange(56).reshape(7, 8) * 1000).astype(np.uint16)).save(src / "gray16.png")
    cv2.imwrite(str(src / "rgb16.png"), _rgb(6, 5, dtype=np.uint16))
    _write_exif_rotated(src / "rotated.png", _rgb(6, 10))   # 6 = rotate 90 degrees: displayed 10 x 6
    expected = {  # name -> (shape, dtype, PIL mode)
        "rgb.png": ((20, 24, 3), np.uint8, "RGB"), "photo.jpg": ((20, 24, 3), np.uint8, "RGB"),
        "gray.png": ((18, 14), np.uint8, "L"), "alpha.png": ((16, 12, 4), np.uint8, "RGBA"),
        "gray16.png": ((14, 16), np.uint16, "I;16"), "rgb16.png": ((12, 10, 3), np.uint16, None),
        "rotated.png": ((20, 12, 3), np.uint8, "RGB"),
    }
    assert upscale_cmd.main(_cfg(ckpt=ckpt, input=src, output=tmp_path / "out", progress=False)) == 0
    for name, (shape, dtype, mode) in expected.items():
        result = read_image(tmp_path / "out" / name)
        assert result.shape == shape and result.dtype == dtype, name
        if mode is not None:
            with Image.open(tmp_path / "out" / name) as im:
                assert im.mode == mode, name


def test_existing_output_is_not_overwritten(tmp_path, tiny, capsys):
    ckpt = write_checkpoint(tmp_path / "tiny.ckpt", TINY_GEN)
    Image.fromarray(_rgb(8, 8)).save(tmp_path / "a.png")
    target = tmp_path / "a_x2.png"
    target.write_bytes(b"keep me")
    cfg = _cfg(ckpt=ckpt, input=tmp_path / "a.png", output=target, progress=False)
    assert upscale_cmd.main(cfg) == 2
    err = capsys.readouterr().err
    assert str(target) in err and "overwrite=true" in err
    assert target.read_bytes() == b"keep me"
    assert upscale_cmd.main(_cfg(ckpt=ckpt, input=tmp_path / "a.png", output=target, progress=False,
                                 overwrite=True)) == 0
    assert read_image(target).shape == (16, 16, 3)


def test_output_format_comes_from_the_extension(tmp_path):
    ckpt = write_checkpoint(tmp_path / "tiny.ckpt", TINY_GEN)
    Image.fromarray(_rgb(8, 8)).save(tmp_path / "a.png")
    assert upscale_cmd.main(_cfg(ckpt=ckpt, input=tmp_path / "a.png", output=tmp_path / "o" / "a.jpg",
                                 progress=False)) == 0
    assert upscale_cmd.main(_cfg(ckpt=ckpt, input=tmp_path, output=tmp_path / "w", ext="webp",
                                 progress=False)) == 0
    with Image.open(tmp_path / "o" / "a.jpg") as im:
        assert im.format == "JPEG" and im.size == (16, 16)
    with Image.open(tmp_path / "w" / "a.webp") as im:
        assert im.format == "WEBP"


@pytest.mark.parametrize("overrides,match", [
    ({"input": "missing.png", "output": "o"}, "missing.png"),
    ({"output": "o"}, "input"),
    ({"input": "in.png"}, "output"),
    ({"input": "in.png", "output": "o", "tile": 8}, "tile"),
    ({"input": "in.png", "output": "o", "ckpt": None}, "ckpt="),
])
def test_bad_arguments_give_one_clear_line(tmp_path, monkeypatch, capsys, overrides, match):
    monkeypatch.chdir(tmp_path)
    write_checkpoint(tmp_path / "tiny.ckpt", TINY_GEN)
    Image.fromarray(_rgb(8, 8)).save(tmp_path / "in.png")
    args = {"ckpt": "tiny.ckpt", "progress": False, **overrides}
    args = {k: ("null" if v is None else v) for k, v in args.items()}
    assert upscale_cmd.main(_cfg(**args)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and match in err[0]


def test_corrupt_file_is_named_and_the_others_are_done(tmp_path, capsys):
    ckpt = write_checkpoint(tmp_path / "tiny.ckpt", TINY_GEN)
    (tmp_path / "in").mkdir()
    Image.fromarray(_rgb(8, 8)).save(tmp_path / "in" / "good.png")
    (tmp_path / "in" / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    assert upscale_cmd.main(_cfg(ckpt=ckpt, input=tmp_path / "in", output=tmp_path / "out", progress=False)) == 2
    captured = capsys.readouterr()
    assert "bad.png" in captured.err
    assert (tmp_path / "out" / "good.png").is_file() and not (tmp_path / "out" / "bad.png").exists()
    assert "upscaled 1 image(s)" in captured.out and "1 failed" in captured.out


def test_bare_weights_with_a_model_preset(tmp_path):
    from safetensors.torch import save_file

    ckpt = write_checkpoint(tmp_path / "tiny.ckpt", TINY_GEN, ema=False)
    state = torch.load(ckpt, weights_only=False)["state_dict"]
    save_file({k[4:]: v.contiguous() for k, v in state.items()}, str(tmp_path / "bare.safetensors"))
    cfg = _cfg(weights=tmp_path / "bare.safetensors", model="srresnet", scale=2, **{"gen.blocks": 1, "gen.channels": 8})
    loaded = upscale_cmd.load_model(cfg)
    reference = load_generator(ckpt)
    x = torch.rand(1, 3, 9, 9)
    with torch.inference_mode():
        torch.testing.assert_close(loaded.net(x), reference.net(x))
    # the preset's default width does not fit: a clear error, not a traceback
    with pytest.raises(CheckpointError, match=r"gen\.channels"):
        upscale_cmd.load_model(_cfg(weights=tmp_path / "bare.safetensors", model="srresnet", scale=2))
    with pytest.raises(CheckpointError, match="model=<preset>"):
        upscale_cmd.load_model(_cfg(weights=tmp_path / "bare.safetensors"))


@pytest.mark.slow
def test_cli_folder_with_summary_line(tmp_path, cli):
    ckpt = write_checkpoint(tmp_path / "tiny.ckpt", TINY_GEN)
    (tmp_path / "in").mkdir()
    for i in range(2):
        Image.fromarray(_rgb(20, 30, seed=i)).save(tmp_path / "in" / f"{i}.png")
    result = cli("upscale", f"ckpt={ckpt}", "input=in", "output=out", "tile=16", "tile_overlap=4", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert re.search(r"upscaled 2 image\(s\) x2: [\d.]+ MP in -> [\d.]+ MP out in [\d.]+ s \([\d.]+ MP/s\)",
                     result.stdout), result.stdout
    assert "0.png" in result.stderr  # progress bar names the image
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["0.png", "1.png"]
    # the command makes no Hydra run directory or log file
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "out", "tiny.ckpt"]


def test_overwrite_skip_keeps_finished_outputs_and_does_the_rest(tmp_path, capsys):
    """An interrupted folder: outputs written so far are kept (not recomputed), the missing ones are made."""
    ckpt = write_checkpoint(tmp_path / "tiny.ckpt", TINY_GEN)
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    for name in ("a", "b", "c"):
        Image.fromarray(_rgb(8, 8, seed=ord(name))).save(src / f"{name}.png")
    out.mkdir()
    Image.fromarray(_rgb(16, 16, seed=99)).save(out / "a.png")  # "finished before the interruption"
    kept = (out / "a.png").read_bytes()
    assert upscale_cmd.main(_cfg(ckpt=ckpt, input=src, output=out, progress=False)) == 2  # refused by default
    assert "overwrite=skip" in capsys.readouterr().err

    assert upscale_cmd.main(_cfg(ckpt=ckpt, input=src, output=out, progress=False, overwrite="skip")) == 0
    assert "1 of 3 output(s) already exist, kept" in capsys.readouterr().out
    assert (out / "a.png").read_bytes() == kept
    assert read_image(out / "b.png").shape == read_image(out / "c.png").shape == (16, 16, 3)
    assert upscale_cmd.main(_cfg(ckpt=ckpt, input=src, output=out, progress=False, overwrite="skip")) == 0


def test_overwrite_rejects_other_values():
    assert [batch.overwrite_mode(v) for v in (False, True, "skip", None)] == ["refuse", "replace", "skip",
                                                                                     "refuse"]
    with pytest.raises(batch.UpscaleError, match="overwrite: got 'yes'.*skip"):
        batch.overwrite_mode("yes")
