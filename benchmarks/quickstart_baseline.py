"""The quickstart's calibration, measured on this machine: a plain PyTorch loop under the same time budget.

The quickstart issue calibrates its quality target with "a plain PyTorch loop training an 8-block,
64-channel no-BN residual net with L1, bf16 autocast and channels_last on the sample photos (batch 16, 96 px
HR crops)". This script is that loop: no Lightning, no EMA, no validation; the same training patches as
`experiment=quickstart` (SRDataModule: the sample photos + 7 dead-leaves images, MATLAB-bicubic LR); then
Set5 x4 scored by `eval`'s code (Y channel, 4 px border, uint8 rounding). Compare its line with

    python -m sr_lightning train experiment=quickstart hydra.run.dir=/tmp/qs
    python -m sr_lightning eval ckpt=/tmp/qs/checkpoints/last.ckpt data=set5 paths.benchmarks_dir=../shared/benchmarks

run in the same session, one after the other (both use every core).

    python benchmarks/quickstart_baseline.py [--seconds 255] [--channels 64] [--blocks 8] [--crop 96]
        [--lr 2e-4] [--upsample subpixel_direct] [--benchmarks-dir ../shared/benchmarks]

`--upsample subpixel_direct` (one LR conv + PixelShuffle) is the default because only a net without HR-
resolution convs runs at the calibration's ~7 steps/s here; `subpixel` is SRResNet's two-stage upsampler.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from hydra.utils import instantiate

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from sr_lightning.inference.evaluation import EvalModel, MatlabBicubic, evaluate, make_eval_set  # noqa: E402
from sr_lightning.models.srresnet import SRResNet  # noqa: E402
from sr_lightning.precision import resolve_precision  # noqa: E402

from helpers import compose_train  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=255.0, help="training time (quickstart: 4 min 15 s)")
    parser.add_argument("--channels", type=int, default=64)
    parser.add_argument("--blocks", type=int, default=8)
    parser.add_argument("--crop", type=int, default=96)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--upsample", default="subpixel_direct")
    parser.add_argument("--image-skip", default="bicubic")
    parser.add_argument("--benchmarks-dir", default=str(ROOT.parent / "shared" / "benchmarks"))
    args = parser.parse_args()

    set5_dir = Path(args.benchmarks_dir) / "Set5"
    if not set5_dir.is_dir():
        sys.exit(f"Set5 not found at {set5_dir}: pass --benchmarks-dir (the folder holding Set5/x4/HR and LR)")
    torch.manual_seed(0)
    cfg = compose_train(["experiment=quickstart", f"crop={args.crop}", f"batch_size={args.batch}"],
                        output_dir=Path("/tmp"))
    dm = instantiate(cfg.data)
    dm.setup("fit")
    precision, _, channels_last = resolve_precision("auto", "cpu", "auto")
    amp = torch.bfloat16 if precision == "bf16-mixed" else None
    memory_format = torch.channels_last if channels_last else torch.contiguous_format

    net = SRResNet(scale=4, channels=args.channels, blocks=args.blocks, batch_norm=False,
                   upsample=args.upsample, image_skip=args.image_skip).to(memory_format=memory_format)
    opt = torch.optim.Adam(net.parameters(), lr=args.lr)
    steps, start = 0, time.perf_counter()
    for batch in _endless(dm):
        if time.perf_counter() - start >= args.seconds:
            break
        lr = batch["lr"].contiguous(memory_format=memory_format)
        hr = batch["hr"].contiguous(memory_format=memory_format)
        with torch.autocast("cpu", dtype=amp or torch.float32, enabled=amp is not None):
            loss = F.l1_loss(net(lr).float(), hr)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        steps += 1
    elapsed = time.perf_counter() - start

    eval_cfg = compose_train(["data=set5", f"paths.benchmarks_dir={args.benchmarks_dir}"], config_name="eval",
                             output_dir=Path("/tmp"))
    set5 = make_eval_set(eval_cfg.data, "set5")
    net.eval()
    rows = evaluate([EvalModel("bicubic", MatlabBicubic(4), 4), EvalModel("plain loop", net, 4)], [set5],
                    comparison_images=0)["rows"]
    bicubic, ours = rows[0]["psnr_y"], rows[1]["psnr_y"]
    print(f"plain loop: {args.blocks} blocks x {args.channels} ch, upsample={args.upsample}, crop {args.crop}, "
          f"batch {args.batch}, lr {args.lr:g}, {precision}, channels_last={channels_last}: {steps} steps in "
          f"{elapsed:.0f} s ({steps / elapsed:.2f} steps/s); Set5 x4 PSNR-Y {ours:.2f} dB, bicubic {bicubic:.2f} "
          f"dB, gain {ours - bicubic:+.2f} dB")


def _endless(dm):
    """Training batches epoch after epoch, as the quickstart's Trainer draws them."""
    while True:
        yield from dm.train_dataloader()


if __name__ == "__main__":
    main()
