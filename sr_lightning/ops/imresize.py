"""MATLAB-compatible ``imresize`` for torch tensors and numpy arrays.

Every SR paper makes its LR inputs and its bicubic baseline with MATLAB's ``imresize(img, s, 'bicubic')``.
PyTorch's ``F.interpolate(mode="bicubic")`` differs in three ways that each cost tenths of a dB:
its cubic kernel uses a=-0.75 (MATLAB/Keys: a=-0.5), it does not widen the kernel when downscaling
(no antialiasing, unless ``antialias=True`` which then uses a different normalisation near borders), and it
clamps indices at the border where MATLAB mirrors them (symmetric padding). This module reproduces MATLAB's
``contributions`` routine exactly and applies the result as two dense 1-D weight matrices
(``out = W_h @ x @ W_w^T``): one matmul per axis, differentiable, any device and dtype, no per-pixel loop.

Weight matrices are built in float64 with numpy and cached per (length, scale, kernel) key, so repeated
calls (data loading, losses on image pyramids) pay only the matmuls.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import lru_cache

import numpy as np
import torch
from torch import Tensor

__all__ = ["imresize", "imresize_np", "output_size", "resize_weights", "KERNELS"]


# --- kernels (MATLAB imresize.m) ------------------------------------------------------------------------------

def _cubic(x: np.ndarray) -> np.ndarray:
    """Keys' cubic convolution kernel with a = -0.5 (MATLAB's 'bicubic')."""
    ax = np.abs(x)
    ax2, ax3 = ax * ax, ax * ax * ax
    return ((1.5 * ax3 - 2.5 * ax2 + 1.0) * (ax <= 1)
            + (-0.5 * ax3 + 2.5 * ax2 - 4.0 * ax + 2.0) * ((ax > 1) & (ax <= 2)))


def _linear(x: np.ndarray) -> np.ndarray:
    return (x + 1.0) * ((x >= -1) & (x < 0)) + (1.0 - x) * ((x >= 0) & (x <= 1))


def _box(x: np.ndarray) -> np.ndarray:
    # Half-open like MATLAB's box, so a pixel centre exactly between two inputs picks one of them.
    return ((x >= -0.5) & (x < 0.5)).astype(np.float64)


def _lanczos(a: int) -> Callable[[np.ndarray], np.ndarray]:
    def kernel(x: np.ndarray) -> np.ndarray:
        # np.sinc is the normalised sinc sin(pi x)/(pi x), matching MATLAB's definition.
        return np.sinc(x) * np.sinc(x / a) * (np.abs(x) < a)
    return kernel


# name -> (kernel function, support width in input pixels at scale 1)
KERNELS: dict[str, tuple[Callable[[np.ndarray], np.ndarray], float]] = {
    "cubic": (_cubic, 4.0),
    "bicubic": (_cubic, 4.0),
    "linear": (_linear, 2.0),
    "bilinear": (_linear, 2.0),
    "box": (_box, 1.0),
    "nearest": (_box, 1.0),
    "lanczos2": (_lanczos(2), 4.0),
    "lanczos3": (_lanczos(3), 6.0),
}


# --- geometry -------------------------------------------------------------------------------------------------

def _pair(value, name: str) -> tuple:
    if isinstance(value, (int, float)):
        return (value, value)
    if isinstance(value, Sequence) and len(value) == 2:
        return tuple(value)
    raise ValueError(f"imresize: `{name}` must be a number or a pair (h, w), got {value!r}")


def output_size(in_hw: tuple[int, int], scale=None, size=None) -> tuple[tuple[int, int], tuple[float, float]]:
    """Return ((out_h, out_w), (scale_h, scale_w)) as MATLAB computes them.

    With ``scale`` the output is ``ceil(in * scale)`` and the given scale drives the kernel; with ``size``
    the per-axis scale is ``out / in``. A ``None`` entry in ``size`` keeps the aspect ratio, as in MATLAB.
    """
    if (scale is None) == (size is None):
        raise ValueError("imresize: pass exactly one of `scale` or `size`")
    if scale is not None:
        scales = tuple(float(s) for s in _pair(scale, "scale"))
        if any(not math.isfinite(s) or s <= 0 for s in scales):
            raise ValueError(f"imresize: `scale` must be positive, got {scale!r}")
        # MATLAB takes ceil(in * scale). The tiny tolerance keeps e.g. 255 * (1/3) = 85.00000000000001 at 85
        # instead of 86, which is what a caller writing scale=1/3 means.
        out = tuple(int(math.ceil(n * s - 1e-9)) for n, s in zip(in_hw, scales))
        return out, scales
    hw = _pair(size, "size")
    if hw[0] is None and hw[1] is None:
        raise ValueError("imresize: `size` needs at least one of (h, w)")
    if hw[0] is None:
        s = hw[1] / in_hw[1]
        hw = (int(math.ceil(in_hw[0] * s - 1e-9)), hw[1])
    elif hw[1] is None:
        s = hw[0] / in_hw[0]
        hw = (hw[0], int(math.ceil(in_hw[1] * s - 1e-9)))
    out = tuple(int(v) for v in hw)
    if any(v <= 0 for v in out):
        raise ValueError(f"imresize: `size` must be positive, got {size!r}")
    return out, (out[0] / in_hw[0], out[1] / in_hw[1])


@lru_cache(maxsize=256)
def resize_weights(in_length: int, out_length: int, scale: float, kernel: str = "cubic",
                   antialias: bool = True) -> np.ndarray:
    """Dense (out_length, in_length) float64 matrix equal to MATLAB's ``contributions`` for one axis.

    MATLAB mirrors out-of-range taps back into the image (``[1:n, n:-1:1]``, i.e. symmetric padding that
    repeats the edge pixel); folding them into the dense matrix adds their weight to the mirrored column.
    The matrix is read-only because it is shared through the cache.
    """
    try:
        fn, width = KERNELS[kernel]
    except KeyError:
        raise ValueError(f"imresize: unknown kernel {kernel!r}; choose one of {sorted(KERNELS)}") from None
    if scale < 1 and antialias:
        # Antialiasing: stretch the kernel by 1/scale so it low-passes before decimation.
        def h(x):
            return scale * fn(scale * x)
        width = width / scale
    else:
        h = fn
    x = np.arange(1, out_length + 1, dtype=np.float64)
    # Output pixel x maps to input coordinate u (1-based, pixel centres), MATLAB's convention.
    u = x / scale + 0.5 * (1.0 - 1.0 / scale)
    left = np.floor(u - width / 2.0)
    taps = int(math.ceil(width)) + 2
    ind = left[:, None] + np.arange(taps, dtype=np.float64)[None, :]
    w = h(u[:, None] - ind)
    w = w / w.sum(axis=1, keepdims=True)
    mirror = np.concatenate([np.arange(in_length), np.arange(in_length - 1, -1, -1)])
    cols = mirror[np.mod(ind.astype(np.int64) - 1, 2 * in_length)]
    mat = np.zeros((out_length, in_length), dtype=np.float64)
    np.add.at(mat, (np.repeat(np.arange(out_length), taps), cols.ravel()), w.ravel())
    mat.setflags(write=False)
    return mat


@lru_cache(maxsize=128)
def _weights_tensor(in_length: int, out_length: int, scale: float, kernel: str, antialias: bool,
                    device: torch.device, dtype: torch.dtype) -> Tensor:
    mat = resize_weights(in_length, out_length, scale, kernel, antialias)
    return torch.from_numpy(np.array(mat)).to(device=device, dtype=dtype)


def _axis_order(in_hw, out_hw) -> tuple[int, int]:
    # Resize first along the axis that shrinks the data most: fewer flops for the second matmul.
    # (Exact arithmetic is order-independent; MATLAB also does the smaller scale first.)
    return (0, 1) if out_hw[0] / in_hw[0] <= out_hw[1] / in_hw[1] else (1, 0)


# --- public API -----------------------------------------------------------------------------------------------

def imresize(x: Tensor, scale: float | tuple[float, float] | None = None,
             size: tuple[int, int] | None = None, kernel: str = "cubic", antialias: bool = True) -> Tensor:
    """MATLAB ``imresize`` on the last two dimensions of a float tensor ((C,H,W) or (N,C,H,W)).

    Output size is ``ceil(H*scale) x ceil(W*scale)`` or ``size``. No clamping or rounding is applied
    (bicubic overshoots slightly): callers clamp to their value range. Differentiable w.r.t. ``x``.
    """
    if not isinstance(x, Tensor):
        raise TypeError(f"imresize: expected a torch.Tensor, got {type(x).__name__} (use imresize_np for arrays)")
    if x.ndim < 2:
        raise ValueError(f"imresize: expected a tensor (..., H, W), got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"imresize: expected a floating-point tensor, got {x.dtype}; convert with x.float() "
                        "(use imresize_np for uint8 arrays with MATLAB rounding)")
    in_hw = (int(x.shape[-2]), int(x.shape[-1]))
    out_hw, scales = output_size(in_hw, scale, size)
    out = x
    for axis in _axis_order(in_hw, out_hw):
        if out_hw[axis] == in_hw[axis] and scales[axis] == 1.0:
            continue  # identity along this axis: MATLAB's weights are exactly one-hot here
        w = _weights_tensor(in_hw[axis], out_hw[axis], scales[axis], kernel, antialias, x.device, x.dtype)
        if axis == 0:
            out = torch.matmul(w, out)                 # (oh, H) @ (..., H, W) -> (..., oh, W)
        else:
            out = torch.matmul(out, w.transpose(0, 1))  # (..., H, W) @ (W, ow) -> (..., H, ow)
    return out if out is not x else x.clone()


def imresize_np(img: np.ndarray, scale: float | tuple[float, float] | None = None,
                size: tuple[int, int] | None = None, kernel: str = "cubic", antialias: bool = True) -> np.ndarray:
    """MATLAB ``imresize`` on an (H, W) or (H, W, C) array.

    uint8 in: computed in float64, rounded half away from zero and clipped to uint8 (MATLAB rounds the
    final result the same way; MATLAB additionally rounds between the two axes, which is why regenerated
    LR files differ from MATLAB's by a few tenths of a grey level). Float in: float out, same dtype.
    """
    arr = np.asarray(img)
    if arr.ndim not in (2, 3):
        raise ValueError(f"imresize_np: expected an (H, W) or (H, W, C) array, got shape {arr.shape}")
    in_hw = (arr.shape[0], arr.shape[1])
    out_hw, scales = output_size(in_hw, scale, size)
    is_uint8 = arr.dtype == np.uint8
    if not (is_uint8 or np.issubdtype(arr.dtype, np.floating)):
        raise TypeError(f"imresize_np: expected uint8 or float input, got {arr.dtype}")
    out = arr.astype(np.float64)
    for axis in _axis_order(in_hw, out_hw):
        if out_hw[axis] == in_hw[axis] and scales[axis] == 1.0:
            continue
        w = resize_weights(in_hw[axis], out_hw[axis], scales[axis], kernel, antialias)
        out = np.tensordot(w, out, axes=([1], [axis]))   # resized axis comes first
        out = np.moveaxis(out, 0, axis)
    if is_uint8:
        return np.clip(np.floor(out + 0.5), 0, 255).astype(np.uint8)
    return out.astype(arr.dtype, copy=False)
