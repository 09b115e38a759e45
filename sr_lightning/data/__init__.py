"""Data: image I/O, sources (folders, the bundled sample photos), the SR DataModule and degradations.

Names are imported lazily so that light users (`download`, `prepare`, image I/O) do not pay for importing
Lightning and albumentations.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

_EXPORTS = {
    "SRDataModule": "sr_lightning.data.datamodule",
    "FolderSource": "sr_lightning.data.folder_source",
    "DatasetError": "sr_lightning.data.errors",
    "DatasetMissingError": "sr_lightning.data.errors",
    "SampleSource": "sr_lightning.data.sample",
    "RandomDegradation": "sr_lightning.data.degradations",
    "ImageReadError": "sr_lightning.data.imageio",
    "ImageTooLargeError": "sr_lightning.data.imageio",
    "read_image": "sr_lightning.data.imageio",
    "read_rgb_uint8": "sr_lightning.data.imageio",
    "write_image": "sr_lightning.data.imageio",
}
__all__ = list(_EXPORTS)

if TYPE_CHECKING:  # pragma: no cover
    from sr_lightning.data.datamodule import SRDataModule
    from sr_lightning.data.degradations import RandomDegradation
    from sr_lightning.data.errors import DatasetError, DatasetMissingError
    from sr_lightning.data.folder_source import FolderSource
    from sr_lightning.data.imageio import ImageReadError, ImageTooLargeError, read_image, read_rgb_uint8, write_image
    from sr_lightning.data.sample import SampleSource


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'sr_lightning.data' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
