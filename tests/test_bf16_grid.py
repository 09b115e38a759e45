"""The discriminator depth x crop grid trains under bf16 autocast (issue 14, section 3).

The seed-001 grid lost its `disc.blocks=16` jobs to inf/NaN in D at step 0-1 under bf16 on an AMX Xeon: with 16
blocks the VGG-style D ran stride-2 convs with 1-px outputs, a shape for which oneDNN's AMX bf16 conv kernel
returns wrong values (see sr_lightning/models/discriminators.py, `_HalvingConv`). This CPU (AVX2) takes PyTorch's
own bf16 conv kernel and trains either way, so the tests emulate the defect: under bf16 autocast, a strided conv
whose output is 1 px wide returns NaN. Without the fix the blocks=16 cells stop with NonFiniteLossError.
Tiny G (1 block, 8 channels) and a narrow D (4 ... 32 channels, the real depth and strides), batch 2, 3 steps.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import lightning.pytorch as pl
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from sr_lightning.module import SRModule

from helpers import REPO_ROOT, SmoothPairs, compose_train

TINY = ["~data", "gen.blocks=1", "gen.channels=8", "disc.channels=4", "disc.max_channels=32",
        "disc.dense_features=16", "scale=4", "batch_size=2", "trainer.max_steps=3"]
STEPS = 3

# Installs the emulated defect in a CLI subprocess (the same F.conv2d wrapper as the fixture below).
DEFECT_SOURCE = '''
import torch, torch.nn.functional as F
_real = F.conv2d
def _defective(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    out = _real(input, weight, bias, stride, padding, dilation, groups)
    strides = (stride, stride) if isinstance(stride, int) else tuple(stride)
    bf16 = torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
    if bf16 and max(strides) > 1 and out.shape[-1] == 1:
        return out * float("nan")  # oneDNN AMX bf16: wrong values for a strided conv with a 1-px output
    return out
F.conv2d = _defective
'''


@pytest.fixture
def amx_conv_defect():
    """Emulates oneDNN's AMX bf16 defect on this CPU: NaN from any strided conv with a 1-px output."""
    real = F.conv2d
    scope: dict = {}
    exec(DEFECT_SOURCE, scope)  # noqa: S102 - test-only patch, restored below
    yield
    F.conv2d = real


def test_the_emulated_defect_hits_a_strided_conv_with_a_1px_output(amx_conv_defect):
    conv = torch.nn.Conv2d(4, 4, 3, stride=2, padding=1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.isnan(conv(torch.rand(2, 4, 1, 1))).all()
        assert torch.isfinite(conv(torch.rand(2, 4, 3, 3))).all()
    assert torch.isfinite(conv(torch.rand(2, 4, 1, 1))).all()  # fp32 takes other kernels


def train_bf16(overrides: list[str], crop: int, tmp_path) -> list[tuple[str, float, float]]:
    """3 steps of SRModule under bf16 autocast + channels_last (the CPU default); (net, loss, grad norm) per update."""
    pl.seed_everything(0, verbose=False)
    cfg = compose_train([*TINY, f"crop={crop}", *overrides], output_dir=tmp_path)
    module = SRModule(cfg, amp_dtype="bfloat16", channels_last=True, output_dir=str(tmp_path))
    updates = []
    original = module._backward_and_step

    def record(name, loss, optimizer, params, step):
        norm = original(name, loss, optimizer, params, step)
        updates.append((name, float(loss.detach()), float(norm)))
        return norm

    module._backward_and_step = record
    trainer = pl.Trainer(max_steps=STEPS, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0,
                         accelerator="cpu", devices=1)
    loader = DataLoader(SmoothPairs(4, size=crop, scale=4), batch_size=2)
    trainer.fit(module, train_dataloaders=loader)
    return updates


def assert_trained(updates):
    assert [name for name, _, _ in updates] == ["g", "d"] * STEPS
    assert all(math.isfinite(loss) and math.isfinite(norm) for _, loss, norm in updates), updates


@pytest.mark.parametrize("crop", [48, 64, 96, 128])
@pytest.mark.parametrize("blocks", [4, 8, 16])
def test_disc_blocks_x_crop_grid_trains_under_bf16(blocks, crop, tmp_path, amx_conv_defect):
    assert_trained(train_bf16(["model=srgan_mse", f"disc.blocks={blocks}"], crop, tmp_path))


@pytest.mark.parametrize("blocks", [4, 8, 16])
def test_ablation_disc_blocks_grid_trains_under_bf16(blocks, tmp_path, amx_conv_defect):
    # experiment=ablation/disc_blocks sweeps disc.blocks=4,8,16 over ablation/base (seed000 D, global pooling, 96 px)
    assert_trained(train_bf16(["experiment=ablation/disc_blocks", f"disc.blocks={blocks}"], 96, tmp_path))


@pytest.mark.slow
def test_cli_issue_command_trains_under_bf16(tmp_path):
    """The issue's command through the real entry point, with the emulated defect installed in the process."""
    code = DEFECT_SOURCE + "import runpy, sys\nsys.argv = ['sr_lightning', *sys.argv[1:]]\n" \
                           "runpy.run_module('sr_lightning', run_name='__main__')\n"
    args = ["train", "model=srgan_mse", "gen.blocks=1", "gen.channels=8", "crop=48", "disc.blocks=16",
            "disc.channels=4", "disc.max_channels=32", "disc.dense_features=16", "batch_size=2",
            "trainer.max_steps=2", "precision=bf16-mixed", "logger=csv", f"hydra.run.dir={tmp_path}"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HYDRA_FULL_ERROR": "0"}
    result = subprocess.run([sys.executable, "-c", code, *args], cwd=str(REPO_ROOT), env=env, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["global_step"] == 2
    assert summary["precision"] == "bf16-mixed"
