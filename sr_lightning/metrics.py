"""PSNR / SSIM exactly as SR papers compute them, plus an optional LPIPS scorer.

The paper convention (SRCNN, LapSRN, EDSR, ESRGAN, ... and ``../shared/benchmarks/reference_bicubic.json``):

1. the SR output is clamped to [0, 1] and rounded to uint8 (papers save PNGs, then score them);
2. PSNR/SSIM are computed on the Y channel of MATLAB's ``rgb2ycbcr`` on the uint8 image (BT.601 studio
   swing 16-235, Y rounded to an integer), with peak 255;
3. ``crop_border`` (= the scale) pixels are removed from every side of both images;
4. SSIM is Wang et al.'s: 11x11 Gaussian window, sigma 1.5, K1 = 0.01, K2 = 0.03, and the SSIM map is
   averaged over the *valid* region only (window fully inside the cropped image, MATLAB ``filter2(...,'valid')``);
5. one value per image; a test set's score is the mean of its images' scores.

Where we differ from torchmetrics' defaults, and why:

* ``torchmetrics.image.PeakSignalNoiseRatio()`` with default arguments accumulates the squared error and the
  pixel count over *all* updates and takes one log at the end: the PSNR of the pooled MSE, which is
  0.3-1.1 dB below the per-image mean papers report (``log`` of a mean != mean of ``log``s). We compute one
  PSNR per image (in float64) and average those.
* ``torchmetrics.functional.structural_similarity_index_measure`` reflect-pads the images by 5 px and
  averages the SSIM map over the padded borders too (up to 0.012 SSIM off on one image). Its full map
  cropped by 5 px is exactly the valid region and matches ours, but its float64 depthwise convolution
  takes seconds per channel on CPU, so ``ssim`` filters with the separable window itself.

Grayscale images: an image stored as a single-channel file (Set14 img_003) is scored on its own grey values,
not on Y (Y of a grey image compresses it to 16-235 and inflates PSNR). Whether a file is grey is a property of
the file, not of the pixels: Set14 img_010 is an RGB file whose channels are all equal, and the published
numbers score it on Y like any RGB image (scoring it on its grey values would move its PSNR by 1.3 dB). So
callers say ``gray=True`` (``eval`` reads it from the HR file's header); by default only 1-channel tensors are
grey. An RGB SR of a grey HR is reduced to grey with the BT.601 luma weights on full range
(0.299 R + 0.587 G + 0.114 B, MATLAB ``rgb2gray``), rounded: exactly the channel value when the SR's channels
are equal (bicubic, replicated outputs), the usual grey conversion otherwise. ``psnr_rgb``/``ssim_rgb`` of a
grey image compare all SR channels against the grey HR replicated (for a 1-channel SR: the grey values).
1-channel SR and HR (``color: y`` models that score their Y output directly) are scored on their own values.

Tiny images: SSIM needs an 11x11 window inside the image after the border crop, so an image whose side is
below ``min_scored_size(crop_border)`` (= 2 * crop_border + 11; 19 px at x4) cannot be scored the papers' way.
Such an image is left out of a set's means rather than scored with PSNR only: every mean in a row is then over
the same images, and rows stay comparable. The data module drops them when the folder is listed (with a
warning naming each, see ``SRDataModule``); ``SRMetrics`` skips and counts any that still arrive. LPIPS'
backbones need a larger input still (``LPIPS_MIN_SIZE``): below it an image has no LPIPS (NaN) but keeps
its PSNR/SSIM.
"""
from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import Metric

from sr_lightning.ops.color import BT601_MATRIX, BT601_OFFSET

__all__ = ["image_metrics", "SRMetrics", "to_uint8_values", "rgb_to_y_uint8_values", "psnr", "ssim",
           "load_lpips", "lpips_weights_path", "LPIPS_MISSING", "METRIC_KEYS", "min_scored_size", "can_score",
           "LPIPS_MIN_SIZE", "SSIM_WINDOW"]

METRIC_KEYS = ("psnr_y", "ssim_y", "psnr_rgb", "ssim_rgb")
LPIPS_MISSING = "n/a (weights missing)"

_SSIM_SIGMA = 1.5       # torchmetrics derives the window size from sigma: 2*int(3.5*1.5+0.5)+1 = 11
_SSIM_RADIUS = 5        # (11 - 1) / 2: the border of the SSIM map that depends on padded pixels
_LUMA = BT601_MATRIX[0] / 219.0  # BT.601 luma weights on full range (0.299, 0.587, 0.114), ~MATLAB rgb2gray
SSIM_WINDOW = 2 * _SSIM_RADIUS + 1
# The smallest side (after the border crop) each LPIPS backbone accepts: below it their strided convolutions
# and max-poolings have nothing left to pool (found by running torchmetrics' networks on growing inputs).
LPIPS_MIN_SIZE = {"alex": 31, "vgg": 16, "squeeze": 17}


