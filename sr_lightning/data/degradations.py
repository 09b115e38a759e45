"""Real-world degradations made on the training device, in batches (kornia): blur -> downscale -> noise -> JPEG.

The blur kernels follow the random-kernel protocol of DIV2KRK (Bell-Kligler et al., KernelGAN, 2019):
anisotropic Gaussians whose covariance has eigenvalues lambda1, lambda2 ~ U(0.6, 5) (variances in HR
pixels^2) and orientation theta ~ U(-pi, pi), multiplied by uniform noise in [1 - n, 1 + n] and normalised
to unit sum. The kernel mean is shifted by (scale - 1) / 2 so that subsampling every `scale`-th pixel samples
the centre of each scale x scale block: the LR stays aligned with its HR exactly as a bicubic LR is.

Everything is drawn from one `torch.Generator` seeded per batch (`seed`, batch counter), so a run is
reproducible, and runs on any device: BasicSR's equivalent needs CUDA, this works on CPU too.
"""
from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor


def covariance_matrices(lambda1: Tensor, lambda2: Tensor, theta: Tensor) -> Tensor:
    """(N, 2, 2) covariances R(theta) diag(lambda1, lambda2) R(theta)^T in (x, y) = (column, row) order."""
    c, s = torch.cos(theta), torch.sin(theta)
    rot = torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], -2)  # (N, 2, 2)
    diag = torch.diag_embed(torch.stack([lambda1, lambda2], -1))
    return rot @ diag @ rot.transpose(-1, -2)


def gaussian_kernels(cov: Tensor, size: int, mean: Sequence[float] = (0.0, 0.0),
                     noise: Tensor | None = None) -> Tensor:
    """(N, size, size) kernels exp(-0.5 d^T cov^-1 d) (times `noise`), normalised to unit sum.

    `d` is the offset (x - mean_x, y - mean_y) from the kernel centre; index [i, j] is row (y) i, column (x) j,
    as kornia's `filter2d` (a correlation) reads it.
    """
    if size < 1 or size % 2 == 0:
        raise ValueError(f"kernel size must be odd and >= 1, got {size}")
    half = size // 2
    coords = torch.arange(-half, half + 1, dtype=cov.dtype, device=cov.device)
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    mx, my = float(mean[0]), float(mean[1])
    d = torch.stack([xx - mx, yy - my], -1)  # (size, size, 2) offsets in (x, y)
    inv = torch.linalg.inv(cov)  # (N, 2, 2)
    mahalanobis = torch.einsum("hwi,nij,hwj->nhw", d, inv, d)
    kernels = torch.exp(-0.5 * mahalanobis)
    if noise is not None:
        kernels = kernels * noise
    return kernels / kernels.sum(dim=(-2, -1), keepdim=True)


def kernel_moments(kernels: Tensor) -> tuple[Tensor, Tensor]:
    """(mean (N, 2) in (x, y), covariance (N, 2, 2)) of kernels read as distributions over pixel offsets."""
    size = kernels.shape[-1]
    half = size // 2
    coords = torch.arange(-half, half + 1, dtype=kernels.dtype, device=kernels.device)
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    p = kernels / kernels.sum(dim=(-2, -1), keepdim=True)
    mx, my = (p * xx).sum((-2, -1)), (p * yy).sum((-2, -1))
    dx, dy = xx - mx[:, None, None], yy - my[:, None, None]
    cxx, cyy, cxy = (p * dx * dx).sum((-2, -1)), (p * dy * dy).sum((-2, -1)), (p * dx * dy).sum((-2, -1))
    cov = torch.stack([torch.stack([cxx, cxy], -1), torch.stack([cxy, cyy], -1)], -2)
    return torch.stack([mx, my], -1), cov


def _uniform(n: int, bounds: Sequence[float], generator: torch.Generator, device) -> Tensor:
    lo, hi = float(bounds[0]), float(bounds[1])
    return lo + (hi - lo) * torch.rand(n, generator=generator, device=device, dtype=torch.float32)


