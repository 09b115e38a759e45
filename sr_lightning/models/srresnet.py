"""SRResNet, the generator of SRGAN (Ledig et al., CVPR 2017), and its no-BN variant MSRResNet.

Paper layout (fig. 4): 9x9 conv + PReLU; B residual blocks (conv3x3-BN-PReLU-conv3x3-BN + identity);
conv3x3-BN plus a global skip from the head; sub-pixel upsampling stages (conv3x3 -> PixelShuffle(2) ->
PReLU, one PixelShuffle(3) stage for x3); 9x9 output conv. With ``blocks=16, channels=64`` this is the
paper's network (about 1.55M parameters). ``batch_norm=False`` is BasicSR's MSRResNet; the seed-000 network
is ``channels=20, blocks=18, activation='swish'``.
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from .blocks import (ACTIVATIONS, OUTPUT_ACTIVATIONS, UPSAMPLE_MODES, check_choice, check_positive, conv3x3,
                     init_generator_io, make_activation, make_output_activation, make_upsampler,
                     ResidualBlock, scaled_kaiming_init_)

__all__ = ["SRResNet"]

IMAGE_SKIPS = ("none", "bilinear", "bicubic")
# "subpixel_direct": ESPCN's single sub-pixel layer (SwinIR calls it "pixelshuffledirect" for its lightweight
# models): one conv at LR resolution to out_channels * scale^2, one PixelShuffle(scale), and no HR-resolution
# conv after it. At x4 the paper's upsampler plus 9x9 output conv cost more than 16 residual convs, so this is
# the mode for small, fast models (the CPU quickstart), where the compute belongs in the LR-resolution body.
SRRESNET_UPSAMPLE_MODES = UPSAMPLE_MODES + ("subpixel_direct",)


class SRResNet(nn.Module):
    """SRGAN generator.

    Args:
        scale: upscaling factor, one of ``supported_scales``.
        in_channels: image channels of the input (3 = RGB, 1 = Y).
        out_channels: image channels of the output (default: ``in_channels``).
        channels: feature maps per layer (paper: 64).
        blocks: number of residual blocks B (paper: 16).
        batch_norm: BatchNorm in the residual blocks and after the trunk conv (paper: on; MSRResNet: off).
        activation: prelu | leakyrelu | swish | relu, used everywhere an activation sits.
        upsample: subpixel (paper) | nearest | transposed | subpixel_direct (one conv + PixelShuffle at the
            end, no HR-resolution convs: for small, fast models).
        output_activation: none (paper, linear output) | sigmoid | tanh.
        residual_init_scale: residual-branch convs start from kaiming init times this (MSRResNet's 0.1);
            it keeps the B-block stack near the identity early on when there is no BatchNorm.
        image_skip: none (paper) | bilinear | bicubic: add this upsampling of the input to the output, as
            BasicSR's MSRResNet does (bilinear), so training starts from an interpolation instead of grey.
    """

    supported_scales = (2, 3, 4, 8)

    def __init__(self, scale: int = 4, in_channels: int = 3, out_channels: int | None = None,
                 channels: int = 64, blocks: int = 16, batch_norm: bool = True, activation: str = "prelu",
                 upsample: str = "subpixel", output_activation: str = "none",
                 residual_init_scale: float = 0.1, image_skip: str = "none") -> None:
        super().__init__()
        owner = init_generator_io(self, scale, in_channels, out_channels)
        check_positive(owner, "channels", channels)
        check_positive(owner, "blocks", blocks, minimum=0)
        activation = check_choice(owner, "activation", activation, ACTIVATIONS)
        upsample = check_choice(owner, "upsample", upsample, SRRESNET_UPSAMPLE_MODES)
        output_activation = check_choice(owner, "output_activation", output_activation, OUTPUT_ACTIVATIONS)
        self.image_skip = check_choice(owner, "image_skip", image_skip, IMAGE_SKIPS)
        if self.image_skip != "none" and self.out_channels != self.in_channels:
            raise ValueError(f"{owner}: image_skip={image_skip} adds the upsampled input to the output, which needs "
                             f"out_channels == in_channels (got {self.out_channels} and {self.in_channels})")

        self.head = nn.Sequential(nn.Conv2d(self.in_channels, channels, 9, padding=4),
                                  make_activation(activation))
        self.body = nn.Sequential(*(ResidualBlock(channels, activation, batch_norm) for _ in range(blocks)))
        trunk: list[nn.Module] = [conv3x3(channels, channels)]
        if batch_norm:
            trunk.append(nn.BatchNorm2d(channels))
        self.trunk = nn.Sequential(*trunk)
        if upsample == "subpixel_direct":
            self.upsampler = nn.Sequential(conv3x3(channels, self.out_channels * self.scale ** 2),
                                           nn.PixelShuffle(self.scale))
            self.tail = nn.Sequential(make_output_activation(output_activation))
            output_layers = self.upsampler   # its conv is the last one before the image
        else:
            self.upsampler = make_upsampler(upsample, channels, self.scale, activation)
            self.tail = nn.Sequential(nn.Conv2d(channels, self.out_channels, 9, padding=4),
                                      make_output_activation(output_activation))
            output_layers = self.tail
        if residual_init_scale != 1.0:
            scaled_kaiming_init_(self.body, residual_init_scale)
            if self.image_skip != "none":
                # As BasicSR's MSRResNet: with an image skip the output conv starts small too, so training
                # begins at the interpolation rather than at interpolation + random noise.
                scaled_kaiming_init_(output_layers, residual_init_scale)

    def forward(self, x: Tensor) -> Tensor:
        features = self.head(x)
        features = features + self.trunk(self.body(features))  # global skip from the head
        out = self.tail(self.upsampler(features))
        if self.image_skip != "none":
            # MSRResNet's image-level skip: the network only learns the residual over an interpolation of x.
            out = out + F.interpolate(x, scale_factor=self.scale, mode=self.image_skip, align_corners=False)
        return out
