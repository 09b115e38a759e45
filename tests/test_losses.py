"""Losses against hand computations on tiny tensors, the VGG19 weight sources and the loss presets.

No test reaches the internet: VGG19 "ImageNet" weights are small fake state dicts served from tmp files
(file:// URLs or a 127.0.0.1 HTTP server) into a TORCH_HOME under tmp_path. Every test that needs a real
VGG19 stack passes ``weights="random"`` explicitly (the product never falls back to it).
"""
from __future__ import annotations

import functools
import http.server
import math
import re
import socket
import threading
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from sr_lightning import losses
from sr_lightning.config import check_loss
from sr_lightning.losses import (
    AdversarialLoss,
    MissingWeightsError,
    PerceptualLoss,
    PixelLoss,
    WeightedTerm,
    build_term,
)
from sr_lightning.ops.imresize import imresize

LOSS_CONF = Path(__file__).resolve().parents[1] / "conf" / "loss"


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def mean(values) -> float:
    values = list(values)
    return sum(values) / len(values)


# --------------------------------------------------------------------------------------------------
# Pixel losses
# --------------------------------------------------------------------------------------------------
@pytest.fixture
def half_and_half():
    """hr random; sr = hr + 0.5 on the first half of the elements and hr - 0.25 on the second half."""
    torch.manual_seed(0)
    hr = torch.rand(1, 3, 4, 4)
    diff = torch.full((48,), 0.5)
    diff[24:] = -0.25
    return hr + diff.view(1, 3, 4, 4), hr


def test_l1_and_mse_match_hand_computation(half_and_half):
    sr, hr = half_and_half
    assert PixelLoss("l1")(sr, hr).item() == pytest.approx((0.5 + 0.25) / 2)
    assert PixelLoss("mse")(sr, hr).item() == pytest.approx((0.25 + 0.0625) / 2)


def test_charbonnier_matches_hand_computation(half_and_half):
    sr, hr = half_and_half
    eps = 1e-3
    expected = (math.sqrt(0.25 + eps**2) + math.sqrt(0.0625 + eps**2)) / 2
    assert PixelLoss("charbonnier", eps=eps)(sr, hr).item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("eps", [1e-3, 0.1])
def test_charbonnier_of_identical_images_is_eps(eps):
    x = torch.rand(1, 3, 4, 4)
    assert PixelLoss("charbonnier", eps=eps)(x, x.clone()).item() == pytest.approx(eps, rel=1e-5)


def test_build_term_keeps_weight_out_of_the_loss(half_and_half):
    sr, hr = half_and_half
    term = build_term("pixel", {"_target_": "sr_lightning.losses.PixelLoss", "criterion": "l1", "weight": 0.9})
    assert isinstance(term.fn, PixelLoss) and not hasattr(term.fn, "weight")
    assert isinstance(term.weight, float) and term.weight == 0.9
    assert term(sr, sr, hr, (0.0, 1.0)).item() == pytest.approx(0.375)  # unweighted


def test_a_term_gets_the_pyramid_or_the_unit_range_only_when_its_loss_asks():
    hr = torch.full((1, 3, 4, 4), 0.5)
    levels = [torch.zeros(1, 3, 2, 2), torch.zeros(1, 3, 4, 4)]  # LapSRN-style output, final level last
    seen = {}

    class Spy(torch.nn.Module):
        def forward(self, sr, target):
            seen["sr"], seen["hr"] = sr, target
            return sr.new_zeros(())

    plain = WeightedTerm("plain", Spy(), 1.0)
    plain(levels, levels[-1], hr, (-1.0, 1.0))
    assert seen["sr"] is levels[-1] and seen["hr"] is hr  # the final output, in the model's range

    pyramid = WeightedTerm("pixel", PixelLoss("l1"), 1.0)
    assert pyramid(levels, levels[-1], hr, (0.0, 1.0)).item() == pytest.approx(0.5 + 0.5)  # both levels summed

    unit = Spy()
    unit.expects_unit_range = True
    WeightedTerm("perceptual", unit, 1.0)(levels, levels[-1], hr, (-1.0, 1.0))
    assert torch.equal(seen["sr"], torch.full((1, 3, 4, 4), 0.5)) and torch.equal(seen["hr"], torch.full_like(hr, 0.75))


