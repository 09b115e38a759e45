"""Interpolation baselines as generators without parameters.

They take the same constructor arguments and return the same shapes as the trained generators, so the
evaluation, upscaling and report code treats "bicubic" exactly like a model. ``Bicubic`` uses the
MATLAB-compatible ``imresize`` (Keys kernel a=-0.5): that is the convention behind every published bicubic
number; torch's ``F.interpolate(mode="bicubic")`` (a=-0.75, clamped borders) scores tenths of a dB apart.
Outputs are not clamped, like a trained generator's; metrics round and clip.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..ops.imresize import imresize
from .blocks import check_positive, check_scale

__all__ = ["Bicubic", "Bilinear", "Nearest", "NeighbourAverage"]


class _Interpolation(nn.Module):
    supported_scales = (2, 3, 4, 8)

    def __init__(self, scale: int = 4, in_channels: int = 3) -> None:
        super().__init__()
        owner = type(self).__name__
        self.scale = check_scale(owner, scale, self.supported_scales)
        self.in_channels = self.out_channels = check_positive(owner, "in_channels", in_channels)

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"{type(self).__name__}: expected input (N, {self.in_channels}, H, W), "
                             f"got {tuple(x.shape)}; set gen.in_channels to the data's channel count")
        return self.upscale(x)

    def upscale(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"scale={self.scale}, in_channels={self.in_channels}"


class Bicubic(_Interpolation):
    """MATLAB ``imresize(lr, scale, 'bicubic')``: Keys cubic a=-0.5, symmetric borders."""

    def upscale(self, x: Tensor) -> Tensor:
        # The weight matrices are applied in float32 whatever the input dtype, and outside autocast (which
        # would run the matmuls in bf16 and cost tenths of a dB); the result keeps the input dtype.
        with torch.autocast(device_type=x.device.type, enabled=False):
            return imresize(x.float(), scale=self.scale, kernel="cubic").to(x.dtype)


class Bilinear(_Interpolation):
    """Bilinear upsampling (half-pixel centres, ``align_corners=False``: same grid as MATLAB's)."""

    def upscale(self, x: Tensor) -> Tensor:
        return F.interpolate(x, scale_factor=self.scale, mode="bilinear", align_corners=False)


class Nearest(_Interpolation):
    """Nearest-neighbour upsampling: every LR pixel becomes a ``scale x scale`` block."""

    def upscale(self, x: Tensor) -> Tensor:
        return F.interpolate(x, scale_factor=self.scale, mode="nearest")


class NeighbourAverage(_Interpolation):
    """The "neighbour-average" scheme of the seed-000 report.

    The report describes it as nearest-neighbour upsampling followed by averaging each pixel with its
    neighbours. We read that as: ``Nearest`` upsampling by ``scale``, then a ``window x window`` box filter
    (default 3x3: the pixel and its 8 neighbours, equal weights) on the upsampled image. Borders are
    replicated so an edge pixel also averages 9 taps instead of being darkened by zero padding.
    """

    def __init__(self, scale: int = 4, in_channels: int = 3, window: int = 3) -> None:
        super().__init__(scale, in_channels)
        if isinstance(window, bool) or not isinstance(window, int) or window < 1 or window % 2 == 0:
            raise ValueError(f"NeighbourAverage: window={window!r} must be an odd integer >= 1 (3 = 3x3 box)")
        self.window = window

    def upscale(self, x: Tensor) -> Tensor:
        up = F.interpolate(x, scale_factor=self.scale, mode="nearest")
        pad = self.window // 2
        if pad == 0:
            return up
        up = F.pad(up, (pad, pad, pad, pad), mode="replicate")
        return F.avg_pool2d(up, self.window, stride=1)
