"""`FullImageDataset`: whole images for validation and test, as float tensors."""
from __future__ import annotations

from collections.abc import Sequence

from torch.utils.data import Dataset

from sr_lightning.data.cache import ImageCache
from sr_lightning.data.errors import DatasetError
from sr_lightning.data.imageio import is_grayscale_file
from sr_lightning.data.pair_loader import y_channel
from sr_lightning.data.tensors import to_tensor


class FullImageDataset(Dataset):
    """Whole images for validation/test: HR mod-cropped to the scale, LR from the file or bicubic.

    The cache holds RGB; with `color="y"` items hold the MATLAB Y channel in `hr`/`lr` and also carry
    `hr_rgb`/`lr_rgb`, so callers can merge bicubic Cb/Cr back for RGB output and image logs.
    """

    def __init__(self, cache: ImageCache, *, value_range: Sequence[float] = (0.0, 1.0), make_lr: bool = True,
                 color: str = "rgb"):
        if len(cache) == 0:
            raise DatasetError("no validation/test images")
        if cache.loader.color != "rgb":
            raise ValueError("FullImageDataset needs an RGB cache (it derives Y itself)")
        self.cache, self.make_lr, self.color = cache, make_lr, color
        self.value_range = tuple(float(v) for v in value_range)

    def __len__(self) -> int:
        return len(self.cache)

    def __getitem__(self, index: int) -> dict:
        hr, lr = self.cache.get(index, full_lr=True)
        record = self.cache.records[index]
        to_y = y_channel if self.color == "y" else (lambda a: a)
        item = {"hr": to_tensor(to_y(hr), self.value_range), "name": record.name,
                # grayscale test files are scored on their grey values, not on Y (metrics.image_metrics)
                "gray": bool(record.hr_path) and is_grayscale_file(record.hr_path)}
        if lr is not None:
            item["lr"] = to_tensor(to_y(lr), self.value_range)
        elif not self.make_lr:
            # LR comes from the on-device degradation; this key fixes its random draw for this image.
            from sr_lightning.data.degradations import RandomDegradation

            item["degrade_key"] = RandomDegradation.name_key(record.name)
        if self.color == "y":
            item["hr_rgb"] = to_tensor(hr, self.value_range)
            if lr is not None:
                item["lr_rgb"] = to_tensor(lr, self.value_range)
        return item