def test_pixel_loss_rejects_bad_criterion_and_shape_mismatch():
    with pytest.raises(ValueError, match="charbonnier"):
        PixelLoss("l2")
    with pytest.raises(ValueError, match=r"\(1, 3, 4, 4\)"):
        PixelLoss("l1")(torch.rand(1, 3, 4, 4), torch.rand(1, 3, 8, 8))


def test_multi_level_pyramid_compares_each_level_with_matlab_downscaled_hr_and_sums():
    torch.manual_seed(0)
    hr = torch.rand(2, 1, 16, 16)
    # A x8 pyramid from a 2x2 LR: levels x2 (4x4), x4 (8x8) and x8 (16x16, the full-scale output).
    levels = [
        (imresize(hr, size=(4, 4)) + 0.1).requires_grad_(),
        (imresize(hr, size=(8, 8)) - 0.2).requires_grad_(),
        (hr + 0.3).requires_grad_(),
    ]
    loss = PixelLoss("l1")(levels, hr)
    # Sum over levels (LapSRN), each level the mean over its own pixels.
    assert loss.item() == pytest.approx(0.1 + 0.2 + 0.3, rel=1e-5)
    loss.backward()
    assert all(level.grad is not None and level.grad.abs().sum() > 0 for level in levels)

    # The targets really are MATLAB bicubic (antialiased), not torch's bicubic interpolation.
    torch_bicubic = F.interpolate(hr, size=(4, 4), mode="bicubic", align_corners=False)
    assert PixelLoss("l1")([torch_bicubic, hr], hr).item() > 1e-3


def test_multi_level_charbonnier_is_eps_per_level_on_exact_targets():
    hr = torch.rand(1, 1, 8, 8)
    levels = [imresize(hr, size=(4, 4)), hr.clone()]
    assert PixelLoss("charbonnier", eps=1e-3)(levels, hr).item() == pytest.approx(2e-3, rel=1e-4)


def test_multi_level_rejects_a_level_larger_than_hr_and_an_empty_list():
    with pytest.raises(ValueError, match="larger than the target"):
        PixelLoss("l1")([torch.rand(1, 1, 16, 16)], torch.rand(1, 1, 8, 8))
    with pytest.raises(ValueError, match="empty"):
        PixelLoss("l1")([], torch.rand(1, 1, 8, 8))


# --------------------------------------------------------------------------------------------------
# Adversarial losses
# --------------------------------------------------------------------------------------------------
REAL = [2.0, -1.0, 0.5]
FAKE = [0.5, -0.5, -2.0]


def logits(values):
    return torch.tensor(values).view(-1, 1)


def test_vanilla_matches_hand_computation():
    loss = AdversarialLoss("vanilla")
    # BCE(x, 1) = softplus(-x), BCE(x, 0) = softplus(x)
    d_real, d_fake = loss.discriminator_terms(logits(REAL), logits(FAKE))
    assert d_real.item() == pytest.approx(mean(softplus(-r) for r in REAL), rel=1e-6)
    assert d_fake.item() == pytest.approx(mean(softplus(f) for f in FAKE), rel=1e-6)
    assert loss.discriminator_loss(logits(REAL), logits(FAKE)).item() == pytest.approx(d_real.item() + d_fake.item())
    assert loss.generator_loss(logits(REAL), logits(FAKE)).item() == pytest.approx(
        mean(softplus(-f) for f in FAKE), rel=1e-6)


def test_vanilla_label_smoothing_softens_only_the_real_target_of_d():
    s = 0.1
    smooth, plain = AdversarialLoss("vanilla", label_smoothing=s), AdversarialLoss("vanilla")
    # BCE(x, t) = t * softplus(-x) + (1 - t) * softplus(x)
    expected_real = mean((1 - s) * softplus(-r) + s * softplus(r) for r in REAL)
    d_real, d_fake = smooth.discriminator_terms(logits(REAL), logits(FAKE))
    assert d_real.item() == pytest.approx(expected_real, rel=1e-6)
    assert d_fake.item() == pytest.approx(plain.discriminator_terms(logits(REAL), logits(FAKE))[1].item())
    assert smooth.generator_loss(logits(REAL), logits(FAKE)).item() == pytest.approx(
        plain.generator_loss(logits(REAL), logits(FAKE)).item())


def test_lsgan_matches_hand_computation():
    loss = AdversarialLoss("lsgan", label_smoothing=0.2)
    expected_d = mean((r - 0.8) ** 2 for r in REAL) + mean(f**2 for f in FAKE)
    assert loss.discriminator_loss(logits(REAL), logits(FAKE)).item() == pytest.approx(expected_d, rel=1e-6)
    assert loss.generator_loss(None, logits(FAKE)).item() == pytest.approx(mean((f - 1) ** 2 for f in FAKE))


