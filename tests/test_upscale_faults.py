"""`upscale` faults (issue 15): inputs over the decompression-bomb limit, unwritable output folders, the
memory of big images (blocks handed out per tile, the result written without a second full-size copy)."""
from __future__ import annotations

import struct
import tempfile
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from PIL import Image

from sr_lightning.commands import upscale as upscale_cmd
from sr_lightning.data.imageio import DEFAULT_MAX_PIXELS, read_image
from sr_lightning.inference import batch
from sr_lightning.inference import write as write_mod
from sr_lightning.inference.tiling import _axis_windows, iter_tiled_blocks, plan_axis
from sr_lightning.inference.write import write_result
from sr_lightning.models.srresnet import SRResNet

from helpers import TINY_GEN, write_checkpoint

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"


def _cfg(**overrides):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="upscale", overrides=[f"{k}={v}" for k, v in overrides.items()])


def _rgb(h, w, seed=0, channels=3, dtype=np.uint8):
    top = 255 if dtype == np.uint8 else 65535
    return np.random.default_rng(seed).integers(0, top + 1, (h, w, channels)).astype(dtype)


def _png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims width x height RGB but holds almost no data: what the bomb guard must refuse
    from the header alone (a real 14000x13000 file takes too long to write in a test)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))
    return path


@pytest.fixture
def folder(tmp_path):
    """A checkpoint and a folder of three small images, one of them 40x50 = 2,000 pixels."""
    ckpt = write_checkpoint(tmp_path / "tiny.ckpt", TINY_GEN)
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(_rgb(8, 10)).save(src / "a.png")
    Image.fromarray(_rgb(40, 50, seed=1)).save(src / "big.png")
    Image.fromarray(_rgb(8, 10, seed=2)).save(src / "c.png")
    return ckpt, src


# --- max_pixels -------------------------------------------------------------------------------------------------

def test_image_over_max_pixels_is_named_and_the_rest_is_done(tmp_path, folder, capsys):
    ckpt, src = folder
    out = tmp_path / "out"
    assert upscale_cmd.main(_cfg(ckpt=ckpt, input=src, output=out, max_pixels=1999, progress=False)) == 2
    captured = capsys.readouterr()
    errors = [line for line in captured.err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "big.png" in errors[0] and "max_pixels=" in errors[0], captured.err
    assert "Traceback" not in captured.err
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "c.png"]
    assert "upscaled 2 image(s)" in captured.out and "1 failed" in captured.out


def test_a_failed_write_alone_exits_1_and_a_refused_input_exits_2(tmp_path, folder, capsys, monkeypatch):
    """Both leave the rest of the folder done; a refused input is the user's to fix (exit 2 as every user error),
    an output the disk would not take alone is not (exit 1)."""
    ckpt, src = folder
    write_result = write_mod.write_result

    def disk_full_for_c(path, array, **kwargs):
        if Path(path).name == "c.png":
            raise OSError(28, "No space left on device", str(path))
        return write_result(path, array, **kwargs)

    monkeypatch.setattr(write_mod, "write_result", disk_full_for_c)
    assert upscale_cmd.main(_cfg(ckpt=ckpt, input=src, output=tmp_path / "o1", progress=False)) == 1
    assert sorted(p.name for p in (tmp_path / "o1").iterdir()) == ["a.png", "big.png"]
    assert upscale_cmd.main(_cfg(ckpt=ckpt, input=src, output=tmp_path / "o2", max_pixels=1999,
                                 progress=False)) == 2
    assert sorted(p.name for p in (tmp_path / "o2").iterdir()) == ["a.png"]
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 3 and "c.png" in errors[0] and "big.png" in errors[1] and "c.png" in errors[2], errors


def test_max_pixels_raised_on_purpose_reads_the_big_file(tmp_path, folder, capsys):
    ckpt, src = folder
    out = tmp_path / "out"
    assert upscale_cmd.main(_cfg(ckpt=ckpt, input=src, output=out, max_pixels=2000, progress=False)) == 0
    assert read_image(out / "big.png").shape == (80, 100, 3)
    assert upscale_cmd.main(_cfg(ckpt=ckpt, input=src, output=tmp_path / "o2", max_pixels=0,
                                 progress=False)) == 0  # 0: no limit


