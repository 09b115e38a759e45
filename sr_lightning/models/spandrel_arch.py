"""spandrel's super-resolution architectures as trainable generators, and community model files.

`spandrel <https://github.com/chaiNNer-org/spandrel>`_ (MIT; its ``spandrel`` package holds only architectures
under permissive licences) implements the networks the SR community publishes weights for (ESRGAN, SwinIR,
HAT, SPAN, ...) as plain ``nn.Module`` classes, and detects architecture and size from a weights file.

* ``SpandrelGenerator(arch, scale, in_channels, out_channels, **arch_args)`` is a generator in this project's
  contract (``scale``/``in_channels``/``out_channels``, ``[0, 1]`` in and out, ``(N, C, sH, sW)``) around one
  spandrel architecture built from keyword arguments. Its ``state_dict`` keys are spandrel's own (no prefix),
  so exported weights load in spandrel (chaiNNer, ComfyUI, ...) as they are.
* ``ARCHS`` is the one table of architectures that train here (constructor, the names of its scale/channel
  arguments, SR-mode and paper-size defaults, a tiny preset for tests, licence, input size requirements);
  ``NOT_TRAINABLE`` lists the others with the reason.
* ``load_model_file(path) -> (net, info)`` reads a community ``.pth``/``.safetensors`` (tensors only: pickles
  load with ``weights_only=True``), lets spandrel detect the architecture, and returns it in the wrapper plus
  the ``gen`` config that rebuilds the same network.
* ``architecture_table()`` / ``run(argv)``: what ``python -m sr_lightning list`` prints.

Plain ``nn.Module`` code: no Lightning import.
"""
from __future__ import annotations

import importlib
import inspect
import os
from collections.abc import Callable, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from spandrel import SizeRequirements
from torch import Tensor, nn

from sr_lightning.errors import UserError

TARGET = "sr_lightning.models.spandrel_arch.SpandrelGenerator"
PERMISSIVE = "permissive (see spandrel)"
# Keys of our own config that are not constructor arguments of the wrapped architecture.
OWN_KEYS = ("arch", "scale", "in_channels", "out_channels")


def _no_requirements(args: Mapping[str, Any]) -> SizeRequirements:
    return SizeRequirements()


def _fixed(**kwargs: Any) -> Callable[[Mapping[str, Any]], SizeRequirements]:
    return lambda args: SizeRequirements(**kwargs)


@dataclass(frozen=True)
class ArchSpec:
    """One spandrel architecture as a generator.

    ``scale_arg``/``in_arg``/``out_arg`` name the constructor's scale and channel arguments (``None``: the
    network has no such argument; channels are then fixed at ``fixed_channels``). ``defaults`` are applied
    under the user's arguments: the SR mode (e.g. SwinIR's ``upsampler``) and, where the class defaults are
    not the paper's network, the paper's size. ``size`` mirrors the ``size_requirements`` of spandrel's
    descriptor for the same arguments (tests compare them); the wrapper pads the input to meet them.
    """

    module: str
    cls: str
    scale_arg: str
    in_arg: str | None
    out_arg: str | None
    scales: tuple[int, ...]
    tiny: Mapping[str, Any]
    defaults: Mapping[str, Any] = field(default_factory=dict)
    licence: str = PERMISSIVE
    size: Callable[[Mapping[str, Any]], SizeRequirements] = _no_requirements
    fixed_channels: int = 3
    clone_input: bool = False  # the network writes into its input tensor (RCAN multiplies it in place)
    rgb_only: bool = False     # has a channel argument but hard-codes 3-channel parts (RGB mean, ...)
    # arguments spandrel cannot read from a file and assumes at these values: other values train, but spandrel
    # (chaiNNer, ComfyUI, ...) would rebuild the exported file differently (our own sidecar rebuilds it exactly)
    assumed_by_spandrel: Mapping[str, Any] = field(default_factory=dict)
    note: str = ""

    def constructor(self) -> type[nn.Module]:
        return getattr(importlib.import_module(f"spandrel.architectures.{self.module}"), self.cls)


