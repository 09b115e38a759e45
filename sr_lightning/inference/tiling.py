"""Tiled, blended forward pass: super-resolve an image of any size in bounded memory without seams.

A convolutional generator sees zero padding at the border of whatever it is given, so a tile's output is
wrong within the network's receptive field of the tile edge. Cutting with hard borders leaves a visible seam
there; discarding a fixed margin (the usual "tile_pad") hides most of it but still switches abruptly from
one tile's slightly different prediction to the next one's. Here neighbouring tiles overlap by at least
``tile_overlap`` input pixels; in each overlap the quarter next to either cut is context only, and the two
outputs are cross-faded over the middle half with a smooth (raised-cosine or linear) window:

* a pixel covered by one tile only is that tile's prediction, at least ``tile_overlap`` input pixels away
  from any cut, so it equals the untiled result once the overlap exceeds the receptive field that matters;
* in an overlap, no tile contributes its pixels nearest to its cut (the most wrong ones), the weights of the
  rest fall smoothly towards the cut, so no step appears.

The windows are separable and the tiles form a grid, so the sum of all windows is the outer product of two
1-D sums: each tile's contribution is normalised on the fly with two vectors instead of a full-size weight
image. Tiles run row by row of the grid, left to right, and every block of output pixels is handed out as
soon as no later tile touches it (`iter_tiled_blocks`), so a caller can quantise it straight into its
uint8/uint16 result. Besides that result, float memory holds one tile's output and activations and the two
overlap bands still waiting for a neighbour (the rows shared with the next grid row, full width; the columns
shared with the next tile, one tile high), never a full-width strip of tiles or a full-size accumulator: a
6000x4000 input at x4 needs 18 MB of band, where a strip of 1024 px tiles took 1.2 GB.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from sr_lightning.models import final_output

__all__ = ["tiled_forward", "iter_tiled_blocks", "iter_tiled_rows", "plan_axis", "TilePlan", "auto_tile_size",
           "available_memory_bytes", "WINDOWS"]

WINDOWS = ("cosine", "linear")
# tile='auto' stays within these (input pixels): tiny tiles waste most of their work on the overlap; beyond
# ~1000 px the recomputed overlap is under 4% and larger tiles were not faster (SRResNet-16 x4 on the reference
# CPU ran 1.2-1.4x faster in 200 px tiles than on a whole 384 px image), they only raise the peak memory.
AUTO_TILE_MIN, AUTO_TILE_MAX = 64, 1024
# On the CPU the tiles share host memory with the whole integer result (1.07 GiB for 6000x4000 at x4), so
# tile='auto' gives a tile's estimated working set at most this much, however much memory is free: a 6000x4000
# x4 upscale with the tiny benchmark model peaked at 3.43 GiB with the 1024 px tiles that half the free memory
# allowed, and larger CPU tiles are not faster (see above). GPU memory is not host memory: no cap there.
AUTO_CPU_BUDGET_BYTES = 1 << 30


# --- the grid -------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class TilePlan:
    """Tiles along one axis: equal ``size``, ``starts`` spread evenly from 0 to ``length - size``."""

    length: int
    size: int
    starts: tuple[int, ...]

    def overlap_before(self, i: int) -> int:
        return 0 if i == 0 else self.starts[i - 1] + self.size - self.starts[i]

    def overlap_after(self, i: int) -> int:
        return 0 if i == len(self.starts) - 1 else self.starts[i] + self.size - self.starts[i + 1]


def plan_axis(length: int, tile: int | None, overlap: int) -> TilePlan:
    """Fewest tiles of at most ``tile`` pixels overlapping by at least ``overlap``, spread evenly.

    Instead of stepping by ``tile - overlap`` and clamping the last tile (which can almost double the work
    when the image is slightly larger than a multiple of the step), the tile is shrunk to the smallest size
    that covers ``length`` with that many tiles, so the redundant work is only the overlaps themselves.
    """
    if tile is None or tile >= length:
        return TilePlan(length, length, (0,))
    n = math.ceil((length - overlap) / (tile - overlap))
    size = math.ceil((length + (n - 1) * overlap) / n)
    starts = tuple((i * (length - size)) // (n - 1) for i in range(n))
    return TilePlan(length, size, starts)


# The outer quarter of an overlap, on each side, is context only (weight 0): those pixels are the ones the
# tile's zero padding disturbs most. The cross-fade runs over the middle half. On random-init SRResNet/RRDB
# with a 16 px overlap this cut the worst difference to the untiled result 3x compared with fading over the
# whole overlap (benchmarks/upscale.py reports the difference on the real-size networks).
CONTEXT_FRACTION = 0.25


def _ramp(n: int, window: str) -> Tensor:
    """Rising weights over an overlap of ``n`` pixels with r[i] + r[n-1-i] == 1, so two tiles cross-fading
    over the same overlap sum to exactly one: 0 over the first quarter, a smooth rise, 1 over the last."""
    context = int(n * CONTEXT_FRACTION)
    fade = n - 2 * context
    t = (torch.arange(fade, dtype=torch.float64) + 0.5) / fade
    rise = 0.5 - 0.5 * torch.cos(math.pi * t) if window == "cosine" else t
    return torch.cat([torch.zeros(context, dtype=torch.float64), rise, torch.ones(context, dtype=torch.float64)])


def _axis_windows(plan: TilePlan, scale: int, window: str) -> list[Tensor]:
    """Per tile, its normalised 1-D weights in output pixels (window / sum of all windows at that pixel)."""
    size = plan.size * scale
    raw = []
    for i in range(len(plan.starts)):
        w = torch.ones(size, dtype=torch.float64)
        before, after = plan.overlap_before(i) * scale, plan.overlap_after(i) * scale
        if before:
            w[:before] *= _ramp(before, window)
        if after:
            w[size - after:] *= _ramp(after, window).flip(0)
        raw.append(w)
    total = torch.zeros(plan.length * scale, dtype=torch.float64)
    for start, w in zip(plan.starts, raw):
        total[start * scale:start * scale + size] += w
    if not bool((total > 0).all()):  # cannot happen with tile > 2 * overlap; guard against silent NaNs
        raise RuntimeError(f"tiling: some output pixels have no tile weight ({plan}); use a larger tile")
    return [(w / total[s * scale:s * scale + size]).float() for s, w in zip(plan.starts, raw)]


# --- memory ---------------------------------------------------------------------------------------------------

def available_memory_bytes(device: torch.device | str = "cpu") -> int:
    """Free memory for activations: CUDA's free memory, else MemAvailable of /proc/meminfo (no psutil)."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 4 << 30  # no /proc (macOS, Windows): assume a modest 4 GiB rather than failing


