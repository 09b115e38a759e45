"""SRDataModule, sources, pairing, cache and augmentation: tiny images made in tmp_path."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sr_lightning.data import FolderSource, SampleSource, SRDataModule
from sr_lightning.data.augment import PairAugment
from sr_lightning.data.cache import CacheBudget, ImageCache
from sr_lightning.data.errors import DatasetError, DatasetMissingError, DataWarning
from sr_lightning.data.imageio import ImageReadError, ImageWarning, read_rgb_uint8
from sr_lightning.data.pair_loader import PairLoader, bicubic_lr_window
from sr_lightning.data.pairing import pair_files, pairing_key
from sr_lightning.data.patches import TrainPatchDataset
from sr_lightning.ops.color import rgb2y_uint8
from sr_lightning.ops.imresize import imresize_np

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"


def _texture(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A smooth-but-busy RGB image (bicubic-friendly, every position distinguishable)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (h // 4 + 2, w // 4 + 2, 3), dtype=np.uint8)
    big = np.asarray(Image.fromarray(small).resize((w + 8, h + 8), Image.BICUBIC))[4:4 + h, 4:4 + w]
    return np.ascontiguousarray(big)


def _save(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def _hr_folder(root: Path, n: int = 3, size=(48, 40)) -> Path:
    for i in range(n):
        _save(root / f"img_{i:03d}.png", _texture(*size, seed=i))
    return root


def _paired_folders(root: Path, scale: int = 4, n: int = 2, size=(48, 40)) -> tuple[Path, Path]:
    hr_dir, lr_dir = root / "HR", root / "LR"
    for i in range(n):
        hr = _texture(*size, seed=10 + i)
        _save(hr_dir / f"{i:04d}.png", hr)
        _save(lr_dir / f"{i:04d}x{scale}.png", imresize_np(hr, scale=1 / scale))
    return hr_dir, lr_dir


def _dm(train=None, val=None, **kw) -> SRDataModule:
    kw.setdefault("scale", 4)
    kw.setdefault("crop", 16)
    kw.setdefault("batch_size", 2)
    kw.setdefault("patches_per_image", 2)
    return SRDataModule(train, val, **kw)


# ------------------------------------------------------------------------------------------------------------
# alignment after crop / flip / rotate
# ------------------------------------------------------------------------------------------------------------

def _d4(image: np.ndarray):
    for k in range(4):
        r = np.rot90(image, k)
        yield r
        yield r[:, ::-1]


def _locate(patch: np.ndarray, image: np.ndarray, step: int):
    """(transform index, y, x) where `patch` is found exactly in a D4 transform of `image`, on a `step` grid."""
    hits = []
    c = patch.shape[0]
    for t, view in enumerate(_d4(image)):
        for y in range(0, view.shape[0] - c + 1, step):
            for x in range(0, view.shape[1] - c + 1, step):
                if np.array_equal(view[y:y + c, x:x + c], patch):
                    hits.append((t, y, x))
    return hits


def test_pairs_stay_aligned_after_crop_flip_rotate(tmp_path):
    scale, crop = 4, 16
    hr_full = _texture(48, 40, seed=3)
    _save(tmp_path / "hr" / "a.png", hr_full)
    source = FolderSource(tmp_path / "hr")
    cache = ImageCache(source.records(scale), PairLoader(scale))
    cache.preload()
    ds = TrainPatchDataset(cache, scale, crop, patches_per_image=24, augment=PairAugment())
    ds.reseed(0)
    lr_full = imresize_np(hr_full, scale=1 / scale)
    transforms = set()
    for i in range(len(ds)):
        item = ds[i]
        hr = (item["hr"].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        lr = (item["lr"].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        assert hr.shape == (crop, crop, 3) and lr.shape == (crop // scale, crop // scale, 3)
        hits = _locate(hr, hr_full, scale)
        assert hits, "HR patch is not a scale-aligned crop of a flipped/rotated HR"
        t, y, x = hits[0]
        # The augmented LR is the same crop of the same transform of the LR ...
        lr_view = list(_d4(lr_full))[t]
        np.testing.assert_array_equal(lr, lr_view[y // scale: y // scale + crop // scale,
                                                  x // scale: x // scale + crop // scale])
        # ... and equals the LR made from the augmented HR (bicubic commutes with flips/rot90). The crop's
        # own border lacks the neighbours the full image gives, so compare the interior.
        regen = imresize_np(np.ascontiguousarray(list(_d4(hr_full))[t]), scale=1 / scale)
        np.testing.assert_array_equal(lr, regen[y // scale: y // scale + crop // scale,
                                                x // scale: x // scale + crop // scale])
        transforms.add(t)
    assert len(transforms) >= 4, f"augmentation produced only transforms {transforms}"


def test_misaligned_lr_would_be_detected(tmp_path):
    # The alignment check above has power: LR shifted by one LR pixel differs clearly.
    hr = _texture(48, 40, seed=3)
    lr = imresize_np(hr, scale=0.25)
    assert np.abs(lr[:, 1:].astype(int) - lr[:, :-1]).mean() > 2


def test_window_bicubic_equals_full_image_bicubic():
    hr = _texture(64, 56, seed=5)
    full = imresize_np(hr, scale=0.25)
    for top, left in [(0, 0), (3, 5), (16 - 4, 14 - 4), (6, 0)]:
        window = bicubic_lr_window(hr, top, left, 4, 4, 4)
        np.testing.assert_array_equal(window, full[top:top + 4, left:left + 4])


def test_uncached_patches_equal_cached_patches(tmp_path):
    _hr_folder(tmp_path / "hr", n=2)
    records = FolderSource(tmp_path / "hr").records(4)
    cached = ImageCache(records, PairLoader(4), CacheBudget(None))
    cached.preload()
    lazy = ImageCache(records, PairLoader(4), CacheBudget(0))
    lazy.preload()
    assert cached.cached == 2 and lazy.cached == 0
    a = TrainPatchDataset(cached, 4, 16, patches_per_image=4, augment=PairAugment())
    b = TrainPatchDataset(lazy, 4, 16, patches_per_image=4, augment=PairAugment())
    a.reseed(7)
    b.reseed(7)
    for i in range(len(a)):
        x, y = a[i], b[i]
        assert torch.equal(x["hr"], y["hr"])
        assert (x["lr"] - y["lr"]).abs().max() <= 1 / 255 + 1e-6


# ------------------------------------------------------------------------------------------------------------
# bicubic vs the benchmark LR files, cache
# ------------------------------------------------------------------------------------------------------------

def test_bicubic_lr_matches_set5_x4_files(benchmarks_dir):
    set5 = benchmarks_dir / "Set5" / "x4"
    dm = SRDataModule(None, FolderSource(set5 / "HR"), scale=4, crop=96, batch_size=1)
    dm.setup("validate")
    diffs = []
    for batch in dm.val_dataloader():
        lr_file = read_rgb_uint8(set5 / "LR" / f"{batch['name'][0]}.png")
        ours = (batch["lr"][0].permute(1, 2, 0).numpy() * 255).round()
        assert ours.shape == lr_file.shape
        diffs.append(np.abs(ours - lr_file).mean())
    assert len(diffs) == 5
    assert max(diffs) < 1.0, diffs


def test_cache_returns_identical_arrays(tmp_path):
    _paired_folders(tmp_path, n=2)
    records = FolderSource(tmp_path / "HR", tmp_path / "LR").records(4)
    cache = ImageCache(records, PairLoader(4))
    cache.preload()
    for i, record in enumerate(records):
        hr, lr = cache.get(i)
        assert cache.get(i)[0] is hr  # served from memory, not decoded again
        np.testing.assert_array_equal(hr, read_rgb_uint8(record.hr_path))
        np.testing.assert_array_equal(lr, read_rgb_uint8(record.lr_path))
        fresh_hr, fresh_lr = PairLoader(4).load(record)
        np.testing.assert_array_equal(hr, fresh_hr)
        np.testing.assert_array_equal(lr, fresh_lr)


def test_cache_budget_limits_what_is_kept(tmp_path):
    _hr_folder(tmp_path / "hr", n=3, size=(48, 40))
    records = FolderSource(tmp_path / "hr").records(4)
    one_image = 48 * 40 * 3 + 12 * 10 * 3
    cache = ImageCache(records, PairLoader(4), CacheBudget(one_image * 1.5 / 2**20))
    cache.preload(threads=1)
    assert cache.cached == 1
    np.testing.assert_array_equal(cache.get(2)[0], read_rgb_uint8(records[2].hr_path))


# ------------------------------------------------------------------------------------------------------------
# the DataModule
# ------------------------------------------------------------------------------------------------------------

def test_sample_datamodule_batches():
    dm = SRDataModule(SampleSource(["chelsea", "coffee"]), SampleSource(["chelsea"]), scale=4, crop=32,
                      batch_size=3, patches_per_image=2, seed=1)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["hr"].shape == (3, 3, 32, 32) and batch["lr"].shape == (3, 3, 8, 8)
    assert batch["hr"].dtype == torch.float32 and 0 <= batch["hr"].min() and batch["hr"].max() <= 1
    assert set(batch["name"]) <= {"chelsea", "coffee"}
    val = list(dm.val_dataloader())
    assert len(val) == 1 and val[0]["name"] == ["chelsea"]
    assert val[0]["hr"].shape == (1, 3, 300, 448)  # 300x451 mod-cropped to x4
    assert val[0]["lr"].shape == (1, 3, 75, 112)


def test_every_bundled_sample_photo_loads_offline():
    from sr_lightning.data.sample import SAMPLE_IMAGES, load_sample

    for name, (hw, _) in SAMPLE_IMAGES.items():
        image = load_sample(name)
        assert image.shape == (*hw, 3) and image.dtype == np.uint8, name
        grey = SAMPLE_IMAGES[name][1].startswith("grey:")
        assert grey == bool((image == image[..., :1]).all()), name  # grey photos: three equal channels


def test_paired_folder_train_val_and_names(tmp_path):
    hr_dir, lr_dir = _paired_folders(tmp_path, n=3)
    dm = SRDataModule(hr_dir=str(hr_dir), lr_dir=str(lr_dir), scale=4, crop=16, batch_size=2, name="folder")
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["lr"].shape == (2, 3, 4, 4)
    val = list(dm.val_dataloader())
    assert [b["name"][0] for b in val] == ["0000", "0001", "0002"]
    lr_file = read_rgb_uint8(lr_dir / "0001x4.png")
    np.testing.assert_array_equal((val[1]["lr"][0].permute(1, 2, 0).numpy() * 255).round(), lr_file)
    dm.setup("test")
    assert len(list(dm.test_dataloader())) == 3


def test_y_channel_and_value_range(tmp_path):
    _hr_folder(tmp_path / "hr", n=1)
    dm = _dm(FolderSource(tmp_path / "hr"), FolderSource(tmp_path / "hr"), color="y", value_range=[-1, 1])
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["hr"].shape[1] == 1 and batch["lr"].shape[1] == 1
    assert batch["hr"].min() >= -1 and batch["hr"].max() <= 1
    val = next(iter(dm.val_dataloader()))
    hr_rgb = read_rgb_uint8(tmp_path / "hr" / "img_000.png")
    y = rgb2y_uint8(hr_rgb).astype(np.float32)
    np.testing.assert_allclose((val["hr"][0, 0].numpy() + 1) / 2 * 255, y, atol=1e-3)
    assert val["hr_rgb"].shape[1] == 3 and val["lr_rgb"].shape[1] == 3


def test_odd_images_in_a_folder_all_become_rgb(tmp_path):
    folder = tmp_path / "hr"
    base = _texture(24, 24, seed=1)
    _save(folder / "rgb.png", base)
    Image.fromarray(base[:, :, 0], mode="L").save(folder / "gray.png")
    Image.fromarray(np.concatenate([base, np.full((24, 24, 1), 255, np.uint8)], 2), "RGBA").save(folder / "rgba.png")
    Image.fromarray(base[:, :, 0].astype(np.uint16) * 257).save(folder / "g16.png")
    Image.fromarray(base).quantize(16).save(folder / "pal.png")
    Image.fromarray(base).save(folder / "photo.jpg", quality=95)
    dm = _dm(FolderSource(folder), None, crop=16, batch_size=6, patches_per_image=1, augment=False)
    with pytest.warns(ImageWarning, match=r"rgba\.png.*alpha"):
        dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["hr"].shape == (6, 3, 16, 16)


def test_image_smaller_than_crop_skipped_with_warning(tmp_path):
    _save(tmp_path / "hr" / "big.png", _texture(40, 40))
    _save(tmp_path / "hr" / "tiny.png", _texture(12, 40))
    dm = _dm(FolderSource(tmp_path / "hr"), None, crop=16)
    with pytest.warns(DataWarning, match=r"tiny\.png.*smaller than crop=16.*skipped"):
        dm.setup("fit")
    assert [r.name for r in dm.train_set.cache.records] == ["big"]


def test_error_when_no_image_is_large_enough(tmp_path):
    _save(tmp_path / "hr" / "tiny.png", _texture(12, 12))
    dm = _dm(FolderSource(tmp_path / "hr"), None, crop=16)
    with pytest.warns(DataWarning), pytest.raises(DatasetError, match=r"smaller than crop=16.*lower crop"):
        dm.setup("fit")


def test_empty_folder(tmp_path):
    (tmp_path / "hr").mkdir()
    with pytest.raises(DatasetError, match=r"hr contains no images.*data\.hr_dir"):
        _dm(FolderSource(tmp_path / "hr"), None).setup("fit")


def test_folder_with_only_unreadable_files(tmp_path):
    (tmp_path / "hr").mkdir()
    (tmp_path / "hr" / "notes.txt").write_text("x")
    with pytest.warns(DataWarning, match=r"notes\.txt"), pytest.raises(DatasetError, match="no images"):
        _dm(FolderSource(tmp_path / "hr"), None).setup("fit")


def test_unreadable_extension_skipped_with_warning(tmp_path):
    _hr_folder(tmp_path / "hr", n=1)
    (tmp_path / "hr" / "scan.xyz").write_bytes(b"...")
    with pytest.warns(DataWarning, match=r"skipped 1 file.*scan\.xyz"):
        records = FolderSource(tmp_path / "hr").records(4)
    assert [r.name for r in records] == ["img_000"]


def test_missing_folder_of_a_downloadable_set_says_how_to_get_it(tmp_path):
    source = FolderSource(tmp_path / "DIV2K" / "DIV2K_train_HR", dataset="div2k")
    with pytest.raises(DatasetMissingError, match=r"DIV2K_train_HR does not exist.*download data=div2k"):
        _dm(source, None).setup("fit")


def test_missing_folder_given_by_user(tmp_path):
    dm = SRDataModule(hr_dir=str(tmp_path / "nowhere"), scale=4, crop=16)
    with pytest.raises(DatasetMissingError, match=r"nowhere does not exist.*data=folder data\.hr_dir=PATH"):
        dm.setup("fit")
    with pytest.raises(DatasetError, match=r"data\.hr_dir is not set"):
        SRDataModule(FolderSource(None), None, scale=4, crop=16).setup("fit")


def test_lr_hr_count_mismatch_names_the_orphans(tmp_path):
    hr_dir, lr_dir = _paired_folders(tmp_path, n=2)
    _save(hr_dir / "0002.png", _texture(48, 40))
    with pytest.raises(DatasetError, match=r"3 HR vs 2 LR.*HR file\(s\) without an LR partner: .*0002\.png"):
        FolderSource(hr_dir, lr_dir).records(4)
    (hr_dir / "0002.png").unlink()
    _save(lr_dir / "0009x4.png", _texture(12, 10))
    with pytest.raises(DatasetError, match=r"LR file\(s\) without an HR partner: .*0009x4\.png"):
        FolderSource(hr_dir, lr_dir).records(4)


def test_lr_size_mismatch_names_both_files(tmp_path):
    hr_dir, lr_dir = _paired_folders(tmp_path, n=1)
    _save(lr_dir / "0000x4.png", _texture(13, 10))
    with pytest.raises(DatasetError, match=r"LR .*0000x4\.png is 10x13.*HR .*0000\.png is 40x48.*must be 10x12"):
        FolderSource(hr_dir, lr_dir).records(4)


def test_pairing_never_uses_a_near_miss(tmp_path):
    # 'img_1' must not pair with 'img_10': exact keys only.
    assert pairing_key(Path("img_10x4.png"), 4) == "img_10"
    assert pairing_key(Path("img_001_SRF_4_LR.png"), 4) == "img_001"
    assert pairing_key(Path("baby_HR.png"), 4) == "baby"
    with pytest.raises(DatasetError, match=r"img_1\.png"):
        pair_files([Path("img_1.png"), Path("img_10.png")], [Path("img_10x4.png")], 4)


def test_data_errors_are_user_errors():
    """The CLI prints a UserError as one `error:` line (exit 2); callers catching ValueError keep working."""
    from sr_lightning.errors import UserError

    for cls in (DatasetError, DatasetMissingError, ImageReadError):
        assert issubclass(cls, UserError) and issubclass(cls, ValueError)


def test_crop_not_divisible_by_scale(tmp_path):
    _hr_folder(tmp_path / "hr", n=1)
    with pytest.raises(DatasetError, match=r"crop: got 18, not divisible by scale=4.*16 or 20"):
        _dm(FolderSource(tmp_path / "hr"), None, crop=18).setup("fit")


@pytest.mark.parametrize("bad, check", [
    ({"crop": 18}, lambda c: c.check_crop(18, 4)),
    ({"color": "yuv"}, lambda c: c.check_color("yuv")),
    ({"value_range": [1, 0]}, lambda c: c.check_value_range([1.0, 0.0])),
])
def test_datamodule_checks_give_configs_message(tmp_path, bad, check):
    """One message per check: the data module built directly says what `train`'s config check says."""
    from sr_lightning import config

    with pytest.raises(config.ConfigError) as want:
        check(config)
    _hr_folder(tmp_path / "hr", n=1)
    with pytest.raises(DatasetError) as got:
        _dm(FolderSource(tmp_path / "hr"), None, **bad).setup("fit")
    assert str(got.value) == str(want.value)


