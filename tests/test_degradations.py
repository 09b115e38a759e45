"""Real-world degradations: kernel statistics, alignment, reproducibility and the DataModule hook (CPU)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from sr_lightning.data import FolderSource, SRDataModule
from sr_lightning.data.degradations import (
    RandomDegradation,
    covariance_matrices,
    gaussian_kernels,
    kernel_moments,
)
from sr_lightning.ops.imresize import imresize


def _smooth_batch(n=2, c=3, size=48, seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    small = torch.rand(n, c, size // 8, size // 8, generator=g)
    return torch.nn.functional.interpolate(small, size=(size, size), mode="bicubic", align_corners=False).clamp(0, 1)


def test_kernels_have_unit_sum_and_requested_covariance():
    lambda1 = torch.tensor([0.6, 5.0, 2.0, 1.0], dtype=torch.float64)
    lambda2 = torch.tensor([0.6, 0.6, 4.5, 3.0], dtype=torch.float64)
    theta = torch.tensor([0.0, 0.3, -1.2, 2.5], dtype=torch.float64)
    cov = covariance_matrices(lambda1, lambda2, theta)
    # Eigenvalues of the covariance are the lambdas, whatever the angle.
    eig = torch.linalg.eigvalsh(cov)
    torch.testing.assert_close(eig, torch.sort(torch.stack([lambda1, lambda2], -1), -1).values)
    kernels = gaussian_kernels(cov, 41)  # large enough that truncation is negligible
    torch.testing.assert_close(kernels.sum((-2, -1)), torch.ones(4, dtype=torch.float64))
    mean, measured = kernel_moments(kernels)
    torch.testing.assert_close(mean, torch.zeros(4, 2, dtype=torch.float64), atol=1e-9, rtol=0)
    torch.testing.assert_close(measured, cov, atol=0.01, rtol=0.01)
    # Orientation: the long axis of kernel 1 (lambda1=5 along theta=0.3) points along (cos 0.3, sin 0.3).
    vals, vecs = torch.linalg.eigh(measured[1])
    major = vecs[:, -1]
    assert abs(abs(float(major @ torch.tensor([math.cos(0.3), math.sin(0.3)], dtype=torch.float64))) - 1) < 1e-3


def test_sampled_kernels_unit_sum_with_noise_and_shift():
    deg = RandomDegradation(scale=4, kernel_size=21, kernel_noise=0.25, seed=3)
    params = deg.sample_kernels(64, torch.Generator().manual_seed(0), "cpu")
    k = params.kernels
    assert k.shape == (64, 21, 21) and (k >= 0).all()
    torch.testing.assert_close(k.sum((-2, -1)), torch.ones(64))
    assert params.lambda1.min() >= 0.6 and params.lambda1.max() <= 5.0
    assert params.theta.min() >= -math.pi and params.theta.max() <= math.pi
    # Without noise, kernels are centred on the block centre (scale-1)/2 and have the drawn covariance.
    clean = RandomDegradation(scale=4, kernel_size=31, kernel_noise=0.0).sample_kernels(
        8, torch.Generator().manual_seed(1), "cpu")
    mean, cov = kernel_moments(clean.kernels.double())
    torch.testing.assert_close(mean, torch.full((8, 2), 1.5, dtype=torch.float64), atol=0.02, rtol=0)
    want = covariance_matrices(clean.lambda1, clean.lambda2, clean.theta).double()
    torch.testing.assert_close(cov, want, atol=0.05, rtol=0.03)


def test_degraded_lr_is_aligned_with_hr():
    # A narrow, isotropic kernel + stride subsampling must land where bicubic does (no half-pixel shift).
    hr = _smooth_batch(n=1, size=64)
    deg = RandomDegradation(scale=4, kernel_size=11, lambda_range=(0.6, 0.6), kernel_noise=0.0)
    lr = deg(hr, torch.Generator().manual_seed(0))
    bic = imresize(hr, scale=0.25)
    err = (lr - bic).abs()[..., 2:-2, 2:-2].mean()
    shifted = (lr[..., :, 1:] - bic[..., :, :-1]).abs()[..., 2:-2, 2:-2].mean()
    assert err < 0.02 and err < shifted / 2, (float(err), float(shifted))


def test_output_is_quantised_and_reproducible():
    hr = _smooth_batch(n=3)
    deg_a = RandomDegradation(scale=2, gaussian_noise=(1, 10), jpeg_quality=(50, 90), seed=5)
    deg_b = RandomDegradation(scale=2, gaussian_noise=(1, 10), jpeg_quality=(50, 90), seed=5)
    first = deg_a(hr)
    assert first.shape == (3, 3, 24, 24)
    torch.testing.assert_close(first * 255, (first * 255).round())
    assert first.min() >= 0 and first.max() <= 1
    torch.testing.assert_close(first, deg_b(hr))  # same seed, same batch index -> same LR
    second = deg_a(hr)
    assert not torch.equal(first, second)  # next batch: fresh draws


def test_noise_and_jpeg_change_the_image():
    hr = _smooth_batch(n=2)
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    clean = RandomDegradation(scale=2, kernel_noise=0.0)(hr, g())
    noisy, params = RandomDegradation(scale=2, kernel_noise=0.0, gaussian_noise=(20, 20))(hr, g(), return_params=True)
    assert 10 / 255 < (noisy - clean).std() < 30 / 255
    torch.testing.assert_close(params.noise_sigma, torch.full((2,), 20 / 255))
    poisson = RandomDegradation(scale=2, kernel_noise=0.0, poisson_noise=(30, 30))(hr, g())
    assert (poisson - clean).abs().mean() > 2 / 255
    jpeg = RandomDegradation(scale=2, kernel_noise=0.0, jpeg_quality=(10, 10))(hr, g())
    assert 0.5 / 255 < (jpeg - clean).abs().mean() < 0.1
    y = RandomDegradation(scale=2, jpeg_quality=(30, 30))(hr[:, :1], g())  # Y-channel input
    assert y.shape == (2, 1, 24, 24)


def test_bad_arguments_name_the_key():
    with pytest.raises(ValueError, match="kernel_size.*odd number >= 11"):
        RandomDegradation(scale=4, kernel_size=9)
    with pytest.raises(ValueError, match="downsample"):
        RandomDegradation(scale=4, downsample="area")


def test_datamodule_degrades_on_device_hook(tmp_path):
    from PIL import Image

    folder = tmp_path / "hr"
    folder.mkdir()
    for i in range(2):
        arr = (_smooth_batch(n=1, size=48, seed=i)[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        Image.fromarray(arr).save(folder / f"{i}.png")
    dm = SRDataModule(FolderSource(folder), FolderSource(folder), scale=4, crop=32, batch_size=2,
                      patches_per_image=2, value_range=[-1, 1], degradation={"kernel_size": 11, "jpeg_quality": [60, 90]})
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert "lr" not in batch  # the workers only crop; LR is made after the transfer
    batch = dm.on_after_batch_transfer(batch, 0)
    assert batch["lr"].shape == (2, 3, 8, 8)
    assert batch["lr"].min() >= -1 and batch["lr"].max() <= 1
    # Validation images get one fixed degradation each (keyed by name), the same every epoch.
    first = [dm.on_after_batch_transfer(b, 0)["lr"] for b in dm.val_dataloader()]
    again = [dm.on_after_batch_transfer(b, 0)["lr"] for b in dm.val_dataloader()]
    assert len(first) == 2 and first[0].shape == (1, 3, 12, 12)
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not torch.equal(first[0], dm.degrade_batch(next(iter(dm.val_dataloader()))["hr"]))
    assert dm.state_dict()["degradation_batches"] == 2  # only the training draws advance the counter


def test_degrade_batch_maps_the_value_range():
    """A [-1, 1] model gets the same LR as a [0, 1] model, mapped: the degradation itself works in [0, 1]."""
    cfg = {"kernel_size": 11, "jpeg_quality": None}
    unit = SRDataModule(None, None, scale=4, value_range=[0, 1], seed=3, degradation=cfg)
    signed = SRDataModule(None, None, scale=4, value_range=[-1, 1], seed=3, degradation=cfg)
    hr = _smooth_batch(n=2, size=32, seed=5)
    lr_unit = unit.degrade_batch(hr, keys=[7, 8])
    lr_signed = signed.degrade_batch(hr * 2 - 1, keys=[7, 8])
    assert lr_signed.min() < 0  # really in [-1, 1], not the [0, 1] output passed through
    diff = (lr_signed - (lr_unit * 2 - 1)).abs()
    # Both are quantised to 8 bit after the same draw: at most a rounding-boundary step apart, almost all equal.
    assert diff.max() <= 2 / 255 + 1e-6 and diff.mean() < 1e-4
