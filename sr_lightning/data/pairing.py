"""Listing a folder's images and pairing HR files with their LR partners by name.

Pairing and size checks happen once, when a source lists its records, with messages that name the files
involved: a training run never starts on a set whose pairs are wrong.
"""
from __future__ import annotations

import os
import re
import warnings
from collections.abc import Sequence
from pathlib import Path

from sr_lightning.data.errors import DatasetError, DatasetMissingError, DataWarning
from sr_lightning.data.imageio import SUPPORTED_EXTENSIONS, is_image_file


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

