"""How to load a generator, from any file sr-lightning reads: the one module eval, upscale, export and train's
`init_from` go through.

`load_generator(path)` looks at the file and rebuilds the generator it holds, in eval mode:

* a training checkpoint `.ckpt` (full `last.ckpt` or slim `best.ckpt`: only the `gen.`/`gen_ema.` weights, the
  config and the step): the composed config in `hyper_parameters["cfg"]` rebuilds the network;
* our export (`.safetensors` / TorchScript `.pt` / `.onnx` with its JSON *sidecar* `<file>.json`, written by
  `sr_lightning.exporting`): the sidecar describes the network and how to feed it;
* a community model file (`.pth`/`.safetensors` without a sidecar, e.g. a downloaded ESRGAN/SPAN/Compact):
  spandrel detects architecture, size and scale (`sr_lightning.models.spandrel_arch.load_model_file`).

`load_bare_weights` covers the last case a user can name: bare `.safetensors` plus the preset config they were
trained with (`upscale weights=<file> model=<preset>`). Every path ends in `_loaded`, the one place a
`LoadedGenerator` is made, so all of them describe a network the same way (scale, value range, colour mode).

Reading the files safely (weights only, `_target_` limited to model classes) is `sr_lightning.checkpoint`'s job;
every problem here is a `CheckpointError` (a `UserError`) naming the file and what would work.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import importlib.util
import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from sr_lightning.checkpoint import CheckpointError, check_generator_config, read_checkpoint

SIDECAR_VERSION = 1
# Export format -> file extension; the sidecar's "format" field holds the key.
FORMATS = {"safetensors": ".safetensors", "onnx": ".onnx", "torchscript": ".pt"}
IO_NAMES = ("lr", "sr")  # input / output names of exported graphs
# Keys only a Lightning checkpoint has: a file with any of them is not a community weights file.
LIGHTNING_KEYS = ("pytorch-lightning_version", "hyper_parameters", "global_step", "optimizer_states")


@dataclass
class LoadedGenerator:
    """A generator ready for inference and what is needed to feed it: its scale, the value range it works in
    (tanh models: [-1, 1]) and its colour mode (rgb, or y: MATLAB BT.601 luma, chroma merged by bicubic)."""

    net: nn.Module
    scale: int
    value_range: tuple[float, float]
    color: str
    cfg: dict[str, Any]
    source: str
    used_ema: bool = False
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return str(self.meta.get("name") or Path(self.source).stem)


def _loaded(net: nn.Module, cfg: dict[str, Any], source: str | os.PathLike, map_location: Any = "cpu",
            used_ema: bool = False, **meta: Any) -> LoadedGenerator:
    """The one builder of `LoadedGenerator`: scale, value range and colour come from ``cfg``, which has the same
    keys whether it is a training config, a sidecar's or a community file's detected one."""
    net = net.eval()
    if map_location is not None:
        net = net.to(map_location)  # ONNX runners hold no tensors: a no-op for them
    meta.setdefault("name", cfg.get("model_name"))
    return LoadedGenerator(net=net, scale=int(cfg["scale"]),
                           value_range=tuple(float(v) for v in cfg.get("value_range", (0.0, 1.0))),
                           color=str(cfg.get("color", "rgb")), cfg=cfg, source=str(source), used_ema=bool(used_ema),
                           meta=meta)


def load_generator(path: str | os.PathLike, use_ema: bool = True,
                   map_location: str | torch.device = "cpu") -> LoadedGenerator:
    """Rebuild the generator of a `.ckpt`, of our export (`.safetensors`/`.pt`/`.onnx` with its sidecar) or of a
    community model file (architecture detected by spandrel), in eval mode. ``use_ema``: a checkpoint's EMA copy
    when it has one."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".onnx" or (suffix in (".safetensors", ".pt") and sidecar_path(path).is_file()):
        return load_exported(path, map_location=map_location)  # our export: the sidecar rebuilds it exactly
    if suffix in (".safetensors", ".pt"):  # no sidecar: a community file, or our export without its sidecar
        return load_model_file_generator(path, map_location)
    checkpoint = read_checkpoint(path)
    cfg = (checkpoint.get("hyper_parameters") or {}).get("cfg") if isinstance(checkpoint, dict) else None
    if not cfg or "gen" not in cfg:
        if is_bare_weights(checkpoint):  # a community .pth (state dict, or BasicSR's params/params_ema, ...)
            return load_model_file_generator(path, map_location, contents=checkpoint)
        raise CheckpointError(f"{path} has no sr-lightning config (hyper_parameters['cfg']); it was not written "
                              f"by `python -m sr_lightning train`. Export weights with their config instead.")
    return _from_training_checkpoint(path, checkpoint, cfg, use_ema, map_location)


