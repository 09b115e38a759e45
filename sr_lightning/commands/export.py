"""`python -m sr_lightning export ckpt=<path> format=safetensors|onnx|torchscript`.

Exports the generator of a training checkpoint (its EMA copy when the checkpoint has one) and writes a
JSON *sidecar* next to the file (`<file name>.json`, e.g. `best.safetensors.json`), so `upscale` (and anyone
else) can use it without the training code's checkpoint:

```json
{
  "sr_lightning_export": 1,                   # sidecar format version
  "format": "safetensors",                    # safetensors | onnx | torchscript
  "file": "best.safetensors", "sha256": "...",  # the weights file it describes (checked on load)
  "gen": {"_target_": "sr_lightning.models.srresnet.SRResNet", "scale": 4, ...},  # architecture
  "scale": 4, "in_channels": 3, "out_channels": 3,
  "value_range": [0.0, 1.0],                  # the network's input/output range (tanh models: [-1, 1])
  "color": "rgb",                             # rgb | y (Y channel of MATLAB BT.601; upscale merges Cb/Cr)
  "model_name": "srresnet", "source": "/abs/path/best.ckpt", "used_ema": true, "global_step": 12000,
  "io": {"input": "lr", "output": "sr", "layout": "NCHW", "dynamic": ["batch", "height", "width"]},
  "torch": "2.14.1", "created": "2025-01-01T00:00:00+00:00"
}
```

ONNX and TorchScript files hold the bare network (input and output in ``value_range``, LapSRN reduced to
its full-scale output); their batch, height and width are dynamic, which the export checks by running two
batch sizes and input sizes against PyTorch (ONNX through onnxruntime when it is installed; within 1e-4).
`ckpt=` takes whatever `load_generator` reads, community model files (.pth/.safetensors, spandrel) included.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import importlib.util
import io
import json
import logging
import os
import sys
import warnings
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn

from sr_lightning.models import final_output

log = logging.getLogger("sr_lightning.export")

SIDECAR_VERSION = 1
FORMATS = {"safetensors": ".safetensors", "onnx": ".onnx", "torchscript": ".pt"}
IO_NAMES = ("lr", "sr")
# Two input sizes (height, width) the exported graph is checked on: different from each other and odd, so a
# graph that baked in the example's size or assumes even sizes fails the check instead of a later upscale.
CHECK_SIZES = ((24, 32), (37, 45))
# Batch sizes of the checks (one per size): the graph is exported at EXPORT_BATCH, checked at others too.
# Not 1 for the export: torch.export specialises a dimension of size 1 to a constant.
CHECK_BATCHES = (1, 3)
EXPORT_BATCH = 2
ONNX_TOLERANCE = 1e-4


class ExportError(RuntimeError):
    """An export that cannot be done or did not verify; the message names the file and the remedy."""


# --- sidecar --------------------------------------------------------------------------------------------------

def sidecar_path(weights: str | os.PathLike) -> Path:
    """`best.safetensors` -> `best.safetensors.json`: the full name, so the three formats exported from one
    checkpoint (best.safetensors, best.onnx, best.pt) each keep their own sidecar side by side."""
    weights = Path(weights)
    return weights.with_name(weights.name + ".json")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def build_sidecar(loaded, fmt: str, weights: Path) -> dict[str, Any]:
    """The metadata `load_exported` needs to rebuild and feed the network (see the module docstring)."""
    cfg = loaded.cfg or {}
    gen = cfg.get("gen")
    if isinstance(gen, DictConfig):
        gen = OmegaConf.to_container(gen, resolve=True)
    net = loaded.net
    return {
        "sr_lightning_export": SIDECAR_VERSION,
        "format": fmt,
        "file": weights.name,
        "sha256": _sha256(weights),
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
    path = sidecar_path(weights)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(meta, indent=2) + "\n")
    os.replace(tmp, path)
    return path


def read_sidecar(weights: str | os.PathLike) -> dict[str, Any]:
    weights = Path(weights)
    path = sidecar_path(weights)
    if not path.is_file():
        raise ExportError(
            f"{weights}: sidecar {path.name} not found next to it. It describes the architecture and is written "
            f"by `python -m sr_lightning export`; for bare weights use "
            f"`upscale weights={weights} model=<preset> scale=<n>` instead")
    try:
        meta = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ExportError(f"{path}: not a readable JSON sidecar ({err}); re-run `export`") from err
    missing = [k for k in ("sr_lightning_export", "format", "scale", "value_range", "color") if k not in meta]
    if missing:
        raise ExportError(f"{path}: sidecar lacks {', '.join(missing)}; re-run `export` with this version")
    if int(meta["sr_lightning_export"]) > SIDECAR_VERSION:
        raise ExportError(f"{path}: sidecar version {meta['sr_lightning_export']} is newer than this package "
                          f"understands ({SIDECAR_VERSION}); update sr-lightning")
    return meta


# --- loading --------------------------------------------------------------------------------------------------

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


def load_exported(path: str | os.PathLike, map_location: str | torch.device = "cpu"):
    """Rebuild an exported generator from its file and sidecar -> `sr_lightning.checkpoint.LoadedGenerator`.

    `.safetensors` is rebuilt from the sidecar's ``gen`` config (strict weight loading); `.pt` (TorchScript)
    and `.onnx` (needs onnxruntime) are loaded as they are.
    """
    from sr_lightning.checkpoint import LoadedGenerator

    path = Path(path)
    if not path.is_file():
        raise ExportError(f"exported weights not found: {path} (create them with `python -m sr_lightning export "
                          f"ckpt=<run>/checkpoints/best.ckpt`)")
    meta = read_sidecar(path)
    if meta.get("sha256") and meta["sha256"] != _sha256(path):
        raise ExportError(f"{path}: its contents do not match the sha256 recorded in {sidecar_path(path).name}; "
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
            raise ExportError(f"{path}: running an ONNX model needs onnxruntime (pip install onnxruntime); or "
                              f"export format=safetensors")
        net = OnnxGenerator(path, in_channels, out_channels, int(meta["scale"]))
    else:
        raise ExportError(f"{path}: unknown export extension '{path.suffix}'; expected one of "
                          f"{', '.join(FORMATS.values())}")
    net.eval()
    if not isinstance(net, OnnxGenerator):
        net.to(map_location)
    cfg = {"gen": meta.get("gen"), "scale": int(meta["scale"]), "value_range": list(meta["value_range"]),
           "color": meta["color"], "model_name": meta.get("model_name")}
    return LoadedGenerator(
        net=net, scale=int(meta["scale"]), value_range=tuple(float(v) for v in meta["value_range"]),
        color=str(meta["color"]), cfg=cfg, source=str(path), used_ema=bool(meta.get("used_ema", False)),
        meta={"name": meta.get("model_name") or path.stem, "global_step": meta.get("global_step"),
              "exported_from": meta.get("source"), "format": meta.get("format")},
    )


def build_from_config(gen: Any, where: Path | str) -> nn.Module:
    from hydra.utils import instantiate

    from sr_lightning.checkpoint import CheckpointError, check_generator_config

    if not isinstance(gen, dict) or "_target_" not in gen:
        raise ExportError(f"{where}: no generator config with a `_target_` to rebuild the network from")
    try:  # the sidecar is a file like any other: its `_target_` may only name a model class (no code to run)
        check_generator_config(gen, where)
    except CheckpointError as err:
        raise ExportError(str(err)) from err
    try:
        return instantiate(gen)
    except Exception as err:
        raise ExportError(f"{where}: cannot build {gen.get('_target_')}: {err}") from err


def load_safetensors_into(net: nn.Module, path: Path, what: str) -> None:
    """Strict load; a prefixed training state dict (``gen.`` / ``gen_ema.``) is accepted too."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        state = load_file(str(path))
    except (SafetensorError, OSError) as err:
        raise ExportError(f"{path}: not a readable safetensors file ({err}); re-export it") from err
    for prefix in ("gen_ema.", "gen."):
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
            break
    own = net.state_dict()
    wrong = [(k, tuple(v.shape), tuple(own[k].shape)) for k, v in state.items() if k in own and own[k].shape != v.shape]
    if wrong:
        key, theirs, ours = wrong[0]
        more = f" (and {len(wrong) - 1} more tensors)" if len(wrong) > 1 else ""
        raise ExportError(f"{path}: weights do not fit {what}: {key} has shape {list(theirs)} in the file but "
                          f"{list(ours)} in the model{more}; pick the preset/options the weights were trained "
                          f"with (e.g. gen.channels=, gen.blocks=)")
    missing, unexpected = net.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ExportError(f"{path}: weights do not match {what} (missing {sorted(missing)[:3]}, unexpected "
                          f"{sorted(unexpected)[:3]}); pick the preset/options the weights were trained with")


