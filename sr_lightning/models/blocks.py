"""Building blocks shared by the generator and discriminator families.

One place for the three ways the papers upsample feature maps (sub-pixel convolution, nearest-neighbour
interpolation + conv, transposed convolution), the activation factory, the residual block of SRResNet and
the option checks that turn a bad config value into a ``ValueError`` naming the allowed values.

Nothing here calls ``.view``: every reshape goes through ops that accept channels_last tensors.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import torch
from torch import Tensor, nn

__all__ = [
    "ACTIVATIONS",
    "OUTPUT_ACTIVATIONS",
    "UPSAMPLE_MODES",
    "check_choice",
    "check_scale",
    "check_positive",
    "upsample_factors",
    "make_activation",
    "make_output_activation",
    "scaled_kaiming_init_",
    "conv3x3",
    "ResidualBlock",
    "SubPixelUpsample",
    "NearestConvUpsample",
    "TransposedConvUpsample",
    "make_upsampler",
]

ACTIVATIONS = ("prelu", "leakyrelu", "swish", "relu")
OUTPUT_ACTIVATIONS = ("none", "sigmoid", "tanh")
UPSAMPLE_MODES = ("subpixel", "nearest", "transposed")


# --- option checks --------------------------------------------------------------------------------------------

def check_choice(owner: str, key: str, value, allowed: Sequence) -> str:
    """Return ``value`` lower-cased if it is one of ``allowed``; otherwise raise a ValueError naming them."""
    normalised = str(value).lower()
    if normalised not in allowed:
        raise ValueError(f"{owner}: {key}={value!r} is not supported; choose one of {', '.join(allowed)}")
    return normalised


def check_scale(owner: str, scale, supported: Sequence[int]) -> int:
    """Validate an upscaling factor against a family's ``supported_scales``."""
    if isinstance(scale, bool) or not isinstance(scale, int) or scale not in supported:
        allowed = ", ".join(str(s) for s in supported)
        raise ValueError(f"{owner}: scale={scale!r} is not supported; allowed scales are {allowed} "
                         f"(set `scale=` to one of them)")
    return scale


def check_positive(owner: str, key: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{owner}: {key}={value!r} must be an integer >= {minimum}")
    return value


def upsample_factors(scale: int) -> list[int]:
    """Per-stage factors of an upsampler: x2 stages for powers of two, one x3 stage for scale 3."""
    if scale == 3:
        return [3]
    if scale >= 2 and scale & (scale - 1) == 0:
        return [2] * int(math.log2(scale))
    raise ValueError(f"upsampling by {scale} is not supported; use 3 or a power of two (2, 4, 8)")


# --- activations ----------------------------------------------------------------------------------------------

def make_activation(name: str, negative_slope: float = 0.2) -> nn.Module:
    """Hidden-layer activation by name: prelu | leakyrelu | swish | relu.

    PReLU has one shared slope (PyTorch's default, as in the common SRGAN reimplementations). Nothing is
    in-place: several blocks reuse their input for a skip connection after the activation ran.
    """
    key = check_choice("make_activation", "activation", name, ACTIVATIONS)
    if key == "prelu":
        return nn.PReLU()
    if key == "leakyrelu":
        return nn.LeakyReLU(negative_slope)
    if key == "swish":
        return nn.SiLU()
    return nn.ReLU()


def make_output_activation(name: str | None) -> nn.Module:
    """Output non-linearity: none (linear, [0,1] targets) | sigmoid | tanh ([-1,1] targets)."""
    key = check_choice("make_output_activation", "output_activation", "none" if name is None else name,
                       OUTPUT_ACTIVATIONS)
    if key == "sigmoid":
        return nn.Sigmoid()
    if key == "tanh":
        return nn.Tanh()
    return nn.Identity()


def scaled_kaiming_init_(modules: Iterable[nn.Module], scale: float = 0.1, negative_slope: float = 0.0) -> None:
    """Kaiming-normal init multiplied by ``scale`` and zero biases (ESRGAN / MSRResNet).

    Small initial residual branches keep a deep stack of un-normalised residual blocks near the identity
    at the start of training, which is what lets those networks train without BatchNorm. ``scale=1`` is plain
    kaiming init for a (Leaky)ReLU of slope ``negative_slope`` (0: ReLU, BasicSR's choice for every conv).
    """
    for module in modules:
        for m in module.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight, a=negative_slope, mode="fan_in")
                with torch.no_grad():
                    m.weight.mul_(scale)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)


def conv3x3(in_channels: int, out_channels: int, bias: bool = True) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=bias)


# --- residual block -------------------------------------------------------------------------------------------

