"""Training-step benchmark: our SRModule through the Lightning Trainer vs a plain PyTorch loop doing the same math.

For each generator (SRGAN's SRResNet-16 with BatchNorm, BasicSR's MSRResNet-16, ESRGAN's RRDBNet-23) and each
precision setting (fp32 NCHW, the default that `precision=auto` picks on this machine, bf16 autocast +
channels_last explicitly where that is not the default, and on a GPU 16-mixed with a GradScaler) it reports the
median step time of both paths and the ratios:
  * Lightning overhead = lightning / plain (target <= 1.05)
  * speed-up of a setting over fp32 = fp32 / setting (plain loop)

Both paths do exactly the same work per step: forward, L1 loss, backward, gradient-norm measurement, Adam step,
zero_grad, EMA update — on fixed in-memory tensors so data loading is not measured (see benchmarks/data.py).

usage: python benchmarks/train_step.py [--quick] [--steps N] [--models srresnet msrresnet rrdbnet] [--device cuda]
                                     [--gan]
  --quick uses batch 4 and crop 48 (minutes instead of tens of minutes on 2 CPU cores).
  --device cuda times the same on the first GPU (both paths synchronise before reading the clock).
  --gan times a whole SRGAN iteration instead (model=srgan_mse: SRResNet G + VGG D, MSE + vanilla adversarial, G
      and D updates, default precision) through the Trainer in one run whose steps alternate between the G update
      as before issue 14 (it also ran D on the HR batch) and now (only a relativistic loss makes it do that), so
      load changes on a shared machine hit both alike; --steps steps of each. Prints both medians and the ratio.
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
from sr_lightning.losses import AdversarialLoss  # noqa: E402
from sr_lightning.module import SRModule  # noqa: E402
from sr_lightning.precision import resolve_precision  # noqa: E402

from helpers import compose_train  # noqa: E402

PRESETS = {"srresnet": ["model=srresnet"], "msrresnet": ["model=msrresnet"], "rrdbnet": ["model=rrdb_psnr"]}


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


def clock(device: torch.device) -> float:
    """Wall time after the device has finished the work queued so far (GPU kernels run asynchronously)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


class StepTimer(pl.Callback):
    """Times each training step; Lightning has moved the batch to the device before on_train_batch_start."""

    def __init__(self):
        self.times: list[float] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._t = clock(pl_module.device)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.times.append(clock(pl_module.device) - self._t)


AMP_DTYPES = {"bf16-mixed": "bfloat16", "16-mixed": "float16"}


def build_module(model: str, precision: str, channels_last: bool, batch: int, crop: int) -> SRModule:
    cfg = compose_train(["~data", *PRESETS[model], f"crop={crop}", f"batch_size={batch}", "loss=l1",
                         "module.ema_decay=0.999"], output_dir=Path("/tmp"))
    return SRModule(cfg, amp_dtype=AMP_DTYPES.get(precision), channels_last=channels_last)


def lightning_steps(module: SRModule, batch: int, crop: int, steps: int, warmup: int,
                    device: torch.device) -> list[float]:
    timer = StepTimer()
    loader = DataLoader(FixedBatches(batch, crop), batch_size=batch)
    trainer = pl.Trainer(max_steps=steps + warmup, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                         callbacks=[timer], accelerator="gpu" if device.type == "cuda" else "cpu", devices=1,
                         precision="32-true")
    trainer.fit(module, train_dataloaders=loader)
    return timer.times[warmup:]


def plain_steps(module: SRModule, batch: int, crop: int, steps: int, warmup: int,
                device: torch.device) -> list[float]:
    """The same math as SRModule.training_step for a generator-only preset, without Lightning."""
    memory_format = torch.channels_last if module.use_channels_last else torch.contiguous_format
    gen = module.gen.to(device, memory_format=memory_format)
    ema = copy.deepcopy(gen).requires_grad_(False)
    opt = torch.optim.Adam(gen.parameters(), lr=1e-4)
    # fp16 (GPU only): the loss scaling SRModule does with its per-network GradScaler
    scaler = torch.amp.GradScaler(device.type, enabled=module.amp_dtype == torch.float16)
    data = FixedBatches(batch, crop)
    lr, hr = (t.to(device).contiguous(memory_format=memory_format) for t in (data.lr, data.hr))
    times = []
    for step in range(steps + warmup):
        t = clock(device)
        with torch.autocast(device.type, dtype=module.amp_dtype or torch.float32, enabled=module.amp_dtype is not None):
            loss = torch.nn.functional.l1_loss(gen(lr).float(), hr)
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(list(gen.parameters()), math.inf)
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)
        with torch.no_grad():
            decay = min(0.999, (1 + step) / (10 + step))
            torch._foreach_lerp_(list(ema.parameters()), [p.detach() for p in gen.parameters()], 1 - decay)
            for b_ema, b in zip(ema.buffers(), gen.buffers()):
                b_ema.copy_(b)
        times.append(clock(device) - t)
    return times[warmup:]


class DOnHRAlways(AdversarialLoss):
    """The G update as before issue 14: D runs on the HR batch whatever the adversarial loss."""

    needs_real_for_generator = True