def _activation_floats_per_pixel(net: nn.Module, in_channels: int, device: torch.device,
                                 probe: int = 24) -> float:
    """Largest feature map of any layer, in floats per input pixel, measured on a small probe input.

    Under ``inference_mode`` only a few maps are alive at once (the current layer's input and output, a
    skip connection, a dense block's concatenation), so peak memory is a small multiple of the largest one.
    """
    largest = [float(probe * probe * in_channels)]

    def hook(_module, _inputs, output):
        for t in output if isinstance(output, (list, tuple)) else (output,):
            if isinstance(t, Tensor):
                largest[0] = max(largest[0], float(t.numel()))

    handles = [m.register_forward_hook(hook) for m in net.modules() if not list(m.children())]
    try:
        with torch.inference_mode():
            net(torch.zeros(1, in_channels, probe, probe, device=device))
    finally:
        for h in handles:
            h.remove()
    return largest[0] / (probe * probe)


def auto_tile_size(net: nn.Module, in_channels: int, scale: int, overlap: int,
                   device: torch.device | str = "cpu", element_bytes: int = 4,
                   memory_fraction: float = 0.5, live_maps: float = 6.0) -> int:
    """Tile edge (input pixels) whose activations fit in ``memory_fraction`` of the free memory, and on the CPU
    in at most `AUTO_CPU_BUDGET_BYTES`.

    Estimate per input pixel: ``live_maps`` copies of the largest feature map (see
    `_activation_floats_per_pixel`) plus the tile's float output and its blending temporaries. The benchmark
    (benchmarks/upscale.py) reports the peak RSS this gives on a 6000x4000 x4 file.
    """
    device = torch.device(device)
    per_pixel = _activation_floats_per_pixel(net, in_channels, device) * live_maps * element_bytes
    per_pixel += 3 * in_channels * scale * scale * 4
    budget = available_memory_bytes(device) * memory_fraction
    if device.type == "cpu":
        budget = min(budget, AUTO_CPU_BUDGET_BYTES)
    tile = int(math.sqrt(max(budget, 1.0) / per_pixel)) // 8 * 8
    return max(AUTO_TILE_MIN, 2 * overlap + 8, min(tile, AUTO_TILE_MAX))


# --- forward --------------------------------------------------------------------------------------------------

def _net_device(net: nn.Module, fallback: torch.device) -> torch.device:
    for p in net.parameters():
        return p.device
    for b in net.buffers():
        return b.device
    return fallback