def test_train_patch_dataset_checks_crop_like_config():
    from sr_lightning.config import ConfigError, check_crop

    cache = ImageCache([], PairLoader(4))
    with pytest.raises(ConfigError) as want:
        check_crop(18, 4)
    with pytest.raises(DatasetError) as got:
        TrainPatchDataset(cache, 4, 18)
    assert str(got.value) == str(want.value)


def test_corrupt_file_in_folder_names_it(tmp_path):
    _hr_folder(tmp_path / "hr", n=1)
    good = (tmp_path / "hr" / "img_000.png").read_bytes()
    (tmp_path / "hr" / "img_bad.png").write_bytes(good[:40] + b"\0" * 200)
    with pytest.raises(ImageReadError, match=r"img_bad\.png"):
        _dm(FolderSource(tmp_path / "hr"), None).setup("fit")


def test_test_set_has_no_training_split(tmp_path):
    _hr_folder(tmp_path / "hr", n=1)
    dm = SRDataModule(None, FolderSource(tmp_path / "hr"), name="set5", scale=4, crop=16)
    with pytest.raises(DatasetError, match="data=set5 has no training split"):
        dm.train_dataloader()
    dm.setup("test")
    assert len(list(dm.test_dataloader())) == 1


def test_workers_reseed_augmentation(tmp_path):
    # Two DataLoader workers must not produce the same crops (albumentations has its own RNG).
    _hr_folder(tmp_path / "hr", n=1, size=(64, 64))
    dm = _dm(FolderSource(tmp_path / "hr"), None, batch_size=1, patches_per_image=8, num_workers=2,
             persistent_workers=False)
    dm.setup("fit")
    patches = [b["hr"] for b in dm.train_dataloader()]
    assert len(patches) == 8
    distinct = {tuple(p.flatten()[:64].tolist()) for p in patches}
    assert len(distinct) >= 6


