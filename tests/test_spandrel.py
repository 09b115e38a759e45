"""spandrel architectures as generators (model=spandrel), the `list` command, and community model files."""
from __future__ import annotations

import json
import os
import pickle
import re
from pathlib import Path
from types import SimpleNamespace

import lightning.pytorch as pl
import pytest
import spandrel
import torch
from hydra.utils import instantiate
from safetensors.torch import save_file

from sr_lightning.config import ConfigError
from sr_lightning.models.spandrel_arch import (
    ARCHS,
    NOT_TRAINABLE,
    ModelFileError,
    SpandrelGenerator,
    count_parameters_at,
    load_model_file,
    tiny_config,
)

from helpers import TINY, compose_train, run_cli

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # constructors' meshgrid/kaiming notices

# No TINY_NET: spandrel's generators take their own size keys (gen.feature_channels=...).
TINY_TRAIN = [*TINY, "module.ema_decay=0.5"]


def _arch_overrides(arch: str) -> list[str]:
    """`gen.arch=X` plus the tiny preset, in the `++gen.k=v` form the CLI writes for model=spandrel."""
    args = [f"++gen.{k}={json.dumps(v)}" for k, v in ARCHS[arch].tiny.items()]
    return ["model=spandrel", f"gen.arch={arch}", *args]


def _spandrel_output(descriptor, x):
    return descriptor(x.clone())  # pads, runs in eval mode and clamps to [0, 1] as spandrel users see it


def _ours(net, x):
    net.eval()
    with torch.no_grad():
        return net(x).clamp(0, 1)


@pytest.fixture(scope="module")
def sample_data():
    """The real sample photos at crop 32 / x4 / batch 2, decoded once for every architecture."""
    cfg = compose_train(["model=spandrel", "gen.arch=SPAN", *TINY_TRAIN])
    data = instantiate(cfg.data)
    data.num_workers = 0
    return data


# --- every listed architecture --------------------------------------------------------------------------------