def _check_args(x: Tensor, scale: int, tile, tile_overlap: int, window: str) -> None:
    if not isinstance(x, Tensor) or x.ndim != 4 or x.shape[0] != 1:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"tiled_forward: expected one image as a (1, C, H, W) tensor, got {shape}")
    if not isinstance(scale, int) or scale < 1:
        raise ValueError(f"tiled_forward: scale must be a positive integer, got {scale!r}")
    if window not in WINDOWS:
        raise ValueError(f"tiled_forward: window={window!r}; allowed: {', '.join(WINDOWS)}")
    if not isinstance(tile_overlap, int) or tile_overlap < 0:
        raise ValueError(f"tile_overlap: got {tile_overlap!r}; allowed: an integer >= 0 (input pixels)")
    if tile is not None and tile != "auto":
        if not isinstance(tile, int) or isinstance(tile, bool) or tile <= 2 * tile_overlap:
            raise ValueError(f"tile: got {tile!r} with tile_overlap={tile_overlap}; allowed: null, 'auto' or an "
                             f"integer > 2 * tile_overlap = {2 * tile_overlap} (input pixels)")


def iter_tiled_blocks(net: nn.Module, x: Tensor, scale: int, tile: int | str | None = None,
                      tile_overlap: int = 16, *, window: str = "cosine", autocast_dtype: torch.dtype | None = None,
                      channels_last: bool = False, output_device: torch.device | str | None = None,
                      on_tile: Callable[[int, int], None] | None = None,
                      prepare: Callable[[Tensor], Tensor] | None = None) -> Iterator[tuple[int, int, Tensor]]:
    """Yield ``(top, left, block)``: finished output pixels ``[top, top + h) x [left, left + w)`` as a float32
    ``(1, C, h, w)`` block, as soon as no later tile touches them. Other arguments as `tiled_forward`;
    ``prepare`` maps each input tile to the network's float input (so ``x`` may stay uint8: no full-size float
    copy of the input).

    Blocks come one grid row at a time (all blocks of a grid row share their rows), left to right. Float
    memory besides one tile's output: the rows the next grid row will also cover (an overlap band, full width)
    and the columns the next tile will also cover (an overlap band, one tile high). Each output pixel is the
    sum of its tiles' weighted outputs added in tile order, so the result equals the former full-strip
    accumulation bit for bit.
    """
    _check_args(x, scale, tile, tile_overlap, window)
    device = _net_device(net, x.device)
    output_device = torch.device(output_device) if output_device is not None else x.device
    _, channels, height, width = x.shape
    if tile == "auto":
        tile = auto_tile_size(net, channels, scale, tile_overlap, device,
                              element_bytes=2 if autocast_dtype in (torch.bfloat16, torch.float16) else 4)
    rows, cols = plan_axis(height, tile, tile_overlap), plan_axis(width, tile, tile_overlap)
    row_w = [w.to(output_device) for w in _axis_windows(rows, scale, window)]
    col_w = [w.to(output_device) for w in _axis_windows(cols, scale, window)]
    single = len(rows.starts) == 1 and len(cols.starts) == 1
    total, done = len(rows.starts) * len(cols.starts), 0
    amp = (torch.autocast(device_type=device.type, dtype=autocast_dtype) if autocast_dtype is not None
           else nullcontext())
    out_height, out_width = height * scale, width * scale

    band: Tensor | None = None  # sums of earlier grid rows over this grid row's first rows (full width)
    for i, y0 in enumerate(rows.starts):
        top, bottom = y0 * scale, (y0 + rows.size) * scale
        # rows below `finish` are covered by the next grid row too: they go to the next band, not out
        finish = rows.starts[i + 1] * scale if i + 1 < len(rows.starts) else out_height
        next_band: Tensor | None = None
        hold: Tensor | None = None  # sums of this grid row's earlier tiles over the current tile's first columns
        for j, x0 in enumerate(cols.starts):
            left, right = x0 * scale, (x0 + cols.size) * scale
            next_left = cols.starts[j + 1] * scale if j + 1 < len(cols.starts) else out_width
            # no_grad per tile, not around the loop: a generator suspended at `yield` inside a `with` would
            # leave the grad mode switched for whatever the caller runs in between.
            with torch.no_grad():
                # A slice of x is a strided view; convolutions on it take a slow path on CPU, so copy.
                patch = x[:, :, y0:y0 + rows.size, x0:x0 + cols.size]
                if prepare is not None:
                    patch = prepare(patch)
                patch = patch.to(device).contiguous(
                    memory_format=torch.channels_last if channels_last else torch.contiguous_format)
                with amp:
                    out = final_output(net(patch))
                del patch
            expected = (rows.size * scale, cols.size * scale)
            if tuple(out.shape[-2:]) != expected:
                raise ValueError(
                    f"tiled_forward: the generator turned a {rows.size}x{cols.size} tile into "
                    f"{out.shape[-2]}x{out.shape[-1]}, expected {expected[0]}x{expected[1]} at scale={scale}; "
                    f"check that `scale` matches the model")
            out = out.to(output_device, torch.float32).contiguous()
            done += 1
            if on_tile is not None:
                on_tile(done, total)
            if single:  # untiled: the prediction itself, no blending arithmetic
                yield 0, 0, out
                return
            # Separable weights applied in place: no (tile x tile) weight image per tile.
            out.mul_(row_w[i][:, None]).mul_(col_w[j][None, :])
            # Add what earlier tiles put on these pixels (float addition commutes, so c + earlier is
            # bit-identical to earlier + c; the association stays "in tile order").
            held = 0 if hold is None else hold.shape[3]
            if band is not None:
                out[:, :, :band.shape[2], held:] += band[:, :, :, left + held:right]
            if hold is not None:
                out[:, :, :, :held] += hold
            hold = out[:, :, :, next_left - left:].clone() if j + 1 < len(cols.starts) else None
            if finish < bottom:
                if j == 0:
                    next_band = torch.empty(1, out.shape[1], bottom - finish, out_width, device=output_device)
                next_band[:, :, :, left:next_left] = out[:, :, finish - top:, :next_left - left]
            yield top, left, out[:, :, :finish - top, :next_left - left]
            del out
        band = next_band if finish < bottom else None