# --- training checkpoints -------------------------------------------------------------------------------------

def generator_state(checkpoint: dict[str, Any], use_ema: bool = True) -> tuple[dict[str, Tensor], bool]:
    """The generator's weights from a training checkpoint (full or slim): the EMA copy when present and asked
    for. Returns (state dict without the prefix, whether it is the EMA copy); ({}, False) when there is none."""
    state = checkpoint["state_dict"]
    for prefix, is_ema in (("gen_ema.", True), ("gen.", False)):
        if is_ema and not use_ema:
            continue
        sub = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        if sub:
            return sub, is_ema
    return {}, False


def _from_training_checkpoint(path: Path, checkpoint: dict[str, Any], cfg: dict[str, Any], use_ema: bool,
                              map_location: Any) -> LoadedGenerator:
    net = build_from_config(cfg["gen"], path)
    state, used_ema = generator_state(checkpoint, use_ema)
    if state:
        missing, unexpected = net.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise CheckpointError(f"{path}: generator weights do not match gen={cfg['gen'].get('_target_')} "
                                  f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    return _loaded(net, cfg, path, map_location, used_ema, global_step=checkpoint.get("global_step"))


def build_from_config(gen: Any, where: Path | str) -> nn.Module:
    """The network a generator config read from a file describes, once `check_generator_config` allowed it (the
    file's `_target_` may only name a model class: Hydra would call anything)."""
    from hydra.utils import instantiate

    if not isinstance(gen, dict) or "_target_" not in gen:
        raise CheckpointError(f"{where}: no generator config with a `_target_` to rebuild the network from")
    check_generator_config(gen, where)
    try:
        return instantiate(gen)
    except Exception as err:  # noqa: BLE001 - a model's own argument checks; named with the file
        raise CheckpointError(f"{where}: cannot build {gen.get('_target_')}: {err}") from err


# --- community model files ------------------------------------------------------------------------------------

def is_bare_weights(checkpoint: Any) -> bool:
    """A file holding only a model's tensors (as the SR community publishes them), not a training checkpoint.

    Lightning checkpoints of other projects are not: their message stays "not written by sr-lightning train".
    spandrel's own unwrapping (``params_ema``, ``state_dict``, ``module.`` prefixes) decides what the tensors are.
    """
    from spandrel import canonicalize_state_dict

    if not isinstance(checkpoint, dict) or any(k in checkpoint for k in LIGHTNING_KEYS):
        return False
    try:
        state = canonicalize_state_dict(dict(checkpoint))
    except Exception:  # noqa: BLE001 - any structure spandrel cannot unwrap is not a weights file
        return False
    return bool(state) and all(isinstance(v, torch.Tensor) for v in state.values())


def load_model_file_generator(path: str | os.PathLike, map_location: str | torch.device = "cpu",
                              contents: Any = None) -> LoadedGenerator:
    """A community `.pth`/`.safetensors` (no sidecar): spandrel detects the architecture, size and scale; the
    tensors are read weights-only (``contents``: already read, not read again)."""
    from sr_lightning.models.spandrel_arch import ModelFileError, load_model_file

    path = Path(path)
    try:
        net, info = load_model_file(path, contents)
    except ModelFileError as err:
        from spandrel import UnsupportedModelError

        hint = ""
        if isinstance(err.__cause__, UnsupportedModelError) and path.suffix.lower() in (".safetensors", ".pt"):
            hint = (f" (an sr-lightning export needs its sidecar {sidecar_path(path).name} next to it; bare weights "
                    f"of one of our presets: upscale weights={path.name} model=<preset> scale=<n>)")
        raise CheckpointError(f"{err}{hint}") from err
    except ValueError as err:  # the detected network is one our generator refuses (e.g. a x1 restoration model)
        raise CheckpointError(f"{path}: spandrel reads it, but not as a super-resolution generator here "
                              f"({err})") from err
    # 1-channel community models are grayscale: eval/upscale feed them luma (Y) and merge bicubic chroma
    color = "rgb" if info["in_channels"] == 3 else "y"
    cfg = {"gen": info["gen"], "scale": int(info["scale"]), "value_range": [0.0, 1.0], "color": color,
           "model_name": path.stem}
    return _loaded(net, cfg, path, map_location, global_step=None, arch=info["arch"], format="model file")


# --- bare weights of one of our presets -----------------------------------------------------------------------

def load_bare_weights(path: str | os.PathLike, gen: dict[str, Any], scale: int, color: str = "rgb",
                      value_range: tuple[float, float] = (0.0, 1.0), name: str = "?",
                      map_location: str | torch.device = "cpu") -> LoadedGenerator:
    """Bare `.safetensors` weights (no sidecar) into the network ``gen`` (a preset's config) builds."""
    path = Path(path)
    net = build_from_config(gen, f"model preset gen={gen.get('_target_')}")
    load_safetensors_into(net, path, f"model={name} (gen={gen.get('_target_')}, scale={scale})")
    cfg = {"gen": gen, "scale": int(scale), "color": str(color), "value_range": [float(v) for v in value_range],
           "model_name": name}
    return _loaded(net, cfg, path, map_location)


def load_safetensors_into(net: nn.Module, path: Path, what: str) -> None:
    """Strict load; a prefixed training state dict (``gen.`` / ``gen_ema.``) is accepted too."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        state = load_file(str(path))
    except (SafetensorError, OSError) as err:
        raise CheckpointError(f"{path}: not a readable safetensors file ({err}); re-export it") from err
    for prefix in ("gen_ema.", "gen."):
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
            break
    own = net.state_dict()
    wrong = [(k, tuple(v.shape), tuple(own[k].shape)) for k, v in state.items() if k in own and own[k].shape != v.shape]
    if wrong:
        key, theirs, ours = wrong[0]
        more = f" (and {len(wrong) - 1} more tensors)" if len(wrong) > 1 else ""
        raise CheckpointError(f"{path}: weights do not fit {what}: {key} has shape {list(theirs)} in the file but "
                              f"{list(ours)} in the model{more}; pick the preset/options the weights were trained "
                              f"with (e.g. gen.channels=, gen.blocks=)")
    missing, unexpected = net.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise CheckpointError(f"{path}: weights do not match {what} (missing {sorted(missing)[:3]}, unexpected "
                              f"{sorted(unexpected)[:3]}); pick the preset/options the weights were trained with")


# --- our exports ----------------------------------------------------------------------------------------------

class OnnxGenerator(nn.Module):
    """An exported ONNX generator behind the nn.Module interface `tiled_forward` uses (CPU onnxruntime)."""

    def __init__(self, path: Path, in_channels: int, out_channels: int, scale: int):
        super().__init__()
        import onnxruntime as ort

        self.session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.in_channels, self.out_channels, self.scale = in_channels, out_channels, scale

    def forward(self, x: Tensor) -> Tensor:
        array = x.detach().float().contiguous().cpu().numpy()
        return torch.from_numpy(self.session.run(None, {self.input_name: array})[0]).to(x.device)


def runs_on_onnxruntime(net: nn.Module) -> bool:
    """Whether ``net`` is an ONNX graph (CPU onnxruntime, fp32: no device or autocast choice applies)."""
    return isinstance(net, OnnxGenerator)


def runs_as_exported(net: nn.Module) -> bool:
    """Whether ``net`` is a graph run as it was exported (ONNX or TorchScript, in fp32), not eager PyTorch."""
    return runs_on_onnxruntime(net) or isinstance(net, torch.jit.ScriptModule)


def load_exported(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> LoadedGenerator:
    """Rebuild an exported generator from its file and sidecar.

    `.safetensors` is rebuilt from the sidecar's ``gen`` config (strict weight loading); `.pt` (TorchScript)
    and `.onnx` (needs onnxruntime) are loaded as they are.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"exported weights not found: {path} (create them with `python -m sr_lightning "
                              f"export ckpt=<run>/checkpoints/best.ckpt`)")
    meta = read_sidecar(path)
    if meta.get("sha256") and meta["sha256"] != file_sha256(path):
        raise CheckpointError(f"{path}: its contents do not match the sha256 recorded in {sidecar_path(path).name}; "
                              f"the sidecar belongs to another export. Re-run `export` to write both together")
    suffix = path.suffix.lower()
    in_channels = int(meta.get("in_channels") or (1 if meta["color"] == "y" else 3))
    out_channels = int(meta.get("out_channels") or in_channels)
    if suffix == ".safetensors":
        net = build_from_config(meta.get("gen"), path)
        load_safetensors_into(net, path, f"gen={meta['gen'].get('_target_')} from {sidecar_path(path).name}")
    elif suffix == ".pt":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # TorchScript is deprecated upstream; still asked for
            net = torch.jit.load(str(path), map_location="cpu")
        net.in_channels, net.out_channels, net.scale = in_channels, out_channels, int(meta["scale"])
    elif suffix == ".onnx":
        if importlib.util.find_spec("onnxruntime") is None:
            raise CheckpointError(f"{path}: running an ONNX model needs onnxruntime (pip install onnxruntime); or "
                                  f"export format=safetensors")
        net = OnnxGenerator(path, in_channels, out_channels, int(meta["scale"]))
    else:
        raise CheckpointError(f"{path}: unknown export extension '{path.suffix}'; expected one of "
                              f"{', '.join(FORMATS.values())}")
    cfg = {"gen": meta.get("gen"), "scale": int(meta["scale"]), "value_range": list(meta["value_range"]),
           "color": meta["color"], "model_name": meta.get("model_name")}
    return _loaded(net, cfg, path, None if runs_on_onnxruntime(net) else map_location,
                   bool(meta.get("used_ema", False)), name=meta.get("model_name") or path.stem,
                   global_step=meta.get("global_step"), exported_from=meta.get("source"), format=meta.get("format"))


