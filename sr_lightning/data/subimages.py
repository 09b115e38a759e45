"""The contract between `prepare` and `FolderSource`: where sub-images go and the marker that says they are done.

`python -m sr_lightning prepare` cuts a training folder `X` into `X_sub` and writes the marker last, so its
presence means the folder is complete; `FolderSource(subimages=auto)` trains on `X_sub` only then.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

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
