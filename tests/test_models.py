"""Generator zoo: paper parameter counts, shapes for every supported scale, gradients, channels_last/bf16,
option errors, the RRDB residual addition, the interpolation baselines and the conf/gen yaml files.

Everything runs on tiny tensors (1x3x12x12) and tiny widths; only the parameter-count tests build the
full-size networks (construction only, no forward pass).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import OmegaConf

from sr_lightning.models import (
    Bicubic,
    Bilinear,
    DCGANSRGenerator,
    LapSRN,
    MSRResNet,
    Nearest,
    NeighbourAverage,
    RRDBNet,
    SRResNet,
    count_parameters,
    final_output,
)
from sr_lightning.models.blocks import make_activation, make_output_activation, make_upsampler

CONF = Path(__file__).resolve().parents[1] / "conf"

# Tiny instances of every trainable generator family (name, factory(scale, in_channels)).
TINY_TRAINABLE = {
    "srresnet": lambda scale, c=3: SRResNet(scale=scale, in_channels=c, channels=8, blocks=2),
    "msrresnet": lambda scale, c=3: MSRResNet(scale=scale, in_channels=c, channels=8, blocks=2),
    "seed000": lambda scale, c=3: SRResNet(scale=scale, in_channels=c, channels=8, blocks=2, activation="swish"),
    "rrdbnet": lambda scale, c=3: RRDBNet(scale=scale, in_channels=c, channels=8, blocks=1, growth=4),
    "lapsrn": lambda scale, c=3: LapSRN(scale=scale, in_channels=c, channels=8, blocks=2),
    "lapsrn_subpixel": lambda scale, c=3: LapSRN(scale=scale, in_channels=c, channels=8, blocks=2,
                                                 upsample="subpixel"),
    "dcgan_sr": lambda scale, c=3: DCGANSRGenerator(scale=scale, in_channels=c, channels=8, blocks=1),
}
TINY_BASELINES = {
    "bicubic": lambda scale, c=3: Bicubic(scale=scale, in_channels=c),
    "bilinear": lambda scale, c=3: Bilinear(scale=scale, in_channels=c),
    "nearest": lambda scale, c=3: Nearest(scale=scale, in_channels=c),
    "neighbour_avg": lambda scale, c=3: NeighbourAverage(scale=scale, in_channels=c),
}
TINY = {**TINY_TRAINABLE, **TINY_BASELINES}
SCALES = {"lapsrn": LapSRN.supported_scales, "lapsrn_subpixel": LapSRN.supported_scales}


def _supported(name: str) -> tuple[int, ...]:
    return SCALES.get(name, (2, 3, 4, 8))


GEN_SCALE_PAIRS = [(name, scale) for name in TINY for scale in _supported(name)]


# --- registry -------------------------------------------------------------------------------------------------

def test_every_gen_and_disc_config_builds_a_class_of_sr_lightning_models():
    """conf/gen/*.yaml and conf/disc/*.yaml mirror the code: each names a backbone class of sr_lightning.models."""
    import yaml
    from hydra.utils import get_class

    conf = Path(__file__).resolve().parents[1] / "conf"
    seen = set()
    for group in ("gen", "disc"):
        for path in sorted((conf / group).glob("*.yaml")):
            target = yaml.safe_load(path.read_text())["_target_"]
            cls = get_class(target)
            assert target.startswith("sr_lightning.models.") and issubclass(cls, torch.nn.Module), path
            seen.add(cls.__name__)
    assert {"SRResNet", "MSRResNet", "RRDBNet", "LapSRN", "DCGANSRGenerator", "Bicubic", "SpandrelGenerator",
            "VGGStyleDiscriminator", "PatchGANDiscriminator", "UNetDiscriminatorSN"} <= seen


def test_count_parameters_counts_only_trainable():
    net = SRResNet(scale=2, channels=8, blocks=1)
    total = sum(p.numel() for p in net.parameters())
    net.head[0].weight.requires_grad_(False)
    assert count_parameters(net) == total - net.head[0].weight.numel()
    assert count_parameters(Bicubic(scale=4)) == 0
    assert count_parameters(None) == 0


def test_final_output_picks_the_full_scale_level():
    a, b = torch.zeros(1), torch.ones(2)
    assert final_output(b) is b
    assert final_output([a, b]) is b
    assert final_output((a, b)) is b
    with pytest.raises(TypeError, match="final_output"):
        final_output([])


# --- parameter counts against the papers ----------------------------------------------------------------------

def _conv(cin: int, cout: int, k: int) -> int:
    return cin * cout * k * k + cout


def srresnet_formula(channels: int, blocks: int, batch_norm: bool, stages: list[int], in_channels: int = 3) -> int:
    """Ledig et al. fig. 4, counted layer by layer (PReLU: one shared slope; BN: weight + bias)."""
    c, bn = channels, (2 * channels if batch_norm else 0)
    head = _conv(in_channels, c, 9) + 1
    block = 2 * _conv(c, c, 3) + 2 * bn + 1
    trunk = _conv(c, c, 3) + bn
    upsampling = sum(_conv(c, c * r * r, 3) + 1 for r in stages)
    tail = _conv(c, in_channels, 9)
    return head + blocks * block + trunk + upsampling + tail


def test_srresnet_has_the_papers_parameter_count():
    expected = srresnet_formula(64, 16, batch_norm=True, stages=[2, 2])
    assert abs(expected - 1.55e6) / 1.55e6 < 0.005  # "about 1.55M" in the paper's comparisons
    assert count_parameters(SRResNet(scale=4, channels=64, blocks=16, batch_norm=True)) == expected


@pytest.mark.parametrize("scale, stages", [(2, [2]), (3, [3]), (8, [2, 2, 2])])
def test_srresnet_upsampling_stages_per_scale(scale, stages):
    net = SRResNet(scale=scale, channels=16, blocks=2, batch_norm=False)
    assert count_parameters(net) == srresnet_formula(16, 2, batch_norm=False, stages=stages)


def test_seed000_network_is_an_srresnet_configuration():
    net = SRResNet(scale=4, channels=20, blocks=18, activation="swish")  # swish has no parameters
    expected = srresnet_formula(20, 18, batch_norm=True, stages=[2, 2])
    assert count_parameters(net) == expected - (1 + 18 + 2)  # minus the PReLU slopes swish replaces
    assert isinstance(net.head[1], torch.nn.SiLU)


@pytest.mark.parametrize("scale, expected", [(4, 1_517_571), (2, 1_369_859), (3, 1_554_499)])
def test_msrresnet_matches_basicsr_counts(scale, expected):
    """BasicSR's MSRResNet: 3x3 head, 16 conv-ReLU-conv blocks, sub-pixel stages, HR conv, 3x3 output conv."""
    c = 64
    upsampling = sum(_conv(c, c * r * r, 3) for r in ([2, 2] if scale == 4 else [scale]))
    formula = _conv(3, c, 3) + 16 * 2 * _conv(c, c, 3) + upsampling + _conv(c, c, 3) + _conv(c, 3, 3)
    assert formula == expected  # x4: the MSRResNet_x4 count BasicSR reports
    assert count_parameters(MSRResNet(scale=scale, channels=c, blocks=16)) == expected


def test_msrresnet_layout_is_basicsr_not_srresnet_without_bn():
    net = MSRResNet(scale=4, channels=8, blocks=3)
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert {m.kernel_size for m in convs} == {(3, 3)}  # no 9x9 head/tail as in SRGAN's SRResNet
    assert len(convs) == 1 + 3 * 2 + 2 + 2  # head, blocks, two x2 stages, HR conv + output conv
    acts = [m for m in net.modules() if isinstance(m, (torch.nn.ReLU, torch.nn.LeakyReLU, torch.nn.PReLU))]
    assert sum(type(m) is torch.nn.ReLU for m in acts) == 3  # one per residual block
    assert [m.negative_slope for m in acts if isinstance(m, torch.nn.LeakyReLU)] == [0.1] * 4
    assert not any(isinstance(m, (torch.nn.PReLU, torch.nn.BatchNorm2d)) for m in net.modules())


def _kaiming_std(conv: torch.nn.Conv2d, negative_slope: float = 0.0) -> float:
    fan_in = conv.in_channels * conv.kernel_size[0] * conv.kernel_size[1]
    return (2 / ((1 + negative_slope ** 2) * fan_in)) ** 0.5


def test_msrresnet_basicsr_init_scales_every_conv():
    """init=basicsr: BasicSR's exact init, every conv at kaiming x 0.1 (std sqrt(2 / fan_in) * 0.1)."""
    torch.manual_seed(0)
    net = MSRResNet(scale=4, channels=32, blocks=3, init="basicsr")
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    for conv in convs:
        assert conv.weight.std().item() == pytest.approx(0.1 * _kaiming_std(conv), rel=0.25)
    assert all(torch.count_nonzero(m.bias) == 0 for m in convs)


def test_msrresnet_default_init_keeps_the_main_path_at_unit_gain():
    """Default (scaled_residuals): main path at plain kaiming, residual branches x 0.1, output conv at zero."""
    torch.manual_seed(0)
    net = MSRResNet(scale=4, channels=32, blocks=3)
    assert net.init == "scaled_residuals"
    main_path = [net.head[0], net.upsampler[0], net.upsampler[3], net.tail[0]]
    for conv in main_path:
        assert conv.weight.std().item() == pytest.approx(_kaiming_std(conv, 0.1), rel=0.25)
    for block in net.body:
        for conv in (block.body[0], block.body[2]):
            assert conv.weight.std().item() == pytest.approx(0.1 * _kaiming_std(conv), rel=0.25)
    out_conv = net.tail[2]
    assert torch.count_nonzero(out_conv.weight) == 0 and torch.count_nonzero(out_conv.bias) == 0
    # so the untrained net is exactly its image skip, and the output conv still gets a gradient
    x = torch.rand(1, 3, 6, 6)
    out = net(x)
    torch.testing.assert_close(out, F.interpolate(x, scale_factor=4, mode="bilinear", align_corners=False))
    out.square().sum().backward()
    assert out_conv.weight.grad.abs().sum() > 0
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert all(torch.count_nonzero(m.bias) == 0 for m in convs)


def test_lapsrn_inits_paper_and_scaled_residuals():
    """init=paper: He init everywhere; default: the residual-image convs start at x 0.1."""
    for init, factor in (("paper", 1.0), ("scaled_residuals", 0.1)):
        torch.manual_seed(0)
        net = LapSRN(scale=4, in_channels=3, channels=32, blocks=2, init=init)
        for level in net.levels:
            conv = level.to_residual
            assert conv.weight.std().item() == pytest.approx(factor * _kaiming_std(conv, 0.2), rel=0.25), init
            inner = level.features[0][1]
            assert inner.weight.std().item() == pytest.approx(_kaiming_std(inner, 0.2), rel=0.25), init


def test_rrdbnet_23_matches_basicsr_x4_count():
    assert count_parameters(RRDBNet(scale=4, channels=64, blocks=23, growth=32)) == 16_697_987


def test_lapsrn_levels_share_nothing_and_count_by_formula():
    c, d = 64, 10
    level = d * _conv(c, c, 3) + _conv(c, c, 4) + _conv(c, 1, 3) + 1 * 1 * 4 * 4  # image convT has no bias
    assert count_parameters(LapSRN(scale=4, in_channels=1, channels=c, blocks=d)) == _conv(1, c, 3) + 2 * level


# --- shapes, gradients, memory formats ------------------------------------------------------------------------

@pytest.mark.parametrize("name, scale", GEN_SCALE_PAIRS)
def test_output_shape_is_exactly_scale_times_input(name, scale):
    torch.manual_seed(0)
    net = TINY[name](scale)
    assert (net.scale, net.in_channels, net.out_channels) == (scale, 3, 3)
    x = torch.rand(1, 3, 12, 10)  # non-square: no fixed input size
    with torch.no_grad():
        out = net(x)
    if name.startswith("lapsrn"):
        assert isinstance(out, list)
        assert [tuple(o.shape) for o in out] == [(1, 3, 12 * 2 ** k, 10 * 2 ** k)
                                                 for k in range(1, scale.bit_length())]
    assert tuple(final_output(out).shape) == (1, 3, 12 * scale, 10 * scale)


@pytest.mark.parametrize("name", ["srresnet", "rrdbnet", "lapsrn", "dcgan_sr", "neighbour_avg", "bicubic"])
def test_single_channel_y_input(name):
    net = TINY[name](2, 1)
    with torch.no_grad():
        assert tuple(final_output(net(torch.rand(2, 1, 8, 8))).shape) == (2, 1, 16, 16)


@pytest.mark.parametrize("cls, bad_scale, allowed", [
    (SRResNet, 5, "2, 3, 4, 8"), (MSRResNet, 6, "2, 3, 4, 8"), (RRDBNet, 6, "2, 3, 4, 8"), (DCGANSRGenerator, 16, "2, 3, 4, 8"),
    (LapSRN, 3, "2, 4, 8"), (Bicubic, 1, "2, 3, 4, 8"), (NeighbourAverage, 2.5, "2, 3, 4, 8"),
])
def test_unsupported_scale_names_the_allowed_scales(cls, bad_scale, allowed):
    with pytest.raises(ValueError, match=f"{cls.__name__}: scale={bad_scale}.*allowed scales are {allowed}"):
        cls(scale=bad_scale)


@pytest.mark.parametrize("name", sorted(TINY_TRAINABLE))
def test_gradients_reach_every_parameter(name):
    torch.manual_seed(0)
    net = TINY_TRAINABLE[name](4 if name.startswith("lapsrn") else 3)
    x = torch.rand(2, 3, 8, 8, requires_grad=True)
    out = net(x)
    loss = sum(o.square().mean() for o in out) if isinstance(out, list) else out.square().mean()
    loss.backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, f"no/invalid gradient for {missing}"
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert sum(p.grad.abs().sum() for p in net.parameters()) > 0


@pytest.mark.parametrize("name", sorted(TINY))
def test_channels_last_and_bf16_autocast(name):
    torch.manual_seed(0)
    scale = 2
    net = TINY[name](scale).eval()
    x = torch.rand(1, 3, 12, 12)
    with torch.no_grad():
        reference = final_output(net(x))
        net_cl = net.to(memory_format=torch.channels_last)
        x_cl = x.contiguous(memory_format=torch.channels_last)
        out_cl = final_output(net_cl(x_cl))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out_bf16 = final_output(net_cl(x_cl))
    torch.testing.assert_close(out_cl, reference, rtol=1e-4, atol=1e-5)
    assert out_bf16.shape == reference.shape and torch.isfinite(out_bf16).all()
    # bf16 keeps ~3 significant digits: the result must still be the same image, not garbage.
    assert (out_bf16.float() - reference).abs().max() < 0.05 * (reference.abs().max() + 1)


# --- option errors --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("factory, key, value, allowed", [
    (lambda **kw: SRResNet(scale=2, **kw), "activation", "gelu", "prelu, leakyrelu, swish, relu"),
    (lambda **kw: SRResNet(scale=2, **kw), "upsample", "bicubic", "subpixel, nearest, transposed"),
    (lambda **kw: SRResNet(scale=2, **kw), "output_activation", "softmax", "none, sigmoid, tanh"),
    (lambda **kw: RRDBNet(scale=2, **kw), "output_activation", "relu", "none, sigmoid, tanh"),
    (lambda **kw: DCGANSRGenerator(scale=2, **kw), "output_activation", "linear", "none, sigmoid, tanh"),
    (lambda **kw: LapSRN(scale=2, **kw), "upsample", "nearest", "transposed, subpixel"),
    (lambda **kw: LapSRN(scale=2, **kw), "init", "xavier", "scaled_residuals, paper"),
    (lambda **kw: MSRResNet(scale=2, **kw), "init", "kaiming", "scaled_residuals, basicsr"),
])
def test_unsupported_option_names_key_and_choices(factory, key, value, allowed):
    with pytest.raises(ValueError, match=f"{key}='{value}' is not supported; choose one of {allowed}"):
        factory(**{key: value})


def test_block_factories_reject_unknown_names():
    with pytest.raises(ValueError, match="choose one of prelu, leakyrelu, swish, relu"):
        make_activation("mish")
    with pytest.raises(ValueError, match="choose one of none, sigmoid, tanh"):
        make_output_activation("hardtanh")
    with pytest.raises(ValueError, match="choose one of subpixel, nearest, transposed"):
        make_upsampler("deconv", 8, 2, "relu")
    with pytest.raises(ValueError, match="power of two"):
        make_upsampler("subpixel", 8, 6, "relu")


@pytest.mark.parametrize("kwargs, key", [({"blocks": -1}, "blocks"), ({"channels": 0}, "channels"),
                                         ({"in_channels": 2.5}, "in_channels")])
def test_bad_sizes_are_rejected(kwargs, key):
    with pytest.raises(ValueError, match=f"SRResNet: {key}="):
        SRResNet(scale=2, **kwargs)


def test_output_activation_bounds_the_output():
    x = torch.rand(1, 3, 6, 6) * 50
    with torch.no_grad():
        tanh_out = DCGANSRGenerator(scale=2, channels=8, output_activation="tanh")(x)
        sigmoid_out = SRResNet(scale=2, channels=8, blocks=1, output_activation="sigmoid")(x)
    assert tanh_out.min() >= -1 and tanh_out.max() <= 1 and tanh_out.min() < 0
    assert sigmoid_out.min() >= 0 and sigmoid_out.max() <= 1


# --- architecture facts ---------------------------------------------------------------------------------------

def test_rrdb_trunk_residual_is_an_addition():
    """A zeroed trunk conv leaves the identity path: output == tail(upsampler(head(x)))."""
    torch.manual_seed(0)
    net = RRDBNet(scale=2, channels=8, blocks=2, growth=4).eval()
    with torch.no_grad():
        net.trunk_conv.weight.zero_()
        net.trunk_conv.bias.zero_()
        x = torch.rand(1, 3, 10, 10)
        identity_path = net.tail(net.upsampler(net.head(x)))
        out = net(x)
    torch.testing.assert_close(out, identity_path)
    # A multiplicative trunk would have zeroed the features and left only the tail's bias-driven output.
    with torch.no_grad():
        zero_features = net.tail(net.upsampler(torch.zeros_like(net.head(x))))
    assert (out - zero_features).abs().max() > 1e-3


def test_lapsrn_image_branch_starts_as_bilinear_upsampling():
    torch.manual_seed(0)
    net = LapSRN(scale=4, in_channels=3, channels=8, blocks=1)
    with torch.no_grad():
        for level in net.levels:  # no residual: the pyramid is pure image-branch upsampling
            level.to_residual.weight.zero_()
            level.to_residual.bias.zero_()
        x = torch.rand(1, 3, 10, 10)
        x2, x4 = net(x)
    expected2 = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
    expected4 = F.interpolate(x2, scale_factor=2, mode="bilinear", align_corners=False)
    # Interior only: the transposed conv zero-pads where F.interpolate clamps.
    torch.testing.assert_close(x2[..., 1:-1, 1:-1], expected2[..., 1:-1, 1:-1])
    torch.testing.assert_close(x4[..., 1:-1, 1:-1], expected4[..., 1:-1, 1:-1])


# --- interpolation baselines ----------------------------------------------------------------------------------

def test_nearest_replicates_each_pixel_into_a_block():
    x = torch.arange(12.0).reshape(1, 1, 3, 4)
    out = Nearest(scale=3, in_channels=1)(x)
    torch.testing.assert_close(out, x.repeat_interleave(3, dim=2).repeat_interleave(3, dim=3))


def test_neighbour_average_is_a_box_filter_on_the_nearest_upsampling():
    x = torch.zeros(1, 1, 4, 4)
    x[0, 0, 1, 1] = 1.0
    out = NeighbourAverage(scale=2, in_channels=1)(x)
    # The impulse becomes a 2x2 block at rows/cols 2..3; a 3x3 box sees 4, 2 or 1 of its pixels.
    assert out[0, 0, 2, 2] == pytest.approx(4 / 9) and out[0, 0, 1, 2] == pytest.approx(2 / 9)
    assert out[0, 0, 1, 1] == pytest.approx(1 / 9) and out[0, 0, 0, 0] == 0
    assert out.sum() == pytest.approx(4.0)  # interior mass is preserved
    flat = NeighbourAverage(scale=3, in_channels=3)(torch.full((1, 3, 5, 5), 0.7))
    torch.testing.assert_close(flat, torch.full((1, 3, 15, 15), 0.7))  # replicate border: no dark edge
    with pytest.raises(ValueError, match="window=2 must be an odd integer"):
        NeighbourAverage(scale=2, window=2)


def test_bilinear_and_bicubic_keep_constant_images_constant():
    for net in (Bilinear(scale=3), Bicubic(scale=3)):
        torch.testing.assert_close(net(torch.full((1, 3, 6, 7), 0.25)), torch.full((1, 3, 18, 21), 0.25))


def test_baseline_rejects_wrong_channel_count():
    with pytest.raises(ValueError, match=r"expected input \(N, 3, H, W\)"):
        Bicubic(scale=2)(torch.rand(1, 1, 4, 4))


def test_bicubic_uses_the_matlab_kernel_not_torchs():
    torch.manual_seed(0)
    x = torch.rand(1, 3, 8, 8)
    ours = Bicubic(scale=2)(x)
    torch_a075 = F.interpolate(x, scale_factor=2, mode="bicubic", align_corners=False)
    assert (ours - torch_a075).abs().max() > 1e-3  # different kernel (a=-0.5 vs -0.75)
    # Keys a=-0.5 at the half-pixel phases 0.25 / 0.75: taps (-0.0703125, 0.8671875, 0.2265625, -0.0234375).
    row = torch.tensor([[0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0]]).reshape(1, 1, 1, 8).expand(1, 3, 8, 8)
    out = Bicubic(scale=2)(row.contiguous())[0, 0, 0]
    torch.testing.assert_close(out[4:10], torch.tensor([-0.0703125, 0.2265625, 0.8671875, 0.8671875,
                                                        0.2265625, -0.0703125]), atol=1e-6, rtol=0)


@pytest.mark.benchmarks
def test_bicubic_reproduces_reference_set5_x4_psnr(benchmarks_dir):
    from PIL import Image

    from sr_lightning.metrics import image_metrics

    reference = json.loads((benchmarks_dir / "reference_bicubic.json").read_text())["sets"]["Set5/x4"]
    net = Bicubic(scale=4)

    def load(path: Path) -> torch.Tensor:
        array = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255.0
        return torch.from_numpy(array).permute(2, 0, 1)

    values = []
    for entry in reference["images"]:
        lr = load(benchmarks_dir / "Set5" / "x4" / "LR" / entry["image"])
        hr = load(benchmarks_dir / "Set5" / "x4" / "HR" / entry["image"])
        with torch.no_grad():
            sr = net(lr[None])[0]
        psnr_y = image_metrics(sr, hr, crop_border=4)["psnr_y"]
        assert psnr_y == pytest.approx(entry["psnr_y"], abs=0.01), entry["image"]
        values.append(psnr_y)
    assert len(values) == 5
    assert float(np.mean(values)) == pytest.approx(reference["mean"]["psnr_y"], abs=0.01)


# --- conf/gen ---------------------------------------------------------------------------------------------------

GEN_YAMLS = {
    "srresnet": SRResNet, "msrresnet": MSRResNet, "seed000": SRResNet, "rrdbnet": RRDBNet, "lapsrn": LapSRN,
    "dcgan_sr": DCGANSRGenerator, "bicubic": Bicubic, "bilinear": Bilinear, "nearest": Nearest,
    "neighbour_avg": NeighbourAverage,
}
WITH_BLOCKS = {"srresnet", "msrresnet", "seed000", "rrdbnet", "lapsrn", "dcgan_sr"}


def _gen_config(name: str, scale: int, **overrides):
    root = OmegaConf.create({"scale": scale, "gen": OmegaConf.load(CONF / "gen" / f"{name}.yaml")})
    for key, value in overrides.items():
        OmegaConf.update(root, f"gen.{key}", value)
    return root


def test_every_gen_yaml_exists_and_has_the_common_keys():
    # gen=spandrel wraps a third-party library and needs gen.arch: tests/test_spandrel.py covers it.
    assert {p.stem for p in (CONF / "gen").glob("*.yaml")} - {"spandrel"} == set(GEN_YAMLS)
    for name, cls in GEN_YAMLS.items():
        raw = OmegaConf.load(CONF / "gen" / f"{name}.yaml")
        assert raw._target_ == f"{cls.__module__}.{cls.__name__}", name
        assert OmegaConf.to_container(raw)["scale"] == "${scale}", name
        assert raw.in_channels == 3, name
        assert ("blocks" in raw) == (name in WITH_BLOCKS), name


@pytest.mark.parametrize("name", sorted(GEN_YAMLS))
def test_gen_yaml_instantiates_with_cli_style_overrides(name):
    overrides = {"blocks": 1, "channels": 8} if name in WITH_BLOCKS else {}
    if name == "rrdbnet":
        overrides["growth"] = 4
    cfg = _gen_config(name, 2, **overrides)
    net = instantiate(cfg.gen)
    assert isinstance(net, GEN_YAMLS[name]) and net.scale == 2
    with torch.no_grad():
        assert final_output(net(torch.rand(1, 3, 6, 6))).shape == (1, 3, 12, 12)


def test_gen_yamls_carry_the_papers_settings():
    def params(name):
        return OmegaConf.to_container(OmegaConf.load(CONF / "gen" / f"{name}.yaml"))

    assert {"blocks": 16, "channels": 64, "batch_norm": True, "activation": "prelu"}.items() <= params(
        "srresnet").items()
    assert {k: params("msrresnet")[k] for k in ("blocks", "channels", "negative_slope", "image_skip")} == {
        "blocks": 16, "channels": 64, "negative_slope": 0.1, "image_skip": "bilinear"}
    assert {k: params("seed000")[k] for k in ("channels", "blocks", "activation")} == {
        "channels": 20, "blocks": 18, "activation": "swish"}
    assert {k: params("rrdbnet")[k] for k in ("blocks", "channels", "growth")} == {
        "blocks": 23, "channels": 64, "growth": 32}
    assert params("dcgan_sr")["output_activation"] == "tanh"
    assert params("lapsrn")["upsample"] == "transposed"


@pytest.mark.parametrize("cls, output_conv, mode", [
    (MSRResNet, lambda net: net.tail[2], "bilinear"),   # MSRResNet's default skip
    (SRResNet, lambda net: net.tail[0], "bicubic"),     # SRResNet: off unless asked
])
def test_image_skip_adds_the_interpolated_input(cls, output_conv, mode):
    """With a zeroed output conv, the output is exactly the interpolation of the input."""
    kwargs = {} if cls is MSRResNet else {"image_skip": mode, "batch_norm": False}
    net = cls(scale=4, blocks=1, channels=8, **kwargs)
    torch.nn.init.zeros_(output_conv(net).weight)
    torch.nn.init.zeros_(output_conv(net).bias)
    x = torch.rand(1, 3, 6, 5)
    expected = F.interpolate(x, scale_factor=4, mode=mode, align_corners=False)
    assert torch.allclose(net(x), expected, atol=1e-6)
    with pytest.raises(ValueError, match=f"{cls.__name__}: image_skip='lanczos'"):
        cls(scale=4, blocks=1, channels=8, image_skip="lanczos")
    with pytest.raises(ValueError, match=f"{cls.__name__}: image_skip=bilinear .* out_channels == in_channels"):
        cls(scale=4, blocks=1, channels=8, in_channels=1, out_channels=3, image_skip="bilinear")


def test_srresnet_subpixel_direct_upsamples_once_at_lr_resolution():
    """ESPCN-style direct upsampler: one LR conv to 3*s^2 channels and one PixelShuffle, no HR-resolution conv."""
    net = SRResNet(scale=4, blocks=2, channels=8, batch_norm=False, upsample="subpixel_direct", image_skip="bicubic")
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    # head 9x9 + 2 blocks x 2 + trunk + the single upsampling conv; nothing runs after the PixelShuffle
    assert len(convs) == 1 + 4 + 1 + 1 and convs[-1].out_channels == 3 * 4 ** 2
    paper = SRResNet(scale=4, blocks=2, channels=8, batch_norm=False)
    expected = (sum(p.numel() for p in paper.parameters())
                - sum(p.numel() for p in paper.upsampler.parameters()) - sum(p.numel() for p in paper.tail.parameters())
                + (8 * 48 * 9 + 48))
    assert sum(p.numel() for p in net.parameters()) == expected
    x = torch.rand(1, 3, 5, 7)
    assert net(x).shape == (1, 3, 20, 28)
    torch.nn.init.zeros_(net.upsampler[0].weight)
    torch.nn.init.zeros_(net.upsampler[0].bias)
    assert torch.allclose(net(x), F.interpolate(x, scale_factor=4, mode="bicubic", align_corners=False), atol=1e-6)
