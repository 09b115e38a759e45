"""Shared non-fixture test code: paths, the real CLI, Hydra composition, tiny override lists, file writers and
tiny in-memory data. Fixtures live in conftest.py; test files import these names with `from helpers import ...`."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, Dataset

REPO_ROOT = Path(__file__).resolve().parents[1]
# ../shared/benchmarks beside the project root holds Set5/Set14 x2/x3/x4 (HR + MATLAB-bicubic LR).
BENCHMARKS_DIR = Path(os.environ.get("SR_BENCHMARKS_DIR", REPO_ROOT.parent / "shared" / "benchmarks"))


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


# The one tiny-run override list: any training preset, 2 steps on 32 px crops, small enough for a CPU test.
# A test extends it with its own values ([*TINY, "trainer.max_steps=4"]): a later Hydra override wins.
TINY = [
    "trainer.max_steps=2", "trainer.val_check_interval=2", "batch_size=2", "crop=32", "scale=4",
    "logger=csv", "callbacks=none", "precision=32-true",
]
# A tiny network for the presets whose generator takes blocks/channels (not spandrel's, whose keys differ).
TINY_NET = ["gen.blocks=1", "gen.channels=8"]


# A tiny generator config and a checkpoint in the layout `train` writes, for eval/upscale/export tests.
TINY_GEN = {"_target_": "sr_lightning.models.srresnet.SRResNet", "scale": 2, "in_channels": 3, "channels": 8,
            "blocks": 1}


def write_checkpoint(path: Path, gen: dict, color: str = "rgb", value_range=(0.0, 1.0), ema: bool = True,
                     seed: int = 0) -> Path:
    """hyper_parameters['cfg'] (with the config columns eval reports), gen.* and (different) gen_ema.* weights."""
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


# ----------------------------------------------------------------------------- the shared sweep (tiny_sweep)
# `scale=3,4 x crop=24,32`: only (scale 3, crop 32) is invalid (32 is not a multiple of 3), so exactly job 1 fails
# in its own config validation and jobs 0, 2, 3 complete. conftest's session fixture `tiny_sweep` runs it.
SWEEP_ARGS = [
    "trainer.max_steps=1", "trainer.val_check_interval=1", "trainer.log_every_n_steps=1",
    "scale=3,4", "crop=24,32", *TINY_NET, "batch_size=2", "callbacks=none", "precision=32-true",
    # no logger= override: sweeps log to W&B (offline) by default, which test_wandb.py reads back
]
FAILED_JOB = "1"  # scale=3 crop=32


@dataclass
class TinySweep:
    dir: Path
    result: subprocess.CompletedProcess

    def summary(self, job: str) -> dict:
        return json.loads((self.dir / job / "summary.json").read_text())


# ----------------------------------------------------------------------------- tiny in-memory data and a GAN run
TINY_GAN = ["~data", "model=srgan_mse", *TINY_NET, "disc.blocks=2", "disc.channels=8",
            "disc.dense_features=16", "scale=2", "crop=16", "batch_size=2", "module.ema_decay=0.5"]


class SmoothPairs(Dataset):
    """Fixed, smooth HR images and their MATLAB-bicubic LR: deterministic, so runs can be compared."""

    def __init__(self, n: int = 4, size: int = 16, scale: int = 2, seed: int = 0):
        from sr_lightning.ops.imresize import imresize

        g = torch.Generator().manual_seed(seed)
        base = torch.rand(n, 3, size // 4, size // 4, generator=g)
        self.hr = torch.nn.functional.interpolate(base, size=(size, size), mode="bilinear", align_corners=False)
        self.lr = imresize(self.hr, scale=1 / scale).clamp(0, 1)

    def __len__(self):
        return len(self.hr)

    def __getitem__(self, i):
        return {"lr": self.lr[i], "hr": self.hr[i], "name": f"img{i}"}


class TinyData(pl.LightningDataModule):
    def __init__(self, n: int = 4, batch_size: int = 2):
        super().__init__()
        self.n, self.batch_size = n, batch_size

    def train_dataloader(self):
        return DataLoader(SmoothPairs(self.n), batch_size=self.batch_size, shuffle=False)

    def val_dataloader(self):
        return DataLoader(SmoothPairs(1, seed=1), batch_size=1)


def build(tmp_path, overrides=(), max_steps=2, every=1, base=TINY_GAN, amp_dtype=None):
    """An SRModule composed from `base` + overrides and a CPU Trainer that checkpoints every `every` steps."""
    from sr_lightning.callbacks import SRCheckpoint
    from sr_lightning.checkpoint_io import AtomicCheckpointIO
    from sr_lightning.module import SRModule

    cfg = compose_train([*base, f"trainer.max_steps={max_steps}", *overrides], output_dir=tmp_path)
    module = SRModule(cfg, output_dir=str(tmp_path), amp_dtype=amp_dtype)
    ckpt = SRCheckpoint(tmp_path / "checkpoints", every_n_steps=every)
    trainer = pl.Trainer(max_steps=max_steps, logger=False, callbacks=[ckpt], plugins=[AtomicCheckpointIO()],
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                         limit_val_batches=1, val_check_interval=max_steps, check_val_every_n_epoch=None,
                         accelerator="cpu", devices=1, enable_checkpointing=False)
    return module, trainer