def min_scored_size(crop_border: int) -> int:
    """The smallest image side (HR, after the mod-crop) PSNR/SSIM can score: an SSIM window after the border crop."""
    return 2 * int(crop_border) + SSIM_WINDOW


def can_score(height: int, width: int, crop_border: int) -> bool:
    return min(int(height), int(width)) >= min_scored_size(crop_border)


class MetricsWarning(UserWarning):
    """An image was left out of a metric (too small for it)."""


def _round_half_up(x: Tensor) -> Tensor:
    # MATLAB's double->uint8 rounds half away from zero (torch.round rounds half to even); x >= 0 here.
    return torch.floor(x + 0.5)


def to_uint8_values(x: Tensor) -> Tensor:
    """[0,1] float -> float64 tensor holding the integers 0..255 a saved PNG would hold."""
    return _round_half_up(x.detach().to(torch.float64).clamp(0.0, 1.0) * 255.0)


def rgb_to_y_uint8_values(rgb: Tensor) -> Tensor:
    """(…,3,H,W) values 0..255 -> (…,1,H,W) MATLAB ``rgb2ycbcr`` Y of a uint8 image (rounded, 16..235)."""
    w = torch.as_tensor(BT601_MATRIX[0] / 255.0, dtype=rgb.dtype, device=rgb.device)
    return _round_half_up(torch.einsum("c,...chw->...hw", w, rgb).unsqueeze(-3) + BT601_OFFSET[0])


def _rgb_to_gray_uint8_values(rgb: Tensor) -> Tensor:
    w = torch.as_tensor(_LUMA, dtype=rgb.dtype, device=rgb.device)
    return _round_half_up(torch.einsum("c,...chw->...hw", w, rgb).unsqueeze(-3))


def psnr(a: Tensor, b: Tensor) -> float:
    """PSNR (peak 255) of one image pair of 0..255 values; ``inf`` for identical images."""
    # Our own two lines rather than torchmetrics: its module pools the MSE over a set (see the module
    # docstring) and its functional form takes the log in float32 (~1e-6 dB off); this is exact in float64.
    mse = float(torch.mean((a.to(torch.float64) - b.to(torch.float64)) ** 2))
    return math.inf if mse == 0.0 else 10.0 * math.log10(255.0 ** 2 / mse)


def _gaussian_taps() -> list[float]:
    """The 11 normalised taps of the 1-D Gaussian (sigma 1.5); the 2-D window of fspecial is their outer product."""
    g = [math.exp(-(k * k) / (2 * _SSIM_SIGMA ** 2)) for k in range(-_SSIM_RADIUS, _SSIM_RADIUS + 1)]
    return [v / sum(g) for v in g]


_TAPS = _gaussian_taps()


def _filter_valid(x: Tensor) -> Tensor:
    """Separable Gaussian filtering of the last two dims, MATLAB ``filter2(w, x, 'valid')`` extent."""
    g = torch.tensor(_TAPS, dtype=x.dtype, device=x.device)
    flat = x.reshape(-1, 1, *x.shape[-2:])
    flat = F.conv2d(F.conv2d(flat, g.view(1, 1, -1, 1)), g.view(1, 1, 1, -1))   # columns, then rows
    return flat.reshape(*x.shape[:-2], *flat.shape[-2:])


def ssim(a: Tensor, b: Tensor) -> float:
    """Mean SSIM (Wang et al., 11x11 Gaussian sigma 1.5, peak 255) of one (C,H,W) pair, valid region only.

    Multi-channel inputs are scored per channel and the channel SSIMs averaged (the usual RGB SSIM).

    Equal to torchmetrics' ``structural_similarity_index_measure(..., return_full_image=True)`` map cropped
    by 5 px (tests/test_metrics.py checks it), but computed here: the Gaussian window is separable, so the
    'valid' filtering is an 11x1 and a 1x11 convolution, several times faster on CPU than torchmetrics'
    float64 11x11 depthwise convolution, and in float64 (no E[x^2]-E[x]^2 cancellation at float32 precision).
    """
    h, w = a.shape[-2:]
    if min(h, w) < 2 * _SSIM_RADIUS + 1:
        raise ValueError(f"SSIM needs images of at least 11x11 pixels after the border crop, got {h}x{w}")
    a, b = a.to(torch.float64), b.to(torch.float64)
    stats = _filter_valid(torch.stack([a, b, a * a, b * b, a * b]))   # (5, C, h-10, w-10) local means
    mu_a, mu_b, e_aa, e_bb, e_ab = stats
    var_a, var_b, cov = e_aa - mu_a ** 2, e_bb - mu_b ** 2, e_ab - mu_a * mu_b
    c1, c2 = (0.01 * 255.0) ** 2, (0.03 * 255.0) ** 2
    ssim_map = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2))
    return float(ssim_map.mean())


