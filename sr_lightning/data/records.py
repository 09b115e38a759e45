"""`ImageRecord`: one image of a data set as a source lists it, and the training-size filter on records.

A source (`FolderSource`, `sample.SampleSource`) lists records: a name, a loader for the HR image and, for
paired data, a loader for the LR file. Nothing is decoded until a `PairLoader` calls the loaders.
"""
from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sr_lightning.data.errors import DatasetError, DataWarning


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
