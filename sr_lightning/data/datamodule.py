"""`SRDataModule`: the one LightningDataModule for training, validation and test of every model.

Batches are dicts `{"lr": (N,C,h,w), "hr": (N,C,H,W), "name": list[str]}` of float tensors in `value_range`
(C = 3 for `color=rgb`, 1 MATLAB-BT.601 Y channel for `color=y`; Y-mode val/test batches also carry
`hr_rgb`/`lr_rgb`). Training batches are random scale-aligned crops; validation/test batches are whole
images (batch size 1, sizes differ) with the HR mod-cropped to the scale.

With a `degradation` config the training LR is not made by the workers: the HR crops go to the device and
`on_after_batch_transfer` blurs, downscales, adds noise and JPEG-compresses the whole batch there
(`degradations.RandomDegradation`), seeded and reproducible, on GPU or CPU.
"""
from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader

from sr_lightning.config import check_color, check_crop, check_positive_int, check_scale, check_value_range
from sr_lightning.data.augment import PairAugment
from sr_lightning.data.cache import CacheBudget, ImageCache
from sr_lightning.data.degradations import RandomDegradation
from sr_lightning.data.errors import DatasetError, DataWarning, config_checks
from sr_lightning.data.folder_source import FolderSource
from sr_lightning.data.full_images import FullImageDataset
from sr_lightning.data.imageio import resolve_max_pixels
from sr_lightning.data.pair_loader import PairLoader
from sr_lightning.data.patches import TrainPatchDataset
from sr_lightning.data.records import filter_too_small
from sr_lightning.data.sampling import StreamDataset, StreamSampler
from sr_lightning.ops.value_range import from_unit, to_unit

log = logging.getLogger(__name__)

_SPLIT_USE = {"val": "validation", "test": "testing/eval"}


def _plain(value: Any) -> Any:
    """OmegaConf containers -> plain Python (Hydra passes nested config nodes as DictConfig/ListConfig)."""
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf

        if isinstance(value, (DictConfig, ListConfig)):
            return OmegaConf.to_container(value, resolve=True)
    except ImportError:  # pragma: no cover - omegaconf is a dependency
        pass
    return value


def _build_source(spec: Any, key: str):
    """A source object, a `{_target_: ...}` mapping (instantiated here) or None."""
    spec = _plain(spec)
    if spec is None or hasattr(spec, "records"):
        return spec
    if isinstance(spec, Mapping) and "_target_" in spec:
        from hydra.utils import instantiate

        return instantiate(spec)
    if isinstance(spec, Mapping) and "hr_dir" in spec:
        return FolderSource(**{"key": f"data.{key}.hr_dir", **spec})
    if isinstance(spec, str):
        return FolderSource(spec, key=f"data.{key}")
    raise DatasetError(f"data.{key}: expected a source (e.g. {{_target_: sr_lightning.data.FolderSource, hr_dir: PATH}}),"
                       f" a folder path or null; got {spec!r}")


