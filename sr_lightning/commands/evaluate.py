"""`python -m sr_lightning eval`: paper-convention PSNR/SSIM (+ RGB, LPIPS) of checkpoints and baselines.

    python -m sr_lightning eval ckpt=<run>/checkpoints/best.ckpt data=[set5,set14,b100,urban100]
    python -m sr_lightning eval ckpt=[a.ckpt,b.ckpt] data=set5
    python -m sr_lightning eval model=bicubic data=folder data.hr_dir=PATH [data.lr_dir=PATH]
    python -m sr_lightning eval weights=[4x_a.pth,4x_b.safetensors] ckpt=<run>/checkpoints/best.ckpt data=set5

`weights=` takes community model files (.pth/.safetensors without a sidecar: spandrel detects architecture, size
and scale) and our exports; one table then compares downloaded models, bicubic and our own runs.

Every model is run on every set at full image size (tiled when `tile=` is set) and scored with
`sr_lightning.metrics.image_metrics` (one value per image, averaged per set). The run directory receives
`results.csv` / `results.json` (one row per model and set), `per_image.csv`, `results.md` (the reports' table:
config columns, then PSNR/SSIM per set) and `comparisons/<set>/<image>.png` (LR | bicubic | each model | HR).

Several sets: Hydra would *merge* `data=[set5,set14]` into one data node, so `rewrite_argv` turns it into
`data=set5 sets=[set5,set14]` and each further set is composed with the same overrides and `data=<name>`.
The data is always read as RGB in [0, 1]; each checkpoint's own `value_range` and `color` (Y-only models
such as LapSRN get the Y channel, and their output is merged with bicubic Cb/Cr) are applied on the fly.
"""
from __future__ import annotations

import csv
import json
import logging
import math
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from omegaconf import DictConfig, ListConfig, OmegaConf
from torch import Tensor, nn

from sr_lightning.metrics import (LPIPS_MIN_SIZE, LPIPS_MISSING, METRIC_KEYS, image_metrics, load_lpips,
                                  lpips_value, lpips_weights_path, min_scored_size, rgb_to_y_uint8_values,
                                  to_uint8_values)
from sr_lightning.errors import UserError, report_user_error
from sr_lightning.ops.color import rgb2ycbcr, ycbcr2rgb
from sr_lightning.ops.imresize import imresize
from sr_lightning.ops.value_range import from_unit, to_unit
from sr_lightning.precision import autocast_dtype as precision_autocast_dtype
from sr_lightning.precision import resolve_device
from sr_lightning.strips import LABEL_STRIP, PANEL_GAP

log = logging.getLogger(__name__)

__all__ = ["EvalError", "EvalModel", "EvalSet", "rewrite_argv", "evaluate", "write_results", "main", "run"]

# Display names of the benchmark sets, as in the papers' tables.
SET_LABELS = {"set5": "Set5", "set14": "Set14", "b100": "B100", "bsd100": "B100", "urban100": "Urban100",
              "manga109": "Manga109", "div2k": "DIV2K", "div2krk": "DIV2KRK", "celeba": "CelebA"}
RESULT_COLUMNS = ["model", "set", "scale", "images", "skipped", "psnr_y", "ssim_y", "psnr_rgb", "ssim_rgb", "lpips",
                  "g_blocks", "d_blocks", "crop", "lr", "steps", "ema", "source"]
LPIPS_DISABLED = "n/a (lpips=false)"
LPIPS_TOO_SMALL = "n/a (images too small)"


class EvalError(UserError, ValueError):
    """A problem with the eval command's arguments; printed as one `error:` line naming the key or file."""


# --- argv -----------------------------------------------------------------------------------------------------

def rewrite_argv(argv: list[str]) -> list[str]:
    """`data=[set5,set14]` (or `data=set5,set14`) -> `data=set5 sets=[set5,set14]` for a single run.

    Hydra merges a list selection of one config group into one node; we want one data module per set. In a
    multirun (`-m`) a comma list stays a sweep, so argv is left alone there.
    """
    if {"-m", "--multirun"} & set(argv):
        return list(argv)
    out = []
    for arg in argv:
        key, sep, value = arg.partition("=")
        if sep and key == "data":
            names = [v.strip() for v in value.strip().strip("[]").split(",") if v.strip()]
            if len(names) > 1 or value.strip().startswith("["):
                if not names:
                    raise EvalError("data=[]: name at least one data set, e.g. data=[set5,set14]")
                out += [f"data={names[0]}", f"sets=[{','.join(names)}]"]
                continue
        out.append(arg)
    return out


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


