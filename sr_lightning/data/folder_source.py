"""`FolderSource`: the records of a folder of images, or of HR + LR folders paired by name."""
from __future__ import annotations

import functools
import logging
import os
from pathlib import Path

import numpy as np

from sr_lightning.data.errors import DatasetError, DatasetMissingError
from sr_lightning.data.imageio import DEFAULT_MAX_PIXELS, image_size, read_rgb_uint8
from sr_lightning.data.pairing import check_pair_size, list_images, pair_files, pairing_key
from sr_lightning.data.records import ImageRecord
from sr_lightning.data.subimages import is_prepared, subimage_dir

log = logging.getLogger(__name__)


def center_crop_resize(image: np.ndarray, center_crop: int | None = None, size: int | None = None) -> np.ndarray:
    """Square centre crop then MATLAB-bicubic resize: the usual CelebA face HR (e.g. 178 px crop -> 64 px)."""
    if center_crop:
        h, w = image.shape[:2]
        c = min(center_crop, h, w)
        top, left = (h - c) // 2, (w - c) // 2
        image = image[top:top + c, left:left + c]
    if size and image.shape[0] != size:
        from sr_lightning.ops.imresize import imresize_np

        image = imresize_np(np.ascontiguousarray(image), size=(size, size))
    return np.ascontiguousarray(image)


def _load_file(path: Path, center_crop: int | None = None, size: int | None = None,
               max_pixels: int | str | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    image = read_rgb_uint8(path, max_pixels)
    return center_crop_resize(image, center_crop, size) if (center_crop or size) else image


class FolderSource:
    """Images from a folder (HR only: LR made with bicubic), or HR + LR folders paired by name.

    Args:
        hr_dir: folder of HR images.
        lr_dir: optional folder of LR images (exactly HR/scale in size, names as HR, optionally + `x{scale}`).
        dataset: config name of a downloadable set, used in the message when the folder is missing.
        recursive: also list images in sub-folders.
        offset, limit: use images [offset, offset + limit) of the name-sorted list (splits of one folder).
        hr_key / lr_key: regexes whose group 1 is the pairing key, for sets whose HR and LR names differ.
        subimages: `auto` uses `<hr_dir>_sub` (and `<lr_dir>_sub`) for training when `prepare` wrote them.
        center_crop / resize: square centre crop and resize of every HR image (CelebA faces).
        max_pixels: files whose header claims more pixels are refused (`ImageTooLargeError`) when the folder
            is listed, before any work; default Pillow's decompression-bomb limit, None/0 no limit.
            `SRDataModule` sets it from its own `max_pixels` (the `max_pixels=` key).
    """

    def __init__(self, hr_dir: str | os.PathLike | None, lr_dir: str | os.PathLike | None = None, *,
                 dataset: str | None = None, recursive: bool = False, limit: int | None = None,
                 offset: int = 0, hr_key: str | None = None, lr_key: str | None = None, subimages: str | bool = "auto",
                 center_crop: int | None = None, resize: int | None = None, key: str = "data.hr_dir",
                 max_pixels: int | str | None = DEFAULT_MAX_PIXELS):
        self.hr_dir = Path(hr_dir).expanduser() if hr_dir not in (None, "") else None
        self.lr_dir = Path(lr_dir).expanduser() if lr_dir not in (None, "") else None
        self.dataset = dataset
        self.recursive = recursive
        self.limit = limit
        self.offset = int(offset or 0)
        self.hr_key, self.lr_key = hr_key, lr_key
        self.subimages = subimages
        self.center_crop, self.resize = center_crop, resize
        self.key = key
        self.max_pixels = max_pixels
        self._scale = 0
        if (center_crop or resize) and self.lr_dir is not None:
            raise DatasetError(f"{key}: center_crop/resize change the HR image, so it cannot be paired with the LR "
                               f"files of {self.lr_dir}; drop lr_dir (LR is then made with bicubic)")

    def __repr__(self) -> str:
        lr = f", lr_dir={str(self.lr_dir)!r}" if self.lr_dir else ""
        return f"FolderSource(hr_dir={str(self.hr_dir)!r}{lr})"

    @property
    def paired(self) -> bool:
        return self.lr_dir is not None

    def _dirs(self, split: str) -> tuple[Path, Path | None]:
        if self.hr_dir is None:
            raise DatasetError(f"{self.key} is not set. Give a folder of images: `data=folder {self.key}=PATH "
                               "[data.lr_dir=PATH]`")
        hr, lr = self.hr_dir, self.lr_dir
        if split == "train" and self.subimages in ("auto", True):
            hr_sub = subimage_dir(hr)
            lr_sub = subimage_dir(lr) if lr else None
            ready = is_prepared(hr_sub, lr_sub, self._scale)
            if ready:
                log.info("using prepared sub-images %s%s", hr_sub, f" + {lr_sub}" if lr_sub else "")
                return hr_sub, lr_sub
            if self.subimages is True:
                raise DatasetMissingError(f"sub-images {hr_sub} are not prepared. Run `python -m sr_lightning "
                                          f"prepare data={self.dataset or 'folder'}` first, or set subimages=auto")
        return hr, lr

    def records(self, scale: int, split: str = "train") -> list[ImageRecord]:
        self._scale = scale
        hr_dir, lr_dir = self._dirs(split)
        hr_files = list_images(hr_dir, what="HR", dataset=self.dataset, key=self.key, recursive=self.recursive)
        if self.offset or self.limit:
            end = self.offset + int(self.limit) if self.limit else None
            hr_files = hr_files[self.offset: end]
            if not hr_files:
                raise DatasetError(f"{hr_dir}: no images left after offset={self.offset} limit={self.limit}")
        if lr_dir is None:
            out = []
            for f in hr_files:
                if self.resize:  # known without reading a header (CelebA: 160k files)
                    h = w = int(self.resize)
                else:
                    h, w = image_size(f, self.max_pixels)
                    if self.center_crop:
                        h = w = min(self.center_crop, h, w)
                loader = functools.partial(_load_file, f, center_crop=self.center_crop, size=self.resize,
                                           max_pixels=self.max_pixels)
                out.append(ImageRecord(self._name(f, hr_dir), loader, None, (h, w), f, None))
            return out
        lr_files = list_images(lr_dir, what="LR", dataset=self.dataset, key=self.key.replace("hr_dir", "lr_dir"),
                               recursive=self.recursive)
        if self.offset or self.limit:
            # Limit by partner, not by position, so a limit never creates a spurious mismatch.
            keys = {pairing_key(f, scale, self.hr_key) for f in hr_files}
            lr_files = [f for f in lr_files if pairing_key(f, scale, self.lr_key) in keys]
        records = []
        for hr, lr in pair_files(hr_files, lr_files, scale, hr_key=self.hr_key, lr_key=self.lr_key):
            hr_hw, lr_hw = image_size(hr, self.max_pixels), image_size(lr, self.max_pixels)
            check_pair_size(hr, hr_hw, lr, lr_hw, scale)
            load_hr = functools.partial(_load_file, hr, max_pixels=self.max_pixels)
            load_lr = functools.partial(_load_file, lr, max_pixels=self.max_pixels)
            records.append(ImageRecord(self._name(hr, hr_dir), load_hr, load_lr, hr_hw, hr, lr))
        return records

    def _name(self, path: Path, root: Path) -> str:
        return path.relative_to(root).with_suffix("").as_posix() if self.recursive else path.stem