# --- writing --------------------------------------------------------------------------------------------------

class FinalOutput(nn.Module):
    """The exported graph: one tensor out (LapSRN's list of pyramid levels -> its full-scale image)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: Tensor) -> Tensor:
        return final_output(self.net(x))


def _example(loaded, size: tuple[int, int], seed: int = 0, batch: int = 1) -> Tensor:
    lo, hi = loaded.value_range
    channels = int(getattr(loaded.net, "in_channels", 1 if loaded.color == "y" else 3))
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(batch, channels, *size, generator=generator) * (hi - lo) + lo


def export_safetensors(loaded, out: Path) -> None:
    from safetensors.torch import save_file

    # clone(): safetensors refuses tensors that share storage (tied or sliced parameters).
    state = {k: v.detach().cpu().clone().contiguous() for k, v in loaded.net.state_dict().items()}
    save_file(state, str(out), metadata={"format": "pt", "producer": "sr_lightning export"})


def export_torchscript(loaded, out: Path) -> list[float]:
    """Trace on the first check size; verify on both (a trace that baked in a size fails the second)."""
    model = FinalOutput(loaded.net).eval()
    with warnings.catch_warnings(), torch.inference_mode():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated upstream but still asked for
        traced = torch.jit.trace(model, _example(loaded, CHECK_SIZES[0]), check_trace=False)
        torch.jit.save(traced, str(out))
        reloaded = torch.jit.load(str(out))
        diffs = [float((reloaded(x) - model(x)).abs().max()) for x in (_example(loaded, s, i) for i, s in
                                                                          enumerate(CHECK_SIZES))]
    return diffs


def onnx_exporter(choice: str) -> str:
    """``auto``: the torch.export-based exporter when onnxscript is installed, else the TorchScript one."""
    if choice not in ("auto", "dynamo", "legacy"):
        raise ExportError(f"onnx_exporter: got {choice!r}; allowed: auto, dynamo, legacy")
    if choice == "auto":
        return "dynamo" if importlib.util.find_spec("onnxscript") is not None else "legacy"
    if choice == "dynamo" and importlib.util.find_spec("onnxscript") is None:
        raise ExportError("onnx_exporter=dynamo needs onnxscript (pip install onnxscript); or onnx_exporter=legacy")
    return choice


@contextlib.contextmanager
def _quiet_exporter():
    """The ONNX exporters print progress and log every optimiser rewrite at INFO, which Hydra's stdout logging
    would show: silence both for the call (errors still raise)."""
    loggers = [logging.getLogger(name) for name in ("onnxscript", "onnx_ir", "torch.onnx")]
    levels = [logger.level for logger in loggers]
    sink = io.StringIO()
    try:
        for logger in loggers:
            logger.setLevel(logging.WARNING)
        with warnings.catch_warnings(), contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            warnings.simplefilter("ignore", DeprecationWarning)  # the legacy exporter announces its deprecation
            warnings.simplefilter("ignore", FutureWarning)
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


@contextlib.contextmanager
def _folded_reparameterisation(net: nn.Module):
    """Re-parameterised convolutions (spandrel's SPAN: `Conv3XC`) fold their training branches into one
    `eval_conv` on *every* eval-mode forward, writing `.data` in place, which torch.export cannot trace (it
    fails, or crashes in its decompositions). Fold once here and skip the fold while exporting: the weights are
    the same ones the eval forward would compute."""
    folding = [m for m in net.modules() if callable(getattr(m, "update_params", None)) and hasattr(m, "eval_conv")]
    with torch.no_grad():
        for module in folding:
            module.update_params()
            module.update_params = _no_fold  # instance attribute: shadows the method until deleted
    try:
        yield
    finally:
        for module in folding:
            del module.update_params


def _no_fold() -> None:
    return None


def export_onnx(loaded, out: Path, opset: int, exporter: str) -> None:
    """Batch, height and width dynamic (tiled upscaling feeds several tiles at once, other tools whole batches)."""
    model = FinalOutput(loaded.net).eval()
    example = _example(loaded, CHECK_SIZES[0], batch=EXPORT_BATCH)
    names = {"input_names": [IO_NAMES[0]], "output_names": [IO_NAMES[1]]}
    with _quiet_exporter(), _folded_reparameterisation(model):
        if exporter == "dynamo":
            dims = {0: torch.export.Dim("batch", min=1), 2: torch.export.Dim("height", min=4),
                    3: torch.export.Dim("width", min=4)}
            torch.onnx.export(model, (example,), str(out), dynamo=True, dynamic_shapes=(dims,),
                              opset_version=opset, external_data=False, verbose=False, **names)
        else:
            torch.onnx.export(model, (example,), str(out), dynamo=False, opset_version=opset,
                              dynamic_axes={IO_NAMES[0]: {0: "batch", 2: "height", 3: "width"},
                                            IO_NAMES[1]: {0: "batch", 2: "out_height", 3: "out_width"}}, **names)


def check_onnx(loaded, path: Path) -> list[float] | None:
    """Max |onnxruntime - PyTorch| on each check size and batch (CHECK_SIZES x CHECK_BATCHES, pairwise), or None
    when onnxruntime is not installed."""
    if importlib.util.find_spec("onnxruntime") is None:
        return None
    runner = OnnxGenerator(path, 0, 0, int(loaded.scale))
    model = FinalOutput(loaded.net).eval()
    diffs = []
    with torch.inference_mode():
        for i, (size, batch) in enumerate(zip(CHECK_SIZES, CHECK_BATCHES)):
            x = _example(loaded, size, seed=i, batch=batch)
            ours, theirs = model(x), runner(x)
            if ours.shape != theirs.shape:
                diffs.append(float("inf"))
            else:
                diffs.append(float((ours - theirs).abs().max()))
    return diffs


# --- command --------------------------------------------------------------------------------------------------

def _output_path(cfg: DictConfig, source: Path, fmt: str) -> Path:
    ext = FORMATS[fmt]
    output = cfg.get("output")
    if not output:
        return source.with_suffix(ext)
    out = Path(str(output)).expanduser()
    if out.is_dir() or str(output).endswith(("/", os.sep)):
        return out / f"{source.stem}{ext}"
    if out.suffix.lower() != ext:
        raise ExportError(f"output={out}: format={fmt} writes '{ext}' files; name it {out.with_suffix(ext).name} "
                          f"or give a folder")
    return out


def export(cfg: DictConfig) -> tuple[Path, dict[str, Any]]:
    """Do the export described by ``cfg`` (see conf/export.yaml); returns the file and its sidecar's content."""
    from sr_lightning.checkpoint import CheckpointError, load_generator

    if not cfg.get("ckpt"):
        raise ExportError("ckpt: missing; give ckpt=<run dir>/checkpoints/best.ckpt (or an exported .safetensors)")
    fmt = str(cfg.get("format", "safetensors")).lower()
    if fmt not in FORMATS:
        raise ExportError(f"format: got {fmt!r}; allowed: {', '.join(FORMATS)}")
    source = Path(str(cfg.ckpt)).expanduser()
    out = _output_path(cfg, source, fmt)
    if out.resolve() == source.resolve():
        raise ExportError(f"output={out} is the checkpoint itself; choose another output")
    for path in (out, sidecar_path(out)):
        if path.exists() and not cfg.get("overwrite", False):
            raise ExportError(f"{path} already exists; pass overwrite=true to replace it or choose output=<path>")
    try:
        loaded = load_generator(source, use_ema=bool(cfg.get("use_ema", True)))
    except CheckpointError as err:
        raise ExportError(str(err)) from err
    if cfg.get("use_ema", True) and not loaded.used_ema and source.suffix == ".ckpt":
        log.info("%s has no EMA weights (module.ema_decay was null); exporting the trained generator", source)
    loaded.net.eval().cpu().float()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.stem}.tmp{out.suffix}")
    checks: list[float] | None = None
    try:
        if fmt == "safetensors":
            export_safetensors(loaded, tmp)
        elif fmt == "torchscript":
            checks = export_torchscript(loaded, tmp)
        else:
            try:
                exporter = onnx_exporter(str(cfg.get("onnx_exporter", "auto")))
                export_onnx(loaded, tmp, int(cfg.get("opset", 18)), exporter)
            except ExportError:
                raise
            except Exception as err:
                raise ExportError(f"ONNX export of {type(loaded.net).__name__} failed ({type(err).__name__}: "
                                  f"{str(err).splitlines()[0] if str(err) else ''}); try onnx_exporter=legacy "
                                  f"or format=safetensors") from err
            if cfg.get("check", True):
                checks = check_onnx(loaded, tmp)
                if checks is None:
                    log.info("onnxruntime is not installed: the ONNX file was not checked")
        if checks is not None and not all(d <= ONNX_TOLERANCE for d in checks):
            sizes = ", ".join(f"{_check_label(fmt, i)}: {d:.2e}" for i, d in enumerate(checks))
            raise ExportError(f"{out.name}: the exported {fmt} model differs from PyTorch by more than "
                              f"{ONNX_TOLERANCE:g} ({sizes}); its graph is not size-independent. "
                              f"Use format=safetensors")
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            tmp.unlink()
    meta = build_sidecar(loaded, fmt, out)
    if checks is not None:
        meta["check"] = {"sizes": [list(s) for s in CHECK_SIZES], "max_abs_diff": checks,
                         "against": "onnxruntime" if fmt == "onnx" else "torch.jit.load"}
        if fmt == "onnx":
            meta["check"]["batches"] = list(CHECK_BATCHES)
    write_sidecar(out, meta)
    return out, meta


def _check_label(fmt: str, i: int) -> str:
    """`3x37x45` (batch x height x width) for ONNX checks, `37x45` for TorchScript's (batch 1)."""
    h, w = CHECK_SIZES[i]
    return f"{CHECK_BATCHES[i]}x{h}x{w}" if fmt == "onnx" else f"{h}x{w}"


def main(cfg: DictConfig) -> int:
    try:
        path, meta = export(cfg)
    except ExportError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    which = "EMA" if meta["used_ema"] else "trained"
    target = (meta.get("gen") or {}).get("_target_", "generator")
    line = (f"exported {target} x{meta['scale']} ({which} weights, color={meta['color']}, "
            f"value_range={meta['value_range']}) -> {path} ({path.stat().st_size / 1e6:.1f} MB) "
            f"+ sidecar {sidecar_path(path).name}")
    if "check" in meta:
        diffs = ", ".join(f"{_check_label(meta['format'], i)}: {d:.1e}"
                          for i, d in enumerate(meta["check"]["max_abs_diff"]))
        line += f"; checked against {meta['check']['against']}, max |diff| {diffs}"
    print(line)
    return 0
