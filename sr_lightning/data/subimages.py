"""The contract between `prepare` and `FolderSource`: where sub-images go and the marker that says they are done.

`python -m sr_lightning prepare` cuts a training folder `X` into `X_sub` and writes the marker last, so its
presence means the folder is complete; `FolderSource(subimages=auto)` trains on `X_sub` only then.
"""
from __future__ import annotations

import json
import logging
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

SUBIMAGE_MARKER = ".prepared.json"  # written by `python -m sr_lightning prepare` when a sub-image folder is complete


def subimage_dir(folder: Path) -> Path:
    """Where `prepare` puts the sub-images of `folder`: a sibling named `<folder>_sub`."""
    return folder.with_name(folder.name + "_sub")


def write_marker(folder: Path, **info) -> None:
    (folder / SUBIMAGE_MARKER).write_text(json.dumps(info, indent=1))


def is_prepared(hr_sub: Path, lr_sub: Path | None, scale: int) -> bool:
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


# --- cutting (`python -m sr_lightning prepare`) ------------------------------------------------------------

SNAP = 24  # tile positions are multiples of this (lcm of the scales 2, 3, 4, 8)


def tile_starts(length: int, crop: int, step: int, thresh: int) -> list[int]:
    """Start offsets of tiles along one axis (BasicSR's extract_subimages rule)."""
    if length < crop:
        return []
    starts = list(range(0, length - crop + 1, step))
    if length - (starts[-1] + crop) > thresh:
        starts.append(length - crop)
    return starts


def cut_image(hr_path: Path, lr_path: Path | None, hr_out: Path, lr_out: Path | None, scale: int, crop: int,
              step: int, thresh: int, compress_level: int) -> int:
    from sr_lightning.data.imageio import read_image, write_image

    hr = read_image(hr_path)
    lr = read_image(lr_path) if lr_path is not None else None
    # Tiles start on multiples of SNAP (divisible by every supported scale) inside the HR cropped to SNAP, so
    # the HR tiles are the same whichever scale is prepared and each has an exact LR tile at every scale.
    h, w = hr.shape[0] - hr.shape[0] % SNAP, hr.shape[1] - hr.shape[1] % SNAP
    starts_y = sorted({y - y % SNAP for y in tile_starts(h, crop, step, thresh)})
    starts_x = sorted({x - x % SNAP for x in tile_starts(w, crop, step, thresh)})
    count = 0
    for y in starts_y:
        for x in starts_x:
            count += 1
            name = f"{hr_path.stem}_s{count:03d}.png"
            write_image(hr_out / name, np.ascontiguousarray(hr[y:y + crop, x:x + crop]), compress_level=compress_level)
            if lr is not None and lr_out is not None:
                ly, lx, lc = y // scale, x // scale, crop // scale
                write_image(lr_out / name, np.ascontiguousarray(lr[ly:ly + lc, lx:lx + lc]),
                            compress_level=compress_level)
    return count


def prepare_source(source, scale: int, crop: int, step: int, thresh: int, workers: int = 2,
                   compress_level: int = 3, overwrite: bool = False) -> tuple[Path, Path | None, int]:
    """Cut a FolderSource's training images; returns (hr_sub_dir, lr_sub_dir, number of sub-images)."""
    from tqdm.auto import tqdm

    from sr_lightning.data.errors import DatasetError
    from sr_lightning.data.folder_source import FolderSource

    if not isinstance(source, FolderSource):
        raise DatasetError("prepare works on folder data sets (data=div2k, flickr2k, folder ...); "
                           f"got {source!r}")
    if crop % scale or SNAP % scale:
        raise DatasetError(f"prepare.crop_size: {crop} must be divisible by scale={scale} (scales 2, 3, 4, 8 "
                           "are supported)")
    if step < 1:
        raise DatasetError(f"prepare.step: got {step}; allowed: an integer >= 1")
    plain = FolderSource(source.hr_dir, source.lr_dir, dataset=source.dataset, recursive=source.recursive,
                         limit=source.limit, offset=source.offset, hr_key=source.hr_key, lr_key=source.lr_key,
                         subimages=False, key=source.key)
    records = plain.records(scale, "train")
    hr_out = subimage_dir(source.hr_dir)
    lr_out = subimage_dir(source.lr_dir) if source.lr_dir else None
    if (hr_out / SUBIMAGE_MARKER).exists() and not overwrite:
        log.info("%s is already prepared (prepare.overwrite=true redoes it)", hr_out)
        return hr_out, lr_out, len(list(hr_out.glob("*.png")))
    for d in (hr_out, lr_out):
        if d is not None:
            d.mkdir(parents=True, exist_ok=True)
            (d / SUBIMAGE_MARKER).unlink(missing_ok=True)
    total = 0
    jobs = [(r.hr_path, r.lr_path, hr_out, lr_out, scale, crop, step, thresh, compress_level) for r in records]
    with tqdm(total=len(jobs), desc=f"cutting {source.hr_dir.name}", unit="img") as bar:
        if workers > 1:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                for n in pool.map(cut_image, *zip(*jobs), chunksize=4):
                    total += n
                    bar.update(1)
        else:
            for job in jobs:
                total += cut_image(*job)
                bar.update(1)
    info = dict(source=str(source.hr_dir), crop_size=crop, step=step, thresh_size=thresh, scale=scale, snap=SNAP,
                images=len(records), subimages=total)
    if lr_out is not None:
        write_marker(lr_out, **{**info, "source": str(source.lr_dir)})
    write_marker(hr_out, **info)  # last: its presence means the folder is complete
    return hr_out, lr_out, total
