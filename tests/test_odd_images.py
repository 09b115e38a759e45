"""Odd images in data folders (issue 15): tiny images in validation/eval sets, decompression bombs, max_pixels.

A tiny image must not crash validation or `eval` after the training time is spent: it is named in a warning
when the folder is listed and left out of the means (results say how many images were scored). An image over
the decompression-bomb limit is refused before any work with one `error:` line naming it and `max_pixels=`.
"""
from __future__ import annotations

import csv
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sr_lightning.data import DatasetError, FolderSource, SRDataModule
from sr_lightning.data.errors import DataWarning
from sr_lightning.data.imageio import DEFAULT_MAX_PIXELS, ImageTooLargeError
from sr_lightning.errors import EXIT_USER_ERROR
from sr_lightning.metrics import MetricsWarning, SRMetrics, min_scored_size

from helpers import TINY, TINY_NET, write_png_bomb

TINY_TRAIN = [*TINY, *TINY_NET, "data.patches_per_image=1"]


def _folder(path: Path, sizes=(96, 96, 96), tiny: int | None = 16) -> Path:
    """Three 96 px photos-to-be and one tiny image (the issue's case)."""
    path.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i, size in enumerate(sizes):
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path / f"big{i}.png")
    if tiny:
        Image.fromarray(rng.integers(0, 256, (tiny, tiny, 3), dtype=np.uint8)).save(path / "tiny.png")
    return path


_bomb = write_png_bomb


def _read_csv(path: Path) -> list[dict]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


# --- tiny images ------------------------------------------------------------------------------------------------

def test_min_scored_size_is_border_crop_plus_ssim_window():
    assert min_scored_size(4) == 19 and min_scored_size(2) == 15 and min_scored_size(0) == 11


def test_datamodule_names_and_skips_images_too_small_to_score(tmp_path):
    folder = _folder(tmp_path / "imgs", tiny=16)
    dm = SRDataModule(hr_dir=str(folder), scale=4, crop=32, batch_size=2, num_workers=0, cache_mb=16)
    with pytest.warns(DataWarning) as record:
        dm.setup("fit")
    messages = [str(w.message) for w in record]
    assert any("tiny.png" in m and "crop=32" in m and "training" in m for m in messages)
    assert any("tiny.png" in m and "too small to score" in m and "validation" in m for m in messages)
    assert len(dm.train_set.cache) == 3 and len(dm.val_set) == 3
    assert dm.skipped["val"] == [str(folder / "tiny.png")]
    assert "1 too small to score" in dm.summary()


def test_image_just_large_enough_is_scored(tmp_path):
    # 19 px at x4: mod-crop to 16 -> fails; 20 px -> 20, minus 2 x 4 border = 12 >= 11: scored.
    folder = _folder(tmp_path / "imgs", sizes=(20,), tiny=19)
    dm = SRDataModule(val=str(folder), scale=4, crop=16, num_workers=0, cache_mb=16)
    with pytest.warns(DataWarning, match=r"tiny\.png: 19x19 px is too small to score at x4"):
        dm.setup("validate")
    assert [r.name for r in dm.val_set.cache.records] == ["big0"]


def test_all_images_too_small_is_one_error_before_any_work(tmp_path):
    folder = _folder(tmp_path / "imgs", sizes=(), tiny=12)
    dm = SRDataModule(val=str(folder), scale=4, num_workers=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        with pytest.raises(DatasetError, match=r"data\.val: all 1 image\(s\) are smaller than 19 px"):
            dm.setup("validate")


def test_srmetrics_skips_and_counts_a_tiny_image_instead_of_crashing():
    metric = SRMetrics(crop_border=4)
    big, tiny = torch.rand(1, 3, 24, 24), torch.rand(1, 3, 16, 16)
    metric.update(big, big.clamp(0, 1) * 0.9)
    with pytest.warns(MetricsWarning, match="16x16 px is too small to score"):
        metric.update(tiny, tiny)
    values = metric.compute()
    assert int(metric.count) == 1 and int(metric.skipped) == 1
    assert torch.isfinite(values["psnr_y"]) and 0 < float(values["ssim_y"]) <= 1


def test_lpips_value_is_nan_for_an_image_smaller_than_the_backbone_takes():
    from sr_lightning.metrics import lpips_value

    class Scorer(torch.nn.Module):   # stands in for torchmetrics' LPIPS (whose weights are not cached here)
        min_size = 31                # what load_lpips sets for alex

        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(1))

        def forward(self, a, b):
            return (a - b).abs().mean() * self.w

        def reset(self):
            pass

    scorer = Scorer()
    assert np.isnan(lpips_value(scorer, torch.rand(3, 30, 30), torch.rand(3, 30, 30), crop_border=0))
    assert np.isfinite(lpips_value(scorer, torch.rand(3, 39, 39), torch.rand(3, 39, 39), crop_border=4))


