"""Per-operator time of one training step, fp32 NCHW against bf16 autocast + channels_last, side by side.

The same plain loop as benchmarks/train_step.py (forward, L1 loss, backward, Adam step), under torch.profiler on
the CPU; for each aten operator it prints the self time per step in both settings and the speed-up. It shows which
operators keep a whole step's bf16 speed-up below that of its convolutions (e.g. PReLU's backward, pixel
shuffle's backward, gradient accumulation).

usage: python benchmarks/profile_step.py [--model srresnet|msrresnet|rrdbnet] [--steps 3] [--top 20]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_step import PRESETS, FixedBatches, build_module  # noqa: E402


def self_ms_per_op(model: str, precision: str, channels_last: bool, steps: int) -> dict[str, float]:
    torch.manual_seed(0)
    module = build_module(model, precision, channels_last, 16, 96)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    gen = module.gen.to(memory_format=memory_format)
    opt = torch.optim.Adam(gen.parameters(), lr=1e-4)
    data = FixedBatches(16, 96)
    lr, hr = (t.contiguous(memory_format=memory_format) for t in (data.lr, data.hr))

    def step():
        with torch.autocast("cpu", dtype=module.amp_dtype or torch.float32, enabled=module.amp_dtype is not None):
            loss = torch.nn.functional.l1_loss(gen(lr).float(), hr)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(2):
        step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    return {e.key: e.self_cpu_time_total / steps / 1e3 for e in prof.key_averages()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="srresnet", choices=list(PRESETS))
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--top", type=int, default=20)
    args = parser.parse_args()
    fp32 = self_ms_per_op(args.model, "32-true", False, args.steps)
    bf16 = self_ms_per_op(args.model, "bf16-mixed", True, args.steps)
    total32, total16 = sum(fp32.values()), sum(bf16.values())
    print(f"{args.model}, batch 16, crop 96, x4: self time per step fp32 {total32:.1f} ms, bf16+CL {total16:.1f} ms "
          f"({total32 / total16:.2f}x; profiler overhead included)")
    print(f"{'operator':48s} {'fp32 ms':>9s} {'bf16 ms':>9s} {'speed-up':>9s}")
    for key in sorted(set(fp32) | set(bf16), key=lambda k: -bf16.get(k, 0.0))[:args.top]:
        a, b = fp32.get(key, 0.0), bf16.get(key, 0.0)
        print(f"{key[:48]:48s} {a:9.1f} {b:9.1f} {a / b if b else float('nan'):8.2f}x")


if __name__ == "__main__":
    main()
