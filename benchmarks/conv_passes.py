"""Where the bf16 speed-up of a training step comes from: the passes of the 3x3 convolutions, one by one.

For the conv shapes that make up SRResNet/MSRResNet (64 -> 64) and RRDB's dense blocks (64..192 -> 32, 192 -> 64)
at batch 16 on 24x24 LR patches (crop 96, x4, as benchmarks/train_step.py) it times the forward, the backward to
the input only, to the weights (+ bias) only, and the whole backward, in fp32 NCHW and in bf16 channels_last /
NCHW, and prints the bf16 channels_last speed-up of each and of forward + whole backward. Compare the last figure
with the speed-up of a whole step (train_step.py): the gap is what the rest of the step (activations, pixel
shuffle, BatchNorm, gradient accumulation, optimizer) costs in bf16. Timings on a shared 2-core VM vary by
10-20% between runs: use --repeat 30 and compare ratios within one run.

usage: python benchmarks/conv_passes.py [--batch 16] [--size 24] [--repeat 10]
"""
from __future__ import annotations

import argparse
import time

import torch

SHAPES = [(64, 64), (64, 32), (96, 32), (128, 32), (160, 32), (192, 64)]  # (in, out) channels
SETTINGS = [("fp32", torch.float32, torch.contiguous_format), ("bf16 CL", torch.bfloat16, torch.channels_last),
            ("bf16 NCHW", torch.bfloat16, torch.contiguous_format)]


def median_ms(fn, repeat: int) -> float:
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2] * 1e3


def passes(cin: int, cout: int, dtype: torch.dtype, memory_format, batch: int, size: int, repeat: int):
    """(forward, backward-input, backward-weight+bias, whole backward) median ms of a 3x3 conv, padding 1.

    The two halves of the backward are also timed apart to see which one gains; each half alone repeats the
    layout conversions the whole backward does once, so the step-relevant figure is fwd + whole backward."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, cin, size, size, generator=g).to(dtype).contiguous(memory_format=memory_format)
    w = torch.randn(cout, cin, 3, 3, generator=g).to(dtype).contiguous(memory_format=memory_format)
    grad = torch.randn(batch, cout, size, size, generator=g).to(dtype).contiguous(memory_format=memory_format)

    def backward(mask):
        return lambda: torch.ops.aten.convolution_backward(grad, x, w, [cout], [1, 1], [1, 1], [1, 1], False,
                                                           [0, 0], 1, mask)

    return (median_ms(lambda: torch.conv2d(x, w, None, 1, 1), repeat),
            median_ms(backward([True, False, False]), repeat),
            median_ms(backward([False, True, True]), repeat),
            median_ms(backward([True, True, True]), repeat))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--size", type=int, default=24)
    parser.add_argument("--repeat", type=int, default=10)
    args = parser.parse_args()
    print(f"3x3 convs on {args.batch}x<in>x{args.size}x{args.size}; median ms of fwd / bwd-input only / "
          f"bwd-weight only / whole bwd; "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"CPU capability {torch.backends.cpu.get_cpu_capability()}")
    for cin, cout in SHAPES:
        timed = {label: passes(cin, cout, dtype, fmt, args.batch, args.size, args.repeat)
                 for label, dtype, fmt in SETTINGS}
        fp32 = timed["fp32"]
        cells = "  ".join(f"{label} {' / '.join(f'{t:5.2f}' for t in ms)}" for label, ms in timed.items())
        ratios = " / ".join(f"{a / b:4.2f}x" for a, b in zip(fp32, timed["bf16 CL"]))
        step = (fp32[0] + fp32[3]) / (timed["bf16 CL"][0] + timed["bf16 CL"][3])
        print(f"{cin:3d}->{cout:3d}  {cells}  | bf16 CL speed-up {ratios}; fwd + whole bwd {step:4.2f}x", flush=True)


if __name__ == "__main__":
    main()
