"""DCGAN-style residual SR generator of the CelebA 16 -> 64 face report.

conv3x3 head + ReLU; then, per x2 upsampling stage (one x3 stage for scale 3), ``blocks`` residual blocks
(conv-BN-ReLU-conv-BN + identity) followed by the upsampling step the report describes: nearest-neighbour
interpolation, a (stride-1) transposed conv, BatchNorm and ReLU, as in DCGAN's generator; conv3x3 tail and
a bounded output (tanh for data on [-1, 1], sigmoid for [0, 1]).
"""
from __future__ import annotations

from torch import Tensor, nn

from .blocks import (
    OUTPUT_ACTIVATIONS,
    NearestConvUpsample,
    ResidualBlock,
    check_choice,
    check_positive,
    conv3x3,
    init_generator_io,
    make_output_activation,
    upsample_factors,
)

__all__ = ["DCGANSRGenerator"]


class DCGANSRGenerator(nn.Module):
    """Residual blocks, each stage followed by nearest + transposed-conv x2 upsampling with BN/ReLU.

    Args:
        scale: upscaling factor, one of ``supported_scales`` (report: 4, 16 -> 64 px faces).
        in_channels / out_channels: image channels (out defaults to in).
        channels: feature maps (constant through the network).
        blocks: residual blocks before each upsampling step.
        output_activation: tanh (report, data on [-1, 1]) | sigmoid ([0, 1]) | none.
    """

    supported_scales = (2, 3, 4, 8)

    def __init__(self, scale: int = 4, in_channels: int = 3, out_channels: int | None = None,
                 channels: int = 64, blocks: int = 1, output_activation: str = "tanh") -> None:
        super().__init__()
        owner = init_generator_io(self, scale, in_channels, out_channels)
        check_positive(owner, "channels", channels)
        check_positive(owner, "blocks", blocks, minimum=0)
        output_activation = check_choice(owner, "output_activation", output_activation, OUTPUT_ACTIVATIONS)

        self.head = nn.Sequential(conv3x3(self.in_channels, channels), nn.ReLU())
        stages: list[nn.Module] = []
        for factor in upsample_factors(self.scale):
            stages += [ResidualBlock(channels, "relu", batch_norm=True) for _ in range(blocks)]
            stages.append(NearestConvUpsample(channels, factor, activation="relu", batch_norm=True,
                                              transposed_conv=True))
        self.body = nn.Sequential(*stages)
        self.tail = nn.Sequential(conv3x3(channels, self.out_channels), make_output_activation(output_activation))

    def forward(self, x: Tensor) -> Tensor:
        return self.tail(self.body(self.head(x)))