# ------------------------------------------------------------------------------------------------------------
# configs
# ------------------------------------------------------------------------------------------------------------

DATA_CONFIGS = ["sample", "folder", "div2k", "flickr2k", "set5", "set14", "b100", "urban100", "celeba", "div2krk"]


@pytest.mark.parametrize("name", DATA_CONFIGS)
def test_every_data_config_instantiates(name, tmp_path):
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    overrides = [f"data={name}", f"paths.data_dir={tmp_path}", f"paths.benchmarks_dir={tmp_path}/bm"]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("download", overrides=overrides)
    dm = instantiate(cfg.data)
    assert isinstance(dm, SRDataModule) and dm.name == name
    assert (dm.scale, dm.crop, dm.batch_size, dm.color) == (cfg.scale, cfg.crop, cfg.batch_size, cfg.color)
    if name not in ("sample", "folder"):
        assert cfg.data.download.files, "a downloadable set lists its files"
        with pytest.raises(DatasetMissingError, match=f"download data={name}|download data=div2k"):
            dm.setup("test")


def test_benchmark_config_reads_shared_layout(benchmarks_dir):
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("download", overrides=["data=set14", f"paths.benchmarks_dir={benchmarks_dir}", "scale=3"])
    dm = instantiate(cfg.data)
    dm.setup("test")
    batches = list(dm.test_dataloader())
    assert len(batches) == 14
    for b in batches:
        assert b["hr"].shape[-2] == 3 * b["lr"].shape[-2] and b["hr"].shape[-1] == 3 * b["lr"].shape[-1]


