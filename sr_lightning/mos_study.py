"""A blind mean-opinion-score (MOS) study: the rater page's crops (`prepare`) and the scores (`score`).

`prepare` finds each method's images (folders of method outputs via `discover`, or an eval run's comparison
strips cut back into panels via `eval_comparisons`), crops the reference's most textured window(s), and writes
one self-contained page (`sr_lightning.mos_page.render`) plus `<page>.key.json`, the only place where the
opaque crop keys map to method names. `score` un-blinds the raters' downloaded files with that key and
summarises each method's ratings (MOS with a Student-t 95% interval clipped to the 1-5 scale).
The `mos` command (`python -m sr_lightning mos`) only parses the arguments and prints what these return.
"""
from __future__ import annotations

import base64
import csv
import datetime as _dt
import io
import json
import math
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sr_lightning.errors import UserError
from sr_lightning.strips import LABEL_STRIP, PANEL_GAP

REFERENCE_NAMES = ("hr", "gt", "ground_truth", "groundtruth", "original", "reference")
# `eval` draws comparisons/<set>/<image>.png as panels side by side under a label strip (geometry in
# sr_lightning.strips): LR | bicubic | each model | HR.
EVAL_COMPARISONS = "comparisons"
SCORE_RANGE = (1, 5)


class MosError(UserError, RuntimeError):
    """A problem with the arguments or files; printed as one `error:` line naming the file or key."""


# --- finding the images ---------------------------------------------------------------------------------------

def discover(root: Path) -> dict[str, dict[str, Path]]:
    """picture name -> {method: image path} for every folder under ``root`` that directly holds images
    (an eval run's `comparisons/` strips are not method folders; see `eval_comparisons`)."""
    from sr_lightning.data.imageio import is_image_file

    pictures: dict[str, dict[str, Path]] = {}
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".")
                         and not (Path(folder) == root and d == EVAL_COMPARISONS))
        images = sorted(f for f in files if is_image_file(f) and not f.startswith("."))
        folder_path = Path(folder)
        method = folder_path.name if folder_path != root else None
        if not images or method is None or method.lower().startswith("lr"):
            continue
        group = folder_path.parent.relative_to(root).as_posix()
        for name in images:
            picture = f"{group}/{Path(name).stem}" if group != "." else Path(name).stem
            pictures.setdefault(picture, {})[method] = folder_path / name
    return {p: m for p, m in sorted(pictures.items()) if len(m) >= 2}


def _unzoom(panels: list[np.ndarray]) -> int:
    """The nearest-neighbour enlargement factor shared by all panels (1 when there is none)."""
    for zoom in (4, 3, 2):
        if all(p.shape[0] % zoom == 0 and p.shape[1] % zoom == 0
               and np.array_equal(p, p[::zoom, ::zoom].repeat(zoom, 0).repeat(zoom, 1)) for p in panels):
            return zoom
    return 1


