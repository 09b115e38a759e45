"""Training-step time of the spandrel architectures (model=spandrel) relative to MSRResNet-16, on the sample data.

Each architecture is built at its default (paper) size and trained through the project's own path (SRModule in a
Lightning Trainer, the sample photos, L1, Adam) at batch 16 / crop 64 / x4 in fp32. The baseline, BasicSR's
MSRResNet-16 (64 channels, 16 blocks, `model=msrresnet`), is timed again in the same process before every
architecture (or every N with --baseline-every N), and the ratio uses the latest baseline: on a machine shared
with other jobs the load changes from minute to minute, and a baseline taken long before would not describe the
same machine.

Reported per architecture: parameters, median step time (after warm-up steps), the neighbouring baseline's
median, and the ratio arch / MSRResNet-16. An architecture that fails (e.g. runs out of memory) is reported
with its error and the run goes on.

usage: python benchmarks/spandrel_step.py [--quick] [--archs SPAN Compact ...] [--steps N] [--warmup N]
                                          [--baseline-every N] [--batch 16] [--crop 64] [--device cpu|cuda]
                                          [--json out.json]
  --quick: a few architectures (Compact, SPAN, SAFMN, OmniSR, RealPLKSR, ESRGAN, SwinIR), 2 timed steps.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import warnings
from pathlib import Path

import lightning.pytorch as pl
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from sr_lightning.models import count_parameters  # noqa: E402
from sr_lightning.models.spandrel_arch import ARCHS  # noqa: E402
from sr_lightning.module import SRModule  # noqa: E402

from helpers import compose_train  # noqa: E402

QUICK = ["Compact", "SPAN", "SAFMN", "OmniSR", "RealPLKSR", "ESRGAN", "SwinIR"]
BASELINE = ["model=msrresnet", "gen.blocks=16", "gen.channels=64"]


class StepTimer(pl.Callback):
    def __init__(self, device: torch.device):
        self.device = device
        self.times: list[float] = []

    def _now(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._t = self._now()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.times.append(self._now() - self._t)


def time_preset(overrides: list[str], args, datamodule=None) -> tuple[float, int, object]:
    """Median training-step seconds after `args.warmup` steps, the generator's parameters, the datamodule."""
    from hydra.utils import instantiate

    cfg = compose_train([*overrides, f"batch_size={args.batch}", f"crop={args.crop}", "scale=4",
                         "precision=32-true", "logger=none", "callbacks=none", "module.ema_decay=null"])
    if datamodule is None:
        datamodule = instantiate(cfg.data)
    device = torch.device(args.device)
    # channels_last as `train` picks it for fp32 (true on CPUs, false on GPUs)
    module = SRModule(cfg, channels_last=device.type == "cpu")
    timer = StepTimer(device)
    steps = args.warmup + args.steps
    trainer = pl.Trainer(max_steps=steps, logger=False, callbacks=[timer], enable_progress_bar=False,
                         enable_model_summary=False, enable_checkpointing=False, num_sanity_val_steps=0,
                         limit_val_batches=0, accelerator="gpu" if device.type == "cuda" else "cpu", devices=1)
    trainer.fit(module, datamodule=datamodule)
    return statistics.median(timer.times[args.warmup:]), count_parameters(module.gen), datamodule


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--archs", nargs="+", default=None, choices=list(ARCHS))
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--baseline-every", type=int, default=1, help="re-time MSRResNet-16 every N archs")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--crop", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    archs = args.archs or (QUICK if args.quick else list(ARCHS))
    args.steps = args.steps or (2 if args.quick else 3)
    warnings.filterwarnings("ignore")
    import logging

    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    torch.manual_seed(0)

    print(f"batch {args.batch}, crop {args.crop}, x4, fp32, {args.device}, {torch.get_num_threads()} threads; "
          f"median of {args.steps} steps after {args.warmup} warm-up; MSRResNet-16 re-timed every {args.baseline_every} arch(s)",
          flush=True)
    print(f"{'arch':<11} {'params':>12} {'step s':>8} {'MSRResNet s':>12} {'ratio':>7}", flush=True)
    rows = []
    datamodule = None
    for i, arch in enumerate(archs):
        if i % args.baseline_every == 0:
            base, base_params, datamodule = time_preset(BASELINE, args, datamodule)
        try:
            step, params, _ = time_preset(["model=spandrel", f"gen.arch={arch}"], args, datamodule)
        except Exception as err:  # noqa: BLE001 - one architecture failing does not stop the table
            print(f"{arch:<11} failed: {type(err).__name__}: {str(err).splitlines()[0][:120]}", flush=True)
            rows.append({"arch": arch, "error": f"{type(err).__name__}: {err}"})
            continue
        rows.append({"arch": arch, "params": params, "step_s": step, "baseline_s": base, "ratio": step / base,
                     "baseline_params": base_params})
        print(f"{arch:<11} {params:>12,} {step:>8.3f} {base:>12.3f} {step / base:>7.2f}", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"args": {k: (str(v) if isinstance(v, Path) else v)
                                                  for k, v in vars(args).items()}, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