def _gray_values(x: Tensor) -> Tensor:
    return x if x.shape[0] == 1 else _rgb_to_gray_uint8_values(x)


def image_metrics(sr: Tensor, hr: Tensor, crop_border: int, gray: bool | None = None) -> dict[str, float]:
    """Paper-convention metrics of one image: ``dict(psnr_y, ssim_y, psnr_rgb, ssim_rgb)``.

    ``sr`` and ``hr`` are (C,H,W) tensors in [0,1] with C = 3 (RGB) or 1 (grey / Y) and equal sizes.
    ``gray``: the HR file is a grayscale image (score grey values, not Y); ``None`` = HR has one channel.
    """
    if sr.ndim != 3 or hr.ndim != 3:
        raise ValueError(f"image_metrics: expected (C,H,W) tensors, got sr {tuple(sr.shape)}, hr {tuple(hr.shape)}")
    if sr.shape[-2:] != hr.shape[-2:]:
        raise ValueError(f"image_metrics: SR size {tuple(sr.shape[-2:])} != HR size {tuple(hr.shape[-2:])}; "
                         "the HR must be mod-cropped to the scale and the model must upscale by exactly that scale")
    if sr.shape[0] not in (1, 3) or hr.shape[0] not in (1, 3):
        raise ValueError(f"image_metrics: expected 1 or 3 channels, got sr {sr.shape[0]}, hr {hr.shape[0]}")
    if gray is None:
        gray = hr.shape[0] == 1
    if sr.shape[0] == 1 and hr.shape[0] == 3 and not gray:
        raise ValueError("image_metrics: 1-channel SR against an RGB HR; merge the Y output with bicubic CbCr "
                         "(sr_lightning.ops.color.ycbcr2rgb) before scoring")
    crop_border = int(crop_border)
    if crop_border < 0:
        raise ValueError(f"image_metrics: crop_border must be >= 0, got {crop_border}")
    sr8, hr8 = to_uint8_values(sr), to_uint8_values(hr.to(sr.device))
    if crop_border:
        sr8 = sr8[..., crop_border:-crop_border, crop_border:-crop_border]
        hr8 = hr8[..., crop_border:-crop_border, crop_border:-crop_border]
    if sr8.shape[-1] == 0 or sr8.shape[-2] == 0:
        raise ValueError(f"image_metrics: crop_border={crop_border} removes the whole {tuple(sr.shape[-2:])} image")

    if gray:
        sr_y, hr_y = _gray_values(sr8), _gray_values(hr8)
        sr_rgb, hr_rgb = sr8, hr_y.expand_as(sr8)
    else:
        sr_y, hr_y = rgb_to_y_uint8_values(sr8), rgb_to_y_uint8_values(hr8)
        sr_rgb, hr_rgb = sr8, hr8
    return {
        "psnr_y": psnr(sr_y, hr_y),
        "ssim_y": ssim(sr_y, hr_y),
        "psnr_rgb": psnr(sr_rgb, hr_rgb),
        "ssim_rgb": ssim(sr_rgb, hr_rgb),
    }