def _plain(value: Any) -> Any:
    return OmegaConf.to_container(value, resolve=True) if isinstance(value, (DictConfig, ListConfig)) else value


def _config_info(cfg: dict, steps: Any, ema: Any, source: str) -> dict[str, Any]:
    gen, disc = cfg.get("gen") or {}, cfg.get("disc") or {}
    return {"g_blocks": gen.get("blocks"), "d_blocks": disc.get("blocks"), "crop": cfg.get("crop"),
            "lr": cfg.get("lr"), "steps": steps, "ema": ema, "source": source}


def _ckpt_list(value: Any) -> list[str]:
    value = _plain(value)
    if value in (None, "", []):
        return []
    items = value if isinstance(value, (list, tuple)) else [value]
    return [str(v) for v in items]


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
        cfg = loaded.cfg if isinstance(loaded.cfg, dict) else _plain(loaded.cfg) or {}
        info = _config_info(cfg, loaded.meta.get("global_step"), bool(loaded.used_ema), str(path))
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


def _unique_labels(models: list[EvalModel]) -> None:
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


def _user_set(key: str) -> bool:
    for override in _task_overrides():
        if override.split("=", 1)[0].lstrip("+~") == key:
            return True
    return False


def _task_overrides() -> list[str]:
    try:
        from hydra.core.hydra_config import HydraConfig

        return list(HydraConfig.get().overrides.task)
    except (ImportError, ValueError):   # not inside a Hydra run (tests composing the config directly)
        return []


def build_models(cfg: DictConfig) -> list[EvalModel]:
    """Checkpoints from `ckpt=`, a baseline from `model=`/`gen=`, and the bicubic reference row."""
    from hydra.utils import instantiate

    from sr_lightning.models import count_parameters

    use_ema = bool(cfg.get("use_ema", True))
    models = (load_checkpoints(_ckpt_list(cfg.get("weights")), use_ema, key="weights")
              + load_checkpoints(_ckpt_list(cfg.get("ckpt")), use_ema, key="ckpt"))
    _unique_labels(models)
    scales = sorted({m.scale for m in models})
    if len(scales) > 1:
        which = ", ".join(f"{m.label} x{m.scale}" for m in models)
        raise EvalError(f"ckpt/weights: the models have different scales ({which}); the benchmark folders "
                        f"are per scale, so evaluate one scale per run")
    if scales and scales[0] != int(cfg.scale):
        if _user_set("scale"):
            raise EvalError(f"scale={cfg.scale} but the checkpoint(s)/weights are x{scales[0]} models; drop scale= "
                            f"or set scale={scales[0]}")
        cfg.scale = scales[0]    # the data configs interpolate ${scale}: Set5/x<scale>/...
    scale = int(cfg.scale)

    if cfg.get("gen") is not None:
        preset = _choice("model") or _choice("gen") or str(cfg.gen.get("_target_", "gen")).rsplit(".", 1)[-1]
        net = instantiate(cfg.gen)
        if count_parameters(net) > 0:
            raise EvalError(f"model={preset} has {count_parameters(net):,} trainable parameters and no weights: "
                            f"give ckpt=<run>/checkpoints/best.ckpt (eval never scores randomly initialised models)")
        if getattr(net, "scale", scale) != scale:
            raise EvalError(f"model={preset} upscales x{net.scale} but scale={scale}")
        models.append(EvalModel(preset.lower(), net.eval(), scale, tuple(float(v) for v in cfg.value_range),
                                str(cfg.color), _config_info({}, None, None, f"model={preset}")))
    if not models:
        raise EvalError("nothing to evaluate: give ckpt=<path> (or ckpt=[a.ckpt,b.ckpt]), weights=<model file> "
                        "and/or model=bicubic")
    if cfg.get("bicubic", True) and not any(m.label == "bicubic" for m in models):
        models.insert(0, EvalModel("bicubic", MatlabBicubic(scale), scale,
                                   info=_config_info({}, None, None, "MATLAB imresize")))
    return models


def _choice(group: str) -> str | None:
    try:
        from hydra.core.hydra_config import HydraConfig

        value = HydraConfig.get().runtime.choices.get(group)
        return None if value in (None, "null", "None") else str(value)
    except (ImportError, ValueError):
        return None


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


def build_sets(cfg: DictConfig) -> list[EvalSet]:
    """One EvalSet per name in `sets` (from data=[a,b]); the first is the composed `data`, others re-composed."""
    current = _choice("data") or str(cfg.data.get("name") or "data")
    names = [str(n) for n in (_plain(cfg.get("sets")) or [current])]
    sets = []
    for name in names:
        if name == current:
            data_cfg = cfg.data
        else:
            data_cfg = _compose_data(cfg, name)
        sets.append(make_eval_set(data_cfg, name))
    return sets


