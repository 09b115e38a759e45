"""SRResNet, the generator of SRGAN (Ledig et al., CVPR 2017), and BasicSR's modified SRResNet (MSRResNet).

SRResNet, paper layout (fig. 4): 9x9 conv + PReLU; B residual blocks (conv3x3-BN-PReLU-conv3x3-BN + identity);
conv3x3-BN plus a global skip from the head; sub-pixel upsampling stages (conv3x3 -> PixelShuffle(2) ->
PReLU, one PixelShuffle(3) stage for x3); 9x9 output conv. With ``blocks=16, channels=64`` this is the
paper's network (1,549,462 parameters at x4). The seed-000 network is ``channels=20, blocks=18,
activation='swish'``.

MSRResNet (BasicSR's ``MSRResNet``, the SRResNet of its benchmarks) is a different network, not SRResNet with
BatchNorm switched off: 3x3 first and last convs, ReLU inside the residual blocks and LeakyReLU(0.1) elsewhere,
no trunk conv and no global feature skip, an extra 3x3 conv at HR resolution before the output conv, and the
bilinear upsampling of the input added to the output. 1,517,571 parameters at x4 with ``blocks=16, channels=64``,
BasicSR's MSRResNet_x4 count. BasicSR initialises every conv at kaiming x 0.1 (``init="basicsr"``); the default
``init="scaled_residuals"`` keeps that only for the residual branches and starts the output conv at zero, so the
net learns from its first steps (issue 14).
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from .blocks import (
    ACTIVATIONS,
    OUTPUT_ACTIVATIONS,
    UPSAMPLE_MODES,
    ResidualBlock,
    SubPixelUpsample,
    check_choice,
    check_positive,
    conv3x3,
    init_generator_io,
    make_activation,
    make_output_activation,
    make_upsampler,
    scaled_kaiming_init_,
)

__all__ = ["SRResNet", "MSRResNet", "MSRRESNET_INITS"]

IMAGE_SKIPS = ("none", "bilinear", "bicubic")

# MSRResNet's initialisations. basicsr: BasicSR's (every conv at kaiming x0.1), for paper-exact reproduction; it
# trains late (the quickstart's validation PSNR stayed at the untrained value for ~1,500 steps).
# scaled_residuals: small only where it keeps the net at "skip + identity" (residual branches x0.1, output conv 0).
MSRRESNET_INITS = ("scaled_residuals", "basicsr")


def check_image_skip(module: nn.Module, owner: str, image_skip: str) -> str:
    """Validate an image-skip mode; adding the upsampled input needs as many output as input channels."""
    mode = check_choice(owner, "image_skip", image_skip, IMAGE_SKIPS)
    if mode != "none" and module.out_channels != module.in_channels:
        raise ValueError(f"{owner}: image_skip={image_skip} adds the upsampled input to the output, which needs "
                         f"out_channels == in_channels (got {module.out_channels} and {module.in_channels})")
    return mode


def add_image_skip(out: Tensor, x: Tensor, mode: str, scale: int) -> Tensor:
    """MSRResNet's image-level skip: the network only learns the residual over an interpolation of x."""
    if mode == "none":
        return out
    return out + F.interpolate(x, scale_factor=scale, mode=mode, align_corners=False)


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
        batch_norm: BatchNorm in the residual blocks and after the trunk conv (paper: on).
        activation: prelu | leakyrelu | swish | relu, used everywhere an activation sits.
        upsample: subpixel (paper) | nearest | transposed | subpixel_direct (one conv + PixelShuffle at the
            end, no HR-resolution convs: for small, fast models).
        output_activation: none (paper, linear output) | sigmoid | tanh.
        residual_init_scale: residual-branch convs start from kaiming init times this (as MSRResNet's 0.1);
            it keeps the B-block stack near the identity early on when there is no BatchNorm.
        image_skip: none (paper) | bilinear | bicubic: add this upsampling of the input to the output, as
            MSRResNet does (bilinear), so training starts from an interpolation instead of grey.
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
        self.image_skip = check_image_skip(self, owner, image_skip)

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
        return add_image_skip(self.tail(self.upsampler(features)), x, self.image_skip, self.scale)


class MSRResNet(nn.Module):
    """BasicSR's modified SRResNet (the module docstring lists how it differs from SRGAN's SRResNet).

    Args:
        scale: upscaling factor, one of ``supported_scales`` (BasicSR has 2, 3, 4; 8 adds a third x2 stage).
        in_channels / out_channels: image channels (out defaults to in).
        channels: feature maps (BasicSR num_feat: 64).
        blocks: residual blocks conv3x3-ReLU-conv3x3 + identity (BasicSR num_block: 16).
        negative_slope: slope of the LeakyReLUs outside the residual blocks (BasicSR: 0.1).
        image_skip: bilinear (BasicSR) | bicubic | none: the upsampling of the input added to the output.
        output_activation: none (BasicSR, linear output) | sigmoid | tanh.
        init: scaled_residuals (default) | basicsr. ``basicsr`` is BasicSR's exact init: every conv at
            kaiming x0.1. ``scaled_residuals`` scales only the residual-branch convs by 0.1, starts the output
            conv (the residual image) at zero and gives the main path (head, upsampler, HR conv) plain kaiming
            init for its LeakyReLU (see ``MSRRESNET_INITS``).
    """

    supported_scales = (2, 3, 4, 8)

    def __init__(self, scale: int = 4, in_channels: int = 3, out_channels: int | None = None,
                 channels: int = 64, blocks: int = 16, negative_slope: float = 0.1,
                 image_skip: str = "bilinear", output_activation: str = "none",
                 init: str = "scaled_residuals") -> None:
        super().__init__()
        owner = init_generator_io(self, scale, in_channels, out_channels)
        check_positive(owner, "channels", channels)
        check_positive(owner, "blocks", blocks, minimum=0)
        output_activation = check_choice(owner, "output_activation", output_activation, OUTPUT_ACTIVATIONS)
        self.image_skip = check_image_skip(self, owner, image_skip)
        self.init = check_choice(owner, "init", init, MSRRESNET_INITS)

        self.head = nn.Sequential(conv3x3(self.in_channels, channels), nn.LeakyReLU(negative_slope))
        self.body = nn.Sequential(*(ResidualBlock(channels, "relu", batch_norm=False) for _ in range(blocks)))
        self.upsampler = SubPixelUpsample(channels, self.scale, "leakyrelu", negative_slope=negative_slope)
        self.tail = nn.Sequential(conv3x3(channels, channels), nn.LeakyReLU(negative_slope),
                                  conv3x3(channels, self.out_channels), make_output_activation(output_activation))
        self.reset_parameters(negative_slope)

    def reset_parameters(self, negative_slope: float = 0.1) -> None:
        """Initialise every conv as ``self.init`` says (biases at zero either way)."""
        if self.init == "basicsr":
            # BasicSR scales every conv of this network, not only the residual branches, so it starts close to
            # the bilinear interpolation it adds -- but the signal then shrinks 10x at each of the 4-5 main-path
            # convs, the residual output is ~1e-5 and the first layers' gradients sit under Adam's eps.
            scaled_kaiming_init_([self], 0.1)
            return
        # Main path at unit gain: the features that reach the upsampler and the output conv have the input's
        # magnitude, so every layer gets a usable gradient from the first step.
        main_path = [self.head, self.upsampler, self.tail[0]]
        scaled_kaiming_init_(main_path, 1.0, negative_slope=negative_slope)
        # Residual branches at x0.1: the block stack starts near the identity. The output conv starts at zero,
        # so the untrained net IS its image skip: at x0.1 with a unit-gain main path it added noise that made
        # the start 2x worse than the skip and cost the first ~150 steps (measured: benchmarks/init_start.py).
        # Its gradient is not zero, so it moves at the first step and the rest follows from the second.
        scaled_kaiming_init_([self.body], 0.1)
        nn.init.zeros_(self.tail[2].weight)
        nn.init.zeros_(self.tail[2].bias)

    def forward(self, x: Tensor) -> Tensor:
        out = self.tail(self.upsampler(self.body(self.head(x))))
        return add_image_skip(out, x, self.image_skip, self.scale)
