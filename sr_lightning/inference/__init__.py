"""Applying a trained generator to real image files: any size, any channel layout, any bit depth.

`Upscaler.upscale(array)` takes what `sr_lightning.data.imageio.read_image` returns (uint8/uint16, gray,
RGB or RGBA) and returns the same kind of array, `scale` times larger:

* RGB goes through the network (in its value range, see ARCHITECTURE.md); gray is replicated to RGB for an
  RGB model and the result is turned back into gray (BT.601 luma), so a gray file stays gray;
* a Y-channel model (``color: y``, LapSRN) gets MATLAB's BT.601 Y; Cb/Cr are upscaled with MATLAB bicubic
  and merged back, as the papers do;
* alpha never goes through the network: it is upscaled with MATLAB bicubic and re-attached;
* 16-bit input is processed in float and written back as 16 bit.

The network runs through `tiled_forward`'s row iterator, and every finished strip of output rows is
converted straight into the integer result, so besides the input and output arrays only one strip of float
output exists at a time. The bicubic channels are computed strip by strip too (`bicubic_rows`).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from sr_lightning.inference.tiling import (auto_tile_size, available_memory_bytes, iter_tiled_rows, plan_axis,
                                           tiled_forward)
from sr_lightning.ops.color import rgb2ycbcr, ycbcr2rgb
from sr_lightning.ops.imresize import imresize

__all__ = ["Upscaler", "bicubic_rows", "tiled_forward", "iter_tiled_rows", "auto_tile_size",
           "available_memory_bytes", "plan_axis"]

# BT.601 luma, the weights PIL and MATLAB's rgb2gray use: RGB output of a gray input -> one channel again.
_LUMA = (0.299, 0.587, 0.114)
# MATLAB bicubic reads 2 input pixels on each side of an output pixel's source position; 3 is a safe margin
# for computing a block of the result from a window of the input without touching the window's border.
_BICUBIC_MARGIN = 3


def bicubic_rows(lr: Tensor, scale: int, row_start: int, row_stop: int, block: int = 256) -> Tensor:
    """Rows ``row_start:row_stop`` of ``imresize(lr, scale)`` (MATLAB bicubic), computed piecewise.

    ``imresize`` builds dense (out, in) weight matrices; for a 4000-pixel-wide image at x4 that is a
    16000 x 4000 matrix per axis. Resizing windows of at most ``block`` input pixels (plus a margin that the
    result discards) gives the same numbers with small matrices, because with an integer scale every output
    pixel keeps its fractional source position, and so its weights, inside any window that holds its taps.
    """
    height, width = lr.shape[-2:]
    r0 = max(0, row_start // scale - _BICUBIC_MARGIN)
    r1 = min(height, -(-row_stop // scale) + _BICUBIC_MARGIN)
    pieces = []
    for c0 in range(0, width, block):
        c1 = min(width, c0 + block)
        a0, a1 = max(0, c0 - _BICUBIC_MARGIN), min(width, c1 + _BICUBIC_MARGIN)
        piece = imresize(lr[..., r0:r1, a0:a1], scale=scale)
        pieces.append(piece[..., row_start - r0 * scale:row_stop - r0 * scale,
                            (c0 - a0) * scale:(c1 - a0) * scale])
    return torch.cat(pieces, dim=-1)


def _quantise(x: Tensor, maxval: int, dtype: np.dtype) -> np.ndarray:
    """(C, h, w) float in [0, 1] -> (h, w, C) integer array (rounded, saturated)."""
    return (x.clamp(0.0, 1.0) * maxval).round_().permute(1, 2, 0).numpy().astype(dtype)


@dataclass
class Upscaler:
    """A loaded generator plus how to run it. ``loaded`` is a `sr_lightning.checkpoint.LoadedGenerator`
    (or anything with ``net``, ``scale``, ``value_range`` and ``color``)."""

    loaded: object
    tile: int | str | None = None
    tile_overlap: int = 16
    autocast_dtype: torch.dtype | None = None
    channels_last: bool = False
    device: torch.device | str = "cpu"
    window: str = "cosine"

    def __post_init__(self) -> None:
        self.device = torch.device(self.device)
        self.net = self.loaded.net
        self.scale = int(self.loaded.scale)
        self.color = str(self.loaded.color)
        self.value_range = tuple(float(v) for v in self.loaded.value_range)
        if self.color not in ("rgb", "y"):
            raise ValueError(f"color: got {self.color!r}; allowed: rgb, y")
        if isinstance(self.net, torch.nn.Module):
            self.net = self.net.eval().to(self.device)
            if self.channels_last:
                self.net = self.net.to(memory_format=torch.channels_last)
        self.in_channels = 1 if self.color == "y" else 3
        declared = getattr(self.net, "in_channels", self.in_channels)
        if declared != self.in_channels:
            raise ValueError(f"the generator takes {declared} input channels but color={self.color} feeds "
                             f"{self.in_channels}; the checkpoint's `color` and `gen.in_channels` disagree")
        if self.tile == "auto":
            # Once per model, not per image: the probe is a forward pass.
            self.tile = auto_tile_size(self.net, self.in_channels, self.scale, self.tile_overlap, self.device,
                                       element_bytes=2 if self.autocast_dtype is not None else 4)

    def tiles_for(self, height: int, width: int) -> int:
        """How many tiles an image of this size is cut into (for progress bars)."""
        tile = self.tile if isinstance(self.tile, int) else None
        rows, cols = plan_axis(height, tile, self.tile_overlap), plan_axis(width, tile, self.tile_overlap)
        return len(rows.starts) * len(cols.starts)

    def upscale(self, image: np.ndarray, on_tile: Callable[[int, int], None] | None = None) -> np.ndarray:
        """uint8/uint16 ``(H, W)``, ``(H, W, 3)`` or ``(H, W, 4)`` -> the same dtype and layout, ``scale`` x larger."""
        image = np.asarray(image)
        if image.dtype not in (np.uint8, np.uint16):
            raise ValueError(f"upscale: expected uint8 or uint16 pixels, got {image.dtype}")
        if image.ndim == 2:
            image = image[:, :, None]
        if image.ndim != 3 or image.shape[2] not in (1, 2, 3, 4):
            raise ValueError(f"upscale: expected (H, W), (H, W, 3) or (H, W, 4), got shape {image.shape}")
        maxval = 255 if image.dtype == np.uint8 else 65535
        height, width, channels = image.shape
        has_alpha = channels in (2, 4)
        colour_channels = channels - 1 if has_alpha else channels
        s, (lo, hi) = self.scale, self.value_range

        # np.array copies: decoded arrays may be read-only, which torch.from_numpy warns about.
        rgb = torch.from_numpy(np.array(image[:, :, :colour_channels])).permute(2, 0, 1).float() / maxval
        if colour_channels == 1:
            rgb = rgb.expand(3, height, width)
        chroma = None
        if self.color == "y":
            ycc = rgb2ycbcr(rgb)
            net_input, chroma = ycc[:1], ycc[1:]
        else:
            net_input = rgb
        alpha = (torch.from_numpy(np.array(image[:, :, -1]))[None].float() / maxval) if has_alpha else None
        x = (net_input * (hi - lo) + lo)[None] if (lo, hi) != (0.0, 1.0) else net_input[None].contiguous()

        out = np.empty((height * s, width * s, channels), dtype=image.dtype)
        for row, block in iter_tiled_rows(self.net, x, s, self.tile, self.tile_overlap, window=self.window,
                                          autocast_dtype=self.autocast_dtype, channels_last=self.channels_last,
                                          output_device="cpu", on_tile=on_tile):
            stop = row + block.shape[2]
            sr = block[0]
            if (lo, hi) != (0.0, 1.0):
                sr = (sr - lo) / (hi - lo)
            if chroma is not None:
                sr = ycbcr2rgb(torch.cat([sr, bicubic_rows(chroma, s, row, stop)]))
            if colour_channels == 1:  # luma of the RGB the network would have shown (so clamp first)
                sr = sum(w * c for w, c in zip(_LUMA, sr.clamp(0.0, 1.0)))[None]
            out[row:stop, :, :colour_channels] = _quantise(sr, maxval, image.dtype)
            if alpha is not None:
                out[row:stop, :, -1:] = _quantise(bicubic_rows(alpha, s, row, stop), maxval, image.dtype)
        return out[:, :, 0] if channels == 1 else out
