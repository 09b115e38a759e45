"""Discriminators: paper parameter counts, any-crop operation, channels_last/bf16, gradients, option errors and
the conf/disc yaml files. Forward passes use narrow networks (a few channels) on small batches."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch.nn.utils import parametrize

from sr_lightning.models import PatchGANDiscriminator, UNetDiscriminatorSN, VGGStyleDiscriminator, count_parameters

CONF = Path(__file__).resolve().parents[1] / "conf"
CROPS = (48, 64, 96, 128, 192, 256)


def _conv(cin: int, cout: int, k: int, bias: bool = True) -> int:
    return cin * cout * k * k + (cout if bias else 0)


def tiny_vgg(**kw) -> VGGStyleDiscriminator:
    return VGGStyleDiscriminator(**{"channels": 4, "dense_features": 16, **kw})


TINY = {
    "vgg": lambda: tiny_vgg(),
    "seed000": lambda: tiny_vgg(pool_size=1, probability=True),
    "patchgan": lambda: PatchGANDiscriminator(channels=4),
    "unet": lambda: UNetDiscriminatorSN(channels=4),
}


# --- VGG-style (SRGAN) ------------------------------------------------------------------------------------------

def test_vgg_discriminator_has_the_srgan_parameter_count_at_128px():
    # Ledig et al. fig. 4: k3n64s1 (no BN), then k3n64s2, k3n128s1, k3n128s2, k3n256s1, k3n256s2, k3n512s1,
    # k3n512s2 with BN (conv bias dropped: BN's shift replaces it), dense 1024, LeakyReLU, dense 1.
    table = [(64, 1), (64, 2), (128, 1), (128, 2), (256, 1), (256, 2), (512, 1), (512, 2)]
    expected = _conv(3, 64, 3)
    for (cin, _), (cout, _) in zip(table, table[1:]):
        expected += _conv(cin, cout, 3, bias=False) + 2 * cout
    feature_size = 128 // 2 ** sum(s == 2 for _, s in table)  # four stride-2 convs: 8x8
    expected += _conv(512 * feature_size ** 2, 1024, 1) + _conv(1024, 1, 1)
    disc = VGGStyleDiscriminator(in_channels=3, blocks=8, input_size=128)
    assert disc.pool_size == feature_size == 8
    assert count_parameters(disc) == expected


def test_vgg_pool_is_the_identity_at_the_design_size():
    disc = tiny_vgg(input_size=128)
    features = disc.features(torch.rand(1, 3, 128, 128))
    assert features.shape[-2:] == (disc.pool_size, disc.pool_size)


@pytest.mark.parametrize("crop", CROPS)
def test_vgg_works_at_every_training_crop(crop):
    disc = tiny_vgg(input_size=128)
    out = disc(torch.rand(2, 3, crop, crop))
    assert out.shape == (2, 1)


@pytest.mark.parametrize("blocks, channels", [(4, [4, 4, 8, 8]), (16, [4, 4, 8, 8, 16, 16, 32, 32] + [32] * 8)])
def test_vgg_depth_variants(blocks, channels):
    disc = tiny_vgg(blocks=blocks, max_channels=32)
    convs = [m for m in disc.features if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == channels
    assert [c.stride[0] for c in convs] == [1, 2] * (blocks // 2)
    assert disc(torch.rand(2, 3, 48, 48)).shape == (2, 1)


def _strided_outputs_and_bn_inputs(disc, x):
    """Output sizes of D's stride-2 convs and input sizes of its BatchNorms in one forward pass."""
    strided, normed = [], []
    hooks = []
    for m in disc.features:
        if isinstance(m, torch.nn.Conv2d) and m.stride != (1, 1):
            hooks.append(m.register_forward_hook(lambda m, i, o: strided.append(tuple(o.shape[-2:]))))
        if isinstance(m, torch.nn.BatchNorm2d):
            hooks.append(m.register_forward_hook(lambda m, i, o: normed.append(tuple(i[0].shape[-2:]))))
    disc(x)
    for h in hooks:
        h.remove()
    return strided, normed


