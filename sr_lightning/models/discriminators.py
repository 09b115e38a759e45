"""Discriminators: SRGAN's VGG-style classifier, PatchGAN, and the spectral-norm U-Net of Real-ESRGAN.

All return logits (no sigmoid): the adversarial losses apply the sigmoid themselves, which is numerically
stable and equal to BCE on probabilities. ``VGGStyleDiscriminator(probability=True)`` exists for code that
wants SRGAN's literal sigmoid output; it must then not be paired with a logits loss.
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm

from .blocks import check_choice, check_positive

__all__ = ["VGGStyleDiscriminator", "PatchGANDiscriminator", "UNetDiscriminatorSN"]

NORMS = ("batch", "instance", "spectral", "none")


def _check_input(owner: str, x: Tensor, in_channels: int, min_size: int) -> None:
    if x.ndim != 4 or x.shape[1] != in_channels:
        raise ValueError(f"{owner}: expected input (N, {in_channels}, H, W), got {tuple(x.shape)}; "
                         f"disc.in_channels must equal the generator's output channels")
    if min(x.shape[-2:]) < min_size:
        raise ValueError(f"{owner}: input {tuple(x.shape[-2:])} is smaller than the minimum {min_size} px; "
                         f"use a larger crop or fewer `blocks`")


# A stride-2 block halves the map only while the result keeps at least this many pixels a side; on smaller maps
# it runs with stride 1 (same weights).
MIN_FEATURE_SIZE = 2


class _HalvingConv(nn.Conv2d):
    """A strided conv that stops downsampling a dimension once halving it would leave fewer than
    ``MIN_FEATURE_SIZE`` pixels.

    Why: ``disc.blocks=16`` has eight stride-2 convs, more than any crop up to 256 px can take: the map reached
    1 px and the remaining stride-2 convs ran on 1-px inputs. Exactly the grid cells with such convs
    (blocks=16 at every crop, no cell with blocks <= 8) stopped with inf/NaN in D under bf16 on an AMX Xeon and
    trained in fp32 and on AVX2. Measured on that AMX Xeon (torch 2.14.1, `benchmarks/bf16_conv_grad.py`): under
    bf16 autocast the *weight gradient* of a stride-2 3x3 conv on a 1-px input is wrong (NaN, or values ~1e34
    against ~5 in fp32) in 4-5 of 5 trials at 8 ... 512 channels, channels_last and NCHW alike; its forward
    output, a stride-2 conv on a 2- or 3-px input, and a stride-1 conv on a 1-px input are all correct. On
    AVX512-bf16/AMX CPUs bf16 convs run in oneDNN; on AVX2 PyTorch's own kernel runs them, which is correct.
    Keeping every strided output at >= 2 px (so no strided conv ever sees a 1-px map) removes that shape on
    every backend; the extra blocks still add depth, and nothing changes where the map never got that small
    (blocks <= 8 at crops >= 48 px, the paper's net at 128 px). With this class the issue's command trains at
    crops 48/64/96/128 on the AMX Xeon; with plain strided convs it stops at step 0-1 at all four.
    """

    def forward(self, x: Tensor) -> Tensor:
        # 3x3, padding 1: a stride-2 output has ceil(n / 2) px, >= MIN_FEATURE_SIZE iff n >= 2 * MIN - 1.
        stride = tuple(s if n >= 2 * MIN_FEATURE_SIZE - 1 else 1 for s, n in zip(self.stride, x.shape[-2:]))
        if stride == self.stride:
            return super().forward(x)
        return F.conv2d(x, self.weight, self.bias, stride, self.padding, self.dilation, self.groups)


class VGGStyleDiscriminator(nn.Module):
    """SRGAN discriminator (Ledig et al. 2017, fig. 4), usable at any crop size.

    A first conv3x3 (no BN) + LeakyReLU 0.2, then conv blocks (conv3x3, BN, LeakyReLU 0.2) whose stride
    alternates 1/2 and whose channels double every second block (64, 64, 128, 128, 256, 256, 512, 512 for
    the paper's ``blocks=8``, capped at ``max_channels``), then dense 1024 + LeakyReLU + dense 1 (logit).
    ``blocks`` counts all conv layers including the first. A stride-2 block whose output would be smaller
    than ``MIN_FEATURE_SIZE`` (2) px runs with stride 1 (see ``_HalvingConv``): deep variants at small crops
    (16 blocks at 48 ... 256 px) stop halving at 2x2 instead of running strided convs on 1-px maps.

    The paper's dense layer sees a fixed feature map (8x8 at 128 px after four stride-2 convs), which ties
    the network to one crop size. Here an adaptive average pool sits before the dense layer and maps
    whatever the convs produce to ``pool_size``; by default that is the feature size the paper's network
    has at ``input_size`` (``input_size // 16``, or less when more stride-2 blocks shrink the map further).
    At ``crop == input_size`` the pool is the identity, so the network and its parameter count are the
    paper's; at other crops (48 ... 256) it still works with the same weights.

    Args:
        in_channels: image channels.
        blocks: number of conv layers (paper: 8; 4, 16, ... also work).
        channels: channels of the first conv (paper: 64).
        max_channels: channel cap for deep variants.
        input_size: crop size at which the network equals the paper's (default 128).
        pool_size: spatial size fed to the dense layer; overrides the one derived from ``input_size``
            (1 = global average pooling, the seed-000 variant).
        dense_features: width of the hidden dense layer (paper: 1024).
        probability: append a sigmoid (SRGAN's literal output / seed-000); leave False with logit losses.
    """

    def __init__(self, in_channels: int = 3, blocks: int = 8, channels: int = 64, max_channels: int = 512,
                 input_size: int = 128, pool_size: int | None = None, dense_features: int = 1024,
                 negative_slope: float = 0.2, probability: bool = False) -> None:
        super().__init__()
        owner = type(self).__name__
        self.in_channels = check_positive(owner, "in_channels", in_channels)
        self.blocks = check_positive(owner, "blocks", blocks, minimum=2)
        check_positive(owner, "channels", channels)
        check_positive(owner, "input_size", input_size)
        check_positive(owner, "dense_features", dense_features)

        layers: list[nn.Module] = [nn.Conv2d(self.in_channels, channels, 3, padding=1),
                                   nn.LeakyReLU(negative_slope)]
        previous = channels
        for i in range(1, blocks):
            out = min(channels * 2 ** (i // 2), max_channels)
            conv = _HalvingConv if i % 2 == 1 else nn.Conv2d
            layers += [conv(previous, out, 3, stride=2 if i % 2 == 1 else 1, padding=1, bias=False),
                       nn.BatchNorm2d(out), nn.LeakyReLU(negative_slope)]
            previous = out
        self.features = nn.Sequential(*layers)

        strided = blocks // 2
        if pool_size is None:
            # The paper's 8x8 at 128 px; never more than the convs give at input_size (deep variants).
            pool_size = max(1, input_size // 2 ** max(4, strided))
        self.pool_size = check_positive(owner, "pool_size", pool_size)
        self.pool = nn.AdaptiveAvgPool2d(self.pool_size)
        self.classifier = nn.Sequential(
            nn.Linear(previous * self.pool_size ** 2, dense_features), nn.LeakyReLU(negative_slope),
            nn.Linear(dense_features, 1))
        self.probability = bool(probability)

    def forward(self, x: Tensor) -> Tensor:
        _check_input(type(self).__name__, x, self.in_channels, 1)
        features = self.pool(self.features(x))
        logits = self.classifier(features.flatten(1))  # flatten reshapes: safe on channels_last
        return logits.sigmoid() if self.probability else logits


def _norm_layer(norm: str, channels: int) -> list[nn.Module]:
    if norm == "batch":
        return [nn.BatchNorm2d(channels)]
    if norm == "instance":
        return [nn.InstanceNorm2d(channels, affine=False)]
    return []


class PatchGANDiscriminator(nn.Module):
    """PatchGAN (Isola et al. 2017, pix2pix's NLayerDiscriminator): one logit per overlapping patch.

    conv4x4/2 + LeakyReLU, then ``blocks - 1`` conv4x4/2 + norm + LeakyReLU, one conv4x4/1 + norm +
    LeakyReLU, and a conv4x4/1 to one channel; channels double per layer up to 8x ``channels``. With
    ``blocks=3`` the receptive field is 70x70. Returns logits ``(N, 1, h, w)``.

    Args:
        in_channels: image channels.
        blocks: number of stride-2 convs (pix2pix's n_layers, default 3).
        channels: channels of the first conv (64).
        norm: batch | instance | spectral (spectral norm on every conv, no norm layer) | none.
    """

    def __init__(self, in_channels: int = 3, blocks: int = 3, channels: int = 64, norm: str = "batch",
                 negative_slope: float = 0.2) -> None:
        super().__init__()
        owner = type(self).__name__
        self.in_channels = check_positive(owner, "in_channels", in_channels)
        self.blocks = check_positive(owner, "blocks", blocks)
        check_positive(owner, "channels", channels)
        norm = check_choice(owner, "norm", norm, NORMS)
        wrap = spectral_norm if norm == "spectral" else (lambda m: m)
        bias = norm in ("spectral", "none")  # a following BN/IN would cancel a bias

        layers: list[nn.Module] = [wrap(nn.Conv2d(self.in_channels, channels, 4, stride=2, padding=1)),
                                   nn.LeakyReLU(negative_slope)]
        previous = channels
        for n in range(1, blocks + 1):
            out = channels * min(2 ** n, 8)
            stride = 2 if n < blocks else 1
            layers += [wrap(nn.Conv2d(previous, out, 4, stride=stride, padding=1, bias=bias)),
                       *_norm_layer(norm, out), nn.LeakyReLU(negative_slope)]
            previous = out
        layers.append(wrap(nn.Conv2d(previous, 1, 4, stride=1, padding=1)))
        self.net = nn.Sequential(*layers)
        # Smallest input that leaves at least one output patch: size halves `blocks` times, the two
        # stride-1 4x4 convs each remove one pixel.
        self.min_input_size = 2 ** blocks * 3

    def forward(self, x: Tensor) -> Tensor:
        _check_input(type(self).__name__, x, self.in_channels, self.min_input_size)
        return self.net(x)


class UNetDiscriminatorSN(nn.Module):
    """U-Net discriminator with spectral normalisation (Real-ESRGAN, Wang et al. 2021).

    conv3x3 (no SN); ``blocks`` spectral-normed 4x4 stride-2 convs doubling the channels; as many
    bilinear x2 + SN conv3x3 steps back up, each added to the encoder feature of the same size; two SN
    conv3x3 and a conv3x3 to one channel. Returns per-pixel logits ``(N, 1, H, W)`` (global and local
    realness feedback). ``blocks=3, channels=64`` is Real-ESRGAN's network (4,376,897 parameters). Inputs of
    any size >= 2**blocks work: the decoder upsamples to the skip tensor's size, not by a fixed x2.
    """

    def __init__(self, in_channels: int = 3, blocks: int = 3, channels: int = 64,
                 negative_slope: float = 0.2) -> None:
        super().__init__()
        owner = type(self).__name__
        self.in_channels = check_positive(owner, "in_channels", in_channels)
        self.blocks = check_positive(owner, "blocks", blocks)
        check_positive(owner, "channels", channels)
        widths = [channels * 2 ** i for i in range(blocks + 1)]

        self.head = nn.Conv2d(self.in_channels, channels, 3, padding=1)
        self.down = nn.ModuleList(
            spectral_norm(nn.Conv2d(widths[i], widths[i + 1], 4, stride=2, padding=1, bias=False))
            for i in range(blocks))
        self.up = nn.ModuleList(
            spectral_norm(nn.Conv2d(widths[i + 1], widths[i], 3, padding=1, bias=False))
            for i in reversed(range(blocks)))
        self.refine = nn.Sequential(
            spectral_norm(nn.Conv2d(channels, channels, 3, padding=1, bias=False)), nn.LeakyReLU(negative_slope),
            spectral_norm(nn.Conv2d(channels, channels, 3, padding=1, bias=False)), nn.LeakyReLU(negative_slope),
            nn.Conv2d(channels, 1, 3, padding=1))
        self.act = nn.LeakyReLU(negative_slope)
        self.min_input_size = 2 ** blocks

    def forward(self, x: Tensor) -> Tensor:
        _check_input(type(self).__name__, x, self.in_channels, self.min_input_size)
        skips = [self.act(self.head(x))]
        for conv in self.down:
            skips.append(self.act(conv(skips[-1])))
        features = skips.pop()
        for conv in self.up:
            skip = skips.pop()
            features = F.interpolate(features, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            features = self.act(conv(features)) + skip
        return self.refine(features)
