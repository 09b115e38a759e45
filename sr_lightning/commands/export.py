"""`python -m sr_lightning export ckpt=<path> format=safetensors|onnx|torchscript`.

Exports the generator of a training checkpoint (its EMA copy when the checkpoint has one) and writes a JSON
sidecar next to the file, so `upscale weights=<file>` (and anyone else) can use it without the training code.
`ckpt=` takes whatever `sr_lightning.loading.load_generator` reads, community model files included. The writers
and the sidecar format are `sr_lightning.exporting`; see conf/export.yaml for every key.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from sr_lightning.errors import UserError, report_user_error
from sr_lightning.exporting import ExportError, check_label, export_generator

# Re-exported for callers that import them from here (train's init_from check); sr_lightning.loading has them.
from sr_lightning.loading import sidecar_path


def export(cfg: DictConfig) -> tuple[Path, dict[str, Any]]:
    """Do the export described by ``cfg`` (see conf/export.yaml); returns the file and its sidecar's content."""
    if not cfg.get("ckpt"):
        raise ExportError("ckpt: missing; give ckpt=<run dir>/checkpoints/best.ckpt (or an exported .safetensors)")
    return export_generator(str(cfg.ckpt), str(cfg.get("format", "safetensors")), cfg.get("output"),
                            use_ema=bool(cfg.get("use_ema", True)), overwrite=bool(cfg.get("overwrite", False)),
                            opset=int(cfg.get("opset", 18)), exporter=str(cfg.get("onnx_exporter", "auto")),
                            check=bool(cfg.get("check", True)))


def main(cfg: DictConfig) -> int:
    try:
        path, meta = export(cfg)
    except UserError as err:
        return report_user_error(err)
    which = "EMA" if meta["used_ema"] else "trained"
    target = (meta.get("gen") or {}).get("_target_", "generator")
    line = (f"exported {target} x{meta['scale']} ({which} weights, color={meta['color']}, "
            f"value_range={meta['value_range']}) -> {path} ({path.stat().st_size / 1e6:.1f} MB) "
            f"+ sidecar {sidecar_path(path).name}")
    if "check" in meta:
        diffs = ", ".join(f"{check_label(meta['format'], i)}: {d:.1e}"
                          for i, d in enumerate(meta["check"]["max_abs_diff"]))
        line += f"; checked against {meta['check']['against']}, max |diff| {diffs}"
    print(line)
    return 0