# Scales offered (each builds and gives (N, C, sH, sW) at tiny size; training is tested at x4):
_POW2_3 = (2, 3, 4, 8)  # pixel-shuffle upsamplers built from x2 stages or one x3 stage
_ANY = (2, 3, 4, 8)     # one pixel shuffle by `scale`: other integers work too, these are the usual ones

ARCHS: dict[str, ArchSpec] = {
    "Compact": ArchSpec(
        "Compact", "Compact", "upscale", "num_in_ch", "num_out_ch", _ANY,
        tiny={"num_feat": 8, "num_conv": 2}, licence="BSD-3-Clause (Real-ESRGAN)",
        note="Real-ESRGAN's SRVGGNetCompact"),
    "SPAN": ArchSpec(
        "SPAN", "SPAN", "upscale", "num_in_ch", "num_out_ch", _ANY, tiny={"feature_channels": 8}, rgb_only=True),
    "ESRGAN": ArchSpec(
        "ESRGAN", "ESRGAN", "scale", "in_nc", "out_nc", (2, 3, 4, 8),
        tiny={"num_filters": 8, "num_blocks": 1}, licence="Apache-2.0 (ESRGAN)", size=_fixed(minimum=2),
        note="RRDBNet; its state_dict uses the old ESRGAN keys (model.0.weight, ...); spandrel reads both key styles"),
    "RealPLKSR": ArchSpec(
        "PLKSR", "RealPLKSR", "upscaling_factor", None, None, _ANY,
        tiny={"dim": 8, "n_blocks": 1, "kernel_size": 5}, assumed_by_spandrel={"norm_groups": 4}),
    "PLKSR": ArchSpec(
        "PLKSR", "PLKSR", "upscaling_factor", None, None, _ANY,
        tiny={"dim": 8, "n_blocks": 1, "kernel_size": 5}),
    "SwinIR": ArchSpec(
        "SwinIR", "SwinIR", "upscale", "in_chans", None, _POW2_3,
        # classical SR SwinIR (Liang et al. 2021): the paper's x4 network
        defaults={"upsampler": "pixelshuffle", "embed_dim": 180, "depths": [6] * 6, "num_heads": [6] * 6,
                  "window_size": 8, "mlp_ratio": 2.0, "img_size": 64, "resi_connection": "1conv"},
        tiny={"embed_dim": 12, "depths": [1], "num_heads": [2], "window_size": 4, "img_size": 16},
        licence="Apache-2.0 (SwinIR)", size=_fixed(minimum=16),
        note="upsampler=pixelshuffledirect gives SwinIR-light's upsampler"),
    "Swin2SR": ArchSpec(
        "Swin2SR", "Swin2SR", "upscale", "in_chans", None, _POW2_3,
        defaults={"upsampler": "pixelshuffle", "embed_dim": 180, "depths": [6] * 6, "num_heads": [6] * 6,
                  "window_size": 8, "mlp_ratio": 2.0, "img_size": 64},
        tiny={"embed_dim": 12, "depths": [1], "num_heads": [2], "window_size": 4, "img_size": 16},
        size=_fixed(minimum=16)),
    "HAT": ArchSpec(
        "HAT", "HAT", "upscale", "in_chans", None, _POW2_3,
        # HAT (Chen et al. 2023), the paper's x4 network
        defaults={"upsampler": "pixelshuffle", "embed_dim": 180, "depths": [6] * 6, "num_heads": [6] * 6,
                  "window_size": 16, "compress_ratio": 3, "squeeze_factor": 30, "mlp_ratio": 2.0,
                  "img_size": 64},
        tiny={"embed_dim": 12, "depths": [1], "num_heads": [2], "window_size": 4, "img_size": 16,
              "compress_ratio": 2, "squeeze_factor": 2, "num_feat": 8},
        size=_fixed(minimum=16)),
    "DAT": ArchSpec(
        "DAT", "DAT", "upscale", "in_chans", None, _POW2_3,
        defaults={"upsampler": "pixelshuffle"},
        tiny={"embed_dim": 16, "depth": [1], "num_heads": [2], "split_size": [2, 4], "expansion_factor": 2.0},
        size=_fixed(minimum=16)),
    "OmniSR": ArchSpec(
        "OmniSR", "OmniSR", "up_scale", "num_in_ch", "num_out_ch", _ANY,
        tiny={"num_feat": 8, "block_num": 1, "res_num": 1, "window_size": 4},
        size=_fixed(minimum=16)),
    "SAFMN": ArchSpec(
        "SAFMN", "SAFMN", "upscaling_factor", None, None, _ANY,
        defaults={"dim": 36, "n_blocks": 8},  # SAFMN (Sun et al. 2023), the paper's network
        tiny={"dim": 8, "n_blocks": 1}, size=_fixed(multiple_of=8)),
    "RCAN": ArchSpec(
        "RCAN", "RCAN", "scale", "n_colors", None, _POW2_3,
        tiny={"n_resgroups": 1, "n_resblocks": 1, "n_feats": 16, "reduction": 4}, clone_input=True, rgb_only=True,
        assumed_by_spandrel={"rgb_range": 255},
        note="rgb_range stays 255: spandrel cannot detect it from a file"),
    "DRCT": ArchSpec(
        "DRCT", "DRCT", "upscale", "in_chans", None, _POW2_3, defaults={"upsampler": "pixelshuffle"},
        tiny={"embed_dim": 12, "depths": [1], "num_heads": [2], "window_size": 4, "gc": 8, "img_size": 16},
        size=_fixed(multiple_of=16)),
    "ATD": ArchSpec(
        "ATD", "ATD", "upscale", "in_chans", None, _POW2_3, defaults={"upsampler": "pixelshuffle"},
        tiny={"embed_dim": 12, "depths": [2], "num_heads": [2], "window_size": 4, "num_tokens": 8,
              "reducted_dim": 2, "convffn_kernel_size": 3},
        assumed_by_spandrel={"category_size": 256},
        size=_fixed(minimum=8)),
    "CRAFT": ArchSpec(
        "CRAFT", "CRAFT", "upscale", "in_chans", None, _POW2_3,
        tiny={"embed_dim": 12, "depths": [1], "num_heads": [2], "split_size_0": 2, "split_size_1": 4},
        assumed_by_spandrel={"window_size": 16},
        size=_fixed(minimum=16, multiple_of=16)),
    "RGT": ArchSpec(
        "RGT", "RGT", "upscale", "in_chans", None, _POW2_3,
        tiny={"embed_dim": 12, "depth": [1], "num_heads": [2], "split_size": [2, 4]}, size=_fixed(minimum=16)),
    "DCTLSA": ArchSpec(
        "DCTLSA", "DCTLSA", "upscale", "in_nc", "out_nc", _ANY,
        tiny={"nf": 10, "num_modules": 6}, size=_fixed(minimum=16), assumed_by_spandrel={"num_head": 5}),
    "DITN": ArchSpec(
        "DITN", "DITN", "upscale", "inp_channels", None, _ANY,
        tiny={"dim": 12, "ITL_blocks": 1, "SAL_blocks": 1, "UFONE_blocks": 1}, rgb_only=True,
        assumed_by_spandrel={"patch_size": 8},
        size=lambda args: SizeRequirements(multiple_of=int(args.get("patch_size", 8)))),
    "SeemoRe": ArchSpec(
        "SeemoRe", "SeemoRe", "scale", "in_chans", None, _ANY,
        tiny={"num_experts": 2, "num_layers": 1, "embedding_dim": 8}, size=_fixed(minimum=16), rgb_only=True,
        assumed_by_spandrel={"recursive": 2}),
    "MoSR": ArchSpec(
        "MoSR", "MoSR", "upscale", "in_ch", "out_ch", _ANY, tiny={"n_block": 1, "dim": 8}),
    "MoESR": ArchSpec(
        "MoESR", "MoESR", "scale", "in_ch", "out_ch", _ANY,
        tiny={"dim": 8, "n_blocks": 1, "n_block": 1, "upsample_dim": 8}, size=_fixed(minimum=2)),
    "FDAT": ArchSpec(
        "FDAT", "FDAT", "scale", "num_in_ch", "num_out_ch", (2, 3, 4),
        tiny={"embed_dim": 8, "num_groups": 1, "depth_per_group": 1, "num_heads": 2, "window_size": 4,
              "mid_dim": 8}),
    "SwiftSRGAN": ArchSpec(
        "SwiftSRGAN", "SwiftSRGAN", "upscale_factor", "in_channels", None, (2, 4, 8),
        tiny={"num_channels": 8, "num_blocks": 1}),
}

