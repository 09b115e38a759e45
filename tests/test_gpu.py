"""Mixed precision on a CUDA GPU through the real CLI (skipped without CUDA; CI has no GPU).

On a GPU machine: `pytest tests/test_gpu.py tests/test_ddp.py` (the DDP checks need two GPUs), or
`bash benchmarks/gpu_checks.sh`, which also runs the GPU training-step benchmark.
"""
from __future__ import annotations

import csv
import json
import math

import pytest
import torch
from omegaconf import OmegaConf

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

TINY_GAN_ON_GPU = ["model=srgan_mse", "trainer=gpu", "gen.blocks=1", "gen.channels=8", "disc.blocks=2",
                   "disc.channels=8", "disc.dense_features=16", "crop=32", "batch_size=4", "trainer.max_steps=6",
                   "trainer.val_check_interval=6", "trainer.log_every_n_steps=1", "callbacks=none"]


def _train(cli, run_dir, *overrides):
    result = cli("train", *TINY_GAN_ON_GPU, *overrides, f"hydra.run.dir={run_dir}")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    resolved = OmegaConf.load(run_dir / "config_resolved.yaml")
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["global_step"] == 6
    with open(run_dir / "metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    for key in ("train/g_loss", "train/d_loss"):
        values = [float(r[key]) for r in rows if r.get(key)]
        assert values and all(math.isfinite(v) for v in values), key
    return resolved, torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)


def test_fp16_mixed_trains_a_gan_with_one_grad_scaler_per_network(cli, tmp_path):
    resolved, ckpt = _train(cli, tmp_path, "precision=16-mixed")
    assert resolved.precision == "16-mixed" and resolved.module.channels_last is True
    scalers = ckpt["grad_scalers"]
    assert set(scalers) == {"g", "d"}
    for name, state in scalers.items():
        assert math.isfinite(state["scale"]) and state["scale"] > 0, name


def test_precision_auto_picks_bf16_on_gpus_that_have_it(cli, tmp_path):
    resolved, ckpt = _train(cli, tmp_path, "precision=auto")
    expected = "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    assert resolved.precision == expected and resolved.module.channels_last is True
    assert bool(ckpt.get("grad_scalers")) == (expected == "16-mixed")  # bf16 needs no loss scaling