@pytest.mark.parametrize("value", ["lots", -5, 1.5])
def test_bad_max_pixels_is_one_line_before_any_work(tmp_path, folder, capsys, monkeypatch, value):
    ckpt, src = folder
    monkeypatch.setattr(upscale_cmd, "load_model", lambda cfg: pytest.fail("model loaded"))
    assert upscale_cmd.main(_cfg(ckpt=ckpt, input=src, output=tmp_path / "out", max_pixels=value,
                                 progress=False)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: max_pixels: got"), err


def test_default_limit_is_pillows_bomb_limit():
    assert _cfg().max_pixels == "default"
    assert upscale_cmd._max_pixels(_cfg()) == DEFAULT_MAX_PIXELS


@pytest.mark.slow
def test_cli_refuses_a_decompression_bomb_by_default_and_does_the_rest(tmp_path, cli):
    """A header claiming 14000x13000 (over Pillow's limit), through the real CLI with the default config."""
    write_checkpoint(tmp_path / "tiny.ckpt", TINY_GEN)
    (tmp_path / "in").mkdir()
    _png_header_only(tmp_path / "in" / "bomb.png", 14000, 13000)
    Image.fromarray(_rgb(8, 10)).save(tmp_path / "in" / "ok.png")
    result = cli("upscale", "ckpt=tiny.ckpt", "input=in", "output=out", "progress=false", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    assert "bomb.png" in errors[0] and "14000x13000" in errors[0] and "max_pixels=" in errors[0]
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["ok.png"]
    assert "1 failed" in result.stdout


# --- unwritable output ------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_cli_output_under_a_file_stops_before_any_work(tmp_path, cli):
    """As root, permission bits do not stop writes; a path below a regular file fails for everyone."""
    write_checkpoint(tmp_path / "tiny.ckpt", TINY_GEN)
    Image.fromarray(_rgb(8, 10)).save(tmp_path / "a.png")
    (tmp_path / "afile").write_text("not a folder")
    result = cli("upscale", "ckpt=tiny.ckpt", "input=a.png", "output=afile/out", "progress=false", cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: output=afile/out: cannot write"), result.stderr
    assert "model on" not in result.stdout  # stopped before the model was loaded


def test_read_only_folder_stops_before_the_model_is_loaded(tmp_path, folder, capsys, monkeypatch):
    """A folder that exists but refuses new files (read-only mount, no permission). Root ignores chmod, so
    the probe's file creation is made to fail as it does there."""
    ckpt, src = folder
    out = tmp_path / "ro"
    out.mkdir()

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(out / ".upscale-probe-x"))

    monkeypatch.setattr(tempfile, "NamedTemporaryFile", refuse)
    monkeypatch.setattr(upscale_cmd, "load_model", lambda cfg: pytest.fail("model loaded"))
    assert upscale_cmd.main(_cfg(ckpt=ckpt, input=src, output=out, progress=False)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: output={out}: cannot write into this folder (Permission denied); choose another "
                   f"output= folder or fix its permissions"]
    assert list(out.iterdir()) == []


def test_writable_check_leaves_no_probe_file(tmp_path):
    batch.check_writable(tmp_path / "new" / "folder")
    assert list((tmp_path / "new" / "folder").iterdir()) == []


# --- memory: blocks per tile, no full-size copies ---------------------------------------------------------------

def test_blocks_are_handed_out_per_tile_and_equal_a_full_size_blend():
    """Every tile hands out its finished block before the next tile runs (no full-width strip of float output
    waits for a grid row), the blocks tile the output exactly once, and together they equal the plain
    full-size weighted sum."""
    torch.manual_seed(0)
    net = SRResNet(scale=2, blocks=1, channels=8).eval()
    x = torch.rand(1, 3, 50, 90)
    scale, tile, overlap = 2, 24, 6
    ran = [0]
    seen, covered = [], torch.zeros(100, 180, dtype=torch.int64)
    result = torch.zeros(1, 3, 100, 180)
    for top, left, block in iter_tiled_blocks(net, x, scale, tile, overlap,
                                              on_tile=lambda done, total: ran.__setitem__(0, done)):
        seen.append(ran[0])
        h, w = block.shape[2:]
        assert h <= tile * scale and w <= tile * scale
        covered[top:top + h, left:left + w] += 1
        result[:, :, top:top + h, left:left + w] = block
    rows, cols = plan_axis(50, tile, overlap), plan_axis(90, tile, overlap)
    assert seen == list(range(1, len(rows.starts) * len(cols.starts) + 1))  # one block per tile, at once
    assert bool((covered == 1).all())
    reference = torch.zeros(1, 3, 100, 180)
    with torch.no_grad():
        for i, y0 in enumerate(rows.starts):
            for j, x0 in enumerate(cols.starts):
                w = _axis_windows(rows, scale, "cosine")[i][:, None] * _axis_windows(cols, scale, "cosine")[j]
                out = net(x[:, :, y0:y0 + rows.size, x0:x0 + cols.size].contiguous())
                reference[:, :, y0 * 2:(y0 + rows.size) * 2, x0 * 2:(x0 + cols.size) * 2] += out * w
    torch.testing.assert_close(result, reference, atol=1e-6, rtol=1e-6)


def test_network_sees_floats_converted_tile_by_tile():
    """A uint8 input plus `prepare` gives the same blocks as the float input, and the float conversion only
    ever sees tile-sized pieces."""
    torch.manual_seed(0)
    net = SRResNet(scale=2, blocks=1, channels=8).eval()
    pixels = torch.randint(0, 256, (1, 3, 40, 60), dtype=torch.uint8)
    sizes = []

    def prepare(t):
        sizes.append(t.shape[-2] * t.shape[-1])
        return t.float() / 255

    ours = list(iter_tiled_blocks(net, pixels, 2, 24, 6, prepare=prepare))
    floats = list(iter_tiled_blocks(net, pixels.float() / 255, 2, 24, 6))
    assert max(sizes) <= 24 * 24 < 40 * 60
    for (t0, l0, a), (t1, l1, b) in zip(ours, floats):
        assert (t0, l0) == (t1, l1) and torch.equal(a, b)


@pytest.mark.parametrize("channels,dtype", [(3, np.uint8), (4, np.uint8), (3, np.uint16), (4, np.uint16)])
def test_colour_png_is_written_without_a_copy_and_reads_back_equal(tmp_path, channels, dtype, monkeypatch):
    import cv2  # noqa: F401  (imported before tracing: the module's own allocations are not the image's)

    array = _rgb(2000, 40, channels=channels, dtype=dtype)  # many more rows than one swapped band
    before = array.copy()
    monkeypatch.setattr("sr_lightning.data.imageio.write_image", lambda *a, **k: pytest.fail("copying writer"))
    tracemalloc.start()
    try:
        write_result(tmp_path / "o.png", array)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < array.nbytes / 4  # one band of rows at most, never a reordered copy of the image
    np.testing.assert_array_equal(array, before)  # the caller's array is given back unchanged
    np.testing.assert_array_equal(read_image(tmp_path / "o.png"), before)
    assert [p.name for p in tmp_path.iterdir()] == ["o.png"]


def test_failed_png_write_restores_the_array_and_leaves_no_temporary(tmp_path, monkeypatch):
    import cv2

    array = _rgb(20, 30)
    before = array.copy()
    monkeypatch.setattr(cv2, "imwrite", lambda *a, **k: False)
    with pytest.raises(OSError, match="o.png"):
        write_result(tmp_path / "o.png", array)
    np.testing.assert_array_equal(array, before)
    assert list(tmp_path.iterdir()) == []


def test_other_formats_and_gray_go_to_write_image(tmp_path):
    gray, rgb = _rgb(9, 7)[:, :, 0], _rgb(9, 7)
    write_result(tmp_path / "g.png", gray)
    write_result(tmp_path / "c.jpg", rgb)
    np.testing.assert_array_equal(read_image(tmp_path / "g.png"), gray)
    assert read_image(tmp_path / "c.jpg").shape == (9, 7, 3)
    assert not write_mod._in_place_png(tmp_path / "g.png", gray)
    assert not write_mod._in_place_png(tmp_path / "v.png", rgb[:, ::2])  # not contiguous: write_image copies