class SRMetrics(Metric):
    """Mean per-image paper metrics over a dataset (DDP-safe: sums and a count, reduced by summation).

    ``update(sr, hr)`` takes (N,C,H,W) batches in [0,1]; each image contributes one value per metric.
    ``compute()`` returns ``{"psnr_y", "ssim_y", "psnr_rgb", "ssim_rgb"}`` means (plus ``"lpips"`` when an
    LPIPS scorer is given). An identical SR/HR pair has PSNR ``inf`` and so does the mean.
    """

    full_state_update = False
    is_differentiable = False
    higher_is_better = True

    def __init__(self, crop_border: int, lpips: Callable[[Tensor, Tensor], Tensor] | None = None, **kwargs):
        super().__init__(**kwargs)
        self.crop_border = int(crop_border)
        self.lpips_scorer = lpips
        self._keys = METRIC_KEYS + (("lpips",) if lpips is not None else ())
        for key in self._keys:
            self.add_state(key, default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        # Images too small to score (see the module docstring), and how many images have an LPIPS value.
        self.add_state("skipped", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("lpips_count", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, sr: Tensor, hr: Tensor,  # type: ignore[override]
               gray: Sequence[bool] | Tensor | None = None) -> None:
        """``gray``: per image, whether its HR file is grayscale (see the module docstring); default: 1-channel HR."""
        if sr.ndim != 4 or hr.ndim != 4 or sr.shape[0] != hr.shape[0]:
            raise ValueError(f"SRMetrics.update: expected (N,C,H,W) batches of equal N, "
                             f"got sr {tuple(sr.shape)}, hr {tuple(hr.shape)}")
        for i in range(sr.shape[0]):
            if not can_score(*hr.shape[-2:], self.crop_border):
                # The data module drops these up front (naming the file); this catches sources of unknown size.
                warnings.warn(f"an image of {hr.shape[-1]}x{hr.shape[-2]} px is too small to score (PSNR/SSIM "
                              f"need >= {min_scored_size(self.crop_border)} px per side at crop_border="
                              f"{self.crop_border}); left out of the means", MetricsWarning, stacklevel=2)
                self.skipped += 1
                continue
            values = image_metrics(sr[i], hr[i], self.crop_border, None if gray is None else bool(gray[i]))
            if self.lpips_scorer is not None:
                value = lpips_value(self.lpips_scorer, sr[i], hr[i], self.crop_border)
                values["lpips"] = 0.0 if math.isnan(value) else value
                self.lpips_count += 0 if math.isnan(value) else 1
            for key in self._keys:
                setattr(self, key, getattr(self, key) + values[key])
            self.count += 1

    def compute(self) -> dict[str, Tensor]:  # type: ignore[override]
        n = self.count.clamp_min(1).to(torch.float64)
        out = {key: getattr(self, key) / n for key in METRIC_KEYS}
        if "lpips" in self._keys:
            out["lpips"] = self.lpips / self.lpips_count.clamp_min(1).to(torch.float64)
        return out


# --- LPIPS ----------------------------------------------------------------------------------------------------

_LPIPS_BACKBONES = {"alex": ("alexnet", "AlexNet_Weights"), "vgg": ("vgg16", "VGG16_Weights"),
                    "squeeze": ("squeezenet1_1", "SqueezeNet1_1_Weights")}


def lpips_weights_path(net_type: str = "alex") -> Path:
    """Where torchvision keeps the ImageNet backbone that LPIPS needs (``$TORCH_HOME/hub/checkpoints/...``)."""
    import torchvision

    if net_type not in _LPIPS_BACKBONES:
        raise ValueError(f"LPIPS net_type must be one of {sorted(_LPIPS_BACKBONES)}, got {net_type!r}")
    weights = getattr(torchvision.models, _LPIPS_BACKBONES[net_type][1]).DEFAULT
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights.url)


def load_lpips(net_type: str = "alex", device: torch.device | str = "cpu"):
    """A torchmetrics LPIPS scorer when its backbone weights are already cached, else ``None``.

    We look for the cached file instead of letting torchvision download it: offline machines would hang on
    the download, and LPIPS from a randomly initialised backbone is meaningless, so callers report
    ``LPIPS_MISSING`` instead of a number. (LPIPS' own linear layers ship inside torchmetrics.)
    """
    if not lpips_weights_path(net_type).is_file():
        return None
    from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity

    scorer = LearnedPerceptualImagePatchSimilarity(net_type=net_type, normalize=True)
    scorer.min_size = LPIPS_MIN_SIZE[net_type]   # read by lpips_value
    return scorer.to(device).eval()


@torch.no_grad()
def lpips_value(scorer, sr: Tensor, hr: Tensor, crop_border: int) -> float:
    """LPIPS of one (C,H,W) pair after the same uint8 rounding and border crop as PSNR/SSIM (grey -> 3 ch).

    NaN when the cropped image is smaller than the scorer's backbone accepts (`LPIPS_MIN_SIZE`).
    """
    sr8, hr8 = to_uint8_values(sr) / 255.0, to_uint8_values(hr) / 255.0
    if crop_border:
        sr8 = sr8[..., crop_border:-crop_border, crop_border:-crop_border]
        hr8 = hr8[..., crop_border:-crop_border, crop_border:-crop_border]
    if min(sr8.shape[-2:]) < getattr(scorer, "min_size", 1):
        return math.nan
    sr8, hr8 = sr8.expand(3, -1, -1), hr8.expand(3, -1, -1)
    device = next(scorer.parameters()).device
    scorer.reset()
    value = scorer(sr8[None].float().to(device), hr8[None].float().to(device))
    scorer.reset()
    return float(value)
