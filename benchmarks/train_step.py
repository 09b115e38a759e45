"""Training-step benchmark: our SRModule through the Lightning Trainer vs a plain PyTorch loop doing the same math.

For each generator (SRResNet-16, RRDBNet-23) and each precision setting (fp32 NCHW, the default that
`precision=auto` picks on this machine, and bf16 autocast + channels_last explicitly) it reports the median
step time of both paths and the ratios:
  * Lightning overhead = lightning / plain (target <= 1.05)
  * speed-up of a setting over fp32 = fp32 / setting (plain loop)

Both paths do exactly the same work per step: forward, L1 loss, backward, gradient-norm measurement, Adam step,
zero_grad, EMA update — on fixed in-memory tensors so data loading is not measured (see benchmarks/data.py).

usage: python benchmarks/train_step.py [--quick] [--steps N] [--models srresnet rrdbnet]
  --quick uses batch 4 and crop 48 (minutes instead of tens of minutes on 2 CPU cores).
"""
from __future__ import annotations

import argparse
import copy
import math
import statistics
import sys
import time
from pathlib import Path

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, Dataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from conftest import compose_train  # noqa: E402

from sr_lightning.commands.train import resolve_precision  # noqa: E402
from sr_lightning.module import SRModule  # noqa: E402

PRESETS = {"srresnet": ["model=msrresnet", "gen.blocks=16"], "rrdbnet": ["model=rrdb_psnr"]}


class FixedBatches(Dataset):
    def __init__(self, batch: int, crop: int, scale: int = 4):
        g = torch.Generator().manual_seed(0)
        self.hr = torch.rand(batch, 3, crop, crop, generator=g)
        self.lr = torch.rand(batch, 3, crop // scale, crop // scale, generator=g)

    def __len__(self):
        return 10_000

    def __getitem__(self, i):
        j = i % len(self.hr)
        return {"lr": self.lr[j], "hr": self.hr[j], "name": str(j)}


class StepTimer(pl.Callback):
    def __init__(self):
        self.times: list[float] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._t = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.times.append(time.perf_counter() - self._t)


def build_module(model: str, precision: str, channels_last: bool, batch: int, crop: int) -> SRModule:
    cfg = compose_train(["~data", *PRESETS[model], f"crop={crop}", f"batch_size={batch}", "loss=l1",
                         "module.ema_decay=0.999"], output_dir=Path("/tmp"))
    amp = {"bf16-mixed": "bfloat16"}.get(precision)
    return SRModule(cfg, amp_dtype=amp, channels_last=channels_last)


def lightning_steps(module: SRModule, batch: int, crop: int, steps: int, warmup: int) -> list[float]:
    timer = StepTimer()
    loader = DataLoader(FixedBatches(batch, crop), batch_size=batch)
    trainer = pl.Trainer(max_steps=steps + warmup, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                         callbacks=[timer], accelerator="cpu", devices=1, precision="32-true")
    trainer.fit(module, train_dataloaders=loader)
    return timer.times[warmup:]


def plain_steps(module: SRModule, batch: int, crop: int, steps: int, warmup: int) -> list[float]:
    """The same math as SRModule.training_step for a generator-only preset, without Lightning."""
    gen = module.gen
    ema = copy.deepcopy(gen).requires_grad_(False)
    if module.use_channels_last:
        gen.to(memory_format=torch.channels_last)
        ema.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(gen.parameters(), lr=1e-4)
    data = FixedBatches(batch, crop)
    lr, hr = data.lr, data.hr
    if module.use_channels_last:
        lr, hr = lr.contiguous(memory_format=torch.channels_last), hr.contiguous(memory_format=torch.channels_last)
    times = []
    for step in range(steps + warmup):
        t = time.perf_counter()
        with torch.autocast("cpu", dtype=module.amp_dtype or torch.float32, enabled=module.amp_dtype is not None):
            loss = torch.nn.functional.l1_loss(gen(lr).float(), hr)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(gen.parameters()), math.inf)
        opt.step()
        opt.zero_grad(set_to_none=True)
        with torch.no_grad():
            decay = min(0.999, (1 + step) / (10 + step))
            torch._foreach_lerp_(list(ema.parameters()), [p.detach() for p in gen.parameters()], 1 - decay)
        times.append(time.perf_counter() - t)
    return times[warmup:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--models", nargs="+", default=list(PRESETS), choices=list(PRESETS))
    args = parser.parse_args()
    batch, crop = (4, 48) if args.quick else (16, 96)
    default_precision, _, default_cl = resolve_precision("auto", "cpu", "auto")
    settings = [("fp32", "32-true", False), (f"default ({default_precision}, channels_last={default_cl})",
                                               default_precision, default_cl)]
    if default_precision != "bf16-mixed":
        settings.append(("bf16-mixed + channels_last", "bf16-mixed", True))
    print(f"batch {batch}, HR crop {crop}, x4; {args.steps} timed steps after {args.warmup} warm-up; "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU capability "
          f"{torch.backends.cpu.get_cpu_capability()}")
    for model in args.models:
        fp32_plain = None
        for label, precision, channels_last in settings:
            torch.manual_seed(0)
            module = build_module(model, precision, channels_last, batch, crop)
            plain = statistics.median(plain_steps(copy.deepcopy(module), batch, crop, args.steps, args.warmup))
            light = statistics.median(lightning_steps(module, batch, crop, args.steps, args.warmup))
            fp32_plain = fp32_plain or plain
            print(f"{model:9s} {label:45s} plain {plain * 1e3:8.1f} ms  lightning {light * 1e3:8.1f} ms  "
                  f"overhead x{light / plain:5.3f}  speed-up vs fp32 x{fp32_plain / plain:5.2f}", flush=True)


if __name__ == "__main__":
    main()
