"""Applying a trained generator to real image files: any size, any channel layout, any bit depth.

`Upscaler.upscale(array)` takes what `sr_lightning.data.imageio.read_image` returns (uint8/uint16, gray,
RGB or RGBA) and returns the same kind of array, `scale` times larger:

* RGB goes through the network (in its value range, see ARCHITECTURE.md); gray is replicated to RGB for an
  RGB model and the result is turned back into gray (BT.601 luma), so a gray file stays gray;
* a Y-channel model (``color: y``, LapSRN) gets MATLAB's BT.601 Y; Cb/Cr are upscaled with MATLAB bicubic
  and merged back, as the papers do;
* alpha never goes through the network: it is upscaled with MATLAB bicubic and re-attached;
* 16-bit input is processed in float and written back as 16 bit.

The network runs through `iter_tiled_blocks`, and every finished block of output pixels is converted straight
into the integer result; tiles are converted to float one at a time. So besides the integer input and output
arrays only one tile's float output (and the overlap bands waiting for a neighbour) exists at a time. The
bicubic channels are computed block by block too (`bicubic_region`).

Beside it: `tiling` (tile plans, cross-faded blocks, auto tile size), `write` (PNG output without a copy),
`batch` (which files `upscale` reads and writes, and its folder loop), `evaluation` / `eval_report` (what `eval`
scores and writes). The generator itself comes from `sr_lightning.loading.load_generator`.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from sr_lightning.inference.tiling import (
    auto_tile_size,
    available_memory_bytes,
    iter_tiled_blocks,
    iter_tiled_rows,
    plan_axis,
    tiled_forward,
)
from sr_lightning.ops.color import rgb2ycbcr, ycbcr2rgb
from sr_lightning.ops.imresize import imresize
from sr_lightning.ops.value_range import from_unit, to_unit

__all__ = ["Upscaler", "bicubic_rows", "bicubic_region", "tiled_forward", "iter_tiled_blocks", "iter_tiled_rows",
           "auto_tile_size", "available_memory_bytes", "plan_axis"]

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
    return bicubic_region(lr, scale, row_start, row_stop, 0, lr.shape[-1] * scale, block)


def bicubic_region(lr: Tensor, scale: int, row_start: int, row_stop: int, col_start: int, col_stop: int,
                   block: int = 256, prepare: Callable[[Tensor], Tensor] | None = None) -> Tensor:
    """``imresize(lr, scale)[..., row_start:row_stop, col_start:col_stop]``, from windows of ``lr`` (see
    `bicubic_rows`). ``prepare`` turns each window into floats (``lr`` may stay uint8).

    The windows are always those of the fixed ``block`` grid, whatever the region: every output pixel is
    computed from the same window, so regions cut differently give identical numbers.
    """
    height, width = lr.shape[-2:]
    r0 = max(0, row_start // scale - _BICUBIC_MARGIN)
    r1 = min(height, -(-row_stop // scale) + _BICUBIC_MARGIN)
    pieces = []
    for c0 in range(col_start // scale // block * block, -(-col_stop // scale), block):
        c1 = min(width, c0 + block)
        a0, a1 = max(0, c0 - _BICUBIC_MARGIN), min(width, c1 + _BICUBIC_MARGIN)
        window = lr[..., r0:r1, a0:a1]
        piece = imresize(prepare(window) if prepare is not None else window, scale=scale)
        lo, hi = max(col_start, c0 * scale), min(col_stop, c1 * scale)
        pieces.append(piece[..., row_start - r0 * scale:row_stop - r0 * scale, lo - a0 * scale:hi - a0 * scale])
    return torch.cat(pieces, dim=-1) if len(pieces) > 1 else pieces[0]


def _quantise(x: Tensor, maxval: int, dtype: np.dtype) -> np.ndarray:
    """(C, h, w) float in [0, 1] -> (h, w, C) integer array (rounded, saturated)."""
    return (x.clamp(0.0, 1.0) * maxval).round_().permute(1, 2, 0).numpy().astype(dtype)


@dataclass
class Upscaler:
    """A loaded generator plus how to run it. ``loaded`` is a `sr_lightning.loading.LoadedGenerator`
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
        s = self.scale

        # The input stays uint8/uint16; each tile (and each bicubic window) is turned into floats when it is
        # used, with the same arithmetic as a whole-image conversion, so no full-size float copy exists.
        if not image.flags.writeable:  # decoded arrays may be read-only, which torch.from_numpy warns about
            image = image.copy()
        pixels = torch.from_numpy(image).permute(2, 0, 1)[None]  # (1, C, H, W) view, no copy

        def pixels_to_unit(t: Tensor) -> Tensor:
            return t.float() / maxval

        def to_net(t: Tensor) -> Tensor:
            return from_unit(pixels_to_unit(t), self.value_range)

        chroma, prepare = None, to_net
        if self.color == "y":  # a Y model is small; its colour conversion stays whole-image (float) as before
            rgb = pixels_to_unit(pixels[0, :colour_channels])
            ycc = rgb2ycbcr(rgb.expand(3, height, width) if colour_channels == 1 else rgb)
            chroma, x, prepare = ycc[1:], from_unit(ycc[:1][None], self.value_range), None
        else:
            x = pixels[:, :colour_channels]
            if colour_channels == 1:
                x = x.expand(1, 3, height, width)
        alpha = pixels[0, -1:] if has_alpha else None

        out = np.empty((height * s, width * s, channels), dtype=image.dtype)
        for top, left, block in iter_tiled_blocks(self.net, x, s, self.tile, self.tile_overlap, window=self.window,
                                                  autocast_dtype=self.autocast_dtype,
                                                  channels_last=self.channels_last, output_device="cpu",
                                                  on_tile=on_tile, prepare=prepare):
            bottom, right = top + block.shape[2], left + block.shape[3]
            sr = to_unit(block[0], self.value_range)
            if chroma is not None:
                sr = ycbcr2rgb(torch.cat([sr, bicubic_region(chroma, s, top, bottom, left, right)]))
            if colour_channels == 1:  # luma of the RGB the network would have shown (so clamp first)
                sr = sum(w * c for w, c in zip(_LUMA, sr.clamp(0.0, 1.0)))[None]
            out[top:bottom, left:right, :colour_channels] = _quantise(sr, maxval, image.dtype)
            if alpha is not None:
                out[top:bottom, left:right, -1:] = _quantise(
                    bicubic_region(alpha, s, top, bottom, left, right, prepare=pixels_to_unit), maxval, image.dtype)
        return out[:, :, 0] if channels == 1 else out
