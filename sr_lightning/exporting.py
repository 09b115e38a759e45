"""Writing a generator as safetensors / ONNX / TorchScript, each with the JSON *sidecar* that rebuilds it.

`export_generator(source, fmt, ...)` loads any file `sr_lightning.loading.load_generator` reads (a training
checkpoint, full or slim, takes its EMA copy when it has one; an export; a community model file) and writes the
network next to a sidecar `<file name>.json` (e.g. `best.safetensors.json`), so `upscale` (and anyone else) can
use it without the training code's checkpoint:

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
Reading the sidecar back is `sr_lightning.loading.load_exported`.
"""
from __future__ import annotations

import contextlib
import importlib.util
import io
import logging
import os
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from sr_lightning.errors import UserError
from sr_lightning.loading import (
    FORMATS,
    IO_NAMES,
    LoadedGenerator,
    OnnxGenerator,
    build_sidecar,
    load_generator,
    sidecar_path,
    write_sidecar,
)
from sr_lightning.models import final_output
from sr_lightning.ops.value_range import from_unit

log = logging.getLogger("sr_lightning.export")

# Two input sizes (height, width) the exported graph is checked on: different from each other and odd, so a
# graph that baked in the example's size or assumes even sizes fails the check instead of a later upscale.
CHECK_SIZES = ((24, 32), (37, 45))
# Batch sizes of the checks (one per size): the graph is exported at EXPORT_BATCH, checked at others too.
# Not 1 for the export: torch.export specialises a dimension of size 1 to a constant.
CHECK_BATCHES = (1, 3)
EXPORT_BATCH = 2
ONNX_TOLERANCE = 1e-4


class ExportError(UserError, RuntimeError):
    """An export that cannot be done or did not verify; the message names the file and the remedy."""


# --- writing --------------------------------------------------------------------------------------------------

class FinalOutput(nn.Module):
    """The exported graph: one tensor out (LapSRN's list of pyramid levels -> its full-scale image)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: Tensor) -> Tensor:
        return final_output(self.net(x))


def _example(loaded: LoadedGenerator, size: tuple[int, int], seed: int = 0, batch: int = 1) -> Tensor:
    """Random input in the network's value range (what tracing and the checks feed it)."""
    channels = int(getattr(loaded.net, "in_channels", 1 if loaded.color == "y" else 3))
    generator = torch.Generator().manual_seed(seed)
    return from_unit(torch.rand(batch, channels, *size, generator=generator), loaded.value_range)


def export_safetensors(loaded: LoadedGenerator, out: Path) -> None:
    from safetensors.torch import save_file

    # clone(): safetensors refuses tensors that share storage (tied or sliced parameters).
    state = {k: v.detach().cpu().clone().contiguous() for k, v in loaded.net.state_dict().items()}
    save_file(state, str(out), metadata={"format": "pt", "producer": "sr_lightning export"})


def export_torchscript(loaded: LoadedGenerator, out: Path) -> list[float]:
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


def export_onnx(loaded: LoadedGenerator, out: Path, opset: int, exporter: str) -> None:
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


def check_onnx(loaded: LoadedGenerator, path: Path) -> list[float] | None:
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


# --- the export -----------------------------------------------------------------------------------------------

def output_path(source: Path, fmt: str, output: str | os.PathLike | None) -> Path:
    """Where an export of ``source`` in ``fmt`` goes: ``output`` (a file with the format's extension, or a folder:
    an existing one, or a name ending in /), or next to ``source`` when None."""
    ext = FORMATS[fmt]
    if not output:
        return source.with_suffix(ext)
    out = Path(str(output)).expanduser()
    if out.is_dir() or str(output).endswith(("/", os.sep)):
        return out / f"{source.stem}{ext}"
    if out.suffix.lower() != ext:
        raise ExportError(f"output={out}: format={fmt} writes '{ext}' files; name it {out.with_suffix(ext).name} "
                          f"or give a folder")
    return out


def export_generator(source: str | os.PathLike, fmt: str = "safetensors", output: str | os.PathLike | None = None,
                     *, use_ema: bool = True, overwrite: bool = False, opset: int = 18, exporter: str = "auto",
                     check: bool = True) -> tuple[Path, dict[str, Any]]:
    """Export the generator in ``source`` as ``fmt``; returns the file and its sidecar's content.

    The file is written under a temporary name and renamed only once it passed its check, so a failed export
    leaves nothing behind (and an existing file is kept unless ``overwrite``).
    """
    fmt = str(fmt).lower()
    if fmt not in FORMATS:
        raise ExportError(f"format: got {fmt!r}; allowed: {', '.join(FORMATS)}")
    source = Path(source).expanduser()
    out = output_path(source, fmt, output)
    if out.resolve() == source.resolve():
        raise ExportError(f"output={out} is the checkpoint itself; choose another output")
    for path in (out, sidecar_path(out)):
        if path.exists() and not overwrite:
            raise ExportError(f"{path} already exists; pass overwrite=true to replace it or choose output=<path>")
    loaded = load_generator(source, use_ema=use_ema)
    if use_ema and not loaded.used_ema and source.suffix == ".ckpt":
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
                export_onnx(loaded, tmp, int(opset), onnx_exporter(str(exporter)))
            except ExportError:
                raise
            except Exception as err:
                raise ExportError(f"ONNX export of {type(loaded.net).__name__} failed ({type(err).__name__}: "
                                  f"{str(err).splitlines()[0] if str(err) else ''}); try onnx_exporter=legacy "
                                  f"or format=safetensors") from err
            if check:
                checks = check_onnx(loaded, tmp)
                if checks is None:
                    log.info("onnxruntime is not installed: the ONNX file was not checked")
        if checks is not None and not all(d <= ONNX_TOLERANCE for d in checks):
            sizes = ", ".join(f"{check_label(fmt, i)}: {d:.2e}" for i, d in enumerate(checks))
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


def check_label(fmt: str, i: int) -> str:
    """`3x37x45` (batch x height x width) for ONNX checks, `37x45` for TorchScript's (batch 1)."""
    h, w = CHECK_SIZES[i]
    return f"{CHECK_BATCHES[i]}x{h}x{w}" if fmt == "onnx" else f"{h}x{w}"