# --- the sidecar ----------------------------------------------------------------------------------------------

def sidecar_path(weights: str | os.PathLike) -> Path:
    """`best.safetensors` -> `best.safetensors.json`: the full name, so the three formats exported from one
    checkpoint (best.safetensors, best.onnx, best.pt) each keep their own sidecar side by side."""
    weights = Path(weights)
    return weights.with_name(weights.name + ".json")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def build_sidecar(loaded: LoadedGenerator, fmt: str, weights: Path) -> dict[str, Any]:
    """What `load_exported` needs to rebuild and feed the network (the format is described in
    `sr_lightning.exporting`)."""
    from omegaconf import DictConfig, OmegaConf

    cfg = loaded.cfg or {}
    gen = cfg.get("gen")
    if isinstance(gen, DictConfig):  # a config the caller composed rather than read from a file
        gen = OmegaConf.to_container(gen, resolve=True)
    net = loaded.net
    return {
        "sr_lightning_export": SIDECAR_VERSION,
        "format": fmt,
        "file": weights.name,
        "sha256": file_sha256(weights),
        "gen": gen,
        "scale": int(loaded.scale),
        "in_channels": int(getattr(net, "in_channels", 1 if loaded.color == "y" else 3)),
        "out_channels": int(getattr(net, "out_channels", getattr(net, "in_channels", 3))),
        "value_range": [float(v) for v in loaded.value_range],
        "color": str(loaded.color),
        "model_name": cfg.get("model_name") or (loaded.meta or {}).get("name"),
        "source": str(Path(loaded.source).resolve()),
        "used_ema": bool(getattr(loaded, "used_ema", False)),
        "global_step": (loaded.meta or {}).get("global_step"),
        "io": {"input": IO_NAMES[0], "output": IO_NAMES[1], "layout": "NCHW",
               "dynamic": ["batch", "height", "width"] if fmt == "onnx" else ["height", "width"]},
        "torch": torch.__version__.split("+")[0],
        "created": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
    }