# spandrel architectures that do not train here, with the reason (checked with spandrel 0.4.2).
NOT_TRAINABLE: dict[str, str] = {
    "DnCNN": "restoration only (denoising, scale 1)",
    "DRUNet": "restoration only (denoising, scale 1; takes a noise-level map)",
    "FBCNN": "restoration only (JPEG artefacts, scale 1; returns a tuple)",
    "FFTformer": "restoration only (deblurring, scale 1)",
    "NAFNet": "restoration only (scale 1)",
    "KBNet": "restoration only (scale 1)",
    "SCUNet": "restoration only (scale 1)",
    "Uformer": "restoration only (scale 1; square inputs, multiples of 128)",
    "RetinexFormer": "restoration only (low-light, scale 1)",
    "HVICIDNet": "restoration only (low-light, scale 1)",
    "MixDehazeNet": "restoration only (dehazing, scale 1)",
    "SAFMNBCIE": "restoration only (contrast enhancement, scale 1)",
    "LaMa": "inpainting (image + mask), not SR",
    "GFPGAN": "face restoration at a fixed 512 px input; returns a tuple",
    "RestoreFormer": "face restoration at a fixed 512 px input",
    "AuraSR": "GAN upsampler with a fixed 64 px input and a style network; inference only in spandrel",
    "IPT": "multi-task transformer evaluated patch by patch on 48 px windows (inference-only call in spandrel)",
    "MMRealSR": "returns (image, degradation estimates); modulated by a degradation net at inference",
    "GRL": "spandrel re-detects other window/stripe sizes than a GRL was built with (weights would not round-trip)",
    "RealCUGAN": "one class per scale with fixed internal crops (UpCunet2x/3x/4x); built from files only",
}


