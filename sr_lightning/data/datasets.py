"""Image sources, LR/HR pairing, the in-memory cache and the two torch Datasets (training patches, full images).

Data flows in three steps:

1. A *source* (`FolderSource`, `sample.SampleSource`) lists `ImageRecord`s: a name, a loader for the HR image and,
   for paired data, a loader for the LR file. Pairing, size checks and "too small" filtering happen here,
   once, with messages that name the files involved.
2. `PairLoader` turns a record into uint8 arrays in the storage colour (RGB, or MATLAB Y for `color=y`): HR
   mod-cropped to the scale, LR from the file or made with the MATLAB-compatible bicubic. `ImageCache`
   keeps those arrays in memory under a byte budget, so each file is decoded once per run (DIV2K PNGs cost
   ~60 ms each to decode; a training step must never wait for that).
3. `TrainPatchDataset` cuts scale-aligned random crops with identical flips/rotations on LR and HR;
   `FullImageDataset` serves whole images for validation/test. Both return float tensors in `value_range`.
"""
from __future__ import annotations

import functools
import json
import logging
import os
import re
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, get_worker_info

from sr_lightning.data.imageio import (
    DEFAULT_MAX_PIXELS,
    SUPPORTED_EXTENSIONS,
    ImageReadError,
    image_size,
    is_grayscale_file,
    is_image_file,
    read_rgb_uint8,
)

log = logging.getLogger(__name__)

SUBIMAGE_MARKER = ".prepared.json"  # written by `python -m sr_lightning prepare` when a sub-image folder is complete


class DatasetError(ValueError):
    """A data set that cannot be used as configured; the message names the folder/file and the remedy."""


class DatasetMissingError(DatasetError):
    """The files of a data set are not where the config says; the message says where to put them."""


class DataWarning(UserWarning):
    """A file was skipped or changed to make the data set usable."""


# --------------------------------------------------------------------------------------------------------------
# listing and pairing
# --------------------------------------------------------------------------------------------------------------

def missing_hint(dataset: str | None, path: Path, key: str = "data.hr_dir") -> str:
    """The remedy for a missing folder: the download command for known sets, the override for `data=folder`."""
    if dataset:
        return (f"Run `python -m sr_lightning download data={dataset}` (needs internet), or put the files there "
                f"yourself (or point paths.data_dir / SR_DATA_DIR at the folder that holds them)")
    return f"Pass an existing folder of images, e.g. `data=folder {key}=PATH`"


