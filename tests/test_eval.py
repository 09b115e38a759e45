"""`eval`: argv rewriting, the published bicubic numbers through the real CLI, checkpoints, outputs, errors."""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from PIL import Image

from sr_lightning.commands import evaluate as ev
from sr_lightning.inference import eval_report, evaluation
from sr_lightning.metrics import LPIPS_MISSING, image_metrics
from sr_lightning.ops.imresize import imresize

from helpers import TINY_GEN, write_checkpoint

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"



def _read_csv(path: Path) -> list[dict]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


def test_rewrite_argv_turns_a_set_list_into_sets():
    assert ev.rewrite_argv(["data=[set5,set14]", "ckpt=a.ckpt"]) == ["data=set5", "sets=[set5,set14]", "ckpt=a.ckpt"]
    assert ev.rewrite_argv(["data=set5,set14"]) == ["data=set5", "sets=[set5,set14]"]
    assert ev.rewrite_argv(["data=set5", "data.hr_dir=x"]) == ["data=set5", "data.hr_dir=x"]
    assert ev.rewrite_argv(["-m", "data=set5,set14"]) == ["-m", "data=set5,set14"]   # a sweep stays a sweep


def test_eval_bicubic_set5_through_cli_reproduces_published_numbers(cli, benchmarks_dir, tmp_path):
    run_dir = tmp_path / "run"
    proc = cli("eval", "model=bicubic", "data=set5", f"paths.benchmarks_dir={benchmarks_dir}",
               f"hydra.run.dir={run_dir}", "comparison.images=1", env={"TORCH_HOME": str(tmp_path / "torch")})
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = _read_csv(run_dir / "results.csv")
    assert [(r["model"], r["set"], r["images"]) for r in rows] == [("bicubic", "Set5", "5")]
    assert float(rows[0]["psnr_y"]) == pytest.approx(28.42, abs=0.01)
    assert float(rows[0]["ssim_y"]) == pytest.approx(0.8104, abs=0.0005)
    assert rows[0]["lpips"] == LPIPS_MISSING      # no backbone in the (empty) hub cache: no number
    payload = json.loads((run_dir / "results.json").read_text())
    assert len(payload["per_image"]) == 5 and payload["results"][0]["psnr_y"] == pytest.approx(float(rows[0]["psnr_y"]))
    md = (run_dir / "results.md").read_text()
    assert md.startswith("| model | G blocks | D blocks | crop | lr | steps | Set5 PSNR | Set5 SSIM |")
    assert "| bicubic | - | - | - | - | - | 28.42 |" in md
    pngs = list((run_dir / "comparisons" / "Set5").glob("*.png"))
    assert len(pngs) == 1
    with Image.open(pngs[0]) as im:   # LR | bicubic | HR panels of 96 px, zoomed x2, with a label strip
        assert im.width == 3 * 96 * 2 + 2 * 4 and im.height == 96 * 2 + 14


def _tiny_folder(folder: Path, n: int = 2) -> Path:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:40, 0:36]
    for i in range(n):
        base = 127 + 100 * np.sin(xx / (3 + i) + rng.random()) * np.cos(yy / 5)
        img = np.clip(np.stack([base, base * 0.8 + 20, 255 - base], -1), 0, 255).astype(np.uint8)
        Image.fromarray(img).save(folder / f"im{i}.png")
    return folder


def test_eval_two_checkpoints_on_a_folder_through_cli(cli, tmp_path):
    """Two tiny x2 checkpoints (one RGB, one Y-only in [-1,1]) on any folder: scale comes from the checkpoints."""
    hr_dir = _tiny_folder(tmp_path / "faces")
    a = write_checkpoint(tmp_path / "a.ckpt", TINY_GEN)
    b = write_checkpoint(tmp_path / "b.ckpt", {**TINY_GEN, "in_channels": 1}, color="y", value_range=(-1, 1))
    run_dir = tmp_path / "run"
    proc = cli("eval", f"ckpt=[{a},{b}]", "data=folder", f"data.hr_dir={hr_dir}", "data.num_workers=0",
               f"hydra.run.dir={run_dir}", "comparison.size=16", env={"TORCH_HOME": str(tmp_path / "torch")})
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = _read_csv(run_dir / "results.csv")
    assert [r["model"] for r in rows] == ["bicubic", "tiny (tmp_path/a)".replace("tmp_path", tmp_path.name),
                                          "tiny (tmp_path/b)".replace("tmp_path", tmp_path.name)]
    assert {r["set"] for r in rows} == {"faces"} and {r["scale"] for r in rows} == {"2"}
    tiny = rows[1]
    config_columns = ("g_blocks", "d_blocks", "crop", "steps", "ema")
    assert tuple(tiny[k] for k in config_columns) == ("1", "3", "32", "5", "True")
    for r in rows:
        assert math.isfinite(float(r["psnr_y"])) and 0 < float(r["ssim_y"]) <= 1
    assert "| tiny (" in (run_dir / "results.md").read_text()
    with Image.open(run_dir / "comparisons" / "faces" / "im0.png") as im:   # LR | bicubic | a | b | HR
        assert im.width == 5 * 16 * 2 + 4 * 4


