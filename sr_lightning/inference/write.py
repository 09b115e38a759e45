"""Writing an upscaled result without a second full-size copy of it.

`sr_lightning.data.imageio.write_image` hands the array to Pillow, which stores RGB as 4 bytes a pixel: a
24000x16000 RGB result (1.07 GiB as uint8) gets a 1.43 GiB copy just to be encoded, and 16-bit colour goes
through OpenCV after a full channel-reordered copy (2.1 GiB for the same size). OpenCV's PNG encoder reads
the array's own rows, but wants BGR order. So for colour PNGs the channels are swapped in place, a band of
rows at a time, the file is written, and they are swapped back (also when writing fails): the only extra
memory is one band. Everything else (gray, JPEG, WebP, TIFF, ...) goes to `write_image`.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

# Rows swapped per step: small against the image, large enough that the per-step overhead does not show.
_SWAP_ROWS = 256


def write_result(path: str | os.PathLike, array: np.ndarray, *, compress_level: int = 3) -> Path:
    """Write ``array`` (uint8/uint16; gray, RGB or RGBA) to ``path``; the format comes from the extension.

    Same contract as `write_image` (written under a temporary name next to ``path`` and renamed, so an
    existing file is always a finished one); colour PNGs are written without copying the array.
    """
    from sr_lightning.data.imageio import write_image

    path = Path(path)
    if not _in_place_png(path, array):
        return write_image(path, array, compress_level=compress_level)
    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")
    _swap_red_blue(array)
    try:
        try:
            written = cv2.imwrite(str(tmp), array, [cv2.IMWRITE_PNG_COMPRESSION, int(compress_level)])
        except cv2.error as err:
            raise OSError(f"{path}: OpenCV could not write the PNG ({str(err).strip().splitlines()[-1]})") from err
        if not written:
            raise OSError(f"{path}: OpenCV could not write the PNG (is the folder writable and the disk not full?)")
        os.replace(tmp, path)
    finally:
        _swap_red_blue(array)
        if tmp.exists():
            tmp.unlink()
    return path


def _in_place_png(path: Path, array: np.ndarray) -> bool:
    """Whether ``array`` can be handed to OpenCV as it is: a writable, C-contiguous colour PNG."""
    return (path.suffix.lower() == ".png" and isinstance(array, np.ndarray) and array.ndim == 3
            and array.shape[2] in (3, 4) and array.dtype in (np.uint8, np.uint16)
            and array.flags.c_contiguous and array.flags.writeable)


def _swap_red_blue(array: np.ndarray) -> None:
    """RGB(A) <-> BGR(A) in place, ``_SWAP_ROWS`` rows at a time (a whole-image fancy index would copy it)."""
    for r0 in range(0, array.shape[0], _SWAP_ROWS):
        band = array[r0:r0 + _SWAP_ROWS]
        red = band[:, :, 0].copy()
        band[:, :, 0] = band[:, :, 2]
        band[:, :, 2] = red
