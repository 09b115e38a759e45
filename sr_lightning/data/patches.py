"""`TrainPatchDataset`: scale-aligned random crops of the cached training images, as float tensors."""
from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, get_worker_info

from sr_lightning.config import check_crop
from sr_lightning.data.augment import PairAugment
from sr_lightning.data.cache import ImageCache
from sr_lightning.data.errors import DatasetError, config_checks
from sr_lightning.data.pair_loader import bicubic_lr_window
from sr_lightning.data.tensors import to_tensor


def _worker_seed() -> tuple[tuple, int]:
    """(identity of this process/worker, a seed for it): torch gives each worker its own initial seed."""
    info = get_worker_info()
    seed = info.seed if info else torch.initial_seed()
    if info is None and torch.distributed.is_available() and torch.distributed.is_initialized():
        seed += 7919 * torch.distributed.get_rank()  # DDP ranks share the run seed; their crops should not
    ident = (os.getpid(), info.id if info else -1, seed)
    return ident, seed


class TrainPatchDataset(Dataset):
    """Scale-aligned random crops: the HR patch is `crop` px, the LR patch `crop/scale` px at the same place.

    Length is `len(images) * patches_per_image`; item i crops image i % len(images). With `make_lr=False`
    (on-device degradations) items hold only `hr`; the DataModule adds `lr` after the batch is on the device.
    """

    def __init__(self, cache: ImageCache, scale: int, crop: int, *, patches_per_image: int = 1,
                 augment: PairAugment | None = None, value_range: Sequence[float] = (0.0, 1.0),
                 make_lr: bool = True):
        with config_checks():
            check_crop(crop, scale)
        if len(cache) == 0:
            raise DatasetError("no training images")
        self.cache, self.scale, self.crop = cache, scale, crop
        self.patches_per_image = max(1, int(patches_per_image))
        self.augment = augment
        self.value_range = tuple(float(v) for v in value_range)
        self.make_lr = make_lr
        self._rng_owner: tuple | None = None
        self._rng = np.random.default_rng(0)

    def __len__(self) -> int:
        return len(self.cache) * self.patches_per_image

    def _ensure_rng(self) -> None:
        ident, seed = _worker_seed()
        if ident != self._rng_owner:
            self._rng_owner = ident
            self._rng = np.random.default_rng(seed)
            if self.augment is not None:
                self.augment.seed(seed + 1)

    def reseed(self, seed: int) -> None:
        """Fix the crop/augmentation stream (tests, benchmarks); workers still reseed themselves."""
        ident, _ = _worker_seed()
        self._rng_owner = ident
        self._rng = np.random.default_rng(seed)
        if self.augment is not None:
            self.augment.seed(seed + 1)

    def crop_pair(self, hr: np.ndarray, lr: np.ndarray | None, index: int,
                  window_lr: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        s, c = self.scale, self.crop
        lc = c // s
        H, W = hr.shape[0] // s, hr.shape[1] // s
        if H < lc or W < lc:  # filtered at setup; reaching this means a loader returned a smaller image
            raise DatasetError(f"{self.cache.records[index].describe()}: {hr.shape[1]}x{hr.shape[0]} px is smaller "
                               f"than crop={c}; remove the image or lower crop")
        top = int(self._rng.integers(0, H - lc + 1))
        left = int(self._rng.integers(0, W - lc + 1))
        hr_patch = hr[top * s: top * s + c, left * s: left * s + c]
        if not self.make_lr:
            return hr_patch, None
        if window_lr:  # bicubic of just this window: identical to cropping the full-image LR
            return hr_patch, bicubic_lr_window(hr, top, left, lc, lc, s)
        if lr is None:
            raise DatasetError(f"{self.cache.records[index].describe()}: no LR image")
        return hr_patch, lr[top: top + lc, left: left + lc]

    def __getitem__(self, index: int) -> dict:
        self._ensure_rng()
        image_index = index % len(self.cache)
        loader = self.cache.loader
        record = self.cache.records[image_index]
        if self.make_lr and record.load_lr is None and not self.cache.is_cached(image_index):
            # Uncached HR-only image: crop in RGB and make the LR of just this window (the bicubic must see
            # RGB in Y mode too, exactly as for cached images), then convert both to the storage colour.
            hr_rgb = loader.load_hr_rgb(record)
            hr_patch, lr_patch = self.crop_pair(hr_rgb, None, image_index, window_lr=True)
            hr_patch = loader.to_storage(np.ascontiguousarray(hr_patch))
            lr_patch = loader.to_storage(np.ascontiguousarray(lr_patch))
        else:
            hr, lr = self.cache.get(image_index, full_lr=True)
            hr_patch, lr_patch = self.crop_pair(hr, lr, image_index)
        if self.augment is not None:
            hr_patch, lr_patch = self.augment(hr_patch, lr_patch)
        item = {"hr": to_tensor(hr_patch, self.value_range), "name": self.cache.records[image_index].name}
        if lr_patch is not None:
            item["lr"] = to_tensor(lr_patch, self.value_range)
        return item
