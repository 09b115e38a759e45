"""Colour conversions exactly as MATLAB's ``rgb2ycbcr`` / ``ycbcr2rgb`` (ITU-R BT.601, studio swing 16-235).

SR papers score PSNR/SSIM on this Y channel, not on the full-range (JPEG, 0-255) Y that kornia/OpenCV use:
the two differ by a factor 219/255 in contrast, which shifts PSNR by about 1.3 dB. Tensors hold values in
[0, 1] with channels on dim -3 ((C,H,W) or (N,C,H,W)); the uint8 numpy helpers round like MATLAB does
when it converts its double result back to uint8 (half away from zero).
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

__all__ = ["BT601_MATRIX", "BT601_OFFSET", "rgb2ycbcr", "ycbcr2rgb", "rgb2y_uint8", "rgb2ycbcr_uint8",
           "ycbcr2rgb_uint8"]

# MATLAB rgb2ycbcr.m: ycbcr = OFFSET + MATRIX @ rgb, with rgb in [0,1] and ycbcr in [0,255] before /255.
# Public: metrics rounds its own Y from row 0 (on 0..255 value tensors) and derives its grey weights from it.
BT601_MATRIX = np.array([[65.481, 128.553, 24.966],
                    [-37.797, -74.203, 112.0],
                    [112.0, -93.786, -18.214]], dtype=np.float64)
BT601_OFFSET = np.array([16.0, 128.0, 128.0], dtype=np.float64)
_INVERSE = np.linalg.inv(BT601_MATRIX)


def _check_rgb(x: Tensor, fn: str) -> None:
    if not isinstance(x, Tensor) or x.ndim < 3 or x.shape[-3] != 3:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"{fn}: expected a 3-channel tensor (..., 3, H, W), got {shape}")
    if not x.is_floating_point():
        raise TypeError(f"{fn}: expected a float tensor in [0, 1], got {x.dtype}")


def _apply(x: Tensor, matrix: np.ndarray, offset: np.ndarray) -> Tensor:
    m = torch.as_tensor(matrix, dtype=x.dtype, device=x.device)
    b = torch.as_tensor(offset, dtype=x.dtype, device=x.device)
    out = torch.einsum("oc,...chw->...ohw", m, x)
    return out + b.view(-1, 1, 1)


def rgb2ycbcr(x: Tensor, y_only: bool = False) -> Tensor:
    """RGB in [0,1] -> YCbCr in [0,1] (Y in [16/255, 235/255]); ``y_only`` returns the (…,1,H,W) Y channel."""
    _check_rgb(x, "rgb2ycbcr")
    if y_only:
        return _apply(x, BT601_MATRIX[:1] / 255.0, BT601_OFFSET[:1] / 255.0)
    return _apply(x, BT601_MATRIX / 255.0, BT601_OFFSET / 255.0)


def ycbcr2rgb(x: Tensor) -> Tensor:
    """YCbCr in [0,1] (MATLAB BT.601) -> RGB in [0,1] (not clamped: callers clamp)."""
    _check_rgb(x, "ycbcr2rgb")
    # rgb = inv(M) @ (ycbcr*255 - offset)  =  (255*inv(M)) @ ycbcr - inv(M) @ offset
    return _apply(x, _INVERSE * 255.0, -(_INVERSE @ BT601_OFFSET))


def _round_uint8(v: np.ndarray) -> np.ndarray:
    # MATLAB's double->uint8 conversion rounds half away from zero and saturates.
    return np.clip(np.floor(v + 0.5), 0, 255).astype(np.uint8)


def _as_rgb_uint8(img: np.ndarray, fn: str) -> np.ndarray:
    arr = np.asarray(img)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"{fn}: expected an (H, W, 3) uint8 array, got {arr.dtype} {arr.shape}")
    return arr


def rgb2ycbcr_uint8(img: np.ndarray) -> np.ndarray:
    """(H,W,3) uint8 RGB -> (H,W,3) uint8 YCbCr, as MATLAB ``rgb2ycbcr`` on a uint8 image."""
    rgb = _as_rgb_uint8(img, "rgb2ycbcr_uint8").astype(np.float64) / 255.0
    return _round_uint8(rgb @ BT601_MATRIX.T + BT601_OFFSET)


def rgb2y_uint8(img: np.ndarray) -> np.ndarray:
    """(H,W,3) uint8 RGB -> (H,W) uint8 Y (rounded), the channel SR papers compute PSNR/SSIM on."""
    rgb = _as_rgb_uint8(img, "rgb2y_uint8").astype(np.float64) / 255.0
    return _round_uint8(rgb @ BT601_MATRIX[0] + BT601_OFFSET[0])


def ycbcr2rgb_uint8(img: np.ndarray) -> np.ndarray:
    """(H,W,3) uint8 YCbCr -> (H,W,3) uint8 RGB, as MATLAB ``ycbcr2rgb`` on a uint8 image."""
    ycc = _as_rgb_uint8(img, "ycbcr2rgb_uint8").astype(np.float64)
    return _round_uint8(((ycc - BT601_OFFSET) @ _INVERSE.T) * 255.0)