def _compose(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="eval", overrides=list(overrides))


def test_evaluate_core_with_a_generator_module(tmp_path):
    """The eval core takes any nn.Module: bicubic through it equals image_metrics on imresize directly."""
    hr_dir = _tiny_folder(tmp_path / "imgs", n=2)
    cfg = _compose("model=bicubic", "data=folder", f"data.hr_dir={hr_dir}", "data.num_workers=0", "scale=2")
    models = ev.build_models(cfg)
    assert [m.label for m in models] == ["bicubic"]
    eval_set = evaluation.make_eval_set(cfg.data, "folder")
    results = evaluation.evaluate(models, [eval_set], comparison_images=0)
    expected = []
    for _, lr, hr, gray in eval_set.items():
        expected.append(image_metrics(imresize(lr[0], 2), hr[0], 2, gray=gray)["psnr_y"])
    assert results["rows"][0]["psnr_y"] == pytest.approx(float(np.mean(expected)), abs=1e-4)
    paths = eval_report.write_results(results, tmp_path / "out", scale=2)
    assert all(p.is_file() for p in paths.values())


def test_checkpoint_uses_ema_weights_unless_told_otherwise(tmp_path):
    ckpt = write_checkpoint(tmp_path / "t.ckpt", TINY_GEN)
    ema, = evaluation.load_checkpoints([str(ckpt)], use_ema=True)
    raw, = evaluation.load_checkpoints([str(ckpt)], use_ema=False)
    assert ema.info["ema"] is True and raw.info["ema"] is False
    state = torch.load(ckpt, weights_only=False)["state_dict"]
    first = next(k for k in state if k.startswith("gen_ema."))
    assert torch.equal(ema.net.state_dict()[first[len("gen_ema."):]], state[first])
    assert not torch.equal(raw.net.state_dict()[first[len("gen_ema."):]], state[first])


def test_errors_name_the_key_and_the_remedy(tmp_path, capsys):
    # A model with parameters but no checkpoint would be scored with random weights: refused.
    with pytest.raises(evaluation.EvalError, match="never scores randomly initialised"):
        ev.build_models(_compose("model=srresnet"))
    with pytest.raises(evaluation.EvalError, match="nothing to evaluate"):
        ev.build_models(_compose())
    with pytest.raises(evaluation.EvalError, match="file not found"):
        ev.build_models(_compose(f"ckpt={tmp_path / 'missing.ckpt'}"))
    # main() prints one error line and returns 1 instead of a traceback.
    assert ev.main(_compose(f"ckpt={tmp_path / 'missing.ckpt'}")) == 2
    assert "error: ckpt=" in capsys.readouterr().err


def test_tiled_inference_matches_whole_image_inference(tmp_path):
    """`tile=` routes through inference.tiling; with an overlap wider than the receptive field the scores agree."""
    model, = evaluation.load_checkpoints([str(write_checkpoint(tmp_path / "t.ckpt", TINY_GEN))])
    torch.manual_seed(1)
    lr = torch.rand(1, 3, 40, 44)
    whole, _ = evaluation.super_resolve(model, lr, torch.device("cpu"))
    tiled, _ = evaluation.super_resolve(model, lr, torch.device("cpu"), tile=24, tile_overlap=8)
    assert tiled.shape == whole.shape == (1, 3, 80, 88)
    hr = whole[0].clamp(0, 1)
    assert image_metrics(tiled[0], hr, 2)["psnr_rgb"] > 45
    with pytest.raises(evaluation.EvalError, match="tile"):
        evaluation.super_resolve(model, lr, torch.device("cpu"), tile=10, tile_overlap=8)


def test_several_sets_are_composed_one_data_module_each(benchmarks_dir, monkeypatch):
    """data=[set5,set14] -> sets=[...]: the second set is composed with the run's overrides and data=set14."""
    overrides = ["model=bicubic", f"paths.benchmarks_dir={benchmarks_dir}"]
    monkeypatch.setattr(ev, "_task_overrides", lambda: list(overrides))   # what HydraConfig holds in a real run
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="eval", overrides=[*overrides, *ev.rewrite_argv(["data=[set5,set14]"])])
        sets = ev.build_sets(cfg)
    assert [(s.label, s.size) for s in sets] == [("Set5", 5), ("Set14", 14)]
    gray = {name: flag for name, _, _, flag in sets[1].items()}
    assert gray["img_003"] is True and gray["img_010"] is False   # grey *file* vs RGB file with equal channels
