"""Manual-optimisation GAN training under DDP equals a single process with the same global batch.

On the CPU with gloo (CI); on two or more GPUs with NCCL, with and without SyncBatchNorm (skipped elsewhere).
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

WORKER = Path(__file__).with_name("ddp_equivalence_worker.py")


def _run(devices: int, batch: int, tmp_path: Path, accelerator: str = "cpu", variant: str = "plain") -> dict:
    out = tmp_path / f"weights_{accelerator}_{variant}_{devices}.pt"
    env = dict(os.environ, PYTHONUNBUFFERED="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(29500 + os.getpid() % 1000))
    result = subprocess.run([sys.executable, str(WORKER), str(devices), str(batch), str(out),
                             str(tmp_path / f"run_{accelerator}_{variant}_{devices}"), accelerator, variant],
                            capture_output=True, text=True, timeout=600, env=env, cwd=str(WORKER.parent))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return torch.load(out, weights_only=False)


def _assert_same_weights(single: dict, double: dict) -> None:
    assert single["global_step"] == double["global_step"] == 3
    for name in ("gen", "disc", "gen_ema"):
        for key, value in single[name].items():
            other = double[name][key]
            assert torch.allclose(value.float(), other.float(), atol=1e-5, rtol=0), f"{name}.{key}"
    # and training did something: D and G moved away from their initial weights in both runs
    assert any(not torch.equal(v, double["gen"][k]) for k, v in single["gen_ema"].items())


@pytest.mark.slow
def test_two_process_gloo_ddp_matches_one_process(tmp_path):
    single = _run(1, 4, tmp_path)
    double = _run(2, 2, tmp_path)  # 2 processes x 2 = the same global batch of 4
    _assert_same_weights(single, double)


needs_two_gpus = pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA GPUs")


@needs_two_gpus
@pytest.mark.parametrize("variant", ["plain", "sync_bn"])
def test_two_gpu_nccl_ddp_matches_one_gpu(tmp_path, variant):
    """One NCCL process per GPU; with sync_bn the BatchNorm statistics are those of the global batch."""
    single = _run(1, 4, tmp_path, "gpu", variant)
    double = _run(2, 2, tmp_path, "gpu", variant)
    _assert_same_weights(single, double)
    if variant == "sync_bn":  # the running statistics too: they come from the global batch of 4
        assert any(k.endswith("running_var") for k in double["gen"])
