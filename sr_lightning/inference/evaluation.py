"""Scoring generators on test sets the papers' way: what `python -m sr_lightning eval` runs.

`load_checkpoints(paths)` turns any file `sr_lightning.loading.load_generator` reads into an `EvalModel`;
`make_eval_set(data_cfg, name)` a data config into an `EvalSet` (RGB in [0, 1]); `evaluate(models, sets)` runs
every model on every set at full image size (tiled when asked) and scores each image with
`sr_lightning.metrics.image_metrics`, averaging per set. Each model sees its training view of the input: its own
value range, and for Y-only models (LapSRN) the MATLAB Y channel, their output merged with bicubic Cb/Cr.
Writing the tables and comparison strips is `sr_lightning.inference.eval_report`.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from torch import Tensor, nn

from sr_lightning.errors import UserError
from sr_lightning.metrics import (
    LPIPS_MISSING,
    METRIC_KEYS,
    image_metrics,
    lpips_value,
    rgb_to_y_uint8_values,
    to_uint8_values,
)
from sr_lightning.ops.color import rgb2ycbcr, ycbcr2rgb
from sr_lightning.ops.imresize import imresize
from sr_lightning.ops.value_range import from_unit, to_unit

log = logging.getLogger(__name__)

# Display names of the benchmark sets, as in the papers' tables.
SET_LABELS = {"set5": "Set5", "set14": "Set14", "b100": "B100", "bsd100": "B100", "urban100": "Urban100",
              "manga109": "Manga109", "div2k": "DIV2K", "div2krk": "DIV2KRK", "celeba": "CelebA"}
LPIPS_DISABLED = "n/a (lpips=false)"
LPIPS_TOO_SMALL = "n/a (images too small)"
# The config columns of the tables, from each model's training config.
INFO_KEYS = ("g_blocks", "d_blocks", "crop", "lr", "steps", "ema", "source")


class EvalError(UserError, ValueError):
    """A problem with what eval was asked to score; printed as one `error:` line naming the key or file."""


# --- models ---------------------------------------------------------------------------------------------------

@dataclass
class EvalModel:
    """A generator with what eval needs to feed it and to describe it in the tables."""

    label: str
    net: nn.Module
    scale: int
    value_range: tuple[float, float] = (0.0, 1.0)
    color: str = "rgb"
    info: dict[str, Any] = field(default_factory=dict)   # g_blocks, d_blocks, crop, lr, steps, ema, source


class MatlabBicubic(nn.Module):
    """The published bicubic baseline (MATLAB imresize, Keys a=-0.5) as a parameter-free generator."""

    def __init__(self, scale: int):
        super().__init__()
        self.scale = int(scale)

    def forward(self, x: Tensor) -> Tensor:
        # Outside autocast: bf16 matmuls would cost tenths of a dB on the baseline (precision=bf16-mixed).
        with torch.autocast(device_type=x.device.type, enabled=False):
            return imresize(x.float(), scale=self.scale)


def config_info(cfg: dict, steps: Any, ema: Any, source: str) -> dict[str, Any]:
    gen, disc = cfg.get("gen") or {}, cfg.get("disc") or {}
    return {"g_blocks": gen.get("blocks"), "d_blocks": disc.get("blocks"), "crop": cfg.get("crop"),
            "lr": cfg.get("lr"), "steps": steps, "ema": ema, "source": source}


def load_checkpoints(paths: Sequence[str], use_ema: bool = True, key: str = "ckpt") -> list[EvalModel]:
    """`ckpt=` / `weights=` entries -> EvalModels (EMA weights when present and asked for), with unique labels.

    Both take every file `load_generator` reads: training checkpoints, exports with their sidecar, and community
    model files (.pth/.safetensors without a sidecar, architecture detected by spandrel)."""
    from sr_lightning.loading import load_generator

    models = []
    for raw in paths:
        path = Path(raw).expanduser()
        if not path.is_file():
            raise EvalError(f"{key}={raw}: file not found (give a run's checkpoints/best.ckpt or last.ckpt, an "
                            f"exported .safetensors with its .json sidecar, or a model file .pth/.safetensors)")
        loaded = load_generator(path, use_ema=use_ema)
        cfg = loaded.cfg if isinstance(loaded.cfg, dict) else {}
        info = config_info(cfg, loaded.meta.get("global_step"), bool(loaded.used_ema), str(path))
        models.append(EvalModel(_model_label(loaded, path), loaded.net.eval(), int(loaded.scale),
                                tuple(float(v) for v in loaded.value_range), str(loaded.color), info))
    return models


def _model_label(loaded: Any, path: Path) -> str:
    """A run's preset name (srresnet, ...); a community file's name, with the architecture spandrel detected
    when the name does not already say it (`4x_foo [SPAN]`)."""
    name = loaded.name if loaded.name not in (None, "", "None") else path.stem
    arch = loaded.meta.get("arch")
    if arch and arch.lower() not in name.lower():
        name = f"{name} [{arch}]"
    return name


def unique_labels(models: list[EvalModel]) -> None:
    """Two checkpoints of the same preset get their run directory (then an index) appended."""
    seen: dict[str, int] = {}
    for m in models:
        seen[m.label] = seen.get(m.label, 0) + 1
    for m in models:
        if seen[m.label] > 1 and m.info.get("source"):
            src = Path(m.info["source"])
            run_dir = src.parent.parent if src.parent.name == "checkpoints" else src.parent
            m.label = f"{m.label} ({run_dir.name}/{src.stem})"
    counts: dict[str, int] = {}
    for m in models:
        counts[m.label] = counts.get(m.label, 0) + 1
        if counts[m.label] > 1:
            m.label = f"{m.label} #{counts[m.label]}"


# --- data -----------------------------------------------------------------------------------------------------

@dataclass
class EvalSet:
    """A test set: a label and a factory of (name, lr, hr, gray) items, LR/HR (1,3,h,w) RGB in [0,1]."""

    label: str
    items: Callable[[], Any]
    size: int
    skipped: list[str] = field(default_factory=list)   # images too small to score (named in a warning at setup)


def _set_label(data_cfg: DictConfig, name: str) -> str:
    if name == "folder" or data_cfg.get("hr_dir"):
        hr_dir = data_cfg.get("val_hr_dir") or data_cfg.get("hr_dir")
        if hr_dir:
            return Path(str(hr_dir)).name
    return SET_LABELS.get(name.lower(), name)


def make_eval_set(data_cfg: DictConfig, name: str) -> EvalSet:
    """Instantiate a data config's SRDataModule in RGB [0,1] and expose its test split."""
    from hydra.utils import instantiate

    from sr_lightning.data import DatasetError

    try:
        dm = instantiate(data_cfg, color="rgb", value_range=[0.0, 1.0], batch_size=1)
        dm.setup("test")
    except DatasetError as err:
        raise EvalError(f"data={name}: {err}") from err
    dataset = dm.test_set

    def items():
        for batch in dm.test_dataloader():
            for i, image_name in enumerate(batch["name"]):
                yield str(image_name), batch["lr"][i:i + 1], batch["hr"][i:i + 1], bool(batch["gray"][i])

    return EvalSet(_set_label(data_cfg, name), items, len(dataset), list(dm.skipped.get("test", [])))