def _spec(arch: str | None) -> ArchSpec:
    if arch in ARCHS:
        return ARCHS[arch]
    trainable = ", ".join(ARCHS)
    if arch is None:
        raise ValueError(f"gen.arch: required with model=spandrel; allowed: {trainable} "
                         f"(or init_from=<model file> to take the architecture from the file)")
    if arch in NOT_TRAINABLE:
        raise ValueError(f"gen.arch: {arch} cannot be trained here ({NOT_TRAINABLE[arch]}); allowed: {trainable}")
    raise ValueError(f"gen.arch: got {arch!r}; allowed: {trainable}")


def plain_value(value: Any) -> Any:
    """OmegaConf containers and tuples -> lists/dicts, so the architecture gets ordinary Python values."""
    if isinstance(value, Mapping):
        return {str(k): plain_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)) or type(value).__name__ == "ListConfig":
        return [plain_value(v) for v in value]
    return value


def constructor_args(arch: str, scale: int, in_channels: int = 3, out_channels: int | None = None,
                     **arch_args: Any) -> dict[str, Any]:
    """The keyword arguments the spandrel class is built with (validated; raises ValueError naming the key)."""
    spec = _spec(arch)
    if scale not in spec.scales:
        raise ValueError(f"scale: got {scale}; {arch} supports {list(spec.scales)}")
    out_channels = in_channels if out_channels is None else out_channels
    own = {spec.scale_arg: "scale", spec.in_arg: "in_channels", spec.out_arg: "out_channels"}
    for key in arch_args:
        if key in own:  # one place for each: our scale/channel keys drive every architecture
            raise ValueError(f"gen.{key}: set {own[key]}= instead (it is {arch}'s name for it)")
    known = inspect.signature(spec.constructor().__init__).parameters
    unknown = sorted(set(arch_args) - set(known))
    if unknown:
        allowed = [k for k in known if k not in ("self", *own)]
        raise ValueError(f"gen.{unknown[0]}: not an argument of {arch}; allowed: {', '.join(allowed)}")
    if (spec.in_arg is None or spec.rgb_only) and in_channels != spec.fixed_channels:
        raise ValueError(f"gen.in_channels: got {in_channels}; {arch} has {spec.fixed_channels} input channels only")
    if spec.out_arg is None and out_channels != (in_channels if spec.in_arg else spec.fixed_channels):
        raise ValueError(f"gen.out_channels: got {out_channels}; {arch} outputs as many channels as it reads")
    _warn_undetectable(arch, spec, arch_args)
    args = {**plain_value(spec.defaults), **plain_value(arch_args), spec.scale_arg: int(scale)}
    if spec.in_arg:
        args[spec.in_arg] = int(in_channels)
    if spec.out_arg:
        args[spec.out_arg] = int(out_channels)
    return args