def test_train_and_eval_a_folder_with_a_tiny_image_through_cli(cli, tmp_path):
    folder = _folder(tmp_path / "imgs", tiny=16)
    proc = cli("train", "data=folder", f"data.hr_dir={folder}", *TINY_TRAIN, f"hydra.run.dir={tmp_path / 'train'}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "tiny.png: 16x16 px is too small to score at x4" in proc.stderr
    assert "val 3 images (1 too small to score, skipped)" in proc.stderr + proc.stdout
    assert "Traceback" not in proc.stderr

    run_dir = tmp_path / "eval"
    proc = cli("eval", "model=bicubic", "data=folder", f"data.hr_dir={folder}", "comparison.images=1",
               f"hydra.run.dir={run_dir}", env={"TORCH_HOME": str(tmp_path / "torch")})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "tiny.png: 16x16 px is too small to score" in proc.stderr
    rows = _read_csv(run_dir / "results.csv")
    assert [(r["images"], r["skipped"]) for r in rows] == [("3", "1")]
    assert "imgs: 3 of 4 images scored; 1 smaller than 19 px per side skipped" in (run_dir / "results.md").read_text()
    assert {r["image"] for r in _read_csv(run_dir / "per_image.csv")} == {"big0", "big1", "big2"}


# --- huge images (decompression bombs) --------------------------------------------------------------------------

def test_folder_source_refuses_a_bomb_when_listed_and_allows_it_on_purpose(tmp_path):
    folder = _folder(tmp_path / "imgs", tiny=None)
    _bomb(folder / "huge.png")
    with pytest.raises(ImageTooLargeError, match=r"huge\.png: 14000x13000 = 182,000,000 pixels .*max_pixels="):
        FolderSource(folder).records(scale=4, split="val")
    records = FolderSource(folder, max_pixels=None).records(scale=4, split="val")   # listed, not decoded
    assert {r.name: r.hr_size for r in records}["huge"] == (13000, 14000)


def test_datamodule_max_pixels_applies_to_every_split_and_checks_its_value(tmp_path):
    folder = _folder(tmp_path / "imgs", sizes=(96,), tiny=None)
    dm = SRDataModule(hr_dir=str(folder), scale=4, crop=32, num_workers=0, max_pixels=96 * 96 - 1)
    with pytest.raises(ImageTooLargeError, match=r"big0\.png: 96x96 = 9,216 pixels .*limit of 9,215"):
        dm.setup("fit")
    dm = SRDataModule(hr_dir=str(folder), scale=4, crop=32, num_workers=0, max_pixels=96 * 96)
    dm.setup("fit")
    assert dm.train_source.max_pixels == dm.val_source.max_pixels == 96 * 96
    assert SRDataModule(hr_dir=str(folder), num_workers=0).max_pixels == "default"
    with pytest.raises(DatasetError, match=r"^max_pixels: got 'lots'; allowed"):
        SRDataModule(hr_dir=str(folder), scale=4, crop=32, num_workers=0, max_pixels="lots").setup("fit")


def test_a_larger_limit_reads_images_over_pillows_own(tmp_path, monkeypatch):
    # Pillow's refusal is lowered to 1000 px for the test: our max_pixels above it must still read the file.
    from PIL import Image as PILImage

    from sr_lightning.data.imageio import read_rgb_uint8

    folder = _folder(tmp_path / "imgs", sizes=(96,), tiny=None)
    monkeypatch.setattr(PILImage, "MAX_IMAGE_PIXELS", 500)
    assert read_rgb_uint8(folder / "big0.png", max_pixels=10_000).shape == (96, 96, 3)
    assert PILImage.MAX_IMAGE_PIXELS == 500   # restored


def test_train_with_a_bomb_in_the_folder_is_one_error_line_naming_it(cli, tmp_path):
    folder = _folder(tmp_path / "imgs", tiny=None)
    _bomb(folder / "huge.png")
    proc = cli("train", "data=folder", f"data.hr_dir={folder}", *TINY_TRAIN, f"hydra.run.dir={tmp_path / 'run'}")
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr[-3000:]
    assert "huge.png: 14000x13000 = 182,000,000 pixels" in errors[0]
    assert f"{DEFAULT_MAX_PIXELS:,}" in errors[0] and "max_pixels=" in errors[0]
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "run" / "checkpoints" / "last.ckpt").exists()


def test_eval_max_pixels_key_through_cli(cli, tmp_path):
    folder = _folder(tmp_path / "imgs", sizes=(96,), tiny=None)
    proc = cli("eval", "model=bicubic", "data=folder", f"data.hr_dir={folder}", "max_pixels=9000",
               f"hydra.run.dir={tmp_path / 'run'}", env={"TORCH_HOME": str(tmp_path / "torch")})
    assert proc.returncode == EXIT_USER_ERROR  # a user error: `error: ...`, exit 2 like every command
    assert proc.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "big0.png: 96x96 = 9,216 pixels is over the decompression-bomb limit of 9,000" in proc.stderr
    assert "Traceback" not in proc.stderr


# --- eval lpips_net ---------------------------------------------------------------------------------------------

def test_eval_unknown_lpips_net_is_one_error_line(cli, tmp_path):
    folder = _folder(tmp_path / "imgs", sizes=(24,), tiny=None)
    proc = cli("eval", "model=bicubic", "data=folder", f"data.hr_dir={folder}", "lpips_net=foo",
               f"hydra.run.dir={tmp_path / 'run'}", env={"TORCH_HOME": str(tmp_path / "torch")})
    assert proc.returncode == EXIT_USER_ERROR  # a user error: `error: ...`, exit 2 like every command
    assert proc.stderr.strip().splitlines() == [
        "error: lpips_net=foo: unknown LPIPS backbone; allowed: alex, squeeze, vgg (or lpips=false)"]