# --- inference ------------------------------------------------------------------------------------------------

@torch.no_grad()
def _forward(net: nn.Module, x: Tensor, scale: int, tile: Any, tile_overlap: int,
             autocast_dtype: torch.dtype | None) -> Tensor:
    from sr_lightning.models import final_output

    if tile not in (None, "", 0, "null"):
        from sr_lightning.inference.tiling import tiled_forward

        try:
            return tiled_forward(net, x, scale, tile=tile, tile_overlap=int(tile_overlap),
                                 autocast_dtype=autocast_dtype).float()
        except ValueError as err:   # bad tile/tile_overlap: its message names the key
            raise EvalError(str(err)) from err
    ctx = (torch.autocast(device_type=x.device.type, dtype=autocast_dtype) if autocast_dtype is not None
           else nullcontext())
    with ctx:
        return final_output(net(x)).float()


def super_resolve(model: EvalModel, lr: Tensor, device: torch.device, tile: Any = None, tile_overlap: int = 16,
                  autocast_dtype: torch.dtype | None = None) -> tuple[Tensor, Tensor | None]:
    """(1,3,h,w) RGB LR in [0,1] -> ((1,3,H,W) RGB SR in [0,1] (unclamped), the model's own Y output or None).

    Each model sees its training view of the input: its value range, and for `color=y` models the MATLAB Y
    channel; their Y output is merged with the bicubic Cb/Cr for the RGB result.
    """
    lr = lr.to(device=device, dtype=torch.float32)
    x = rgb2ycbcr(lr, y_only=True) if model.color == "y" else lr
    out = _forward(model.net, from_unit(x, model.value_range), model.scale, tile, tile_overlap, autocast_dtype)
    out = to_unit(out, model.value_range)
    want = (lr.shape[-2] * model.scale, lr.shape[-1] * model.scale)
    if tuple(out.shape[-2:]) != want:
        raise EvalError(f"{model.label}: output {tuple(out.shape[-2:])} for input {tuple(lr.shape[-2:])}, "
                        f"expected x{model.scale} = {want}")
    if model.color != "y":
        return out, None
    ycc = rgb2ycbcr(imresize(lr, scale=model.scale))
    ycc = torch.cat([out, ycc[:, 1:]], dim=1)
    return ycbcr2rgb(ycc), out


# --- evaluation -----------------------------------------------------------------------------------------------

@dataclass
class Comparison:
    """One comparison crop: where it sits in the HR image and each panel's pixels (HR-sized crops)."""

    set_label: str
    image: str
    top: int
    left: int
    size: int
    panels: list[tuple[str, Tensor]] = field(default_factory=list)
    hr: Tensor | None = None


