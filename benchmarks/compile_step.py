"""Training-step time of MSRResNet-16 eager vs `module.compile=true` (nn.Module.compile, inductor), one process.

The step is what SRModule does for a PSNR-oriented model: forward, L1 loss, backward, Adam step, zero_grad, on a
fixed in-memory batch (batch 16, crop 64 -> LR 16 px at x4; data loading is not measured). Both networks start
from the same weights; their steps are interleaved (eager, compiled, eager, ...) so load changes on a shared
machine hit both alike. The first `--warmup` steps of each are left out (the compiled network compiles during
its first forward and backward); the compile time is that first compiled step minus an eager step.

usage: python benchmarks/compile_step.py [--steps 20] [--warmup 3] [--batch 16] [--crop 64] [--device cpu|cuda]
Prints the median step times, the ratio eager / compiled (> 1: compiling pays off) and the compile time.

Measured (2-core AVX2 EPYC shared with other jobs, torch 2.14.1, `--steps 6 --warmup 2`): eager 11.9 s/step,
compiled 6.75 s/step, ratio 1.76; compile time 121 s. Absolute times are load-inflated; the ratio is within one run.
"""
from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from sr_lightning.models.srresnet import MSRResNet  # noqa: E402
from sr_lightning.training import compiler_problem  # noqa: E402


def clock(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def make_step(net: nn.Module, lr: torch.Tensor, hr: torch.Tensor):
    optimiser = torch.optim.Adam(net.parameters(), lr=2e-4)
    loss_fn = nn.L1Loss()

    def step() -> None:
        loss = loss_fn(net(lr), hr)
        loss.backward()
        optimiser.step()
        optimiser.zero_grad(set_to_none=True)

    return step


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=20, help="timed steps of each (after the warm-up)")
    parser.add_argument("--warmup", type=int, default=3, help="steps of each left out (compilation, caches)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--crop", type=int, default=64, help="HR crop; LR = crop / 4")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    problem = compiler_problem(device.type)
    if problem is not None:
        print(f"torch.compile does not work on {device.type} here: {problem}")
        return 1

    torch.manual_seed(0)
    eager = MSRResNet(scale=4, channels=64, blocks=16).to(device)
    compiled = copy.deepcopy(eager)
    compiled.compile()  # in place, as module.compile=true does (state_dict keys unchanged)
    g = torch.Generator().manual_seed(0)
    hr = torch.rand(args.batch, 3, args.crop, args.crop, generator=g).to(device)
    lr = torch.rand(args.batch, 3, args.crop // 4, args.crop // 4, generator=g).to(device)
    steps = {"eager": make_step(eager, lr, hr), "compiled": make_step(compiled, lr, hr)}
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(args.warmup + args.steps):
        for name, step in steps.items():
            start = clock(device)
            step()
            times[name].append(clock(device) - start)

    eager_s = statistics.median(times["eager"][args.warmup:])
    compiled_s = statistics.median(times["compiled"][args.warmup:])
    compile_s = times["compiled"][0] - eager_s
    print(f"MSRResNet-16 x4, batch {args.batch}, crop {args.crop}, {device.type} "
          f"({torch.get_num_threads()} threads), torch {torch.__version__}; medians of {args.steps} steps each "
          f"after {args.warmup} warm-up steps:")
    print(f"  eager     {eager_s * 1000:9.1f} ms/step")
    print(f"  compiled  {compiled_s * 1000:9.1f} ms/step")
    print(f"  ratio eager/compiled {eager_s / compiled_s:.2f}  (> 1: compiled is faster)")
    print(f"  compile time (first compiled step - an eager step): {compile_s:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