def test_hinge_matches_hand_computation():
    loss = AdversarialLoss("hinge")
    expected_d = mean(max(0.0, 1 - r) for r in REAL) + mean(max(0.0, 1 + f) for f in FAKE)
    assert loss.discriminator_loss(logits(REAL), logits(FAKE)).item() == pytest.approx(expected_d, rel=1e-6)
    assert loss.generator_loss(None, logits(FAKE)).item() == pytest.approx(-mean(FAKE))


def test_relativistic_average_matches_hand_computation():
    loss = AdversarialLoss("ragan")
    mean_real, mean_fake = mean(REAL), mean(FAKE)
    # D: real should look more real than the average fake, fake less real than the average real.
    expected_d = 0.5 * (mean(softplus(-(r - mean_fake)) for r in REAL) + mean(softplus(f - mean_real) for f in FAKE))
    # G: the reverse, both terms (the real images' term is what distinguishes RaGAN's G loss).
    expected_g = 0.5 * (mean(softplus(r - mean_fake) for r in REAL) + mean(softplus(-(f - mean_real)) for f in FAKE))
    assert loss.discriminator_loss(logits(REAL), logits(FAKE)).item() == pytest.approx(expected_d, rel=1e-6)
    assert loss.generator_loss(logits(REAL), logits(FAKE)).item() == pytest.approx(expected_g, rel=1e-6)


def test_relativistic_generator_loss_detaches_real_logits_but_d_loss_uses_both():
    loss = AdversarialLoss("ragan")
    real, fake = logits(REAL).requires_grad_(), logits(FAKE).requires_grad_()
    loss.generator_loss(real, fake).backward()
    assert real.grad is None and fake.grad.abs().sum() > 0

    real, fake = logits(REAL).requires_grad_(), logits(FAKE).requires_grad_()
    loss.discriminator_loss(real, fake).backward()
    assert real.grad.abs().sum() > 0 and fake.grad.abs().sum() > 0


@pytest.mark.parametrize("kind", AdversarialLoss.KINDS)
def test_only_the_relativistic_generator_loss_needs_the_real_logits(kind):
    # The training step skips D's forward pass on HR in G's update whenever this is False.
    loss = AdversarialLoss(kind)
    assert loss.needs_real_for_generator == (kind == "ragan")
    if not loss.needs_real_for_generator:
        real = logits(REAL)
        assert loss.generator_loss(None, logits(FAKE)).item() == loss.generator_loss(real, logits(FAKE)).item()
        assert loss.generator_loss(None, logits(FAKE)).item() == loss.generator_loss(real * 100, logits(FAKE)).item()
    else:
        with pytest.raises(ValueError, match="needs the real logits"):
            loss.generator_loss(None, logits(FAKE))


def test_probability_discriminator_gives_the_same_bce_as_logits():
    as_logits, as_probs = AdversarialLoss("vanilla"), AdversarialLoss("vanilla", logits=False)
    real, fake = logits(REAL), logits(FAKE)
    assert as_probs.discriminator_loss(real.sigmoid(), fake.sigmoid()).item() == pytest.approx(
        as_logits.discriminator_loss(real, fake).item(), rel=1e-5)
    assert as_probs.generator_loss(None, fake.sigmoid()).item() == pytest.approx(
        as_logits.generator_loss(None, fake).item(), rel=1e-5)
    # Saturated probabilities are clamped: finite loss instead of log(0).
    assert math.isfinite(as_probs.discriminator_loss(torch.ones(2, 1), torch.ones(2, 1)).item())


def test_probability_mode_rejects_logits_and_unsupported_kinds():
    with pytest.raises(ValueError, match="outside \\[0, 1\\].*logits=true"):
        AdversarialLoss("vanilla", logits=False).discriminator_loss(logits(REAL), logits(FAKE))
    with pytest.raises(ValueError, match="needs raw logits"):
        AdversarialLoss("ragan", logits=False)
    with pytest.raises(ValueError, match="hinge"):
        AdversarialLoss("wgan")
    with pytest.raises(ValueError, match="label_smoothing"):
        AdversarialLoss("hinge", label_smoothing=0.1)


