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


def compose_train(overrides: list[str] | None = None, config_name: str = "train", output_dir: Path | None = None):
    """Compose a config exactly as the CLI would (Hydra runtime values included), without running it."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(REPO_ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name=config_name, overrides=list(overrides or []), return_hydra_config=True)
    if output_dir is not None:
        with open_dict(cfg):
            cfg.hydra.runtime.output_dir = str(output_dir)
    HydraConfig.instance().set_config(cfg)
    return cfg


@pytest.fixture
def compose():
    return compose_train


# Overrides that make any training preset tiny enough for a CPU test.
TINY = [
    "trainer.max_steps=2", "trainer.val_check_interval=2", "batch_size=2", "crop=32", "scale=4",
    "logger=csv", "callbacks=none", "precision=32-true",
]


# A tiny generator config and a checkpoint in the layout `train` writes, for eval/upscale/export tests.
TINY_GEN = {"_target_": "sr_lightning.models.srresnet.SRResNet", "scale": 2, "in_channels": 3, "channels": 8,
            "blocks": 1}


def write_checkpoint(path: Path, gen: dict, color: str = "rgb", value_range=(0.0, 1.0), ema: bool = True,
                     seed: int = 0) -> Path:
    """hyper_parameters['cfg'] (with the config columns eval reports), gen.* and (different) gen_ema.* weights."""
    import torch
    from hydra.utils import instantiate

    torch.manual_seed(seed)
    state = {f"gen.{k}": v for k, v in instantiate(gen).state_dict().items()}
    if ema:
        state.update({f"gen_ema.{k}": v for k, v in instantiate(gen).state_dict().items()})
    cfg = {"gen": gen, "disc": {"blocks": 3}, "scale": gen["scale"], "color": color,
           "value_range": list(value_range), "model_name": "tiny", "crop": 32, "lr": 1e-4}
    torch.save({"state_dict": state, "hyper_parameters": {"cfg": cfg}, "global_step": 5}, path)
    return path


def write_png_bomb(path: Path, width: int = 14000, height: int = 13000) -> Path:
    """A PNG whose header claims width x height (8-bit gray) but holds one row of data: a decompression bomb that
    costs nothing unless something decodes it."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16))
                     + chunk(b"IEND", b""))
    return path