def iter_tiled_rows(net: nn.Module, x: Tensor, scale: int, tile: int | str | None = None,
                    tile_overlap: int = 16, **kwargs) -> Iterator[tuple[int, Tensor]]:
    """Yield ``(row, block)``: finished output rows ``row .. row + block.shape[2]`` (float32, (1,C,h,W*scale)),
    top to bottom: `iter_tiled_blocks` with each grid row's blocks joined (one full-width strip of float
    output in memory; `iter_tiled_blocks` avoids even that). Arguments as `iter_tiled_blocks`."""
    pending: list[Tensor] = []
    current = None
    for top, _left, block in iter_tiled_blocks(net, x, scale, tile, tile_overlap, **kwargs):
        if current is not None and top != current:
            yield current, torch.cat(pending, dim=3)
            pending = []
        current = top
        pending.append(block)
    if pending:
        yield current, torch.cat(pending, dim=3) if len(pending) > 1 else pending[0]


def tiled_forward(net: nn.Module, x: Tensor, scale: int, tile: int | str | None = None, tile_overlap: int = 16,
                  *, window: str = "cosine", autocast_dtype: torch.dtype | None = None, channels_last: bool = False,
                  output_device: torch.device | str | None = None,
                  on_tile: Callable[[int, int], None] | None = None) -> Tensor:
    """Super-resolve ``x`` ((1, C, H, W), in the generator's value range) tile by tile.

    Args:
        net: generator in eval mode; a list output (LapSRN's pyramid) is reduced with `final_output`.
        scale: the generator's upscaling factor (checked against each tile's output).
        tile: tile edge in input pixels (tiles shrink to split the image evenly), ``None`` for one pass over
            the whole image, or ``'auto'`` to size tiles from the free memory (`auto_tile_size`).
        tile_overlap: minimum overlap of neighbouring tiles in input pixels; outputs are cross-faded over it.
            Pixels covered by one tile only lie at least this far from any cut.
        window: cross-fade shape, ``cosine`` (raised cosine, smooth first derivative) or ``linear``.
        autocast_dtype: run the generator under ``torch.autocast`` with this dtype (bf16/fp16), or None.
        channels_last: feed tiles in channels_last memory format.
        output_device: where the result is accumulated (default: ``x.device``); tiles run on the net's device.
        on_tile: called as ``on_tile(done, total)`` after every tile (progress bars).

    Returns the float32 ``(1, C_out, H*scale, W*scale)`` result on ``output_device`` (not clamped).
    """
    out: Tensor | None = None
    for top, left, block in iter_tiled_blocks(net, x, scale, tile, tile_overlap, window=window,
                                              autocast_dtype=autocast_dtype, channels_last=channels_last,
                                              output_device=output_device, on_tile=on_tile):
        if block.shape[2:] == (x.shape[2] * scale, x.shape[3] * scale):
            return block  # untiled: already the whole image
        if out is None:
            out = torch.empty(1, block.shape[1], x.shape[2] * scale, x.shape[3] * scale, device=block.device)
        out[:, :, top:top + block.shape[2], left:left + block.shape[3]] = block
    assert out is not None
    return out
