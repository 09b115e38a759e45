"""What `eval` writes: results.csv / results.json / per_image.csv, the reports' markdown table, and comparison
strips (LR | bicubic | each model | HR, labelled; `mos prepare` cuts them back into panels by
`sr_lightning.strips`)."""
from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sr_lightning.inference.evaluation import Comparison
from sr_lightning.metrics import METRIC_KEYS, min_scored_size
from sr_lightning.strips import LABEL_STRIP, PANEL_GAP

RESULT_COLUMNS = ["model", "set", "scale", "images", "skipped", "psnr_y", "ssim_y", "psnr_rgb", "ssim_rgb", "lpips",
                  "g_blocks", "d_blocks", "crop", "lr", "steps", "ema", "source"]


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


def save_comparison(crop: Comparison, path: Path, zoom: int) -> None:
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
        save_comparison(crop, out_dir / "comparisons" / crop.set_label / f"{safe}.png", zoom)
    return paths
