"""Paper-exact metrics: hand-computed cases, the torchmetrics pitfalls, and the reference bicubic numbers."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torchmetrics.functional.image import structural_similarity_index_measure
from torchmetrics.image import PeakSignalNoiseRatio

from sr_lightning.metrics import (
    LPIPS_MISSING,
    SRMetrics,
    image_metrics,
    load_lpips,
    lpips_weights_path,
    rgb_to_y_uint8_values,
    ssim,
)
from sr_lightning.ops import imresize
from sr_lightning.ops.color import rgb2y_uint8

# Published x4 bicubic means (SelfExSR / every SR paper's table) and the acceptance tolerances.
PUBLISHED_X4 = {"Set5": (28.42, 0.8104), "Set14": (26.00, 0.7027)}


def _u8(values) -> torch.Tensor:
    """Integer grey levels -> the [0,1] float tensor a data loader would give."""
    return torch.as_tensor(values, dtype=torch.float64) / 255.0


def _ssim_valid_reference(a: np.ndarray, b: np.ndarray) -> float:
    """Independent Wang et al. SSIM (MATLAB ssim_index.m): 11x11 Gaussian sigma 1.5, filter2 'valid'."""
    g = np.exp(-((np.arange(11) - 5.0) ** 2) / (2 * 1.5 ** 2))
    win = torch.from_numpy(np.outer(g, g) / np.outer(g, g).sum())[None, None]

    def filt(x):
        return F.conv2d(torch.from_numpy(x)[None, None], win)[0, 0]

    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mu1, mu2 = filt(a), filt(b)
    s11, s22, s12 = filt(a * a) - mu1 ** 2, filt(b * b) - mu2 ** 2, filt(a * b) - mu1 * mu2
    m = ((2 * mu1 * mu2 + c1) * (2 * s12 + c2)) / ((mu1 ** 2 + mu2 ** 2 + c1) * (s11 + s22 + c2))
    return float(m.mean())


# --- hand-computed cases ---------------------------------------------------------------------------------------

def test_identical_images_give_inf_psnr_and_unit_ssim():
    img = torch.rand(3, 32, 30)
    m = image_metrics(img, img.clone(), crop_border=4)
    assert m["psnr_y"] == math.inf and m["psnr_rgb"] == math.inf
    assert m["ssim_y"] == pytest.approx(1.0, abs=1e-12) and m["ssim_rgb"] == pytest.approx(1.0, abs=1e-12)


def test_known_mse_gives_known_psnr():
    rng = np.random.default_rng(1)
    hr = rng.integers(20, 230, size=(1, 24, 24))
    # +-5 grey levels on every pixel: MSE exactly 25 on the 1-channel (own values) image.
    sr = hr + np.where(rng.random(hr.shape) < 0.5, -5, 5)
    m = image_metrics(_u8(sr), _u8(hr), crop_border=0)
    assert m["psnr_y"] == pytest.approx(10 * math.log10(255 ** 2 / 25), abs=1e-9)
    assert m["psnr_rgb"] == pytest.approx(m["psnr_y"], abs=1e-9)
    # RGB: channel errors 0, 3, 4 everywhere -> MSE (0 + 9 + 16) / 3.
    hr3 = rng.integers(20, 230, size=(3, 16, 16))
    sr3 = hr3 + np.array([0, 3, 4])[:, None, None]
    m3 = image_metrics(_u8(sr3), _u8(hr3), crop_border=0)
    assert m3["psnr_rgb"] == pytest.approx(10 * math.log10(255 ** 2 / (25 / 3)), abs=1e-9)


def test_matlab_y_of_primaries_rounds_like_rgb2ycbcr():
    # MATLAB: rgb2ycbcr(uint8([255 0 0; 0 255 0; 0 0 255; 255 255 255; 0 0 0])) -> Y = 81, 145, 41, 235, 16.
    rgb = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 255], [0, 0, 0]]], dtype=np.uint8)
    expected = [81, 145, 41, 235, 16]
    assert rgb2y_uint8(rgb)[0].tolist() == expected
    t = torch.from_numpy(rgb).permute(2, 0, 1).double()
    assert rgb_to_y_uint8_values(t)[0, 0].tolist() == expected


def test_float_ycbcr_matches_matlab_and_round_trips():
    from sr_lightning.ops.color import rgb2ycbcr, rgb2ycbcr_uint8, ycbcr2rgb, ycbcr2rgb_uint8

    rgb = torch.rand(2, 3, 5, 7, dtype=torch.float64)
    assert torch.allclose(ycbcr2rgb(rgb2ycbcr(rgb)), rgb, atol=1e-12)
    y = rgb2ycbcr(rgb, y_only=True)
    assert y.shape == (2, 1, 5, 7)
    assert torch.allclose(y, (16 + 65.481 * rgb[:, :1] + 128.553 * rgb[:, 1:2] + 24.966 * rgb[:, 2:]) / 255)
    # White / black land on MATLAB's studio-swing limits: Y 235 / 16, Cb = Cr = 128.
    assert rgb2ycbcr_uint8(np.array([[[255, 255, 255], [0, 0, 0]]], dtype=np.uint8)).tolist() == \
        [[[235, 128, 128], [16, 128, 128]]]
    img = np.random.default_rng(5).integers(0, 256, size=(6, 6, 3), dtype=np.uint8)
    assert np.abs(ycbcr2rgb_uint8(rgb2ycbcr_uint8(img)).astype(int) - img).max() <= 2   # uint8 YCbCr quantises


def test_output_is_clamped_and_rounded_before_scoring():
    hr = _u8(np.full((1, 16, 16), 255))
    # Overshoot (bicubic ringing) above 1 is clamped; 254.6/255 rounds to 255: both identical to HR.
    sr = torch.full((1, 16, 16), 1.3, dtype=torch.float64)
    sr[0, :8] = 254.6 / 255
    assert image_metrics(sr, hr, 0)["psnr_y"] == math.inf


def test_crop_border_really_removes_pixels():
    hr = torch.rand(3, 40, 40)
    sr = hr.clone()
    sr[:, :4, :] = 0.0
    sr[:, :, -4:] = 1.0  # errors only in the outer 4 px
    assert image_metrics(sr, hr, crop_border=4)["psnr_rgb"] == math.inf
    assert math.isfinite(image_metrics(sr, hr, crop_border=3)["psnr_rgb"])


def test_ssim_is_wang_valid_region_not_torchmetrics_reflect_padding():
    rng = np.random.default_rng(2)
    hr = rng.integers(0, 256, size=(1, 40, 36)).astype(np.float64)
    sr = np.clip(hr + rng.normal(0, 20, size=hr.shape), 0, 255).round()
    ours = ssim(torch.from_numpy(sr), torch.from_numpy(hr))
    assert ours == pytest.approx(_ssim_valid_reference(sr[0], hr[0]), abs=1e-10)
    # torchmetrics' default averages the reflect-padded borders in: a different (wrong for papers) number.
    padded = float(structural_similarity_index_measure(torch.from_numpy(sr)[None], torch.from_numpy(hr)[None],
                                                       data_range=255.0))
    assert abs(padded - ours) > 1e-3
    # ... while its full SSIM map cropped by the window radius (5 px) is exactly the valid region: ours.
    _, full = structural_similarity_index_measure(torch.from_numpy(sr)[None], torch.from_numpy(hr)[None],
                                                  data_range=255.0, return_full_image=True)
    assert float(full[..., 5:-5, 5:-5].mean()) == pytest.approx(ours, abs=1e-10)
    assert image_metrics(_u8(sr), _u8(hr), 0)["ssim_y"] == pytest.approx(ours, abs=1e-12)


def test_pooled_mse_pitfall_of_torchmetrics_psnr_module():
    """Per-image PSNR mean (papers) != PSNR of the MSE pooled over the set (torchmetrics module default)."""
    hr = torch.full((2, 1, 16, 16), 128 / 255, dtype=torch.float64)
    sr = hr.clone()
    sr[0] += 2 / 255     # MSE 4
    sr[1] += 20 / 255    # MSE 400
    ours = SRMetrics(crop_border=0)
    ours.update(sr, hr)
    per_image = (10 * math.log10(255 ** 2 / 4) + 10 * math.log10(255 ** 2 / 400)) / 2
    pooled = 10 * math.log10(255 ** 2 / ((4 + 400) / 2))
    assert float(ours.compute()["psnr_y"]) == pytest.approx(per_image, abs=1e-9)
    tm = PeakSignalNoiseRatio(data_range=255.0)
    tm.update(sr * 255, hr * 255)
    assert float(tm.compute()) == pytest.approx(pooled, abs=1e-6)
    assert per_image - pooled > 7.0   # 31.14 vs 24.13 dB here; 0.3-1.1 dB on real test sets


# --- grayscale ------------------------------------------------------------------------------------------------

def test_gray_images_are_scored_on_their_own_values():
    rng = np.random.default_rng(3)
    hr = rng.integers(0, 256, size=(1, 24, 24))
    sr = np.clip(hr + rng.integers(-6, 7, size=hr.shape), 0, 255)
    one = image_metrics(_u8(sr), _u8(hr), 2)
    # The same grey file read as RGB (channels replicated) and flagged grey: identical numbers.
    three = image_metrics(_u8(sr).expand(3, -1, -1), _u8(hr).expand(3, -1, -1), 2, gray=True)
    for key in one:
        assert three[key] == pytest.approx(one[key], abs=1e-12)
    # Unflagged, an RGB image with equal channels is scored on MATLAB Y (16-235): PSNR higher by ~20log10(255/219).
    as_rgb = image_metrics(_u8(sr).expand(3, -1, -1), _u8(hr).expand(3, -1, -1), 2)
    assert as_rgb["psnr_y"] - one["psnr_y"] == pytest.approx(20 * math.log10(255 / 219), abs=0.1)
    # An RGB SR of a grey HR is reduced to grey with the luma weights (0.299, 0.587, 0.114), rounded.
    sr_rgb = torch.stack([_u8(sr[0]), _u8(np.full_like(sr[0], 100)), _u8(sr[0])])
    expected_gray = torch.floor(sr_rgb.mul(255).mul(torch.tensor([0.299, 0.587, 0.114],
                                dtype=torch.float64)[:, None, None]).sum(0, keepdim=True) + 0.5) / 255
    assert image_metrics(sr_rgb, _u8(hr), 2, gray=True)["psnr_y"] == pytest.approx(
        image_metrics(expected_gray, _u8(hr), 2)["psnr_y"], abs=1e-9)


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="SR size"):
        image_metrics(torch.rand(3, 16, 16), torch.rand(3, 17, 16), 0)
    with pytest.raises(ValueError, match="removes the whole"):
        image_metrics(torch.rand(3, 16, 16), torch.rand(3, 16, 16), 8)
    with pytest.raises(ValueError, match="1-channel SR against an RGB HR"):
        image_metrics(torch.rand(1, 16, 16), torch.rand(3, 16, 16), 0)


# --- SRMetrics (torchmetrics.Metric) ---------------------------------------------------------------------------

def test_srmetrics_means_per_image_values_and_merges_like_ddp():
    torch.manual_seed(0)
    hr = torch.rand(4, 3, 24, 24)
    sr = (hr + 0.05 * torch.randn_like(hr)).clamp(0, 1)
    expected = [image_metrics(sr[i], hr[i], 2) for i in range(4)]
    a, b = SRMetrics(crop_border=2), SRMetrics(crop_border=2)
    a.update(sr[:1], hr[:1])
    a.update(sr[1:2], hr[1:2])
    b.update(sr[2:], hr[2:])
    a.merge_state(b)   # the same sum reduction DDP's sync applies across ranks
    out = a.compute()
    assert int(a.count) == 4
    for key in ("psnr_y", "ssim_y", "psnr_rgb", "ssim_rgb"):
        assert float(out[key]) == pytest.approx(np.mean([e[key] for e in expected]), abs=1e-9)
    a.reset()
    assert int(a.count) == 0


# --- LPIPS ----------------------------------------------------------------------------------------------------

def test_lpips_is_none_when_backbone_weights_missing(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    assert not lpips_weights_path("alex").exists()
    assert load_lpips("alex") is None   # no download attempt, no random backbone
    assert LPIPS_MISSING == "n/a (weights missing)"


def test_lpips_scorer_built_from_cached_backbone(tmp_path, monkeypatch):
    import torchvision

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    path = lpips_weights_path("squeeze")
    path.parent.mkdir(parents=True)
    # A stand-in backbone file (the real one cannot be downloaded here): checks the cache lookup and plumbing.
    torch.save(torchvision.models.squeezenet1_1(weights=None).state_dict(), path)
    scorer = load_lpips("squeeze")
    assert scorer is not None
    img = torch.rand(1, 3, 32, 32)
    m = SRMetrics(crop_border=0, lpips=scorer)
    m.update(img, img)
    assert float(m.compute()["lpips"]) == pytest.approx(0.0, abs=1e-6)
    m.update((img + 0.3).clamp(0, 1), img)
    assert float(m.compute()["lpips"]) > 0


# --- acceptance: bicubic on the benchmark files ---------------------------------------------------------------

def _read(path) -> tuple[torch.Tensor, bool]:
    with Image.open(path) as im:
        gray = im.mode in ("L", "LA", "I", "I;16")
        rgb = np.array(im.convert("RGB"))
    return torch.from_numpy(rgb).permute(2, 0, 1).float() / 255.0, gray


@pytest.mark.parametrize("key", ["Set5/x3", "Set5/x4", "Set14/x4"])
def test_bicubic_reproduces_reference_per_image_and_published_means(benchmarks_dir, key):
    ref = json.loads((benchmarks_dir / "reference_bicubic.json").read_text())["sets"][key]
    set_name, sub = key.split("/")
    scale = int(sub[1:])
    values = []
    for entry in ref["images"]:
        hr, gray = _read(benchmarks_dir / key / "HR" / entry["image"])
        lr, _ = _read(benchmarks_dir / key / "LR" / entry["image"])
        assert gray == entry["gray"], entry["image"]
        sr = imresize(lr, scale)
        m = image_metrics(sr, hr, scale, gray=gray)
        assert m["psnr_y"] == pytest.approx(entry["psnr_y"], abs=0.02), entry["image"]
        assert m["ssim_y"] == pytest.approx(entry["ssim_y"], abs=0.001), entry["image"]
        assert m["psnr_rgb"] == pytest.approx(entry["psnr_rgb"], abs=0.02), entry["image"]
        values.append(m)
    # Set means as SRMetrics.compute forms them (the averaging itself is tested above).
    psnr_y, ssim_y = (float(np.mean([v[k] for v in values])) for k in ("psnr_y", "ssim_y"))
    assert psnr_y == pytest.approx(ref["mean"]["psnr_y"], abs=0.005)
    if scale == 4:
        psnr, ssim_ = PUBLISHED_X4[set_name]
        assert psnr_y == pytest.approx(psnr, abs=0.01)
        assert ssim_y == pytest.approx(ssim_, abs=0.0005)


def test_pooled_psnr_is_measurably_lower_on_set5(benchmarks_dir):
    """The pitfall on real data: torchmetrics' default PSNR module over Set5 x4 vs the per-image mean."""
    pooled = PeakSignalNoiseRatio(data_range=255.0)
    ours = SRMetrics(crop_border=4)
    for hr_path in sorted((benchmarks_dir / "Set5" / "x4" / "HR").glob("*.png")):
        hr, _ = _read(hr_path)
        lr, _ = _read(hr_path.parent.parent / "LR" / hr_path.name)
        sr = imresize(lr, 4)
        ours.update(sr[None], hr[None])
        y = lambda t: rgb_to_y_uint8_values(torch.floor(t.double().clamp(0, 1) * 255 + 0.5))[..., 4:-4, 4:-4]
        pooled.update(y(sr), y(hr))
    gap = float(ours.compute()["psnr_y"]) - float(pooled.compute())
    assert 0.3 < gap < 1.5, gap
