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
The scoring is `sr_lightning.inference.evaluation`, the files it writes `sr_lightning.inference.eval_report`;
this module turns the config into their arguments.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from sr_lightning.errors import UserError, report_user_error
from sr_lightning.inference.eval_report import markdown_table, write_results
from sr_lightning.inference.evaluation import (
    LPIPS_DISABLED,
    EvalError,
    EvalModel,
    EvalSet,
    MatlabBicubic,
    config_info,
    evaluate,
    load_checkpoints,
    make_eval_set,
    unique_labels,
)
from sr_lightning.metrics import LPIPS_MIN_SIZE, LPIPS_MISSING, load_lpips, lpips_weights_path
from sr_lightning.precision import autocast_dtype, resolve_device

log = logging.getLogger(__name__)

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

def _plain(value: Any) -> Any:
    return OmegaConf.to_container(value, resolve=True) if isinstance(value, (DictConfig, ListConfig)) else value


def _ckpt_list(value: Any) -> list[str]:
    value = _plain(value)
    if value in (None, "", []):
        return []
    items = value if isinstance(value, (list, tuple)) else [value]
    return [str(v) for v in items]


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
    unique_labels(models)
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
                                str(cfg.color), config_info({}, None, None, f"model={preset}")))
    if not models:
        raise EvalError("nothing to evaluate: give ckpt=<path> (or ckpt=[a.ckpt,b.ckpt]), weights=<model file> "
                        "and/or model=bicubic")
    if cfg.get("bicubic", True) and not any(m.label == "bicubic" for m in models):
        models.insert(0, EvalModel("bicubic", MatlabBicubic(scale), scale,
                                   info=config_info({}, None, None, "MATLAB imresize")))
    return models


def _choice(group: str) -> str | None:
    try:
        from hydra.core.hydra_config import HydraConfig

        value = HydraConfig.get().runtime.choices.get(group)
        return None if value in (None, "null", "None") else str(value)
    except (ImportError, ValueError):
        return None


# --- data -----------------------------------------------------------------------------------------------------

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
    amp = autocast_dtype(cfg.get("precision", "32-true"))
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
                       autocast_dtype=amp, comparison_images=int(comparison.get("images", 3)),
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
    try:
        return run(cfg)
    except UserError as err:  # a bad key or file, an unreadable test image, ...
        return report_user_error(err)