class AlternateDOnHR(pl.Callback):
    """Switches the G update between the two behaviours every step and times each step into its bin, so that
    both see the same load on a shared machine (a step is one G update + one D update)."""

    def __init__(self, warmup: int):
        self.warmup = warmup
        self.times: dict[bool, list[float]] = {True: [], False: []}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._always = trainer.global_step % 2 == 0
        pl_module.adv_loss.__class__ = DOnHRAlways if self._always else AdversarialLoss
        self._t = clock(pl_module.device)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        elapsed = clock(pl_module.device) - self._t
        if trainer.global_step > self.warmup:
            self.times[self._always].append(elapsed)


def iteration_gflop(cfg, amp, channels_last: bool, always: bool, batch: int, crop: int, device: torch.device) -> float:
    """Floating-point work of one SRGAN iteration (forward + backward of G and D, both updates): a count that,
    unlike the clock, does not depend on what else the machine is doing."""
    from torch.utils.flop_counter import FlopCounterMode

    module = SRModule(cfg, amp_dtype=amp, channels_last=channels_last)
    if always:
        module.adv_loss.__class__ = DOnHRAlways
    trainer = pl.Trainer(max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, limit_val_batches=0,
                         accelerator="gpu" if device.type == "cuda" else "cpu", devices=1, precision="32-true")
    with FlopCounterMode(display=False) as counter:
        trainer.fit(module, train_dataloaders=DataLoader(FixedBatches(batch, crop), batch_size=batch))
    return counter.get_total_flops() / 1e9


def gan_comparison(batch: int, crop: int, steps: int, warmup: int, device: torch.device) -> None:
    precision, amp, channels_last = resolve_precision("auto", "gpu" if device.type == "cuda" else "cpu", "auto")
    print(f"SRGAN iteration (model=srgan_mse: G update + D update), {precision}, channels_last={channels_last}; "
          f"the two G-update variants alternate step by step in one run")
    torch.manual_seed(0)
    cfg = compose_train(["~data", "model=srgan_mse", f"crop={crop}", f"batch_size={batch}"], output_dir=Path("/tmp"))
    before, now = (iteration_gflop(cfg, amp, channels_last, always, batch, crop, device) for always in (True, False))
    print(f"  work per iteration: before {before:.2f} GFLOP, now {now:.2f} GFLOP, now / before = {now / before:5.3f}")
    module = SRModule(cfg, amp_dtype=amp, channels_last=channels_last)
    timer = AlternateDOnHR(warmup)
    loader = DataLoader(FixedBatches(batch, crop), batch_size=batch)
    trainer = pl.Trainer(max_steps=2 * steps + warmup, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                         callbacks=[timer], accelerator="gpu" if device.type == "cuda" else "cpu", devices=1,
                         precision="32-true")
    trainer.fit(module, train_dataloaders=loader)
    labels = {True: "before: D on HR in every G update", False: "now: D on HR only for ragan"}
    for always, label in labels.items():
        t = timer.times[always]
        print(f"  {label:34s} median {statistics.median(t) * 1e3:8.1f} ms  min {min(t) * 1e3:8.1f} ms  "
              f"over {len(t)} steps")
    ratio = statistics.median(timer.times[False]) / statistics.median(timer.times[True])
    print(f"  now / before = {ratio:5.3f} (medians), {min(timer.times[False]) / min(timer.times[True]):5.3f} (minima)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--models", nargs="+", default=list(PRESETS), choices=list(PRESETS))
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--gan", action="store_true", help="time an SRGAN iteration before/after issue 14")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: torch sees no CUDA GPU here")
    batch, crop = (4, 48) if args.quick else (16, 96)
    default_precision, _, default_cl = resolve_precision("auto", "gpu" if device.type == "cuda" else "cpu", "auto")
    settings = [("fp32", "32-true", False), (f"default ({default_precision}, channels_last={default_cl})",
                                               default_precision, default_cl)]
    if default_precision != "bf16-mixed":
        settings.append(("bf16-mixed + channels_last", "bf16-mixed", True))
    if device.type == "cuda" and default_precision != "16-mixed":
        settings.append(("16-mixed + channels_last", "16-mixed", True))
    where = (torch.cuda.get_device_name(device) if device.type == "cuda"
             else f"{torch.get_num_threads()} threads, CPU capability {torch.backends.cpu.get_cpu_capability()}")
    print(f"batch {batch}, HR crop {crop}, x4; {args.steps} timed steps after {args.warmup} warm-up; "
          f"torch {torch.__version__}, {where}")
    if args.gan:
        gan_comparison(batch, crop, args.steps, args.warmup, device)
        return
    for model in args.models:
        fp32_plain = None
        for label, precision, channels_last in settings:
            torch.manual_seed(0)
            module = build_module(model, precision, channels_last, batch, crop)
            plain = statistics.median(plain_steps(copy.deepcopy(module), batch, crop, args.steps, args.warmup, device))
            light = statistics.median(lightning_steps(module, batch, crop, args.steps, args.warmup, device))
            fp32_plain = fp32_plain or plain
            print(f"{model:9s} {label:45s} plain {plain * 1e3:8.1f} ms  lightning {light * 1e3:8.1f} ms  "
                  f"overhead x{light / plain:5.3f}  speed-up vs fp32 x{fp32_plain / plain:5.2f}", flush=True)


if __name__ == "__main__":
    main()