def _compose_data(cfg: DictConfig, name: str) -> DictConfig:
    """The data node of `eval` composed with this run's overrides but `data=<name>`."""
    from hydra import compose
    from hydra.errors import MissingConfigException

    keep = [o for o in _task_overrides() if o.split("=", 1)[0].lstrip("+~") not in ("data", "sets", "scale")]
    try:
        composed = compose(config_name="eval", overrides=[*keep, f"data={name}", f"scale={int(cfg.scale)}"])
    except MissingConfigException as err:
        raise EvalError(f"data={name}: no such data config ({err}); see conf/data/") from err
    return composed.data


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
            row.update({k: model.info.get(k) for k in ("g_blocks", "d_blocks", "crop", "lr", "steps", "ema", "source")})
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


# --- outputs --------------------------------------------------------------------------------------------------

def _fmt(value: Any, digits: int) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return "inf" if math.isinf(value) else f"{value:.{digits}f}"
    return str(value)


def _fmt_lr(value: Any) -> str:
    return "-" if value is None else f"{float(value):g}"


def markdown_table(rows: Sequence[dict[str, Any]], scale: int) -> str:
    """The reports' table: model, G blocks, D blocks, crop, lr, steps, then PSNR / SSIM (Y) per set."""
    models = list(dict.fromkeys(r["model"] for r in rows))
    sets = list(dict.fromkeys(r["set"] for r in rows))
    by_key = {(r["model"], r["set"]): r for r in rows}
    with_lpips = any(isinstance(r.get("lpips"), float) for r in rows)
    header = ["model", "G blocks", "D blocks", "crop", "lr", "steps"]
    for s in sets:
        header += [f"{s} PSNR", f"{s} SSIM"] + ([f"{s} LPIPS"] if with_lpips else [])
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for model in models:
        first = next(r for r in rows if r["model"] == model)
        cells = [model, _fmt(first.get("g_blocks"), 0), _fmt(first.get("d_blocks"), 0), _fmt(first.get("crop"), 0),
                 _fmt_lr(first.get("lr")), _fmt(first.get("steps"), 0)]
        for s in sets:
            r = by_key.get((model, s))
            cells += [_fmt(r["psnr_y"], 2) if r else "-", _fmt(r["ssim_y"], 4) if r else "-"]
            if with_lpips:
                cells.append(_fmt(r.get("lpips"), 4) if r else "-")
        lines.append("| " + " | ".join(cells) + " |")
    notes = [f"PSNR (dB) / SSIM on the Y channel (BT.601), x{scale}, {scale} px border cropped, output rounded to "
             "uint8, mean of per-image values."]
    for s in sets:
        r = next(r for r in rows if r["set"] == s)
        if r.get("skipped"):
            notes.append(f"{s}: {r['images']} of {r['images'] + r['skipped']} images scored; {r['skipped']} smaller "
                         f"than {min_scored_size(scale)} px per side skipped (too small for the border crop and SSIM).")
    for r in rows:
        if "lpips_images" in r:
            notes.append(f"{r['model']} on {r['set']}: LPIPS over {r['lpips_images']} of {r['images']} images "
                         "(the others are too small for the LPIPS backbone).")
    lpips_notes = {r["lpips"] for r in rows if isinstance(r.get("lpips"), str)}
    if lpips_notes:
        notes.append(f"LPIPS: {', '.join(sorted(lpips_notes))}.")
    return "\n".join(lines) + "\n\n" + "\n".join(notes) + "\n"