def _pick_region(bicubic: Tensor, hr: Tensor, size: int, scale: int) -> tuple[int, int]:
    """Top-left (multiples of `scale`) of the size x size window where bicubic's error is largest."""
    h, w = hr.shape[-2:]
    if h <= size or w <= size:
        return 0, 0
    err = (bicubic.clamp(0, 1) - hr).abs().mean(dim=1, keepdim=True)
    pooled = torch.nn.functional.avg_pool2d(err, kernel_size=size, stride=scale)
    idx = int(pooled.flatten().argmax())
    return (idx // pooled.shape[-1]) * scale, (idx % pooled.shape[-1]) * scale


def evaluate(models: Sequence[EvalModel], sets: Sequence[EvalSet], *, device: torch.device | str = "cpu",
             lpips_scorer=None, lpips_note: str | None = LPIPS_MISSING, tile: Any = None, tile_overlap: int = 16,
             autocast_dtype: torch.dtype | None = None, comparison_images: int = 3,
             comparison_size: int = 96) -> dict[str, Any]:
    """Score every model on every set. Returns {"rows": [...], "per_image": [...], "comparisons": [...]}.

    Rows hold per-set means of the per-image values (the papers' convention); `lpips` is a float when a
    scorer is given, else `lpips_note`.
    """
    device = torch.device(device)
    rows, per_image, comparisons = [], [], []
    for eval_set in sets:
        scale = models[0].scale
        crops: dict[str, Comparison] = {}
        for model in models:
            values: list[dict[str, Any]] = []
            for index, (name, lr, hr, gray) in enumerate(eval_set.items()):
                sr, sr_y = super_resolve(model, lr, device, tile, tile_overlap, autocast_dtype)
                sr, hr = sr[0].cpu(), hr[0].float()
                m = image_metrics(sr, hr, crop_border=model.scale, gray=gray)
                if sr_y is not None and not gray:
                    # A Y-only model is scored on its own Y output (as LapSRN's paper), not on the Y of
                    # its output merged with bicubic chroma and rounded to RGB.
                    hr_y = rgb_to_y_uint8_values(to_uint8_values(hr)) / 255.0
                    m_y = image_metrics(sr_y[0].cpu(), hr_y, crop_border=model.scale)
                    m["psnr_y"], m["ssim_y"] = m_y["psnr_y"], m_y["ssim_y"]
                if lpips_scorer is not None:
                    lp = lpips_value(lpips_scorer, sr, hr, model.scale)   # NaN: too small for the backbone
                    m["lpips"] = None if math.isnan(lp) else lp
                values.append(m)
                per_image.append({"model": model.label, "set": eval_set.label, "image": name, "gray": gray, **m})
                if index < comparison_images:
                    crop = crops.get(name)
                    if crop is None:
                        lr0 = lr[0].float()
                        bicubic = imresize(lr0, scale=scale)
                        size = max(scale, comparison_size - comparison_size % scale)
                        top, left = _pick_region(bicubic[None], hr[None], size, scale)
                        s = slice(top, top + size), slice(left, left + size)
                        lr_crop = lr0[:, top // scale:(top + size) // scale, left // scale:(left + size) // scale]
                        lr_up = torch.nn.functional.interpolate(lr_crop[None], scale_factor=scale, mode="nearest")[0]
                        crop = Comparison(eval_set.label, name, top, left, size,
                                          [("LR", lr_up), ("bicubic", bicubic[:, s[0], s[1]])], hr[:, s[0], s[1]])
                        crops[name] = crop
                    if model.label != "bicubic":   # the bicubic panel is already there
                        label = f"{model.label} {m['psnr_y']:.2f}dB"
                        crop.panels.append((label, sr[:, crop.top:crop.top + crop.size,
                                                       crop.left:crop.left + crop.size]))
            if not values:
                raise EvalError(f"{eval_set.label}: no test images")
            row = {"model": model.label, "set": eval_set.label, "scale": model.scale, "images": len(values),
                   "skipped": len(eval_set.skipped)}
            for key in METRIC_KEYS:
                row[key] = float(sum(v[key] for v in values) / len(values))
            row["lpips"] = _lpips_mean(values, row) if lpips_scorer is not None else lpips_note
            row.update({k: model.info.get(k) for k in INFO_KEYS})
            rows.append(row)
            log.info("%-24s %-10s %3d images  PSNR-Y %.4f  SSIM-Y %.4f  PSNR-RGB %.4f  LPIPS %s", model.label,
                     eval_set.label, len(values), row["psnr_y"], row["ssim_y"], row["psnr_rgb"],
                     f"{row['lpips']:.4f}" if isinstance(row["lpips"], float) else row["lpips"])
        for crop in crops.values():
            crop.panels.append(("HR", crop.hr))
            comparisons.append(crop)
    return {"rows": rows, "per_image": per_image, "comparisons": comparisons}


def _lpips_mean(values: list[dict[str, Any]], row: dict[str, Any]) -> float | str:
    """Mean LPIPS over the images that have one; `lpips_images` in the row says how many when not all do."""
    scored = [v["lpips"] for v in values if v.get("lpips") is not None]
    if len(scored) < len(values):
        row["lpips_images"] = len(scored)
        log.warning("%s %s: LPIPS of %d of %d images (the others are too small for the LPIPS backbone)",
                    row["model"], row["set"], len(scored), len(values))
    return float(sum(scored) / len(scored)) if scored else LPIPS_TOO_SMALL
