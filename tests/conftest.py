"""Shared test fixtures. Tests run on 2 CPU cores: keep tensors tiny and runs short."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
# ../shared/benchmarks beside the project root holds Set5/Set14 x2/x3/x4 (HR + MATLAB-bicubic LR).
BENCHMARKS_DIR = Path(os.environ.get("SR_BENCHMARKS_DIR", REPO_ROOT.parent / "shared" / "benchmarks"))

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")


@pytest.fixture(scope="session")
def benchmarks_dir() -> Path:
    """The shared Set5/Set14 benchmark folder; tests using it skip cleanly when it is absent."""
    if not (BENCHMARKS_DIR / "Set5").is_dir():
        pytest.skip(f"benchmark sets not found at {BENCHMARKS_DIR}")
    return BENCHMARKS_DIR


@pytest.fixture(autouse=True, scope="session")
def _few_threads():
    import torch

    torch.set_num_threads(2)
    yield


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: float = 600):
    """Run the real entry point `python -m sr_lightning ...` as a subprocess."""
    full_env = dict(os.environ)
    full_env.update({"PYTHONUNBUFFERED": "1", "HYDRA_FULL_ERROR": "0"})
    if env:
        full_env.update(env)
    return subprocess.run(
        [sys.executable, "-m", "sr_lightning", *args],
        cwd=str(cwd or REPO_ROOT),
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def cli():
    return run_cli