def _warn_undetectable(arch: str, spec: ArchSpec, arch_args: Mapping[str, Any]) -> None:
    import warnings

    for key, assumed in spec.assumed_by_spandrel.items():
        if key in arch_args and plain_value(arch_args[key]) != assumed:
            warnings.warn(f"gen.{key}={arch_args[key]!r}: spandrel cannot read {key} from a {arch} file and assumes "
                          f"{assumed!r}; the exported weights will load in spandrel-based tools only with {key}={assumed!r}"
                          f" (sr-lightning's own export sidecar rebuilds them exactly)", UserWarning, stacklevel=3)


def _strip_net_prefix(module: nn.Module, state_dict: dict, prefix: str, local_metadata: dict) -> None:
    """state_dict post-hook: ``<prefix>net.<key>`` -> ``<prefix><key>`` (spandrel's own names)."""
    inner = prefix + "net."
    for key in [k for k in state_dict if k.startswith(inner)]:  # ours were added last: order is kept
        state_dict[prefix + key[len(inner):]] = state_dict.pop(key)


def _add_net_prefix(module: nn.Module, state_dict: dict, prefix: str, *args: Any) -> None:
    """load_state_dict pre-hook, the inverse of `_strip_net_prefix` (also accepts ``net.``-prefixed keys)."""
    inner = prefix + "net."
    for key in [k for k in state_dict if k.startswith(prefix) and not k.startswith(inner)]:
        state_dict[inner + key[len(prefix):]] = state_dict.pop(key)


class SpandrelGenerator(nn.Module):
    """A spandrel SR architecture as a generator: ``SpandrelGenerator("SPAN", scale=4, feature_channels=48)``.

    Input and output in ``[0, 1]`` (not clamped: training needs the gradient). Inputs smaller than the
    architecture's size requirements (window multiples, minimum size) are padded at the bottom/right (reflect,
    then replicate) and the output is cropped, as spandrel's descriptor does. The state_dict has spandrel's
    key names; ``arch_args`` holds every constructor argument the network was built with.
    """

    # Every scale some listed architecture offers (config validation reads the class); each instance narrows
    # it to its architecture's scales (ARCHS[arch].scales), and the constructor refuses the others.
    supported_scales: tuple[int, ...] = (2, 3, 4, 8)

    def __init__(self, arch: str | None = None, scale: int = 4, in_channels: int = 3, out_channels: int | None = None,
                 **arch_args: Any):
        super().__init__()
        spec = _spec(arch)
        self.arch = str(arch)
        self.arch_args = constructor_args(self.arch, scale, in_channels, out_channels, **arch_args)
        self.scale = int(scale)
        self.supported_scales = spec.scales
        self.in_channels = int(in_channels) if spec.in_arg else spec.fixed_channels
        self.out_channels = int(out_channels if out_channels is not None else self.in_channels)
        self.size_requirements = spec.size(self.arch_args)
        self._clone_input = spec.clone_input
        self.net = spec.constructor()(**self.arch_args)
        self.register_state_dict_post_hook(_strip_net_prefix)
        self.register_load_state_dict_pre_hook(_add_net_prefix)

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        if self._clone_input:
            x = x.clone()
        x, padded = pad_to_requirements(x, self.size_requirements)
        out = self.net(x)
        if padded:
            out = out[..., : h * self.scale, : w * self.scale]
        return out

    def extra_repr(self) -> str:
        return f"arch={self.arch}, scale={self.scale}, in_channels={self.in_channels}"