# --------------------------------------------------------------------------------------------------
# Perceptual loss (random VGG19 weights passed explicitly)
# --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def random_vgg54():
    """VGG19 up to relu5_4 with weights='random' passed explicitly (no pretrained file in tests)."""
    return PerceptualLoss({"conv5_4": 1.0, "relu5_4": 1.0}, criterion="l1", weights="random")


def test_vgg19_layer_names_follow_torchvision_indices():
    names = losses.vgg19_layer_names()
    assert names[:5] == ["conv1_1", "relu1_1", "conv1_2", "relu1_2", "pool1"]
    assert names.index("conv5_4") == 34 and names.index("relu5_4") == 35 and names[-1] == "pool5"


def test_random_weights_truncate_at_deepest_layer_and_conv_differs_from_relu(random_vgg54):
    assert len(random_vgg54.features) == 36  # features[0..35]: ends with relu5_4, no pool5
    assert len(PerceptualLoss({"relu2_2": 1.0}, weights="random").features) == 9
    torch.manual_seed(0)
    features = random_vgg54.extract(torch.rand(1, 3, 32, 32))
    conv, relu = features["conv5_4"], features["relu5_4"]
    assert conv.shape == relu.shape == (1, 512, 2, 2)
    assert conv.min() < 0 <= relu.min()  # conv5_4 is taken before the ReLU (ESRGAN), relu5_4 after
    # The captured conv output was not overwritten by torchvision's in-place ReLU.
    torch.testing.assert_close(relu, conv.clamp(min=0))


def test_random_weights_feature_net_is_frozen_and_gradients_reach_the_input(random_vgg54):
    random_vgg54.train()
    assert not random_vgg54.features.training
    assert all(not p.requires_grad for p in random_vgg54.features.parameters())
    torch.manual_seed(0)
    sr = torch.rand(1, 3, 32, 32, requires_grad=True)
    loss = random_vgg54(sr, torch.rand(1, 3, 32, 32))
    loss.backward()
    assert loss.item() > 0 and torch.isfinite(sr.grad).all() and sr.grad.abs().sum() > 0
    assert all(p.grad is None for p in random_vgg54.features.parameters())


def test_random_weights_loss_matches_hand_computation_from_features():
    loss = PerceptualLoss({"relu1_2": 0.25, "conv2_2": 2.0}, criterion="mse", weights="random", rescale=0.5)
    torch.manual_seed(0)
    sr, hr = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16)
    f_sr, f_hr = loss.extract(sr), loss.extract(hr)
    # rescale multiplies both feature maps: the MSE shrinks by rescale^2.
    expected = sum(w * 0.25 * F.mse_loss(f_sr[n], f_hr[n]).item() for n, w in [("relu1_2", 0.25), ("conv2_2", 2.0)])
    assert loss(sr, hr).item() == pytest.approx(expected, rel=1e-5)


