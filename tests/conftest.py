"""Shared test fixtures; shared non-fixture code lives in helpers.py. Tests run on 2 CPU cores: keep tensors tiny
and runs short."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from helpers import BENCHMARKS_DIR, SWEEP_ARGS, TinySweep, compose_train, run_cli

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")


@pytest.fixture(scope="session")
def benchmarks_dir() -> Path:
    """The shared Set5/Set14 benchmark folder; tests using it skip cleanly when it is absent."""
    if not (BENCHMARKS_DIR / "Set5").is_dir():
        pytest.skip(f"benchmark sets not found at {BENCHMARKS_DIR}")
    return BENCHMARKS_DIR


@pytest.fixture(autouse=True)
def _no_hydra_state_between_tests():
    """compose_train() sets Hydra's global config (as a running job would); do not leak it into the next test."""
    yield
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    HydraConfig.instance().cfg = None
    GlobalHydra.instance().clear()


@pytest.fixture(autouse=True, scope="session")
def _few_threads():
    import torch

    torch.set_num_threads(2)
    yield


@pytest.fixture
def cli():
    return run_cli


@pytest.fixture
def compose():
    return compose_train


@pytest.fixture(scope="session")
def tiny_sweep(tmp_path_factory) -> TinySweep:
    """The 2x2 sweep (helpers.SWEEP_ARGS) through the real CLI, once per session (about 4 x 20 s of CPU); shared
    by test_sweep.py, test_report.py, test_wandb.py and test_notebook.py."""
    root = tmp_path_factory.mktemp("tiny_sweep")
    sweep_dir = root / "multirun" / "sweep"
    wandb_home = root / "wandb_home"
    env = {"WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_DIR": "",
           "WANDB_CONFIG_DIR": str(wandb_home / "config"), "WANDB_CACHE_DIR": str(wandb_home / "cache"),
           "WANDB_DATA_DIR": str(wandb_home / "data")}
    return TinySweep(sweep_dir, run_cli("-m", *SWEEP_ARGS, f"hydra.sweep.dir={sweep_dir}", env=env))