class SRDataModule(pl.LightningDataModule):
    """Paired LR/HR data for super-resolution.

    Args:
        train, val, test: image sources (`FolderSource`, `SampleSource`, ...) or None; `test` defaults to `val`.
        hr_dir, lr_dir: shortcut for `data=folder`: one folder (or HR/LR pair) for every split.
        val_hr_dir, val_lr_dir: with the shortcut, a separate validation/test folder.
        name: the data config's name (used in messages, e.g. which `download` command fixes a missing set).
        scale, crop, batch_size, color, value_range, seed: the run's top-level keys.
        patches_per_image: random crops per image per epoch.
        num_workers: DataLoader workers for training (validation uses at most 2). `auto`: none on machines
            without a GPU or with <= 2 cores (cropping cached arrays is cheaper than a worker's IPC there),
            else half the cores up to 8 (a GPU step is fast enough for the loader to matter).
        cache_mb: memory budget for decoded images (all splits together); images beyond it are decoded on
            access. 0 disables the cache.
        augment: `{hflip, vflip, rot90}` booleans, or false for none.
        degradation: RandomDegradation arguments (without scale/seed) to make LR on the device, or None.
        download: file list of a downloadable set (read by the `download` command; unused here).
        max_pixels: decompression-bomb guard for every folder source: an image whose header claims more pixels
            is refused when the folder is listed (before training), naming the file. `default`: Pillow's
            limit (~179 MP); a number of pixels to allow bigger images on purpose; 0 or null: no limit.
    """

    def __init__(self, train: Any = None, val: Any = None, test: Any = None, *, name: str | None = None,
                 hr_dir: str | None = None, lr_dir: str | None = None, val_hr_dir: str | None = None,
                 val_lr_dir: str | None = None, scale: int = 4, crop: int = 96, batch_size: int = 16,
                 color: str = "rgb", value_range: Sequence[float] = (0.0, 1.0), seed: int = 42,
                 patches_per_image: int = 1, num_workers: int | str = "auto", val_batch_size: int = 1,
                 cache_mb: float | None = 2048, augment: Any = True, degradation: Any = None,
                 pin_memory: Any = "auto", persistent_workers: bool = True, download: Any = None,
                 description: str | None = None, max_pixels: int | str | None = "default"):
        super().__init__()
        self.name = name or "custom"
        if hr_dir not in (None, ""):
            # `data=folder data.hr_dir=PATH [data.lr_dir=PATH]`: the folder serves every split unless
            # val_hr_dir gives a separate one.
            train = train or FolderSource(hr_dir, lr_dir, key="data.hr_dir")
            held_out = FolderSource(val_hr_dir, val_lr_dir, key="data.val_hr_dir") if val_hr_dir else \
                FolderSource(hr_dir, lr_dir, key="data.hr_dir")
            val = val or held_out
            test = test or held_out
        self.train_source = _build_source(train, "train")
        self.val_source = _build_source(val, "val")
        self.test_source = _build_source(test, "test") or self.val_source
        self.scale, self.crop, self.batch_size = scale, crop, batch_size
        self.color = color
        self.value_range = tuple(float(v) for v in _plain(value_range))
        self.seed = int(seed)
        self.patches_per_image = patches_per_image
        self.num_workers = self.auto_workers() if num_workers in ("auto", None) else int(num_workers)
        self.val_batch_size = int(val_batch_size)
        self.cache_mb = cache_mb
        augment = _plain(augment)
        self.augment = ({"hflip": True, "vflip": True, "rot90": True} if augment is True
                        else {} if not augment else dict(augment))
        degradation = _plain(degradation)
        self.degradation_cfg = dict(degradation) if degradation else None
        self.pin_memory = pin_memory
        self.persistent_workers = persistent_workers
        self.download = _plain(download)
        self.description = description
        self.max_pixels = max_pixels
        self.degrade: RandomDegradation | None = None
        self.train_set: TrainPatchDataset | None = None
        self.val_set: FullImageDataset | None = None
        self.test_set: FullImageDataset | None = None
        self.skipped: dict[str, list[str]] = {}   # split -> images left out as too small to score
        self._budget = CacheBudget(cache_mb)

    @staticmethod
    def auto_workers() -> int:
        cores = os.cpu_count() or 1
        if not torch.cuda.is_available() or cores <= 2:
            return 0
        return min(8, cores // 2)

    # -- checks ------------------------------------------------------------------------------------------------
    def validate_args(self) -> None:
        """Relations between the keys, each failing with one line naming the key and what is allowed."""
        def bad(key, msg):
            raise DatasetError(f"{key}: {msg}")

        with config_checks():  # the keys `train` also checks: config's messages, one per check
            check_scale(self.scale)
            check_crop(self.crop, self.scale)
            check_positive_int(self.batch_size, "batch_size")
            check_color(self.color)
            check_value_range(self.value_range)
        unknown = set(self.augment) - {"hflip", "vflip", "rot90"}
        if unknown:
            bad("data.augment", f"unknown key(s) {sorted(unknown)}; allowed: hflip, vflip, rot90 (booleans)")
        if self.patches_per_image is None or int(self.patches_per_image) < 1:
            bad("data.patches_per_image", f"got {self.patches_per_image!r}; allowed: an integer >= 1")
        if self.num_workers < 0:
            bad("data.num_workers", f"got {self.num_workers}; allowed: an integer >= 0")
        try:
            self.max_pixels = resolve_max_pixels(self.max_pixels, "max_pixels")
        except ValueError as err:
            raise DatasetError(str(err)) from None
        for source in (self.train_source, self.val_source, self.test_source):
            if source is not None and hasattr(source, "max_pixels"):
                source.max_pixels = self.max_pixels   # one key for every split's folders

    # -- setup -------------------------------------------------------------------------------------------------
    def _loader(self, make_lr: bool) -> PairLoader:
        return PairLoader(self.scale, self.color, make_lr=make_lr)

    def _make_degradation(self) -> RandomDegradation:
        if self.degrade is None:
            try:
                self.degrade = RandomDegradation(scale=self.scale, seed=self.seed, **self.degradation_cfg)
            except TypeError as exc:
                raise DatasetError(f"data.degradation: {exc}; see RandomDegradation for the allowed keys") from None
        return self.degrade

    def _scorable(self, records: list, source, split: str) -> list:
        """Drop (warning with each name) images too small for PSNR/SSIM, before any model runs on them.

        Validation and `eval` score with a `scale` px border crop and an 11x11 SSIM window, so an image under
        `metrics.min_scored_size(scale)` px per side (after the mod-crop) would crash the metric after training.
        """
        from sr_lightning.metrics import can_score, min_scored_size

        need = min_scored_size(self.scale)
        kept, dropped = [], []
        for record in records:
            h, w = record.hr_size or (need, need)   # unknown sizes: SRMetrics skips them if they are small
            h, w = h - h % self.scale, w - w % self.scale
            (kept if can_score(h, w, self.scale) else dropped).append(record)
        for record in dropped:
            h, w = record.hr_size
            warnings.warn(f"{record.describe()}: {w}x{h} px is too small to score at x{self.scale} (the "
                          f"{self.scale} px border crop and SSIM's 11x11 window need >= {need} px per side); "
                          f"skipped for {_SPLIT_USE.get(split, split)}", DataWarning, stacklevel=3)
        self.skipped[split] = [r.describe() for r in dropped]
        if not kept:
            raise DatasetError(f"data.{split}: all {len(records)} image(s) are smaller than {need} px per side, too "
                               f"small to score at x{self.scale} ({source!r}); use larger images")
        return kept

    def _full_image_set(self, source, split: str) -> FullImageDataset:
        records = self._scorable(source.records(self.scale, split), source, split)
        make_lr = self.degradation_cfg is None or bool(getattr(source, "paired", False))
        if not make_lr:
            self._make_degradation()
        cache = ImageCache(records, PairLoader(self.scale, "rgb", make_lr=make_lr), self._budget)
        cache.preload()
        return FullImageDataset(cache, value_range=self.value_range, make_lr=make_lr, color=self.color)

    def setup(self, stage: str | None = None) -> None:
        """Build (and validate) the datasets the stage needs; decode what fits into the memory cache."""
        self.validate_args()
        if self.train_source is None and self.val_source is None:
            raise DatasetError(f"data.hr_dir is not set (data={self.name} has no images configured). Give a folder "
                               "of images: `data=folder data.hr_dir=PATH [data.lr_dir=PATH]`")
        if self.degradation_cfg is not None:
            self._make_degradation()
        if stage in ("fit", None) and self.train_set is None and self.train_source is not None:
            make_lr = self.degradation_cfg is None
            records = self.train_source.records(self.scale, "train")
            records = filter_too_small(records, self.crop, self.scale, f"data.train ({self.train_source!r})")
            cache = ImageCache(records, self._loader(make_lr), self._budget)
            cache.preload()
            augment = PairAugment(**self.augment) if self.augment else None
            self.train_set = TrainPatchDataset(
                cache, self.scale, self.crop, patches_per_image=int(self.patches_per_image), augment=augment,
                value_range=self.value_range, make_lr=make_lr)
        elif stage == "fit" and self.train_source is None:
            raise DatasetError(self._no_train_message())
        if stage in ("fit", "validate", None) and self.val_set is None and self.val_source is not None:
            self.val_set = self._full_image_set(self.val_source, "val")
        if stage in ("test", "predict", None) and self.test_set is None and self.test_source is not None:
            if self.test_source is self.val_source and self.val_set is not None:
                self.test_set = self.val_set
                self.skipped["test"] = self.skipped.get("val", [])
            else:
                self.test_set = self._full_image_set(self.test_source, "test")
        if stage in ("test", "predict") and self.test_source is None:
            raise DatasetError(f"data={self.name} has no test images; choose e.g. data=set5 or "
                               "data=folder data.hr_dir=PATH [data.lr_dir=PATH]")
        log.info("%s", self.summary())

    def _no_train_message(self) -> str:
        return (f"data={self.name} has no training split (it is a test set); train with data=sample, data=div2k or "
                "data=folder data.hr_dir=PATH, and evaluate on it with `python -m sr_lightning eval data=...`")

    def summary(self) -> str:
        parts = [f"data={self.name} x{self.scale} color={self.color}"]
        if self.train_set is not None:
            c = self.train_set.cache
            parts.append(f"train {len(c)} images x {self.train_set.patches_per_image} patches of {self.crop} px "
                         f"({c.cached} cached, {c.nbytes / 2**20:.0f} MB)")
        for split, ds in (("val", self.val_set), ("test", self.test_set)):
            if ds is not None and (split == "val" or ds is not self.val_set):
                skipped = len(self.skipped.get(split, []))
                note = f" ({skipped} too small to score, skipped)" if skipped else ""
                parts.append(f"{split} {len(ds)} images{note}")
        if self.degrade is not None:
            parts.append(repr(self.degrade))
        return "; ".join(parts)

    # -- loaders -----------------------------------------------------------------------------------------------
    def _pin(self) -> bool:
        return torch.cuda.is_available() if self.pin_memory == "auto" else bool(self.pin_memory)

    def train_dataloader(self) -> DataLoader:
        if self.train_source is None:
            raise DatasetError(self._no_train_message())
        if self.train_set is None:
            self.setup("fit")
        # A numbered sample stream (sr_lightning.data.sampling): sample k's image and random crop/flip/rotation
        # come from (seed, k) alone, so resuming at step N continues exactly where a straight run would be,
        # whatever the number of workers, and DDP ranks split each global batch like one process would.
        trainer = getattr(self, "trainer", None)
        rank, world, step = (trainer.global_rank, trainer.world_size, trainer.global_step) if trainer else (0, 1, 0)
        sampler = StreamSampler(len(self.train_set), self.batch_size, rank=rank, world_size=world)
        sampler.start_at(step)
        return DataLoader(
            StreamDataset(self.train_set, seed=self.seed), batch_size=self.batch_size, sampler=sampler,
            drop_last=False, num_workers=self.num_workers, pin_memory=self._pin(),
            persistent_workers=self.persistent_workers and self.num_workers > 0,
        )

    def _eval_loader(self, dataset) -> DataLoader | list:
        if dataset is None:
            return []
        workers = min(self.num_workers, 2)
        return DataLoader(dataset, batch_size=self.val_batch_size, shuffle=False, num_workers=workers,
                          pin_memory=self._pin(), persistent_workers=self.persistent_workers and workers > 0)

    def val_dataloader(self):
        if self.val_set is None and self.val_source is not None:
            self.setup("validate")
        return self._eval_loader(self.val_set)

    def test_dataloader(self):
        if self.test_set is None:
            self.setup("test")
        return self._eval_loader(self.test_set)

    def predict_dataloader(self):
        return self.test_dataloader()

    # -- on-device degradation ---------------------------------------------------------------------------------
    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        if self.degrade is None or not isinstance(batch, dict) or "lr" in batch:
            return batch
        # Validation/test items carry a per-image key (fixed LR every epoch); training patches get fresh draws.
        keys = batch.pop("degrade_key", None)
        batch["lr"] = self.degrade_batch(batch["hr"], keys)
        return batch

    def degrade_batch(self, hr: torch.Tensor, keys: Sequence[int] | torch.Tensor | None = None) -> torch.Tensor:
        """LR for an HR batch in value_range: a fresh draw per batch, or one fixed draw per key (image)."""
        degrade = self._make_degradation()
        hr01 = to_unit(hr, self.value_range)
        if keys is None:
            lr01 = degrade(hr01)
        else:
            keys = keys.tolist() if torch.is_tensor(keys) else list(keys)
            lr01 = torch.cat([degrade(hr01[i: i + 1], degrade.generator(hr.device, int(k)))
                              for i, k in enumerate(keys)])
        return from_unit(lr01, self.value_range)

    # -- resumable state ---------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"degradation_batches": self.degrade.batches if self.degrade is not None else 0}

    def load_state_dict(self, state_dict: dict) -> None:
        if self.degradation_cfg is not None:
            self._make_degradation().batches = int(state_dict.get("degradation_batches", 0))