def write_sidecar(weights: Path, meta: dict[str, Any]) -> Path:
    """Written under a temporary name and renamed: a sidecar on disk is always a whole one."""
    path = sidecar_path(weights)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(meta, indent=2) + "\n")
    os.replace(tmp, path)
    return path


def read_sidecar(weights: str | os.PathLike) -> dict[str, Any]:
    weights = Path(weights)
    path = sidecar_path(weights)
    if not path.is_file():
        raise CheckpointError(
            f"{weights}: sidecar {path.name} not found next to it. It describes the architecture and is written "
            f"by `python -m sr_lightning export`; for bare weights use "
            f"`upscale weights={weights} model=<preset> scale=<n>` instead")
    try:
        meta = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{path}: not a readable JSON sidecar ({err}); re-run `export`") from err
    missing = [k for k in ("sr_lightning_export", "format", "scale", "value_range", "color") if k not in meta]
    if missing:
        raise CheckpointError(f"{path}: sidecar lacks {', '.join(missing)}; re-run `export` with this version")
    if int(meta["sr_lightning_export"]) > SIDECAR_VERSION:
        raise CheckpointError(f"{path}: sidecar version {meta['sr_lightning_export']} is newer than this package "
                              f"understands ({SIDECAR_VERSION}); update sr-lightning")
    return meta
