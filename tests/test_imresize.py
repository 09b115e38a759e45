"""MATLAB-compatible imresize: hand-computed border values, sizes, torch/numpy agreement and the benchmark LR files."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from sr_lightning.ops.imresize import imresize, imresize_np, output_size, resize_weights


def test_border_value_hand_computed_matches_matlab_symmetric_padding():
    # imresize(1:8, 2) in MATLAB: output 1 sits at input coordinate u = 0.75; its taps -1, 0, 1, 2 mirror to
    # 2, 1, 1, 2 with Keys weights c(1.75), c(0.75), c(0.25), c(1.25) = -0.0234375, 0.2265625, 0.8671875,
    # -0.0703125 -> 0.90625. A replicate (clamp) border, as in F.interpolate, would give 0.9296875.
    ramp = torch.arange(1, 9, dtype=torch.float64).view(1, 1, 8)
    out = imresize(ramp, scale=(1, 2))
    assert out.shape == (1, 1, 16)
    assert out[0, 0, 0].item() == pytest.approx(0.90625, abs=1e-12)
    # Cubic convolution reproduces linear functions exactly away from the border, at MATLAB's sample
    # positions u = x/2 + 0.25 (1-based).
    x = torch.arange(1, 17, dtype=torch.float64)
    interior = slice(3, 13)
    assert torch.allclose(out[0, 0, interior], (x / 2 + 0.25)[interior], atol=1e-12)


def test_output_size_is_ceil_and_size_argument():
    assert output_size((255, 255), scale=1 / 3)[0] == (85, 85)     # not 86 from 85.00000000000001
    assert output_size((10, 7), scale=0.5)[0] == (5, 4)            # ceil(3.5) = 4
    assert output_size((10, 7), size=(20, None))[0] == (20, 14)
    x = torch.rand(3, 10, 7)
    assert imresize(x, 0.5).shape == (3, 5, 4)
    assert imresize(x, size=(13, 9)).shape == (3, 13, 9)
    assert imresize(x[None], 4).shape == (1, 3, 40, 28)


@pytest.mark.parametrize("scale", [1 / 4, 1 / 3, 2, 3.5])
def test_weights_rows_sum_to_one_and_constant_is_preserved(scale):
    w = resize_weights(37, output_size((37, 37), scale)[0][0], scale)
    assert np.allclose(w.sum(axis=1), 1.0)
    const = torch.full((2, 37, 37), 0.37, dtype=torch.float64)
    assert torch.allclose(imresize(const, scale), torch.full_like(imresize(const, scale), 0.37))


def test_antialias_flag_changes_downscaling_only():
    x = torch.rand(1, 16, 16, dtype=torch.float64)
    assert not torch.allclose(imresize(x, 0.5), imresize(x, 0.5, antialias=False))
    assert torch.equal(imresize(x, 2), imresize(x, 2, antialias=False))


def test_torch_and_numpy_agree_and_uint8_rounds():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, size=(21, 18, 3), dtype=np.uint8)
    t = torch.from_numpy(img).permute(2, 0, 1).double()
    ref = imresize(t, 1 / 3).permute(1, 2, 0).numpy()
    assert np.allclose(imresize_np(img.astype(np.float64), 1 / 3), ref, atol=1e-10)
    out8 = imresize_np(img, 1 / 3)
    assert out8.dtype == np.uint8
    assert np.array_equal(out8, np.clip(np.floor(ref + 0.5), 0, 255).astype(np.uint8))
    gray = imresize_np(img[..., 0], 2)
    assert gray.shape == (42, 36) and gray.dtype == np.uint8


def test_differentiable_and_dtype_preserved():
    x = torch.rand(1, 2, 6, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: imresize(t, 0.5), (x,))
    assert imresize(torch.rand(1, 8, 8, dtype=torch.float32), 2).dtype == torch.float32


def test_bad_input_errors_name_the_problem():
    with pytest.raises(ValueError, match="exactly one of"):
        imresize(torch.rand(1, 4, 4))
    with pytest.raises(ValueError, match="unknown kernel"):
        imresize(torch.rand(1, 4, 4), 2, kernel="sinc")
    with pytest.raises(TypeError, match="floating-point"):
        imresize(torch.zeros(1, 4, 4, dtype=torch.uint8), 2)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_cuda_matches_cpu():
    x = torch.rand(2, 3, 40, 36)
    assert torch.allclose(imresize(x.cuda(), 1 / 4).cpu(), imresize(x, 1 / 4), atol=1e-5)


@pytest.mark.parametrize("set_name", ["Set5", "Set14"])
def test_downscaling_hr_regenerates_benchmark_lr_files(benchmarks_dir, set_name):
    """Our x4 downscale of HR matches the MATLAB-made LR files as closely as the reference implementation does."""
    ref = json.loads((benchmarks_dir / "reference_bicubic.json").read_text())
    for entry in ref["sets"][f"{set_name}/x4"]["images"]:
        folder = benchmarks_dir / set_name / "x4"
        hr = np.array(Image.open(folder / "HR" / entry["image"]))
        lr = np.array(Image.open(folder / "LR" / entry["image"]))
        ours = imresize_np(hr, 1 / 4)
        assert ours.shape == lr.shape, entry["image"]
        diff = np.abs(ours.astype(np.float64) - lr).mean()
        assert diff < 1.0, entry["image"]
        assert diff == pytest.approx(entry["lr_regen_mean_abs_diff"], abs=0.005), entry["image"]