@pytest.mark.parametrize("arch", list(ARCHS))
def test_listed_architecture_trains_exports_and_upscales(arch, sample_data, tmp_path):
    from sr_lightning.exporting import export_safetensors
    from sr_lightning.inference.tiling import tiled_forward
    from sr_lightning.module import SRModule

    cfg = compose_train([*_arch_overrides(arch), *TINY_TRAIN], output_dir=tmp_path)
    torch.manual_seed(0)
    module = SRModule(cfg, output_dir=str(tmp_path), channels_last=True)  # as `train` runs on a CPU
    assert isinstance(module.gen, SpandrelGenerator) and module.gen.scale == 4 and module.gen.in_channels == 3
    before = {k: v.detach().clone() for k, v in module.gen.state_dict().items()}
    trainer = pl.Trainer(max_steps=2, logger=False, enable_progress_bar=False, enable_model_summary=False,
                         enable_checkpointing=False, num_sanity_val_steps=0, limit_val_batches=0,
                         accelerator="cpu", devices=1)
    trainer.fit(module, datamodule=sample_data)
    assert trainer.global_step == 2
    assert any(not torch.equal(before[k], v) for k, v in module.gen.state_dict().items() if v.is_floating_point())

    # export through the export command's own writer; spandrel reads the file as this architecture
    # spandrel runs contiguous tensors; channels_last convolutions round differently (SPAN's x255 range shows it)
    net = module.gen.eval().to(memory_format=torch.contiguous_format)
    out = tmp_path / f"{arch}.safetensors"
    export_safetensors(SimpleNamespace(net=net), out)
    descriptor = spandrel.ModelLoader().load_from_file(out)
    assert descriptor.scale == 4 and descriptor.input_channels == 3
    assert descriptor.size_requirements == net.size_requirements  # our table says what spandrel says
    x = torch.rand(1, 3, 9, 7, generator=torch.Generator().manual_seed(1))  # odd sizes: padding is exercised
    assert torch.allclose(_ours(net, x), _spandrel_output(descriptor, x), atol=1e-6)
    loaded, info = load_model_file(out)  # and back into our wrapper, rebuilt from the detected config
    assert info["arch"] == arch and torch.equal(_ours(loaded, x), _ours(net, x))

    # upscale: the tiled inference path on a small image
    image = torch.rand(1, 3, 14, 12, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        sr = tiled_forward(net, image, scale=4, tile=8, tile_overlap=2)  # 2 x 2 tiles
    assert sr.shape == (1, 3, 56, 48) and torch.isfinite(sr).all()


def test_train_spandrel_through_the_cli(tmp_path):
    """The real entry point: plain `gen.<arg>=` overrides, 2 steps, a checkpoint whose generator keys are spandrel's."""
    run = tmp_path / "run"
    result = run_cli("train", "model=spandrel", "gen.arch=SPAN", "gen.feature_channels=8", *TINY_TRAIN,
                     f"hydra.run.dir={run}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((run / "summary.json").read_text())["status"] == "completed"
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["hyper_parameters"]["cfg"]["gen"]["feature_channels"] == 8
    gen = {k[len("gen."):]: v for k, v in ckpt["state_dict"].items() if k.startswith("gen.")}
    descriptor = spandrel.MAIN_REGISTRY.load(gen)  # the raw generator state dict is a SPAN file as it is
    assert descriptor.architecture.id == "SPAN" and "8nf" in descriptor.tags


def test_train_spandrel_without_arch_says_what_to_choose(tmp_path):
    result = run_cli("train", "model=spandrel", "trainer.max_steps=1", f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode == 2
    assert "error: gen.arch: required with model=spandrel; allowed: Compact, SPAN" in result.stderr
    assert "init_from=<model file>" in result.stderr


def test_cli_adds_plus_plus_only_for_architecture_arguments_of_spandrel():
    from sr_lightning.cli import spandrel_arch_overrides

    argv = ["model=spandrel", "gen.arch=SPAN", "gen.feature_channels=8", "gen.in_channels=1", "+gen.x=1", "lr=1"]
    assert spandrel_arch_overrides(argv) == ["model=spandrel", "gen.arch=SPAN", "++gen.feature_channels=8",
                                             "gen.in_channels=1", "+gen.x=1", "lr=1"]
    assert spandrel_arch_overrides(["model=srresnet", "gen.blocks=8"]) == ["model=srresnet", "gen.blocks=8"]


# --- the generator contract -----------------------------------------------------------------------------------

def test_state_dict_keys_are_spandrels_names_at_top_level_and_nested():
    torch.manual_seed(0)
    net = SpandrelGenerator("Compact", scale=2, num_feat=8, num_conv=2)
    native = net.net.state_dict()
    assert list(net.state_dict()) == list(native)  # no "net." prefix
    holder = torch.nn.ModuleDict({"gen": net})
    assert list(holder.state_dict()) == [f"gen.{k}" for k in native]

    other = torch.nn.ModuleDict({"gen": SpandrelGenerator("Compact", scale=2, num_feat=8, num_conv=2)})
    other.load_state_dict(holder.state_dict())  # strict, nested: the load hook adds the prefix back
    fresh = SpandrelGenerator("Compact", scale=2, num_feat=8, num_conv=2)
    fresh.load_state_dict(native)  # a spandrel state dict loads as it is
    x = torch.rand(1, 3, 6, 5)
    assert torch.equal(fresh(x), net(x)) and torch.equal(other["gen"](x), net(x))


def test_small_inputs_are_padded_and_the_output_cropped():
    net = SpandrelGenerator("SAFMN", scale=2, dim=8, n_blocks=1).eval()  # needs multiples of 8
    with torch.no_grad():
        y = net(torch.rand(2, 3, 5, 7))
    assert y.shape == (2, 3, 10, 14)


def test_rcan_does_not_scale_the_callers_tensor():
    net = SpandrelGenerator("RCAN", scale=2, **ARCHS["RCAN"].tiny)
    x = torch.rand(1, 3, 6, 6)
    kept = x.clone()
    net(x)
    assert torch.equal(x, kept)  # RCAN's forward multiplies its input by rgb_range in place


@pytest.mark.parametrize("kwargs, message", [
    ({"arch": None}, "gen.arch: required with model=spandrel; allowed: Compact, SPAN"),
    ({"arch": "Nope"}, "gen.arch: got 'Nope'; allowed: Compact"),
    ({"arch": "DnCNN"}, "gen.arch: DnCNN cannot be trained here (restoration only"),
    ({"arch": "SwiftSRGAN", "scale": 3}, "scale: got 3; SwiftSRGAN supports [2, 4, 8]"),
    ({"arch": "SPAN", "upscale": 2}, "gen.upscale: set scale= instead"),
    ({"arch": "SPAN", "num_feat": 2}, "gen.num_feat: not an argument of SPAN; allowed: feature_channels"),
    ({"arch": "SAFMN", "in_channels": 1}, "gen.in_channels: got 1; SAFMN has 3 input channels only"),
    ({"arch": "SPAN", "in_channels": 1}, "gen.in_channels: got 1; SPAN has 3 input channels only"),
])
def test_bad_arguments_name_the_key_and_the_allowed_values(kwargs, message):
    with pytest.raises(ValueError) as err:
        SpandrelGenerator(**kwargs)
    assert message in str(err.value)


@pytest.mark.parametrize("arch", [a for a, spec in ARCHS.items() if spec.in_arg and not spec.rgb_only])
def test_one_channel_generators_for_color_y(arch):
    net = SpandrelGenerator(arch, scale=2, in_channels=1, **ARCHS[arch].tiny)
    assert (net.in_channels, net.out_channels) == (1, 1)
    assert net(torch.rand(2, 1, 6, 6)).shape == (2, 1, 12, 12)


def test_parameter_counts_at_default_size_are_the_papers():
    # meta-device construction: no weights are allocated, the count is exact
    assert count_parameters_at("ESRGAN") == 16_697_987  # RRDBNet-23 (ESRGAN paper, as our rrdbnet preset)
    assert count_parameters_at("SwinIR") == 11_900_199  # classical SwinIR x4 (11.9M in the paper)
    assert count_parameters_at("Compact") == 621_424  # realesr-general-x4v3 / SRVGGNetCompact 64x16


def test_list_command_prints_trainable_and_untrainable_architectures():
    result = run_cli("list")
    assert result.returncode == 0, result.stderr[-2000:]
    out = result.stdout
    for arch in ARCHS:
        assert re.search(rf"^  {arch}\s+[\d,]+\s", out, re.M), arch
    assert re.search(r"^  SwinIR\s+11,900,199\s+2,3,4,8\s+Apache-2.0", out, re.M)
    assert re.search(r"^  Compact\s+621,424\s+2,3,4,8\s+BSD-3-Clause", out, re.M)
    assert "do not train here" in out and f"  DnCNN         {NOT_TRAINABLE['DnCNN']}" in out
    assert "Warning" not in result.stderr


def test_list_takes_key_value_like_every_command():
    from sr_lightning.commands import architectures

    assert architectures.run(["scale=2"]) == 0
    with pytest.raises(ConfigError, match="scale: got 'x'; expected an integer"):
        architectures.run(["scale=x"])
    result = run_cli("list", "--scale", "2")
    assert result.returncode == 2 and result.stderr.startswith("error: --scale: unexpected argument"), result.stderr


# --- community model files -------------------------------------------------------------------------------------

def _esrgan_old_keys(seed=0):
    torch.manual_seed(seed)
    from spandrel.architectures.ESRGAN import ESRGAN

    return ESRGAN(num_filters=8, num_blocks=2, scale=4).state_dict()  # model.0.weight, model.1.sub.0.RDB1...


def _to_new_esrgan_keys(state: dict, blocks: int) -> dict:
    """Old ESRGAN keys -> BasicSR / Real-ESRGAN ("new arch") keys, as those repositories save them."""
    renames = [(r"^model\.0\.", "conv_first."), (rf"^model\.1\.sub\.{blocks}\.", "conv_body."),
               (r"^model\.1\.sub\.(\d+)\.RDB(\d)\.conv(\d)\.0\.", r"body.\1.rdb\2.conv\3."),
               (r"^model\.3\.", "conv_up1."), (r"^model\.6\.", "conv_up2."), (r"^model\.8\.", "conv_hr."),
               (r"^model\.10\.", "conv_last.")]
    out = {}
    for key, value in state.items():
        for pattern, repl in renames:
            key = re.sub(pattern, repl, key)
        out[key] = value
    return out


def _same_through_spandrel_and_us(path: Path, arch: str, atol: float = 1e-6):
    net, info = load_model_file(path)
    descriptor = spandrel.ModelLoader().load_from_file(path)
    x = torch.rand(1, 3, 13, 10, generator=torch.Generator().manual_seed(3))
    assert info["arch"] == arch and info["scale"] == descriptor.scale == net.scale
    assert torch.allclose(_ours(net, x), _spandrel_output(descriptor, x), atol=atol)
    rebuilt = instantiate(info["gen"])  # the config rebuilds the same network ...
    rebuilt.load_state_dict(net.state_dict())  # ... so the file's weights fit it strictly
    assert torch.equal(_ours(rebuilt, x), _ours(net, x))
    return net, info


def test_old_style_esrgan_pth_loads_like_spandrel(tmp_path):
    path = tmp_path / "4x_old_esrgan.pth"
    torch.save(_esrgan_old_keys(), path)
    net, info = _same_through_spandrel_and_us(path, "ESRGAN")
    assert info["gen"] == {"_target_": "sr_lightning.models.spandrel_arch.SpandrelGenerator", "arch": "ESRGAN",
                           "scale": 4, "in_channels": 3, "num_filters": 8, "num_blocks": 2}
    assert list(net.state_dict()) == list(_esrgan_old_keys())


def test_new_style_esrgan_keys_in_params_ema_give_the_same_network(tmp_path):
    old = _esrgan_old_keys()
    old_path, new_path = tmp_path / "old.pth", tmp_path / "RealESRGAN_x4.pth"
    torch.save(old, old_path)
    torch.save({"params_ema": _to_new_esrgan_keys(old, blocks=2)}, new_path)  # BasicSR's layout
    net_new, info_new = _same_through_spandrel_and_us(new_path, "ESRGAN")
    net_old, info_old = load_model_file(old_path)
    x = torch.rand(1, 3, 7, 6)
    assert info_new["gen"] == info_old["gen"] and torch.equal(_ours(net_new, x), _ours(net_old, x))


def test_span_safetensors_and_compact_pth_load_like_spandrel(tmp_path):
    from spandrel.architectures.Compact import Compact
    from spandrel.architectures.SPAN import SPAN

    torch.manual_seed(0)
    span = tmp_path / "2x_span.safetensors"
    save_file({k: v.contiguous() for k, v in SPAN(num_in_ch=3, num_out_ch=3, feature_channels=16, upscale=2)
               .state_dict().items()}, str(span))
    _, info = _same_through_spandrel_and_us(span, "SPAN")
    assert info["gen"]["feature_channels"] == 16 and info["scale"] == 2

    compact = tmp_path / "4x_compact.pth"
    torch.save({"params": Compact(num_feat=16, num_conv=4, upscale=4).state_dict()}, compact)
    _, info = _same_through_spandrel_and_us(compact, "Compact")
    assert (info["gen"]["num_feat"], info["gen"]["num_conv"]) == (16, 4)


class _RunsCode:
    """A pickle that runs a shell command when unpickled (what a malicious .pth does)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_pickle_that_runs_code_is_refused_and_does_not_run(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"params": _esrgan_old_keys(), "payload": _RunsCode(marker)}, path)
    with pytest.raises(ModelFileError, match=r"evil\.pth: refused: the file holds Python objects that are not "
                                             r"weights \(posix\.system\)"):
        load_model_file(path)
    assert not marker.exists()
    with open(path.with_suffix(".bin"), "wb") as f:  # a plain pickle, not even a torch zip file
        pickle.dump(_RunsCode(marker), f)
    with pytest.raises(ModelFileError):
        load_model_file(path.with_suffix(".bin"))
    assert not marker.exists()


@pytest.mark.parametrize("contents", [b"not a model", pickle.dumps({"a": 1})[:-3]])
def test_a_corrupt_weights_file_is_not_called_unsafe(tmp_path, contents):
    """A truncated or foreign file raises UnpicklingError as a refused object does; only the latter is unsafe
    (the same classification as training checkpoints, sr_lightning.checkpoint.refused_global)."""
    path = tmp_path / "broken.pth"
    path.write_bytes(contents)
    with pytest.raises(ModelFileError, match=r"broken\.pth: not a readable weights file \(UnpicklingError") as err:
        load_model_file(path)
    assert "refused" not in str(err.value) and "Python objects" not in str(err.value)


def test_unrecognised_and_untrainable_files_are_one_line_errors(tmp_path):
    junk = tmp_path / "junk.safetensors"
    save_file({"foo.weight": torch.zeros(3, 3)}, str(junk))
    with pytest.raises(ModelFileError, match=r"junk\.safetensors: spandrel does not recognise these weights"):
        load_model_file(junk)

    from spandrel.architectures.DnCNN import DnCNN

    dncnn = tmp_path / "dncnn.pth"
    torch.save(DnCNN(in_nc=3, out_nc=3, nc=8, nb=17).state_dict(), dncnn)
    with pytest.raises(ModelFileError, match=r"dncnn\.pth: a DnCNN model, which sr-lightning cannot use as a "
                                             r"generator \(restoration only"):
        load_model_file(dncnn)
    with pytest.raises(ModelFileError, match="file not found"):
        load_model_file(tmp_path / "missing.pth")
    with pytest.raises(ModelFileError, match=r"unsupported file type \.onnx"):
        (tmp_path / "m.onnx").write_bytes(b"x")
        load_model_file(tmp_path / "m.onnx")


def test_loaded_file_fine_tunes_through_the_module(tmp_path, sample_data):
    """init_from=<community file> with no gen.arch: the file's config becomes `gen`, its weights the start."""
    from omegaconf import open_dict

    from sr_lightning.module import SRModule

    path = tmp_path / "4x_compact.pth"
    from spandrel.architectures.Compact import Compact

    torch.manual_seed(0)
    torch.save(Compact(num_feat=8, num_conv=2, upscale=4).state_dict(), path)
    net, info = load_model_file(path)
    cfg = compose_train(["model=spandrel", *TINY_TRAIN], output_dir=tmp_path)
    with open_dict(cfg):
        cfg.gen = info["gen"]
    module = SRModule(cfg, output_dir=str(tmp_path))
    module.gen.load_state_dict(net.state_dict())
    trainer = pl.Trainer(max_steps=2, logger=False, enable_progress_bar=False, enable_model_summary=False,
                         enable_checkpointing=False, num_sanity_val_steps=0, limit_val_batches=0,
                         accelerator="cpu", devices=1)
    trainer.fit(module, datamodule=sample_data)
    assert any(not torch.equal(a, b) for a, b in zip(module.gen.state_dict().values(), net.state_dict().values()))


def test_tiny_configs_are_small(tmp_path):
    for arch in ARCHS:
        cfg = tiny_config(arch)
        assert sum(p.numel() for p in instantiate(cfg).parameters()) < 400_000, arch


def test_arguments_spandrel_cannot_read_from_a_file_warn():
    with pytest.warns(UserWarning, match=r"gen\.window_size=8: spandrel cannot read window_size from a CRAFT file"):
        SpandrelGenerator("CRAFT", scale=2, window_size=8, **ARCHS["CRAFT"].tiny)
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        SpandrelGenerator("CRAFT", scale=2, window_size=16, **ARCHS["CRAFT"].tiny)  # spandrel's value: silent
    assert not [w for w in caught if "spandrel cannot read" in str(w.message)]


def test_class_scales_cover_every_architectures_scales():
    offered = {scale for spec in ARCHS.values() for scale in spec.scales}
    assert set(SpandrelGenerator.supported_scales) == offered