def pad_to_requirements(x: Tensor, req: SizeRequirements) -> tuple[Tensor, bool]:
    """Pad bottom/right to meet ``req``: reflect (at most size-1 px), the rest replicate (spandrel's rule)."""
    if req.none:  # no shape arithmetic at all: keeps traced/exported graphs free of size-specific branches
        return x, False
    h, w = x.shape[-2:]
    pad_w, pad_h = req.get_padding(int(w), int(h))
    if not (pad_w or pad_h):
        return x, False
    reflect_w, reflect_h = min(pad_w, w - 1), min(pad_h, h - 1)
    x = nn.functional.pad(x, (0, reflect_w, 0, reflect_h), mode="reflect")
    if pad_w > reflect_w or pad_h > reflect_h:
        x = nn.functional.pad(x, (0, pad_w - reflect_w, 0, pad_h - reflect_h), mode="replicate")
    return x, True


def gen_config(arch: str, scale: int = 4, in_channels: int = 3, **arch_args: Any) -> dict[str, Any]:
    """The ``gen`` config (with ``_target_``) that builds ``SpandrelGenerator(arch, scale, ...)``."""
    return {"_target_": TARGET, "arch": arch, "scale": int(scale), "in_channels": int(in_channels),
            **plain_value(arch_args)}


def tiny_config(arch: str, scale: int = 4, in_channels: int = 3) -> dict[str, Any]:
    """A few-thousand-parameter version of ``arch`` (for tests and quick checks)."""
    return gen_config(arch, scale, in_channels, **ARCHS[arch].tiny)


# --- community model files ------------------------------------------------------------------------------------

class ModelFileError(UserError, ValueError):
    """A model file that cannot be used; the message is one line that names the file."""


WEIGHT_SUFFIXES = (".pth", ".pt", ".ckpt", ".bin", ".safetensors")