# ------------------------------------------------------------------------------------------------------------
# prepare (sub-images)
# ------------------------------------------------------------------------------------------------------------

def test_prepare_cuts_aligned_subimages_used_for_training(tmp_path):
    from sr_lightning.data.subimages import prepare_source, tile_starts

    assert tile_starts(100, 48, 24, 0) == [0, 24, 48, 52]
    assert tile_starts(40, 48, 24, 0) == []
    hr_dir, lr_dir = _paired_folders(tmp_path, n=2, size=(100, 76))
    source = FolderSource(hr_dir, lr_dir)
    hr_out, lr_out, total = prepare_source(source, 4, 48, 24, 0, workers=1)
    assert hr_out == tmp_path / "HR_sub" and lr_out == tmp_path / "LR_sub"
    # 100 x 76 -> cropped to 96 x 72 (multiples of 24): rows at 0, 24, 48; columns at 0, 24
    assert total == 2 * 3 * 2 == len(list(hr_out.glob("*.png"))) == len(list(lr_out.glob("*.png")))
    records = source.records(4, "train")  # subimages=auto picks the prepared folders for training ...
    assert len(records) == total and records[0].hr_path.parent == hr_out
    assert len(source.records(4, "val")) == 2  # ... but never for validation
    full_hr = read_rgb_uint8(hr_dir / "0000.png")
    full_lr = read_rgb_uint8(lr_dir / "0000x4.png")
    for record in records[:6]:
        sub_hr, sub_lr = read_rgb_uint8(record.hr_path), read_rgb_uint8(record.lr_path)
        assert sub_hr.shape == (48, 48, 3) and sub_lr.shape == (12, 12, 3)
        hits = [(y, x) for y in range(0, 53, 4) for x in range(0, 29, 4)
                if np.array_equal(full_hr[y:y + 48, x:x + 48], sub_hr)]
        assert len(hits) == 1
        y, x = hits[0]
        np.testing.assert_array_equal(full_lr[y // 4: y // 4 + 12, x // 4: x // 4 + 12], sub_lr)
    # LR sub-images of another scale are never paired with them.
    from sr_lightning.data.subimages import is_prepared

    assert is_prepared(hr_out, lr_out, 4) and not is_prepared(hr_out, lr_out, 2)


@pytest.mark.slow
def test_prepare_command_through_cli(tmp_path, cli):
    _hr_folder(tmp_path / "HR", n=1, size=(100, 76))
    result = cli("prepare", "data=folder", f"data.hr_dir={tmp_path / 'HR'}", "prepare.crop_size=48",
                 "prepare.step=24", "prepare.workers=1", f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "6 sub-images in" in result.stdout
    assert (tmp_path / "HR_sub" / ".prepared.json").is_file()


def test_folder_config_for_train_val_and_eval(tmp_path):
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    hr_dir, lr_dir = _paired_folders(tmp_path, n=2)
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        unset = compose("download", overrides=["data=folder"])
        cfg = compose("download", overrides=["data=folder", f"data.hr_dir={hr_dir}", f"data.lr_dir={lr_dir}",
                                             "crop=16", "batch_size=2"])
    with pytest.raises(DatasetError, match=r"data\.hr_dir is not set.*data=folder data\.hr_dir=PATH"):
        instantiate(unset.data).setup("fit")
    dm = instantiate(cfg.data)
    dm.setup("fit")
    assert next(iter(dm.train_dataloader()))["hr"].shape == (2, 3, 16, 16)
    dm.setup("test")
    assert [b["name"][0] for b in dm.test_dataloader()] == ["0000", "0001"]


def test_datasets_survive_pickling_for_spawned_workers(tmp_path):
    import pickle

    _hr_folder(tmp_path / "hr", n=1)
    dm = _dm(FolderSource(tmp_path / "hr"), FolderSource(tmp_path / "hr"))
    dm.setup("fit")
    clone = pickle.loads(pickle.dumps(dm.train_set))
    dm.train_set.reseed(3)
    clone.reseed(3)
    assert torch.equal(dm.train_set[0]["hr"], clone[0]["hr"]) and torch.equal(dm.train_set[1]["lr"], clone[1]["lr"])
    assert torch.equal(pickle.loads(pickle.dumps(dm.val_set))[0]["lr"], dm.val_set[0]["lr"])