def list_images(folder: str | os.PathLike, *, what: str = "HR", dataset: str | None = None,
                key: str = "data.hr_dir", recursive: bool = False) -> list[Path]:
    """Sorted image files of a folder. Hidden files are ignored; other non-image files are skipped with a warning."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        problem = "is a file, not a folder" if folder.exists() else "does not exist"
        raise DatasetMissingError(f"{what} folder {folder} {problem}. {missing_hint(dataset, folder, key)}")
    pattern = "**/*" if recursive else "*"
    files, skipped = [], []
    for path in sorted(folder.glob(pattern)):
        if path.name.startswith(".") or not path.is_file():
            continue
        (files if is_image_file(path) else skipped).append(path)
    if skipped:
        shown = ", ".join(p.name for p in skipped[:5]) + (" ..." if len(skipped) > 5 else "")
        warnings.warn(f"{folder}: skipped {len(skipped)} file(s) with unsupported extensions ({shown}); "
                      f"readable: {', '.join(SUPPORTED_EXTENSIONS)}", DataWarning, stacklevel=2)
    if not files:
        extra = f" (only {len(skipped)} file(s) with unsupported extensions)" if skipped else ""
        raise DatasetError(f"{what} folder {folder} contains no images{extra}. Put PNG/JPEG images there "
                           f"({', '.join(SUPPORTED_EXTENSIONS)}) or point {key} at another folder")
    return files


def pairing_key(path: Path, scale: int, pattern: str | None = None) -> str:
    """The name an HR file and its LR partner share.

    With `pattern` (a regex with one group) the group is the key. Otherwise the stem is used with the usual
    scale/role suffixes removed: DIV2K `0001x4` -> `0001`, SelfExSR `img_001_SRF_4_LR` -> `img_001`,
    `baby_LR`/`baby_HR` -> `baby`. Matching is then exact: a file is never paired with a near-miss partner.
    """
    stem = path.stem
    if pattern:
        match = re.search(pattern, path.name)
        if not match:
            raise DatasetError(f"{path}: name does not match the pairing pattern {pattern!r}; rename the file or "
                               "fix the data.*_key pattern")
        return match.group(1) if match.groups() else match.group(0)
    key = re.sub(rf"_SRF_{scale}(_(HR|LR))?$", "", stem, flags=re.IGNORECASE)
    key = re.sub(rf"[_-]?x{scale}$", "", key, flags=re.IGNORECASE)
    key = re.sub(r"[_-](HR|LR)$", "", key, flags=re.IGNORECASE)
    return key


def pair_files(hr_files: Sequence[Path], lr_files: Sequence[Path], scale: int, *,
               hr_key: str | None = None, lr_key: str | None = None) -> list[tuple[Path, Path]]:
    """Match HR and LR files by `pairing_key`; any file without exactly one partner is an error naming it."""

    def index(files, pattern, role):
        table: dict[str, Path] = {}
        for f in files:
            k = pairing_key(f, scale, pattern)
            if k in table:
                raise DatasetError(f"{role} files {table[k]} and {f} both match the name '{k}'; "
                                   f"keep one of them so each image has exactly one partner")
            table[k] = f
        return table

    hr_index, lr_index = index(hr_files, hr_key, "HR"), index(lr_files, lr_key, "LR")
    hr_only = [hr_index[k] for k in hr_index if k not in lr_index]
    lr_only = [lr_index[k] for k in lr_index if k not in hr_index]
    if hr_only or lr_only:
        parts = []
        if hr_only:
            parts.append(f"{len(hr_only)} HR file(s) without an LR partner: "
                         + ", ".join(str(p) for p in hr_only[:3]) + (" ..." if len(hr_only) > 3 else ""))
        if lr_only:
            parts.append(f"{len(lr_only)} LR file(s) without an HR partner: "
                         + ", ".join(str(p) for p in lr_only[:3]) + (" ..." if len(lr_only) > 3 else ""))
        raise DatasetError(
            f"HR/LR mismatch ({len(hr_files)} HR vs {len(lr_files)} LR files): " + "; ".join(parts)
            + ". Pairs are matched by name (LR may add an x{s} suffix, e.g. 0001x4.png); add or remove files "
            "so every image has a partner, or drop the LR folder to make LR on the fly with bicubic")
    return [(hr_index[k], lr_index[k]) for k in hr_index]


def check_pair_size(hr_path, hr_hw: tuple[int, int], lr_path, lr_hw: tuple[int, int], scale: int) -> None:
    """The LR image must be exactly floor(HR / scale): the HR is mod-cropped to LR * scale, nothing else."""
    want = (hr_hw[0] // scale, hr_hw[1] // scale)
    if tuple(lr_hw) != want:
        raise DatasetError(
            f"size mismatch: LR {lr_path} is {lr_hw[1]}x{lr_hw[0]} (WxH) but HR {hr_path} is "
            f"{hr_hw[1]}x{hr_hw[0]}, so x{scale} LR must be {want[1]}x{want[0]}. Check the scale "
            f"(scale={scale}) and the LR folder (e.g. X{scale} vs another scale), or drop the LR folder to "
            "make LR on the fly with bicubic")


# --------------------------------------------------------------------------------------------------------------
# records and sources
# --------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ImageRecord:
    """One image of a data set: how to load its HR (and LR) pixels as (H, W, 3) uint8."""

    name: str
    load_hr: Callable[[], np.ndarray]
    load_lr: Callable[[], np.ndarray] | None = None
    hr_size: tuple[int, int] | None = None  # (H, W) when known without decoding
    hr_path: Path | None = None
    lr_path: Path | None = None

    def describe(self) -> str:
        return str(self.hr_path or self.name)


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


def _prepared(hr_sub: Path, lr_sub: Path | None, scale: int) -> bool:
    """True when `prepare` finished both sub-image folders for this scale (markers written last)."""
    try:
        hr_info = json.loads((hr_sub / SUBIMAGE_MARKER).read_text())
        lr_info = json.loads((lr_sub / SUBIMAGE_MARKER).read_text()) if lr_sub is not None else {"scale": scale}
    except (OSError, ValueError):
        return False
    ok = int(hr_info.get("snap", 0)) % scale == 0 and int(lr_info.get("scale", 0)) == scale
    if not ok:
        log.warning("%s was prepared for another scale; using the original images", hr_sub)
    return ok


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
            hr_sub = hr.with_name(hr.name + "_sub")
            lr_sub = lr.with_name(lr.name + "_sub") if lr else None
            ready = _prepared(hr_sub, lr_sub, self._scale)
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


# --------------------------------------------------------------------------------------------------------------
# loading: mod-crop, bicubic LR, Y channel
# --------------------------------------------------------------------------------------------------------------

def mod_crop(image: np.ndarray, scale: int) -> np.ndarray:
    h, w = image.shape[:2]
    return image[: h - h % scale, : w - w % scale]


def _y_of(image: np.ndarray) -> np.ndarray:
    from sr_lightning.ops.color import rgb2y_uint8

    return rgb2y_uint8(image)[:, :, None]


def bicubic_lr_window(hr: np.ndarray, top: int, left: int, lr_h: int, lr_w: int, scale: int) -> np.ndarray:
    """The LR pixels [top:top+lr_h, left:left+lr_w] of `imresize(hr, 1/scale)` without resizing all of `hr`.

    Bicubic at 1/scale reads HR pixels up to 2*scale (+1) away, so resizing a window with a margin of 4*scale
    (clipped at the image borders, where MATLAB's mirroring then sees the same pixels as on the full image)
    reproduces the full-image LR exactly up to float rounding. `hr` must already be mod-cropped.
    """
    from sr_lightning.ops.imresize import imresize_np

    margin = 4  # in LR pixels
    H, W = hr.shape[0] // scale, hr.shape[1] // scale
    t0, l0 = max(0, top - margin), max(0, left - margin)
    t1, l1 = min(H, top + lr_h + margin), min(W, left + lr_w + margin)
    window = np.ascontiguousarray(hr[t0 * scale: t1 * scale, l0 * scale: l1 * scale])
    lr = imresize_np(window, scale=1.0 / scale)
    return lr[top - t0: top - t0 + lr_h, left - l0: left - l0 + lr_w]


class PairLoader:
    """Record -> (HR, LR) uint8 arrays in the storage colour: (H, W, 3) RGB or (H, W, 1) MATLAB Y.

    The LR of an HR-only record is the MATLAB bicubic of the *full* mod-cropped HR (what benchmark LR files
    are), so on-the-fly and paired data behave the same. `make_lr=False` (on-device degradations) skips it.
    """

    def __init__(self, scale: int, color: str = "rgb", make_lr: bool = True):
        self.scale, self.color, self.make_lr = scale, color, make_lr

    def load_hr_rgb(self, record: ImageRecord) -> np.ndarray:
        try:
            hr = record.load_hr()
        except ImageReadError:
            raise
        except Exception as exc:  # a loader from a source we do not know: still name the image
            raise ImageReadError(record.describe(), f"cannot load ({type(exc).__name__}: {exc})",
                                 "Check the file/source; remove it from the data set if it is broken") from exc
        return np.ascontiguousarray(mod_crop(hr, self.scale))

    def to_storage(self, image: np.ndarray) -> np.ndarray:
        return _y_of(image) if self.color == "y" else image

    def load(self, record: ImageRecord, full_lr: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
        """(HR, LR); LR is None when `full_lr` is False for an HR-only record (patches use bicubic_lr_window)."""
        hr = self.load_hr_rgb(record)
        lr = None
        if record.load_lr is not None and self.make_lr:
            lr = record.load_lr()
            want = (hr.shape[0] // self.scale, hr.shape[1] // self.scale)
            if lr.shape[:2] != want:  # sizes are checked from headers at setup; this catches odd loaders
                check_pair_size(record.hr_path or record.name, hr.shape[:2], record.lr_path or record.name,
                                lr.shape[:2], self.scale)
        elif self.make_lr and full_lr:
            from sr_lightning.ops.imresize import imresize_np

            lr = imresize_np(hr, scale=1.0 / self.scale)
        return self.to_storage(hr), (self.to_storage(lr) if lr is not None else None)


# --------------------------------------------------------------------------------------------------------------
# cache
# --------------------------------------------------------------------------------------------------------------

class CacheBudget:
    """A byte budget shared by the caches of all splits (train fills first)."""

    def __init__(self, limit_mb: float | None):
        self.limit = None if limit_mb is None else int(float(limit_mb) * 2**20)
        self.used = 0
        self._lock = threading.Lock()

    def __getstate__(self) -> dict:  # workers started with spawn pickle the datasets; a Lock cannot be
        return {k: v for k, v in self.__dict__.items() if k != "_lock"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def take(self, nbytes: int) -> bool:
        with self._lock:
            if self.limit is not None and self.used + nbytes > self.limit:
                return False
            self.used += nbytes
            return True


class ImageCache:
    """Decoded (HR, LR) uint8 arrays per record, kept in memory up to a byte budget.

    `preload()` decodes in the main process before the DataLoader starts its workers; forked workers then
    share the arrays copy-on-write instead of each decoding every file again. Records beyond the budget are
    decoded on each access (use `prepare` to cut large sets into sub-images in that case).
    """

    def __init__(self, records: Sequence[ImageRecord], loader: PairLoader, budget: CacheBudget | None = None):
        self.records = list(records)
        self.loader = loader
        self.budget = budget or CacheBudget(None)
        self._store: dict[int, tuple[np.ndarray, np.ndarray | None]] = {}

    def __len__(self) -> int:
        return len(self.records)

    @property
    def cached(self) -> int:
        return len(self._store)

    @property
    def nbytes(self) -> int:
        return sum(h.nbytes + (l.nbytes if l is not None else 0) for h, l in self._store.values())

    def preload(self, threads: int | None = None, progress: bool = True) -> None:
        if self.budget.limit == 0:
            return
        threads = threads or max(1, min(4, os.cpu_count() or 1))
        pending = [i for i in range(len(self.records)) if i not in self._store]
        bar = None
        if progress and len(pending) > 50:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(pending), desc="decoding images into memory", unit="img", leave=False)

        def work(i: int):
            return i, self.loader.load(self.records[i], full_lr=True)

        try:
            # Decode in order and stop once the budget is spent: the first records stay cached, the rest lazy.
            with ThreadPoolExecutor(max_workers=threads) as pool:
                for start in range(0, len(pending), threads * 4):
                    chunk = pending[start: start + threads * 4]
                    for i, (hr, lr) in pool.map(work, chunk):
                        nbytes = hr.nbytes + (lr.nbytes if lr is not None else 0)
                        if not self.budget.take(nbytes):
                            if bar is not None:
                                bar.close()
                            log.info("image cache budget reached after %d of %d images", self.cached, len(self))
                            return
                        self._store[i] = (hr, lr)
                        if bar is not None:
                            bar.update(1)
        finally:
            if bar is not None:
                bar.close()

    def is_cached(self, index: int) -> bool:
        return index in self._store

    def get(self, index: int, full_lr: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
        hit = self._store.get(index)
        if hit is not None:
            return hit
        return self.loader.load(self.records[index], full_lr=full_lr)


# --------------------------------------------------------------------------------------------------------------
# tensors and augmentation
# --------------------------------------------------------------------------------------------------------------

def to_tensor(image: np.ndarray, value_range: Sequence[float] = (0.0, 1.0)) -> torch.Tensor:
    """(H, W, C) uint8 -> (C, H, W) float32 in value_range."""
    lo, hi = float(value_range[0]), float(value_range[1])
    t = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float()
    if (lo, hi) == (0.0, 1.0):
        return t.div_(255.0)
    return t.mul_((hi - lo) / 255.0).add_(lo)


class PairAugment:
    """Random flips and 90-degree rotations applied identically to HR and LR (albumentations).

    Flips and rot90 commute with the (symmetric) bicubic kernel, so the augmented LR is still the bicubic of
    the augmented HR. albumentations' Compose has its own RNG; it is reseeded per DataLoader worker (from
    torch's per-worker seed) so workers do not repeat each other's augmentations.
    """

    def __init__(self, hflip: bool = True, vflip: bool = True, rot90: bool = True):
        import albumentations as A

        ops = []
        if hflip:
            ops.append(A.HorizontalFlip(p=0.5))
        if vflip:
            ops.append(A.VerticalFlip(p=0.5))
        if rot90:
            ops.append(A.RandomRotate90(p=0.5))
        self.enabled = bool(ops)
        # LR and HR differ in size by design; albumentations would otherwise refuse them as one sample.
        self.compose = A.Compose(ops, additional_targets={"lr": "image"}, is_check_shapes=False, seed=0)

    def seed(self, seed: int) -> None:
        self.compose.set_random_seed(int(seed) % 2**32)

    def __call__(self, hr: np.ndarray, lr: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
        if not self.enabled:
            return hr, lr
        if lr is None:
            return self.compose(image=hr)["image"], None
        out = self.compose(image=hr, lr=lr)
        return out["image"], out["lr"]


def _worker_seed() -> tuple[tuple, int]:
    """(identity of this process/worker, a seed for it): torch gives each worker its own initial seed."""
    info = get_worker_info()
    seed = info.seed if info else torch.initial_seed()
    if info is None and torch.distributed.is_available() and torch.distributed.is_initialized():
        seed += 7919 * torch.distributed.get_rank()  # DDP ranks share the run seed; their crops should not
    ident = (os.getpid(), info.id if info else -1, seed)
    return ident, seed


# --------------------------------------------------------------------------------------------------------------
# datasets
# --------------------------------------------------------------------------------------------------------------

class TrainPatchDataset(Dataset):
    """Scale-aligned random crops: the HR patch is `crop` px, the LR patch `crop/scale` px at the same place.

    Length is `len(images) * patches_per_image`; item i crops image i % len(images). With `make_lr=False`
    (on-device degradations) items hold only `hr`; the DataModule adds `lr` after the batch is on the device.
    """

    def __init__(self, cache: ImageCache, scale: int, crop: int, *, patches_per_image: int = 1,
                 augment: PairAugment | None = None, value_range: Sequence[float] = (0.0, 1.0),
                 make_lr: bool = True):
        if crop % scale:
            raise DatasetError(f"crop: {crop} is not divisible by scale={scale}; use a multiple of {scale} "
                               f"(e.g. {crop - crop % scale or scale} or {crop - crop % scale + scale})")
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
        to_y = _y_of if self.color == "y" else (lambda a: a)
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


def filter_too_small(records: Sequence[ImageRecord], crop: int, scale: int, where: str) -> list[ImageRecord]:
    """Drop (with a warning naming each) training images smaller than the crop; error when none remain."""
    kept, dropped = [], []
    for record in records:
        h, w = record.hr_size if record.hr_size else (None, None)
        if h is None:
            kept.append(record)  # size unknown until decoded (e.g. in-memory sources check themselves)
            continue
        h, w = h - h % scale, w - w % scale
        (kept if (h >= crop and w >= crop) else dropped).append(record)
    for record in dropped:
        h, w = record.hr_size
        warnings.warn(f"{record.describe()}: {w}x{h} px is smaller than crop={crop}; skipped for training",
                      DataWarning, stacklevel=2)
    if not kept:
        raise DatasetError(f"{where}: all {len(records)} training image(s) are smaller than crop={crop} px "
                           f"(x{scale}); lower crop (a multiple of {scale}) or use larger images")
    return kept


def write_marker(folder: Path, **info) -> None:
    (folder / SUBIMAGE_MARKER).write_text(json.dumps(info, indent=1))