def test_random_weights_input_normalisation_and_gray_input():
    loss = PerceptualLoss({"conv1_1": 1.0}, weights="random")
    x = torch.rand(1, 3, 8, 8)
    conv = loss.features[0]
    normalised = (x - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor(
        [0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    torch.testing.assert_close(loss.extract(x)["conv1_1"], conv(normalised))
    gray = torch.rand(1, 1, 8, 8)
    torch.testing.assert_close(loss.extract(gray)["conv1_1"], loss.extract(gray.repeat(1, 3, 1, 1))["conv1_1"])
    with pytest.raises(ValueError, match="unknown VGG19 layer.*conv6_1"):
        PerceptualLoss({"conv6_1": 1.0}, weights="random")


def test_random_weights_vgg_stays_out_of_the_state_dict():
    parent = torch.nn.ModuleDict({"perceptual": PerceptualLoss({"relu1_2": 1.0}, weights="random"),
                                  "head": torch.nn.Conv2d(3, 3, 1)})
    keys = list(parent.state_dict())
    assert keys == ["head.weight", "head.bias"]
    before = parent["perceptual"].features[0].weight.clone()
    parent.load_state_dict(parent.state_dict(), strict=True)  # no "missing keys" for the VGG
    torch.testing.assert_close(parent["perceptual"].features[0].weight, before)


# --------------------------------------------------------------------------------------------------
# Pretrained weights: cache, download, missing and corrupt files (all local)
# --------------------------------------------------------------------------------------------------
SHALLOW = {"relu1_2": 1.0}  # only features.0 and features.2 are needed: tiny fake state dicts


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    home = tmp_path / "torch_home"
    monkeypatch.setenv("TORCH_HOME", str(home))
    return home


@pytest.fixture
def fake_vgg19_file(tmp_path):
    """A torchvision-layout VGG19 state dict (features.N.* plus a classifier key) of the shallow layers."""
    torch.manual_seed(1)
    source = PerceptualLoss(SHALLOW, weights="random").features
    state = {f"features.{k}": v.clone() for k, v in source.state_dict().items()}
    state["classifier.6.bias"] = torch.zeros(1000)
    served = tmp_path / "served"
    served.mkdir()
    path = served / "vgg19-test.pth"
    torch.save(state, path)
    return path, state


@pytest.fixture
def local_http_server():
    """Serve a folder on 127.0.0.1; yields a function folder -> base URL."""
    servers = []

    def serve(folder: Path) -> str:
        handler = functools.partial(QuietHandler, directory=str(folder))
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield serve
    for server in servers:
        server.shutdown()
        server.server_close()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def closed_port_url(filename: str) -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/{filename}"  # nothing listens: connection refused at once


def assert_loaded(loss: PerceptualLoss, state: dict) -> None:
    torch.testing.assert_close(loss.features[0].weight, state["features.0.weight"])
    torch.testing.assert_close(loss.features[2].bias, state["features.2.bias"])


def test_imagenet_weights_downloaded_from_127_0_0_1_into_hub_cache_then_read_offline(
        torch_home, fake_vgg19_file, local_http_server, monkeypatch):
    path, state = fake_vgg19_file
    url = f"{local_http_server(path.parent)}/{path.name}"
    monkeypatch.setattr(losses, "vgg19_weights_url", lambda: url)
    loss = PerceptualLoss(SHALLOW)  # weights="imagenet" is the default
    cached = torch_home / "hub" / "checkpoints" / path.name
    assert cached.is_file() and loss.weights_source == str(cached)
    assert_loaded(loss, state)
    assert list(cached.parent.iterdir()) == [cached]  # no partial download left behind

    # Offline afterwards: the cached file is used, nothing is downloaded.
    monkeypatch.setattr(losses, "vgg19_weights_url", lambda: closed_port_url(path.name))
    assert_loaded(PerceptualLoss(SHALLOW), state)


def test_imagenet_weights_from_injected_file_url(torch_home, fake_vgg19_file):
    path, state = fake_vgg19_file
    loss = PerceptualLoss(SHALLOW, weights="imagenet", weights_url=path.as_uri())
    assert (torch_home / "hub" / "checkpoints" / path.name).is_file()
    assert_loaded(loss, state)


def test_missing_imagenet_weights_message_names_cache_path_and_alternatives(torch_home, monkeypatch):
    monkeypatch.setattr(losses, "vgg19_weights_url", lambda: closed_port_url("vgg19-dcbb9e9d.pth"))
    with pytest.raises(MissingWeightsError) as info:
        PerceptualLoss({"relu5_4": 1.0})
    message = str(info.value)
    assert str(torch_home / "hub" / "checkpoints" / "vgg19-dcbb9e9d.pth") in message
    assert "loss.perceptual.weights=/path/to/vgg19.pth" in message
    assert "model=srgan_mse" in message and "loss=srgan_mse" in message
    assert isinstance(info.value, RuntimeError)


def test_download_with_wrong_checksum_is_refused_and_not_cached(torch_home, fake_vgg19_file):
    path, _ = fake_vgg19_file
    bad_name = path.with_name("vgg19-deadbeef.pth")  # torchvision-style name whose sha256 prefix is wrong
    path.rename(bad_name)
    with pytest.raises(MissingWeightsError, match="checksum mismatch"):
        PerceptualLoss(SHALLOW, weights_url=bad_name.as_uri())
    assert not (torch_home / "hub" / "checkpoints").exists() or not any(
        (torch_home / "hub" / "checkpoints").iterdir())


def test_corrupt_cached_weights_message_names_the_file(torch_home):
    cached = torch_home / "hub" / "checkpoints" / "vgg19-test.pth"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"not a pytorch file" * 10)
    with pytest.raises(MissingWeightsError, match="corrupt") as info:
        PerceptualLoss(SHALLOW, weights_url=closed_port_url(cached.name))
    assert str(cached) in str(info.value) and "Delete it" in str(info.value)


def test_weights_path_loads_local_state_dict_and_reports_bad_files(tmp_path, fake_vgg19_file):
    path, state = fake_vgg19_file
    assert_loaded(PerceptualLoss(SHALLOW, weights=str(path)), state)
    features_only = tmp_path / "features_only.pth"  # keys "0.weight", ... as saved from vgg19().features
    torch.save({k.removeprefix("features."): v for k, v in state.items() if k.startswith("features.")},
               features_only)
    assert_loaded(PerceptualLoss(SHALLOW, weights_path=str(features_only)), state)

    missing = tmp_path / "nope.pth"
    with pytest.raises(MissingWeightsError, match=f"{re.escape(str(missing))}.*does not exist"):
        PerceptualLoss(SHALLOW, weights=str(missing))
    with pytest.raises(MissingWeightsError, match="lacks .* features.0.weight"):
        PerceptualLoss(SHALLOW, weights_path=str(fake_file(tmp_path / "other.pth", {"fc.weight": torch.zeros(1)})))
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"\x00garbage")
    with pytest.raises(MissingWeightsError, match=f"{re.escape(str(corrupt))} cannot be read"):
        PerceptualLoss(SHALLOW, weights=str(corrupt))


def fake_file(path: Path, state: dict) -> Path:
    torch.save(state, path)
    return path


# --------------------------------------------------------------------------------------------------
# Presets (conf/loss/*.yaml)
# --------------------------------------------------------------------------------------------------
PRESETS = ["l1", "mse", "charbonnier", "lapsrn", "srgan", "srgan_mse", "esrgan", "seed002", "dcgan_sr", "seed000"]


@functools.cache  # each VGG-based preset builds its VGG19 stack once per session
def build_preset(name: str) -> dict:
    """The preset's terms as the module builds them: {name: WeightedTerm or None}."""
    cfg = OmegaConf.load(LOSS_CONF / f"{name}.yaml")
    assert list(cfg) == ["pixel", "perceptual", "adversarial"], name
    if cfg.perceptual is not None:
        assert cfg.perceptual.weights == "imagenet"  # the product default; tests need no download
        cfg.perceptual.weights = "random"
    check_loss(cfg)
    return {key: None if cfg[key] is None else build_term(key, OmegaConf.to_container(cfg[key])) for key in cfg}


def instantiate_preset(name: str) -> dict:
    return {key: None if term is None else term.fn for key, term in build_preset(name).items()}


def preset_weight(name: str, key: str) -> float:
    return build_preset(name)[key].weight


@pytest.mark.parametrize("name", PRESETS)
def test_every_preset_builds_with_float_weights(name):
    built = build_preset(name)
    assert any(v is not None for v in built.values())
    for key, term in built.items():
        if term is not None:
            assert isinstance(term.fn, torch.nn.Module) and isinstance(term.weight, float), (name, key)


def test_presets_carry_the_papers_values():
    srgan = instantiate_preset("srgan")
    assert srgan["pixel"] is None and srgan["perceptual"].layer_weights == {"relu5_4": 1.0}
    assert srgan["perceptual"].criterion == "mse" and srgan["perceptual"].rescale == pytest.approx(1 / 12.75)
    assert srgan["adversarial"].kind == "vanilla" and preset_weight("srgan", "adversarial") == 1e-3

    esrgan = instantiate_preset("esrgan")
    assert (esrgan["pixel"].criterion, preset_weight("esrgan", "pixel")) == ("l1", 1e-2)
    assert esrgan["perceptual"].layer_weights == {"conv5_4": 1.0} and esrgan["perceptual"].criterion == "l1"
    assert (esrgan["adversarial"].kind, preset_weight("esrgan", "adversarial")) == ("ragan", 5e-3)

    lapsrn = instantiate_preset("lapsrn")
    assert (lapsrn["pixel"].criterion, lapsrn["pixel"].eps) == ("charbonnier", 1e-3)
    instantiate_preset("dcgan_sr")  # builds
    assert (preset_weight("dcgan_sr", "pixel"), preset_weight("dcgan_sr", "adversarial")) == (0.9, 0.1)
    srgan_mse = instantiate_preset("srgan_mse")
    assert srgan_mse["perceptual"] is None and srgan_mse["pixel"].criterion == "mse"
    assert instantiate_preset("seed002")["adversarial"].kind == "lsgan"


def test_seed000_loss_agrees_with_the_seed000_discriminator_output():
    disc = OmegaConf.load(LOSS_CONF.parent / "disc" / "seed000.yaml")
    adversarial = instantiate_preset("seed000")["adversarial"]
    assert adversarial.logits == (not disc.get("probability", False))