def _save_comparison(crop: Comparison, path: Path, zoom: int) -> None:
    """Panels side by side, each with its label in a strip above it."""
    from PIL import Image, ImageDraw

    strip, gap = LABEL_STRIP, PANEL_GAP
    tiles = []
    for label, pixels in crop.panels:
        arr = (pixels.clamp(0, 1) * 255 + 0.5).floor().byte()
        arr = arr.expand(3, -1, -1) if arr.shape[0] == 1 else arr
        img = Image.fromarray(arr.permute(1, 2, 0).numpy(), mode="RGB")
        if zoom > 1:
            img = img.resize((img.width * zoom, img.height * zoom), Image.NEAREST)
        tiles.append((label, img))
    width = sum(t.width for _, t in tiles) + gap * (len(tiles) - 1)
    height = max(t.height for _, t in tiles) + strip
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    x = 0
    for label, tile in tiles:
        canvas.paste(tile, (x, strip))
        draw.text((x + 2, 1), label[: max(4, tile.width // 6)], fill="black")
        x += tile.width + gap
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)


def write_results(results: dict[str, Any], out_dir: Path, scale: int, extra: dict[str, Any] | None = None,
                  zoom: int = 2) -> dict[str, Path]:
    """results.csv, per_image.csv, results.json, results.md and comparisons/<set>/<image>.png in `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {name: out_dir / name for name in ("results.csv", "per_image.csv", "results.json", "results.md")}
    with paths["results.csv"].open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=RESULT_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(results["rows"])
    image_columns = ["model", "set", "image", "gray", *METRIC_KEYS, "lpips"]   # skipped images have no row
    with paths["per_image.csv"].open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=image_columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(results["per_image"])

    def finite(v):   # JSON has no inf: identical images get null with the note below
        return None if isinstance(v, float) and not math.isfinite(v) else v

    payload = {
        "metric": "PSNR/SSIM on Y (MATLAB rgb2ycbcr of the uint8-rounded output), `scale` px border cropped, "
                  "images too small for that (skipped) left out, "
                  "SSIM Wang et al. 11x11 Gaussian sigma 1.5 valid region, per-image values averaged per set; "
                  "grayscale files scored on their grey values; RGB PSNR/SSIM over all channels; null = inf",
        "scale": scale, **(extra or {}),
        "results": [{k: finite(v) for k, v in r.items()} for r in results["rows"]],
        "per_image": [{k: finite(v) for k, v in r.items()} for r in results["per_image"]],
    }
    paths["results.json"].write_text(json.dumps(payload, indent=1))
    paths["results.md"].write_text(markdown_table(results["rows"], scale))
    for crop in results["comparisons"]:
        safe = Path(crop.image).name.replace("/", "_")
        _save_comparison(crop, out_dir / "comparisons" / crop.set_label / f"{safe}.png", zoom)
    return paths


# --- command --------------------------------------------------------------------------------------------------

def _check_lpips_net(cfg: DictConfig) -> str:
    net = str(cfg.get("lpips_net", "alex"))
    if cfg.get("lpips", True) and net not in LPIPS_MIN_SIZE:
        raise EvalError(f"lpips_net={net}: unknown LPIPS backbone; allowed: {', '.join(sorted(LPIPS_MIN_SIZE))} "
                        "(or lpips=false)")
    return net


def run(cfg: DictConfig) -> int:
    lpips_net = _check_lpips_net(cfg)   # before any model or image is loaded
    device = resolve_device(cfg.get("device"))
    autocast_dtype = precision_autocast_dtype(cfg.get("precision", "32-true"))
    models = build_models(cfg)
    for m in models:
        m.net.to(device)
    sets = build_sets(cfg)
    lpips_scorer, lpips_note = None, LPIPS_DISABLED
    if cfg.get("lpips", True):
        lpips_scorer = load_lpips(lpips_net, device)
        lpips_note = LPIPS_MISSING
        if lpips_scorer is None:
            log.info("LPIPS: %s (no cached torchvision backbone %s)", LPIPS_MISSING, lpips_weights_path(lpips_net))
    comparison = cfg.get("comparison") or {}
    results = evaluate(models, sets, device=device, lpips_scorer=lpips_scorer, lpips_note=lpips_note,
                       tile=cfg.get("tile"), tile_overlap=int(cfg.get("tile_overlap", 16)),
                       autocast_dtype=autocast_dtype, comparison_images=int(comparison.get("images", 3)),
                       comparison_size=int(comparison.get("size", 96)))
    out_dir = Path(str(cfg.paths.output_dir))
    extra = {"sets": [s.label for s in sets], "models": [m.label for m in models],
             "skipped": {s.label: s.skipped for s in sets if s.skipped},
             "precision": str(cfg.get("precision", "32-true")), "tile": _plain(cfg.get("tile"))}
    write_results(results, out_dir, int(cfg.scale), extra, zoom=int(comparison.get("zoom", 2)))
    print(markdown_table(results["rows"], int(cfg.scale)))
    print(f"results: {out_dir / 'results.csv'} (+ results.json, results.md, per_image.csv, comparisons/)")
    return 0


def main(cfg: DictConfig) -> int:
    from sr_lightning.data import ImageReadError

    try:
        return run(cfg)
    except (UserError, ImageReadError) as err:  # ImageReadError: an unreadable test image is the user's to fix
        return report_user_error(err)
