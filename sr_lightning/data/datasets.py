"""Old import path, kept until every importer uses the modules below (the lead deletes it; see handoff h5).

Data flows in three steps: a source (`folder_source.FolderSource`, `sample.SampleSource`) lists
`records.ImageRecord`s, paired by name in `pairing`; `pair_loader.PairLoader` turns a record into uint8
arrays that `cache.ImageCache` keeps in memory; `patches.TrainPatchDataset` and
`full_images.FullImageDataset` serve them as float tensors (`tensors.to_tensor`).
"""
from sr_lightning.data.augment import PairAugment
from sr_lightning.data.cache import CacheBudget, ImageCache
from sr_lightning.data.errors import DatasetError, DatasetMissingError, DataWarning
from sr_lightning.data.folder_source import FolderSource, center_crop_resize
from sr_lightning.data.full_images import FullImageDataset
from sr_lightning.data.pair_loader import PairLoader, bicubic_lr_window, mod_crop
from sr_lightning.data.pairing import check_pair_size, list_images, missing_hint, pair_files, pairing_key
from sr_lightning.data.patches import TrainPatchDataset
from sr_lightning.data.records import ImageRecord, filter_too_small
from sr_lightning.data.subimages import SUBIMAGE_MARKER, write_marker
from sr_lightning.data.tensors import to_tensor

__all__ = ["CacheBudget", "DataWarning", "DatasetError", "DatasetMissingError", "FolderSource", "FullImageDataset",
           "ImageCache", "ImageRecord", "PairAugment", "PairLoader", "SUBIMAGE_MARKER", "TrainPatchDataset",
           "bicubic_lr_window", "center_crop_resize", "check_pair_size", "filter_too_small", "list_images",
           "missing_hint", "mod_crop", "pair_files", "pairing_key", "to_tensor", "write_marker"]