class ResidualBlock(nn.Module):
    """conv3x3 - [BN] - act - conv3x3 - [BN] + identity (SRResNet; without BN and with ReLU: EDSR, MSRResNet)."""

    def __init__(self, channels: int, activation: str = "prelu", batch_norm: bool = True,
                 res_scale: float = 1.0) -> None:
        super().__init__()
        layers: list[nn.Module] = [conv3x3(channels, channels)]
        if batch_norm:
            layers.append(nn.BatchNorm2d(channels))
        layers.append(make_activation(activation))
        layers.append(conv3x3(channels, channels))
        if batch_norm:
            layers.append(nn.BatchNorm2d(channels))
        self.body = nn.Sequential(*layers)
        self.res_scale = res_scale

    def forward(self, x: Tensor) -> Tensor:
        return x + self.res_scale * self.body(x)


# --- upsamplers -----------------------------------------------------------------------------------------------

def _stage_tail(channels: int, batch_norm: bool, activation: str | None,
                negative_slope: float = 0.2) -> list[nn.Module]:
    layers: list[nn.Module] = []
    if batch_norm:
        layers.append(nn.BatchNorm2d(channels))
    if activation is not None:
        layers.append(make_activation(activation, negative_slope))
    return layers


class SubPixelUpsample(nn.Sequential):
    """Per stage: conv3x3 (C -> C*r^2) -> PixelShuffle(r) -> activation (Shi et al. 2016, SRGAN).

    ``activation=None`` leaves the stage linear (for pre-activation networks such as LapSRN here);
    ``negative_slope`` is the LeakyReLU slope when ``activation="leakyrelu"`` (MSRResNet: 0.1).
    """

    def __init__(self, channels: int, scale: int, activation: str | None = "prelu",
                 batch_norm: bool = False, negative_slope: float = 0.2) -> None:
        layers: list[nn.Module] = []
        for r in upsample_factors(scale):
            layers += [conv3x3(channels, channels * r * r), nn.PixelShuffle(r)]
            layers += _stage_tail(channels, batch_norm, activation, negative_slope)
        super().__init__(*layers)


class NearestConvUpsample(nn.Sequential):
    """Per stage: nearest-neighbour x r -> conv3x3 -> [BN] -> activation (ESRGAN; avoids checkerboards).

    ``transposed_conv=True`` uses a stride-1 transposed convolution after the interpolation, as the DCGAN-
    style report describes its "nearest + transposed conv" step (same receptive field as a conv).
    """

    def __init__(self, channels: int, scale: int, activation: str | None = "leakyrelu",
                 batch_norm: bool = False, transposed_conv: bool = False) -> None:
        layers: list[nn.Module] = []
        for r in upsample_factors(scale):
            conv = (nn.ConvTranspose2d(channels, channels, 3, stride=1, padding=1) if transposed_conv
                    else conv3x3(channels, channels))
            layers += [nn.Upsample(scale_factor=r, mode="nearest"), conv]
            layers += _stage_tail(channels, batch_norm, activation)
        super().__init__(*layers)


class TransposedConvUpsample(nn.Sequential):
    """Per stage: transposed conv with stride r, kernel r+2, padding 1 (x2: the 4x4 kernel of LapSRN).

    Kernel r+2 with padding 1 makes the output exactly r times the input for every input size.
    """

    def __init__(self, channels: int, scale: int, activation: str | None = "leakyrelu",
                 batch_norm: bool = False) -> None:
        layers: list[nn.Module] = []
        for r in upsample_factors(scale):
            layers.append(nn.ConvTranspose2d(channels, channels, r + 2, stride=r, padding=1))
            layers += _stage_tail(channels, batch_norm, activation)
        super().__init__(*layers)


def make_upsampler(mode: str, channels: int, scale: int, activation: str | None,
                   batch_norm: bool = False) -> nn.Sequential:
    """Feature upsampler by name: subpixel | nearest | transposed."""
    key = check_choice("make_upsampler", "upsample", mode, UPSAMPLE_MODES)
    if key == "subpixel":
        return SubPixelUpsample(channels, scale, activation, batch_norm)
    if key == "nearest":
        return NearestConvUpsample(channels, scale, activation, batch_norm)
    return TransposedConvUpsample(channels, scale, activation, batch_norm)


def init_generator_io(module, scale: int, in_channels: int, out_channels: int | None) -> str:
    """Validate and set a generator's `scale`, `in_channels` and `out_channels` (default: in_channels).

    Returns the owner name used in error messages, for the generator's own further checks.
    """
    owner = type(module).__name__
    module.scale = check_scale(owner, scale, module.supported_scales)
    module.in_channels = check_positive(owner, "in_channels", in_channels)
    module.out_channels = check_positive(owner, "out_channels", in_channels if out_channels is None else out_channels)
    return owner
