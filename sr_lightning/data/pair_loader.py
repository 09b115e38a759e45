"""`PairLoader`: a record -> (HR, LR) uint8 arrays in the storage colour, and the LR made with MATLAB bicubic.

HR is mod-cropped to the scale; LR comes from the file or is made with the MATLAB-compatible bicubic (of the
whole image, or of just a patch's window with `bicubic_lr_window`, which gives the same pixels). With
`color=y` arrays are the MATLAB BT.601 Y channel.
"""
from __future__ import annotations

import numpy as np

from sr_lightning.data.imageio import ImageReadError
from sr_lightning.data.pairing import check_pair_size
from sr_lightning.data.records import ImageRecord


def mod_crop(image: np.ndarray, scale: int) -> np.ndarray:
    h, w = image.shape[:2]
    return image[: h - h % scale, : w - w % scale]


def y_channel(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (H, W, 1) uint8 MATLAB Y, the storage colour of `color=y`."""
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
        return y_channel(image) if self.color == "y" else image

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