@pytest.mark.parametrize("blocks", [4, 8, 16])
def test_vgg_never_runs_a_strided_conv_or_batchnorm_on_1px_maps(blocks):
    # 16 blocks used to shrink every crop up to 256 px to 1x1 (eight halvings) and run stride-2 convs with 1-px
    # outputs, the shape oneDNN's AMX bf16 conv gets wrong (NaN/inf in D on AMX CPUs); halving stops at 2 px.
    disc = tiny_vgg(blocks=blocks, max_channels=16)
    for crop in CROPS:
        strided, normed = _strided_outputs_and_bn_inputs(disc, torch.rand(2, 3, crop, crop))
        assert len(strided) == blocks // 2
        assert min(min(s) for s in strided) >= 2 and min(min(s) for s in normed) >= 2, (crop, strided)
        if blocks <= 8:  # maps never got that small: every stride-2 conv still halves
            assert [s[0] for s in strided] == [-(-crop // 2 ** (k + 1)) for k in range(blocks // 2)]
    strided, _ = _strided_outputs_and_bn_inputs(tiny_vgg(blocks=16, max_channels=16), torch.rand(2, 3, 48, 48))
    assert [s[0] for s in strided] == [24, 12, 6, 3, 2, 2, 2, 2]
    # each dimension stops on its own: a 2-px-high strip keeps its height and still halves its width
    strided, _ = _strided_outputs_and_bn_inputs(tiny_vgg(blocks=4), torch.rand(2, 3, 4, 64))
    assert strided == [(2, 32), (2, 16)]


def test_vgg_stride_floor_keeps_the_16_block_dense_layer():
    # The floor changes no parameter: a 16-block D built before it (pool 1, dense from 512 features) still loads.
    deep = VGGStyleDiscriminator(blocks=16, channels=4, dense_features=8)
    assert deep.pool_size == 1 and deep.classifier[0].in_features == 512


def test_vgg_dense_layer_does_not_grow_with_fewer_blocks():
    # blocks=4 keeps the paper's 8x8 pooled map at 128 px instead of a 32x32 one (134M dense weights).
    disc = VGGStyleDiscriminator(blocks=4, input_size=128)
    assert disc.pool_size == 8 and disc.classifier[0].in_features == 128 * 8 * 8


def test_seed000_variant_global_pool_and_probability():
    disc = TINY["seed000"]()
    assert disc.pool_size == 1
    out = disc(torch.randn(3, 3, 64, 64) * 10)
    assert out.shape == (3, 1) and ((out > 0) & (out < 1)).all()


def test_vgg_rejects_bad_options_and_inputs():
    with pytest.raises(ValueError, match="VGGStyleDiscriminator: blocks=1 must be an integer >= 2"):
        VGGStyleDiscriminator(blocks=1)
    with pytest.raises(ValueError, match="expected input \\(N, 3, H, W\\), got \\(1, 1, 32, 32\\)"):
        tiny_vgg()(torch.rand(1, 1, 32, 32))


# --- PatchGAN -------------------------------------------------------------------------------------------------

def test_patchgan_matches_pix2pix_parameter_count():
    # pix2pix's 70x70 NLayerDiscriminator (input_nc=6: conditional) prints 2.769 M parameters.
    expected = (_conv(6, 64, 4) + _conv(64, 128, 4, False) + 256 + _conv(128, 256, 4, False) + 512
                + _conv(256, 512, 4, False) + 1024 + _conv(512, 1, 4))
    assert count_parameters(PatchGANDiscriminator(in_channels=6)) == expected == 2_768_705


@pytest.mark.parametrize("crop", CROPS[:4])
@pytest.mark.parametrize("norm", ["batch", "instance", "spectral", "none"])
def test_patchgan_gives_one_logit_per_patch(crop, norm):
    disc = PatchGANDiscriminator(channels=4, norm=norm)
    out = disc(torch.rand(2, 3, crop, crop))
    # Three stride-2 convs halve the size; the two stride-1 4x4 convs each remove one pixel.
    assert out.shape == (2, 1, crop // 8 - 2, crop // 8 - 2)


def test_patchgan_errors():
    with pytest.raises(ValueError, match="norm='group' is not supported; choose one of batch, instance, spectral, none"):
        PatchGANDiscriminator(norm="group")
    with pytest.raises(ValueError, match="smaller than the minimum 24 px"):
        PatchGANDiscriminator(channels=4)(torch.rand(1, 3, 20, 20))


# --- U-Net with spectral norm ---------------------------------------------------------------------------------

def test_unet_matches_real_esrgan_parameter_count():
    disc = UNetDiscriminatorSN(in_channels=3, blocks=3, channels=64)
    assert count_parameters(disc) == 4_376_897  # Real-ESRGAN's UNetDiscriminatorSN(3, 64)
    sn = [m for m in disc.modules() if isinstance(m, torch.nn.Conv2d) and parametrize.is_parametrized(m)]
    assert len(sn) == 8  # every conv except the first and the last is spectral-normalised


@pytest.mark.parametrize("crop", CROPS[:4] + (50,))
def test_unet_gives_per_pixel_logits_at_any_crop(crop):
    out = UNetDiscriminatorSN(channels=4)(torch.rand(2, 3, crop, crop + 6))
    assert out.shape == (2, 1, crop, crop + 6)


def test_unet_rejects_too_small_input():
    with pytest.raises(ValueError, match="smaller than the minimum 8 px"):
        UNetDiscriminatorSN(channels=4)(torch.rand(1, 3, 6, 6))


# --- all discriminators ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(TINY))
def test_gradients_reach_every_parameter(name):
    torch.manual_seed(0)
    disc = TINY[name]()
    x = torch.rand(2, 3, 48, 48, requires_grad=True)
    disc(x).mean().backward()
    missing = [n for n, p in disc.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, f"no/invalid gradient for {missing}"
    assert x.grad.abs().sum() > 0


@pytest.mark.parametrize("name", sorted(TINY))
def test_channels_last_and_bf16_autocast(name):
    torch.manual_seed(0)
    disc = TINY[name]().eval()
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        reference = disc(x)
        disc_cl = disc.to(memory_format=torch.channels_last)
        x_cl = x.contiguous(memory_format=torch.channels_last)
        out_cl = disc_cl(x_cl)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out_bf16 = disc_cl(x_cl)
    torch.testing.assert_close(out_cl, reference, rtol=1e-4, atol=1e-5)
    assert out_bf16.shape == reference.shape and torch.isfinite(out_bf16).all()


# --- conf/disc ------------------------------------------------------------------------------------------------

DISC_YAMLS = {"vgg": VGGStyleDiscriminator, "seed000": VGGStyleDiscriminator, "patchgan": PatchGANDiscriminator,
              "unet": UNetDiscriminatorSN}


def test_every_disc_yaml_exists_and_follows_the_generator_channels():
    assert {p.stem for p in (CONF / "disc").glob("*.yaml")} == set(DISC_YAMLS)
    for name, cls in DISC_YAMLS.items():
        raw = OmegaConf.load(CONF / "disc" / f"{name}.yaml")
        assert raw._target_ == f"{cls.__module__}.{cls.__name__}", name
        assert OmegaConf.to_container(raw)["in_channels"] == "${gen.in_channels}", name
        assert "blocks" in raw, name
    assert OmegaConf.load(CONF / "disc" / "vgg.yaml").blocks == 8
    assert OmegaConf.load(CONF / "disc" / "seed000.yaml").pool_size == 1


@pytest.mark.parametrize("name", sorted(DISC_YAMLS))
def test_disc_yaml_instantiates_with_cli_style_overrides(name):
    root = OmegaConf.create({"gen": {"in_channels": 1}, "disc": OmegaConf.load(CONF / "disc" / f"{name}.yaml")})
    OmegaConf.update(root, "disc.channels", 4)
    if name in ("vgg", "seed000"):
        OmegaConf.update(root, "disc.blocks", 4)  # `disc.blocks=4` from the command line
        OmegaConf.update(root, "disc.dense_features", 8)
    disc = instantiate(root.disc)
    assert isinstance(disc, DISC_YAMLS[name]) and disc.in_channels == 1
    out = disc(torch.rand(1, 1, 48, 48))
    assert out.shape[:2] == (1, 1)
    if name in ("vgg", "seed000"):
        assert disc.blocks == 4 and out.shape == (1, 1)