def eval_comparisons(root: Path) -> dict[str, dict[str, np.ndarray]]:
    """picture -> {method: crop} from an eval run's results.json and comparisons/<set>/<image>.png strips."""
    from sr_lightning.data.imageio import ImageReadError, read_rgb_uint8

    try:
        results = json.loads((root / "results.json").read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise MosError(f"{root / 'results.json'}: not readable ({err})") from err
    models = results.get("models") or list(dict.fromkeys(r["model"] for r in results.get("results", [])))
    labels = ["LR", "bicubic", *[m for m in models if m != "bicubic"], "HR"]
    pictures: dict[str, dict[str, np.ndarray]] = {}
    for strip in sorted((root / EVAL_COMPARISONS).rglob("*.png")):
        try:
            grid = read_rgb_uint8(strip)
        except ImageReadError as err:
            raise MosError(str(err)) from err
        n = len(labels)
        width = (grid.shape[1] - PANEL_GAP * (n - 1)) / n
        starts = [int(k * (width + PANEL_GAP)) for k in range(n)]
        gaps_white = width.is_integer() and all((grid[LABEL_STRIP:, s + int(width):s + int(width)
                                                      + PANEL_GAP] == 255).all() for s in starts[:-1])
        if not gaps_white:
            raise MosError(f"{strip}: not a strip of {n} panels ({' | '.join(labels)}) as results.json's models "
                           f"imply; re-run eval, or lay the images out as <method>/<image>.png and use images=")
        panels = [grid[LABEL_STRIP:, s:s + int(width)] for s in starts]
        zoom = _unzoom(panels[1:])  # the LR panel is nearest-enlarged by the scale as well: leave it out
        pictures[f"{strip.parent.name}/{strip.stem}"] = {
            label: np.ascontiguousarray(panel[::zoom, ::zoom]) for label, panel in zip(labels, panels)
            if label != "LR"}
    return pictures


def _is_reference(method: str) -> bool:
    return method.lower() in REFERENCE_NAMES


def texture_crops(reference: np.ndarray, crop: int, count: int) -> list[tuple[int, int]]:
    """Top-left corners of the ``count`` most textured, non-overlapping ``crop`` x ``crop`` windows.

    Texture = variance of the gray image over the window, on a grid with a quarter-crop stride: flat sky or
    blur hides the differences between methods, so the crops go where detail is.
    """
    gray = reference.astype(np.float64).mean(axis=2) if reference.ndim == 3 else reference.astype(np.float64)
    height, width = gray.shape
    stride = max(1, crop // 4)
    candidates = []
    for y in range(0, height - crop + 1, stride):
        for x in range(0, width - crop + 1, stride):
            candidates.append((float(gray[y:y + crop, x:x + crop].var()), y, x))
    candidates.sort(key=lambda c: (-c[0], c[1], c[2]))
    chosen: list[tuple[int, int]] = []
    for _, y, x in candidates:
        if all(abs(y - cy) >= crop or abs(x - cx) >= crop for cy, cx in chosen):
            chosen.append((y, x))
        if len(chosen) == count:
            break
    return chosen


def _png_data_uri(array: np.ndarray) -> str:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


# --- prepare --------------------------------------------------------------------------------------------------

def key_path_for(page: Path) -> Path:
    return page.with_name(page.stem + ".key.json")


def prepare(root: Path, output: Path | None = None, crop: int = 128, crops_per_image: int = 1,
            methods: list[str] | None = None, include_hr: bool = True, zoom: int = 2, max_items: int = 0,
            seed: int = 0, title: str = "Image quality study", overwrite: bool = False) -> tuple[Path, Path, dict]:
    """Write the rater page and its key file; returns (page, key file, summary)."""
    from sr_lightning.data.imageio import ImageReadError, read_rgb_uint8

    if not root.is_dir():
        raise MosError(f"{root}: no such folder; give results=<eval run dir> or images=<folder of method folders>")
    if crop < 8 or crops_per_image < 1 or not 1 <= zoom <= 8:
        raise MosError(f"crop >= 8, crops_per_image >= 1 and 1 <= zoom <= 8 are required (got crop={crop}, "
                       f"crops_per_image={crops_per_image}, zoom={zoom})")
    pictures: dict[str, dict[str, Any]] = discover(root)
    if not pictures and (root / "results.json").is_file() and (root / EVAL_COMPARISONS).is_dir():
        pictures = eval_comparisons(root)
    # Crops are placed on the reference's texture even when the reference itself is not shown.
    references = {p: next((f for m, f in sorted(ms.items()) if _is_reference(m)), None)
                  for p, ms in pictures.items()}
    if methods:
        wanted = set(methods)
        available = sorted({m for ms in pictures.values() for m in ms})
        pictures = {p: {m: f for m, f in ms.items() if m in wanted or (include_hr and _is_reference(m))}
                    for p, ms in pictures.items()}
        unknown = sorted(wanted - set(available))
        if unknown:
            raise MosError(f"methods: {', '.join(unknown)} not found under {root}; found: {', '.join(available)}")
    if not include_hr:
        pictures = {p: {m: f for m, f in ms.items() if not _is_reference(m)} for p, ms in pictures.items()}
    pictures = {p: ms for p, ms in pictures.items() if len(ms) >= 2}
    if not pictures:
        raise MosError(f"{root}: found no picture with images from two or more methods; expected folders like "
                       f"<dir>/<method>/<image>.png (e.g. bicubic/, esrgan/, hr/) with the same file names")
    rng = np.random.default_rng(seed)
    names = sorted(pictures)
    if max_items and len(names) > max_items:
        names = sorted(rng.choice(names, size=max_items, replace=False).tolist())

    study = secrets.token_hex(4)
    page = (output or root / "mos.html").expanduser()
    key_file = key_path_for(page)
    for path in (page, key_file):
        if path.exists() and not overwrite:
            raise MosError(f"{path} already exists; pass overwrite=true to replace it (its key file is needed to "
                           f"score the ratings of an earlier page) or choose output=<new page>.html")
    items, keys, skipped = [], {}, []
    for picture in names:
        by_method = pictures[picture]
        try:
            arrays = {m: p if isinstance(p, np.ndarray) else read_rgb_uint8(p) for m, p in by_method.items()}
        except ImageReadError as err:
            raise MosError(str(err)) from err
        height = min(a.shape[0] for a in arrays.values())
        width = min(a.shape[1] for a in arrays.values())
        if len({a.shape[:2] for a in arrays.values()}) > 1:
            skipped.append(f"{picture} (sizes differ: " + ", ".join(f"{m} {a.shape[1]}x{a.shape[0]}"
                                                                     for m, a in arrays.items()) + ")")
            continue
        reference = arrays[sorted(arrays)[0]]
        if references[picture] is not None:
            ref = references[picture]
            reference = ref if isinstance(ref, np.ndarray) else read_rgb_uint8(ref)
            if reference.shape[:2] != (height, width):
                reference = arrays[sorted(arrays)[0]]
        size = min(crop, height, width)
        for n, (y, x) in enumerate(texture_crops(reference, size, crops_per_image)):
            item_id = f"{picture}#{n}" if crops_per_image > 1 else picture
            crops = []
            for method in sorted(arrays):
                key = secrets.token_hex(6)
                origin = by_method[method]
                keys[key] = {"method": method, "item": item_id,
                             "file": f"{root / EVAL_COMPARISONS / picture}.png" if isinstance(origin, np.ndarray)
                             else str(origin),
                             "crop": [y, x, size, size]}
                crops.append({"key": key, "src": _png_data_uri(arrays[method][y:y + size, x:x + size])})
            rng.shuffle(crops)  # the page shuffles again per rater; this order is the no-JS fallback's
            items.append({"id": item_id, "crops": crops})
    if not items:
        raise MosError(f"{root}: no usable picture ({'; '.join(skipped[:3])})")
    method_names = sorted({k["method"] for k in keys.values()})
    from sr_lightning.mos_page import render

    data = {"study": study, "page": page.name, "title": title, "crop": crop, "zoom": zoom, "items": items}
    page.parent.mkdir(parents=True, exist_ok=True)
    _write_atomic(page, render(data))
    key = {"study": study, "page": page.name, "created": _now(), "source": str(root.resolve()),
           "methods": method_names, "crop": crop, "crops_per_image": crops_per_image, "seed": seed,
           "score_range": list(SCORE_RANGE), "keys": keys}
    results = root / "results.json"
    if results.is_file():
        key["results_json"] = str(results.resolve())
    _write_atomic(key_file, json.dumps(key, indent=1) + "\n")
    summary = {"items": len(items), "methods": method_names, "skipped": skipped, "study": study,
               "ratings_per_rater": sum(len(i["crops"]) for i in items)}
    return page, key_file, summary


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


# --- score ----------------------------------------------------------------------------------------------------

@dataclass
class Ratings:
    """Scores of one downloaded file."""

    path: Path
    study: str
    rater: str
    scores: dict[str, int] = field(default_factory=dict)  # key -> score


def read_scores(path: Path) -> Ratings:
    if not path.is_file():
        raise MosError(f"{path}: score file not found")
    try:
        if path.suffix.lower() == ".csv":
            with open(path, newline="", encoding="utf-8") as handle:
                rows = list(csv.DictReader(handle))
            if not rows:
                raise MosError(f"{path}: no scores in this CSV file")
            if not {"study", "key", "score"} <= set(rows[0]):
                raise MosError(f"{path}: CSV needs the columns study, key, score (as the page exports them)")
            studies = {r["study"] for r in rows}
            if len(studies) > 1:
                raise MosError(f"{path}: mixes studies {', '.join(sorted(studies))}")
            entries = [(r["key"], r["score"]) for r in rows]
            ratings = Ratings(path, rows[0]["study"], rows[0].get("rater") or path.stem)
        else:
            data = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(data, dict) or "study" not in data or not isinstance(data.get("scores"), list):
                raise MosError(f"{path}: not a score file downloaded from a MOS page (needs study and scores)")
            entries = [(s.get("key"), s.get("score")) for s in data["scores"]]
            ratings = Ratings(path, str(data["study"]), str(data.get("rater") or path.stem))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, csv.Error) as err:
        raise MosError(f"{path}: cannot read scores ({err})") from err
    low, high = SCORE_RANGE
    for key, value in entries:
        text = str(value).strip()
        if isinstance(value, bool) or not text.isdigit() or not low <= int(text) <= high:
            raise MosError(f"{path}: score {value!r} for key {key} is not an integer {low}..{high}")
        ratings.scores[str(key)] = int(text)
    return ratings


def find_key_file(ratings: list[Ratings], explicit: str | None) -> Path:
    study = ratings[0].study
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise MosError(f"key={path}: file not found")
        return path
    places = {r.path.parent for r in ratings} | {Path.cwd()}
    for place in sorted(places):
        for candidate in sorted(place.glob("*.key.json")):
            try:
                if json.loads(candidate.read_text()).get("study") == study:
                    return candidate
            except (OSError, json.JSONDecodeError):
                continue
    raise MosError(f"no key file for study {study} next to the score files or in the current folder; pass "
                   f"key=<page>.key.json (written by `mos prepare` next to the page)")


def t_quantile(probability: float, dof: int) -> float:
    from scipy.stats import t

    return float(t.ppf(probability, dof))


CI_METHOD = "Student t, clipped to 1-5"


def summarise(values: list[int], confidence: float = 0.95) -> dict[str, float]:
    """n, MOS, sd and the confidence interval of one method's ratings.

    The interval is the Student-t one (mean +- t * sd / sqrt(n), n - 1 dof), as MOS studies report it (ITU-T
    P.1401), so our numbers compare with published ones; `ci_half_width` is that t half-width. Near the ends of
    the scale the sampling distribution of a bounded mean is skewed and the symmetric interval spills past 1
    or 5 (e.g. [4.44, 5.12]), where no mean can lie, so `ci_low`/`ci_high` are clipped to the rating scale.
    Clipping only removes impossible values; a bootstrap interval would respect the bounds by construction,
    but with the few ratings per method of a small study it is too narrow and not comparable to the papers.
    """
    n = len(values)
    mean = float(np.mean(values)) if n else float("nan")
    if n < 2:
        return {"n": n, "mos": mean, "sd": float("nan"), "ci_low": float("nan"), "ci_high": float("nan"),
                "ci_half_width": float("nan")}
    sd = float(np.std(values, ddof=1))
    half = t_quantile(0.5 + confidence / 2, n - 1) * sd / math.sqrt(n)
    low, high = SCORE_RANGE
    return {"n": n, "mos": mean, "sd": sd, "ci_low": max(float(low), mean - half),
            "ci_high": min(float(high), mean + half), "ci_half_width": half}


def score(files: list[Path], key: str | None = None) -> dict[str, Any]:
    """Un-blind the score files -> {"study", "raters", "methods": {method: summary}}."""
    if not files:
        raise MosError("give the score files the raters downloaded: mos score <file.json|file.csv>...")
    ratings = [read_scores(f) for f in files]
    studies = sorted({r.study for r in ratings})
    if len(studies) > 1:
        raise MosError(f"the score files belong to different studies ({', '.join(studies)}); score each study "
                       f"separately")
    key_file = find_key_file(ratings, key)
    try:
        mapping = json.loads(key_file.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise MosError(f"{key_file}: not a readable key file ({err})") from err
    if mapping.get("study") != studies[0]:
        raise MosError(f"{key_file} is the key of study {mapping.get('study')}, but the scores are for study "
                       f"{studies[0]}; pass the right key=")
    keys = mapping["keys"]
    per_method: dict[str, list[int]] = {m: [] for m in mapping.get("methods", [])}
    for r in ratings:
        for k, value in r.scores.items():
            if k not in keys:
                raise MosError(f"{r.path}: key {k} is not in {key_file.name}; the file was edited or belongs to "
                               f"another page")
            per_method.setdefault(keys[k]["method"], []).append(value)
    methods = {m: summarise(v) for m, v in per_method.items()}
    return {"study": studies[0], "key_file": str(key_file), "files": [str(f) for f in files],
            "raters": sorted({r.rater for r in ratings}), "ratings": sum(len(r.scores) for r in ratings),
            "confidence": 0.95, "ci_method": CI_METHOD,
            "methods": dict(sorted(methods.items(), key=lambda kv: -np.nan_to_num(kv[1]["mos"], nan=-1.0)))}


def format_table(result: dict[str, Any]) -> str:
    lines = [f"MOS of study {result['study']}: {result['ratings']} ratings from {len(result['files'])} file(s), "
             f"raters: {', '.join(result['raters'])} (95% CI, {CI_METHOD})"]
    width = max([len("method")] + [len(m) for m in result["methods"]])
    lines.append(f"{'method':<{width}}  {'n':>5}  {'MOS':>5}  {'95% CI':>15}")
    for method, s in result["methods"].items():
        ci = f"[{s['ci_low']:.2f}, {s['ci_high']:.2f}]" if s["n"] >= 2 else "(n < 2)"
        mos = f"{s['mos']:.2f}" if s["n"] else "-"
        lines.append(f"{method:<{width}}  {s['n']:>5}  {mos:>5}  {ci:>15}")
    return "\n".join(lines)


def write_result(result: dict[str, Any], output: Path) -> None:
    """The scores as JSON (all of `result`) or, for a .csv path, one row per method."""
    output.parent.mkdir(parents=True, exist_ok=True)
    if output.suffix.lower() == ".csv":
        with open(output, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["method", "n", "mos", "sd", "ci_low", "ci_high"])
            for method, s in result["methods"].items():
                writer.writerow([method, s["n"], s["mos"], s["sd"], s["ci_low"], s["ci_high"]])
    else:
        output.write_text(json.dumps(result, indent=2) + "\n")
