"""Which bf16 conv shapes give wrong gradients on this CPU (the cause of the D-blocks grid's inf/NaN, issue 14).

    python benchmarks/bf16_conv_grad.py [--reps 5]

For each (input size, stride, channels) it compares the weight gradient of a 3x3 conv under bf16 autocast with
fp32 (same tensors) and counts the trials whose relative error exceeds 5%. bf16 carries ~3 significant
digits, so a correct kernel stays near 0.3%. Prints `lscpu`'s model name and the bf16 flags: on AVX512-BF16 /
AMX CPUs bf16 convs run in oneDNN; on AVX2 PyTorch's own kernel runs them.
"""
from __future__ import annotations

import argparse
import re
from pathlib import Path

import torch
import torch.nn.functional as F

CASES = [(1, 2), (2, 2), (3, 2), (1, 1)]  # (input px, stride): a stride-2 conv on a 1-px input is the suspect
CHANNELS = (8, 64, 256, 512)


def cpu_name() -> str:
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    name = re.search(r"model name\s*:\s*(.*)", text)
    flags = sorted({f for f in ("avx512_bf16", "amx_bf16", "avx2") if f in text})
    return f"{name.group(1) if name else '?'} ({', '.join(flags)})"


def wrong_weight_grads(size: int, stride: int, channels: int, channels_last: bool, reps: int) -> int:
    bad = 0
    for _ in range(reps):
        x0, w0 = torch.randn(2, channels, size, size), torch.randn(channels, channels, 3, 3) * 0.05
        grads = []
        for bf16 in (False, True):
            fmt = torch.channels_last if channels_last else torch.contiguous_format
            x = x0.clone().contiguous(memory_format=fmt).requires_grad_()
            w = w0.clone().contiguous(memory_format=fmt).requires_grad_()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                out = F.conv2d(x, w, None, stride, 1)
            out.float().sum().backward()
            grads.append(w.grad)
        rel = ((grads[1] - grads[0]).abs().max() / grads[0].abs().max()).item()
        bad += not rel < 0.05  # NaN counts as wrong
    return bad


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)
    print(f"CPU: {cpu_name()}; torch {torch.__version__}")
    print("input px | stride | channels | wrong bf16 dW (channels_last) | wrong bf16 dW (NCHW)")
    for size, stride in CASES:
        for channels in CHANNELS:
            cl = wrong_weight_grads(size, stride, channels, True, args.reps)
            nchw = wrong_weight_grads(size, stride, channels, False, args.reps)
            print(f"{size:8d} | {stride:6d} | {channels:8d} | {cl}/{args.reps:<27} | {nchw}/{args.reps}")


if __name__ == "__main__":
    main()
