"""LapSRN, the Laplacian pyramid super-resolution network (Lai et al., CVPR 2017).

The network reconstructs the HR image progressively, one x2 pyramid level at a time (log2(scale) levels).
Each level has two branches:

* feature extraction: ``blocks`` (the paper's D) conv3x3 layers, each preceded by LeakyReLU 0.2
  (pre-activation) and wrapped in a local residual connection, then an upsampling step (a 4x4 transposed
  conv with stride 2 as in the paper, or the sub-pixel conv the report proposes: ``upsample``) and a conv
  that predicts the level's residual (band-pass) image;
* image reconstruction: the previous level's image upsampled by a 4x4 transposed conv initialised to a
  bilinear kernel, plus that residual.

``forward`` returns the image of every level (x2, x4, ...) so the loss can supervise all of them; the last
one is the full-scale result (use ``sr_lightning.models.final_output``). Works on Y (``in_channels=1``, the
paper) and RGB input.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from .blocks import check_choice, check_positive, check_scale, conv3x3, make_upsampler, scaled_kaiming_init_

__all__ = ["LapSRN", "LapSRNLevel", "LAPSRN_INITS", "bilinear_kernel"]

LAPSRN_UPSAMPLE_MODES = ("transposed", "subpixel")
LAPSRN_INITS = ("scaled_residuals", "paper")


def bilinear_kernel(size: int) -> Tensor:
    """2-D bilinear interpolation kernel of a transposed conv with stride size//2 (FCN initialisation)."""
    factor = (size + 1) // 2
    centre = factor - 1 if size % 2 == 1 else factor - 0.5
    taps = 1 - torch.abs(torch.arange(size, dtype=torch.float64) - centre) / factor
    return (taps[:, None] * taps[None, :]).float()


class LapSRNLevel(nn.Module):
    """One x2 pyramid level: returns (upsampled features, reconstructed image at twice the size)."""

    def __init__(self, channels: int, image_channels: int, blocks: int, upsample: str,
                 negative_slope: float) -> None:
        super().__init__()
        self.features = nn.Sequential(*(
            nn.Sequential(nn.LeakyReLU(negative_slope), conv3x3(channels, channels)) for _ in range(blocks)))
        self.act = nn.LeakyReLU(negative_slope)
        # Linear upsampler: the activation is applied before it (pre-activation), not after.
        self.upsample_features = make_upsampler(upsample, channels, 2, activation=None)
        self.to_residual = conv3x3(channels, image_channels)
        self.upsample_image = nn.ConvTranspose2d(image_channels, image_channels, 4, stride=2, padding=1,
                                                 bias=False)
        with torch.no_grad():
            # Start the image branch as plain bilinear upsampling of each channel (paper's initialisation).
            self.upsample_image.weight.zero_()
            kernel = bilinear_kernel(4)
            for c in range(image_channels):
                self.upsample_image.weight[c, c] = kernel

    def forward(self, features: Tensor, image: Tensor) -> tuple[Tensor, Tensor]:
        features = features + self.features(features)  # local residual
        features = self.upsample_features(self.act(features))
        residual = self.to_residual(self.act(features))
        return features, self.upsample_image(image) + residual


class LapSRN(nn.Module):
    """LapSRN generator.

    Args:
        scale: 2, 4 or 8 (one pyramid level per factor of two).
        in_channels: image channels (1 = Y as in the paper, 3 = RGB); the output has the same channels.
        channels: feature maps per conv (paper: 64).
        blocks: conv layers D in each level's feature-extraction branch (paper: 10).
        upsample: transposed (paper) | subpixel (feature-branch upsampling).
        negative_slope: LeakyReLU slope (paper: 0.2).
        init: scaled_residuals (default) | paper. ``paper``: He init for every learned conv, so each level's
            residual image starts as noise as large as the image and the net first has to unlearn it (at tiny
            size, 150 steps at lr 1e-4 end 2% above the bilinear image it starts from). ``scaled_residuals``:
            the same, but the convs that predict the residual images start at x0.1, so training starts at the
            bilinear pyramid and improves on it at once.
    """

    supported_scales = (2, 4, 8)

    def __init__(self, scale: int = 4, in_channels: int = 1, channels: int = 64, blocks: int = 10,
                 upsample: str = "transposed", negative_slope: float = 0.2, init: str = "scaled_residuals") -> None:
        super().__init__()
        owner = type(self).__name__
        self.scale = check_scale(owner, scale, self.supported_scales)
        self.in_channels = self.out_channels = check_positive(owner, "in_channels", in_channels)
        check_positive(owner, "channels", channels)
        check_positive(owner, "blocks", blocks, minimum=0)
        upsample = check_choice(owner, "upsample", upsample, LAPSRN_UPSAMPLE_MODES)
        self.init = check_choice(owner, "init", init, LAPSRN_INITS)

        self.head = conv3x3(self.in_channels, channels)
        levels = self.scale.bit_length() - 1  # log2(scale)
        self.levels = nn.ModuleList(
            LapSRNLevel(channels, self.in_channels, blocks, upsample, negative_slope) for _ in range(levels))
        # He initialisation for every learned conv (paper); the image upsamplers keep their bilinear kernels.
        image_upsamplers = {id(level.upsample_image) for level in self.levels}
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)) and id(m) not in image_upsamplers:
                nn.init.kaiming_normal_(m.weight, a=negative_slope, nonlinearity="leaky_relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        if self.init == "scaled_residuals":
            # Small residual images: the untrained net is the bilinear pyramid, not bilinear + noise.
            scaled_kaiming_init_([level.to_residual for level in self.levels], 0.1, negative_slope)

    def forward(self, x: Tensor) -> list[Tensor]:
        features, image = self.head(x), x
        outputs = []
        for level in self.levels:
            features, image = level(features, image)
            outputs.append(image)
        return outputs
