"""RRDBNet, the generator of ESRGAN (Wang et al., ECCV workshops 2018).

23 residual-in-residual dense blocks (each: 3 residual dense blocks of 5 convs, growth 32, LeakyReLU 0.2,
residual scaling 0.2), no BatchNorm, a trunk conv whose output is ADDED to the head features (global
residual), nearest-neighbour x2 + conv upsampling stages, an HR conv and the output conv. The dense-block
convs start from kaiming init x0.1. At scale 4 with the paper's sizes it has 16,697,987 parameters, the
count of BasicSR's RRDBNet_x4.

Scales: x2/x4/x8 use one nearest x2 + conv stage per factor of two, x3 one nearest x3 + conv stage (BasicSR
instead pixel-unshuffles the input for x1/x2; the body is identical).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from .blocks import (
    OUTPUT_ACTIVATIONS,
    NearestConvUpsample,
    check_choice,
    check_positive,
    conv3x3,
    init_generator_io,
    make_output_activation,
    scaled_kaiming_init_,
)

__all__ = ["ResidualDenseBlock", "RRDB", "RRDBNet"]


class ResidualDenseBlock(nn.Module):
    """Five densely connected convs; the fifth maps back to ``channels`` and is added with scaling 0.2."""

    def __init__(self, channels: int = 64, growth: int = 32, res_scale: float = 0.2,
                 negative_slope: float = 0.2) -> None:
        super().__init__()
        self.convs = nn.ModuleList(
            conv3x3(channels + i * growth, growth if i < 4 else channels) for i in range(5))
        self.act = nn.LeakyReLU(negative_slope)
        self.res_scale = res_scale
        scaled_kaiming_init_(self.convs, 0.1)

    def forward(self, x: Tensor) -> Tensor:
        features = [x]
        for conv in self.convs[:-1]:
            features.append(self.act(conv(torch.cat(features, dim=1))))
        return x + self.res_scale * self.convs[-1](torch.cat(features, dim=1))


class RRDB(nn.Module):
    """Residual in residual dense block: three dense blocks inside one more scaled residual connection."""

    def __init__(self, channels: int = 64, growth: int = 32, res_scale: float = 0.2,
                 negative_slope: float = 0.2) -> None:
        super().__init__()
        self.dense_blocks = nn.Sequential(
            *(ResidualDenseBlock(channels, growth, res_scale, negative_slope) for _ in range(3)))
        self.res_scale = res_scale

    def forward(self, x: Tensor) -> Tensor:
        return x + self.res_scale * self.dense_blocks(x)


class RRDBNet(nn.Module):
    """ESRGAN generator.

    Args:
        scale: upscaling factor, one of ``supported_scales``.
        in_channels / out_channels: image channels (out defaults to in).
        channels: feature maps (paper: 64).
        blocks: number of RRDBs (paper: 23).
        growth: growth channels of the dense blocks (paper: 32).
        res_scale: residual scaling beta (paper: 0.2).
        negative_slope: LeakyReLU slope (paper: 0.2).
        output_activation: none (paper) | sigmoid | tanh.
    """

    supported_scales = (2, 3, 4, 8)

    def __init__(self, scale: int = 4, in_channels: int = 3, out_channels: int | None = None,
                 channels: int = 64, blocks: int = 23, growth: int = 32, res_scale: float = 0.2,
                 negative_slope: float = 0.2, output_activation: str = "none") -> None:
        super().__init__()
        owner = init_generator_io(self, scale, in_channels, out_channels)
        check_positive(owner, "channels", channels)
        check_positive(owner, "blocks", blocks, minimum=0)
        check_positive(owner, "growth", growth)
        output_activation = check_choice(owner, "output_activation", output_activation, OUTPUT_ACTIVATIONS)

        self.head = conv3x3(self.in_channels, channels)
        self.body = nn.Sequential(*(RRDB(channels, growth, res_scale, negative_slope) for _ in range(blocks)))
        self.trunk_conv = conv3x3(channels, channels)
        self.upsampler = NearestConvUpsample(channels, self.scale, activation="leakyrelu")
        self.tail = nn.Sequential(conv3x3(channels, channels), nn.LeakyReLU(negative_slope),
                                  conv3x3(channels, self.out_channels),
                                  make_output_activation(output_activation))

    def forward(self, x: Tensor) -> Tensor:
        features = self.head(x)
        # Global residual: an addition. (A seed report multiplied here, which zeroes the path at init.)
        features = features + self.trunk_conv(self.body(features))
        return self.tail(self.upsampler(features))