def read_state_dict(path: str | os.PathLike) -> dict[str, Tensor]:
    """The tensors of a ``.safetensors`` or a pickled ``.pth``/``.pt``/``.ckpt``/``.bin`` file.

    Pickles load with ``torch.load(weights_only=True)``: a file that needs any Python object beyond tensors and
    containers (and so could run code while loading) is refused. spandrel's wrappers (``params_ema``,
    ``state_dict``, ``module.`` prefixes) are unwrapped by ``spandrel.canonicalize_state_dict``.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: file not found")
    suffix = path.suffix.lower()
    if suffix not in WEIGHT_SUFFIXES:
        raise ModelFileError(f"{path}: unsupported file type {suffix or '(none)'}; allowed: {', '.join(WEIGHT_SUFFIXES)}")
    if suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            state: Any = load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError) as err:
            raise ModelFileError(f"{path}: not a readable safetensors file ({err})") from err
    else:
        from sr_lightning.checkpoint import load_failure, refusal, refused_global

        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 - holding code, truncated, a TorchScript archive, not a torch file
            refused = refused_global(err)  # a corrupt pickle raises UnpicklingError too: only this one is unsafe
            if refused is not None:
                raise ModelFileError(f"{path}: {refusal(refused)}") from err
            raise ModelFileError(f"{path}: not a readable weights file ({load_failure(err)})") from err
    return weights_of(path, state)


def weights_of(path: str | os.PathLike, state: Any) -> dict[str, Tensor]:
    """The model tensors of what a weights file held, unwrapped by ``spandrel.canonicalize_state_dict``."""
    from spandrel import canonicalize_state_dict

    if not isinstance(state, Mapping):
        raise ModelFileError(f"{path}: holds a {type(state).__name__}, not a dict of tensors")
    state = canonicalize_state_dict(dict(state))
    if not state or not all(isinstance(v, Tensor) for v in state.values()):
        raise ModelFileError(f"{path}: no state dict of tensors found (keys: {', '.join(list(state)[:5])})")
    return dict(state)


def _arch_name(model: nn.Module, arch_id: str) -> str:
    for name, spec in ARCHS.items():
        if type(model) is spec.constructor():
            return name
    return arch_id


def _same(a: Any, b: Any) -> bool:
    return a is b or plain_value(a) == plain_value(b)


def _is_plain(value: Any) -> bool:
    if isinstance(value, (list, tuple)):
        return all(_is_plain(v) for v in value)
    if isinstance(value, Mapping):
        return all(isinstance(k, str) and _is_plain(v) for k, v in value.items())
    return value is None or isinstance(value, (bool, int, float, str))


def config_from_hyperparameters(name: str, hyperparameters: Mapping[str, Any], where: str = "") -> dict[str, Any]:
    """The ``gen`` config that rebuilds a spandrel network from its ``hyperparameters`` (spandrel stores the
    constructor arguments on every architecture). Arguments at their default are left out."""
    spec = ARCHS[name]
    hp = dict(hyperparameters)
    scale = int(hp.pop(spec.scale_arg))
    in_channels = int(hp.pop(spec.in_arg)) if spec.in_arg else spec.fixed_channels
    out_channels = int(hp.pop(spec.out_arg)) if spec.out_arg else in_channels
    signature = inspect.signature(spec.constructor().__init__).parameters
    baseline = {k: p.default for k, p in signature.items() if p.default is not inspect.Parameter.empty}
    baseline.update(spec.defaults)
    args: dict[str, Any] = {}
    for key, value in hp.items():
        if key in baseline and _same(value, baseline[key]):
            continue
        if not _is_plain(value):
            raise ModelFileError(f"{where}: {name} argument {key}={value!r} cannot be written in a config")
        args[key] = plain_value(value)
    cfg = gen_config(name, scale, in_channels, **args)
    if out_channels != in_channels:
        cfg["out_channels"] = out_channels
    return cfg


def load_model_file(path: str | os.PathLike, contents: Any = None) -> tuple[SpandrelGenerator, dict[str, Any]]:
    """A community SR model (architecture, size and scale detected by spandrel) as a `SpandrelGenerator`.

    Returns ``(net, info)``: ``net`` in eval mode on the CPU holding the file's weights (spandrel key names), and
    ``info`` = ``{"arch", "scale", "in_channels", "out_channels", "gen", "tags", "source"}`` where ``gen`` is the
    config (``_target_`` + arguments) that rebuilds the same network, e.g. for ``init_from=<file>`` without a
    ``gen.arch``, or the ``gen`` of an exported model's sidecar. Raises `ModelFileError` (one line naming the
    file) for unreadable or unsafe files, unknown architectures and ones that do not train here. ``contents``:
    what a caller already read from the file weights-only (the file is then not read again).
    """
    from spandrel import MAIN_REGISTRY, ImageModelDescriptor, UnsupportedModelError

    path = Path(path)
    state = read_state_dict(path) if contents is None else weights_of(path, contents)
    try:
        descriptor = MAIN_REGISTRY.load(state)
    except UnsupportedModelError as err:
        raise ModelFileError(f"{path}: spandrel does not recognise these weights ({len(state)} tensors, first "
                             f"{next(iter(state))!r}); architectures it reads: python -m sr_lightning list") from err
    except Exception as err:  # a known key layout with inconsistent shapes
        raise ModelFileError(f"{path}: spandrel could not build the network ({type(err).__name__}: {err})") from err
    arch_id = str(descriptor.architecture.id)
    name = _arch_name(descriptor.model, arch_id)
    if name not in ARCHS or not isinstance(descriptor, ImageModelDescriptor):
        reason = NOT_TRAINABLE.get(name, "not in sr-lightning's list of trainable architectures")
        raise ModelFileError(f"{path}: a {arch_id} model, which sr-lightning cannot use as a generator ({reason}); "
                             f"trainable: {', '.join(ARCHS)}")
    cfg = config_from_hyperparameters(name, descriptor.model.hyperparameters, str(path))
    if (cfg["scale"], cfg["in_channels"]) != (descriptor.scale, descriptor.input_channels):
        # pixel-unshuffle variants (ESRGAN x1/x2 "unshuffle", SwinIR start_unshuffle) fold the scale into channels
        raise ModelFileError(f"{path}: a {arch_id} model with a pixel-unshuffle input (x{descriptor.scale}, "
                             f"tags {descriptor.tags}); these variants are not supported as generators yet")
    net = SpandrelGenerator(**{k: v for k, v in cfg.items() if k != "_target_"})
    missing, unexpected = net.load_state_dict(descriptor.model.state_dict(), strict=False)
    if missing or unexpected:
        raise ModelFileError(f"{path}: the rebuilt {name} does not match the file's tensors (missing "
                             f"{sorted(missing)[:3]}, unexpected {sorted(unexpected)[:3]})")
    info = {"arch": name, "scale": net.scale, "in_channels": net.in_channels, "out_channels": net.out_channels,
            "gen": cfg, "tags": list(descriptor.tags), "source": str(path)}
    return net.eval(), info


# --- the list of architectures --------------------------------------------------------------------------------

class _SkipInPlaceOnMeta(torch.overrides.TorchFunctionMode):
    """In-place ops on meta tensors (weight initialisation: ``uniform_``, ``erfinv_``, ...) do nothing: meta
    tensors hold no values, and torch runs these ops through slow Python reference code."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if (name.endswith("_") and not name.endswith("__") and args and isinstance(args[0], Tensor)
                and args[0].is_meta):
            return args[0]
        return func(*args, **(kwargs or {}))