@dataclass
class DegradationParams:
    """What was drawn for one batch (for logging and tests)."""

    lambda1: Tensor
    lambda2: Tensor
    theta: Tensor
    kernels: Tensor
    noise_sigma: Tensor | None = None
    jpeg_quality: Tensor | None = None


class RandomDegradation:
    """Random anisotropic blur, `scale`-fold downscaling, optional Gaussian/Poisson noise and JPEG.

    Args:
        scale: downscaling factor.
        kernel_size: odd kernel size (>= 11; 21 fits the widest kernels of the default ranges).
        lambda_range: range of the covariance eigenvalues (variances, HR px^2).
        theta_range: range of the orientation (radians).
        kernel_noise: multiplicative kernel noise amplitude n (factor ~ U(1 - n, 1 + n) per tap); 0 = none.
        downsample: `stride` (subsample the blurred image, the DIV2KRK protocol) or `bicubic`.
        gaussian_noise: [min, max] standard deviation in grey levels (0-255), or null for none.
        poisson_noise: [min, max] photon count at white (lower = noisier), or null for none.
        noise_prob: probability that a sample gets noise at all (each of the configured kinds).
        jpeg_quality: [min, max] JPEG quality, or null for no compression.
        seed: base seed; batch b uses seed (seed, b) so runs repeat exactly.
    """

    def __init__(self, scale: int, kernel_size: int = 21, lambda_range: Sequence[float] = (0.6, 5.0),
                 theta_range: Sequence[float] = (-math.pi, math.pi), kernel_noise: float = 0.25,
                 downsample: str = "stride", gaussian_noise: Sequence[float] | None = None,
                 poisson_noise: Sequence[float] | None = None, noise_prob: float = 1.0,
                 jpeg_quality: Sequence[float] | None = None, seed: int = 0):
        if kernel_size < 11 or kernel_size % 2 == 0:
            raise ValueError(f"degradation.kernel_size: got {kernel_size}; allowed: an odd number >= 11")
        if downsample not in ("stride", "bicubic"):
            raise ValueError(f"degradation.downsample: got {downsample!r}; allowed: stride, bicubic")
        if not (0 < lambda_range[0] <= lambda_range[1]):
            raise ValueError(f"degradation.lambda_range: got {list(lambda_range)}; allowed: 0 < min <= max")
        if not 0 <= kernel_noise < 1:
            raise ValueError(f"degradation.kernel_noise: got {kernel_noise}; allowed: 0 <= n < 1")
        self.scale = int(scale)
        self.kernel_size = int(kernel_size)
        self.lambda_range = tuple(float(v) for v in lambda_range)
        self.theta_range = tuple(float(v) for v in theta_range)
        self.kernel_noise = float(kernel_noise)
        self.downsample = downsample
        self.gaussian_noise = tuple(gaussian_noise) if gaussian_noise else None
        self.poisson_noise = tuple(poisson_noise) if poisson_noise else None
        self.noise_prob = float(noise_prob)
        self.jpeg_quality = tuple(jpeg_quality) if jpeg_quality else None
        self.seed = int(seed)
        self.batches = 0

    def __repr__(self) -> str:
        return (f"RandomDegradation(scale={self.scale}, kernel_size={self.kernel_size}, lambda={self.lambda_range}, "
                f"noise={self.gaussian_noise or self.poisson_noise}, jpeg={self.jpeg_quality})")

    # -- random draws ------------------------------------------------------------------------------------------
    def generator(self, device, key: int | None = None) -> torch.Generator:
        """A generator for the next training batch (key=None) or for a fixed key (e.g. a val image name)."""
        if key is None:
            key = self.batches
            self.batches += 1
        g = torch.Generator(device=device)
        g.manual_seed((self.seed * 1_000_003 + int(key)) % (2**63 - 1))
        return g

    @staticmethod
    def name_key(name: str) -> int:
        return zlib.crc32(name.encode()) + 2**32  # apart from batch counters

    def sample_kernels(self, n: int, generator: torch.Generator, device) -> DegradationParams:
        lambda1 = _uniform(n, self.lambda_range, generator, device)
        lambda2 = _uniform(n, self.lambda_range, generator, device)
        theta = _uniform(n, self.theta_range, generator, device)
        cov = covariance_matrices(lambda1, lambda2, theta)
        noise = None
        if self.kernel_noise > 0:
            k = self.kernel_size
            noise = 1.0 + self.kernel_noise * (2 * torch.rand(n, k, k, generator=generator, device=device) - 1)
        # Shift so that stride subsampling (pixels 0, s, 2s, ...) samples block centres: see module docstring.
        shift = (self.scale - 1) / 2.0 if self.downsample == "stride" else 0.0
        kernels = gaussian_kernels(cov, self.kernel_size, (shift, shift), noise)
        return DegradationParams(lambda1, lambda2, theta, kernels)

    # -- the degradation ---------------------------------------------------------------------------------------
    def __call__(self, hr: Tensor, generator: torch.Generator | None = None,
                 return_params: bool = False) -> Tensor | tuple[Tensor, DegradationParams]:
        """(N, C, H, W) HR in [0, 1] -> (N, C, H/scale, W/scale) LR in [0, 1], quantised to 8 bit."""
        from kornia.filters import filter2d

        if hr.ndim != 4:
            raise ValueError(f"RandomDegradation expects (N, C, H, W), got {tuple(hr.shape)}")
        n, c, h, w = hr.shape
        if h % self.scale or w % self.scale:
            raise ValueError(f"RandomDegradation: HR size {h}x{w} is not divisible by scale={self.scale}")
        device = hr.device
        g = generator if generator is not None else self.generator(device)
        x = hr.float()
        params = self.sample_kernels(n, g, device)
        blurred = filter2d(x, params.kernels.to(x.dtype), border_type="reflect")
        if self.downsample == "stride":
            lr = blurred[..., :: self.scale, :: self.scale]
        else:
            from sr_lightning.ops.imresize import imresize

            lr = imresize(blurred, scale=1.0 / self.scale)
        lr = self._add_noise(lr, g, params)
        lr = lr.clamp(0.0, 1.0)
        if self.jpeg_quality:
            lr = self._jpeg(lr, g, params)
        lr = torch.round(lr.clamp(0.0, 1.0) * 255.0) / 255.0  # real LR images are 8-bit files
        lr = lr.to(hr.dtype)
        return (lr, params) if return_params else lr

    def _add_noise(self, lr: Tensor, g: torch.Generator, params: DegradationParams) -> Tensor:
        n = lr.shape[0]
        device = lr.device
        if self.gaussian_noise:
            sigma = _uniform(n, self.gaussian_noise, g, device) / 255.0
            on = (torch.rand(n, generator=g, device=device) < self.noise_prob).float()
            noise = torch.randn(lr.shape, generator=g, device=device, dtype=lr.dtype)
            lr = lr + noise * (sigma * on).view(n, 1, 1, 1)
            params.noise_sigma = sigma * on
        if self.poisson_noise:
            peak = _uniform(n, self.poisson_noise, g, device).view(n, 1, 1, 1)
            on = (torch.rand(n, generator=g, device=device) < self.noise_prob).view(n, 1, 1, 1)
            counts = torch.poisson(lr.clamp(0, 1) * peak, generator=g)
            lr = torch.where(on, counts / peak, lr)
        return lr

    def _jpeg(self, lr: Tensor, g: torch.Generator, params: DegradationParams) -> Tensor:
        from kornia.enhance import jpeg_codec_differentiable

        n, c = lr.shape[:2]
        quality = _uniform(n, self.jpeg_quality, g, lr.device).round()
        params.jpeg_quality = quality
        rgb = lr if c == 3 else lr[:, :1].expand(n, 3, *lr.shape[2:])  # the codec wants RGB; Y -> gray RGB
        with torch.no_grad():
            out = jpeg_codec_differentiable(rgb.contiguous(), quality.to(lr.dtype))
        return out if c == 3 else out.mean(dim=1, keepdim=True)