@contextmanager
def _parameters_on_meta():
    """New parameters live on the meta device (no memory, no initialisation cost); other tensors stay real.

    ``torch.device("meta")`` alone fails for transformer constructors that call ``.item()`` on a
    ``torch.linspace`` (stochastic-depth rates), so only parameters are moved (accelerate's
    ``init_empty_weights`` does the same)."""
    register = nn.Module.register_parameter

    def register_on_meta(module: nn.Module, name: str, param: nn.Parameter | None) -> None:
        if param is not None and param.device.type != "meta":
            param = nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)
        register(module, name, param)

    nn.Module.register_parameter = register_on_meta  # type: ignore[method-assign]
    try:
        with _SkipInPlaceOnMeta():
            yield
    finally:
        nn.Module.register_parameter = register  # type: ignore[method-assign]


def count_parameters_at(arch: str, scale: int = 4, **arch_args: Any) -> int:
    """Parameters of ``arch`` with its default (paper) arguments, built with parameters on the meta device."""
    try:
        with _parameters_on_meta():
            net = SpandrelGenerator(arch, scale=scale, **arch_args)
    except Exception:  # an architecture that writes into its parameters in the constructor (RCAN)
        net = SpandrelGenerator(arch, scale=scale, **arch_args)
    return sum(p.numel() for p in net.parameters())


def architecture_table(scale: int = 4) -> list[dict[str, Any]]:
    """One row per trainable architecture: name, parameters at ``scale`` (default arguments), licence, scales."""
    import warnings

    with warnings.catch_warnings():  # constructors' deprecation notices (meshgrid indexing, ...) are not ours
        warnings.simplefilter("ignore")
        return [{"arch": name, "params": count_parameters_at(name, scale), "licence": spec.licence,
                 "scales": list(spec.scales), "note": spec.note} for name, spec in ARCHS.items()]


def format_table(scale: int = 4) -> str:
    rows = architecture_table(scale)
    lines = [f"Architectures that train (model=spandrel gen.arch=<name>; spandrel {_spandrel_version()}); "
             f"parameters at x{scale} with the default arguments:",
             f"  {'arch':<11} {'params':>12}  {'scales':<12} licence"]
    for row in rows:
        scales = ",".join(str(s) for s in row["scales"])
        lines.append(f"  {row['arch']:<11} {row['params']:>12,}  {scales:<12} {row['licence']}")
    lines += ["", "Architectures spandrel reads that do not train here:"]
    lines += [f"  {name:<13} {reason}" for name, reason in NOT_TRAINABLE.items()]
    lines += ["", "Examples:",
              "  python -m sr_lightning train model=spandrel gen.arch=SPAN gen.feature_channels=32",
              "  python -m sr_lightning train model=spandrel init_from=4x_model.safetensors   # fine-tune a file"]
    return "\n".join(lines)


def _spandrel_version() -> str:
    import spandrel

    return str(spandrel.__version__)
