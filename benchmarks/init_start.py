"""How fast each generator init starts learning: a plain loop on the quickstart's data and settings.

Trains the quickstart's generator (`experiment=quickstart`: MSRResNet 8 blocks x 32 channels, bicubic image skip,
L1, Adam at the preset's lr, batch 16, 64 px crops; no EMA, no schedule) from each init and prints, at the
given steps, the L1 on a fixed probe set of training crops divided by the L1 of the image skip alone (1.0 = the
net adds nothing to bicubic; below 1 = it learned something). fp32, as the AVX2 reference machine trains.

    python benchmarks/init_start.py [--inits scaled_residuals basicsr] [--steps 0 200 500] [--lr 1e-3]

Extra variant for the ablation behind the default: `output_x0.1` (scaled_residuals, but the output conv at
kaiming x0.1 instead of zero).
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
from sr_lightning.models.blocks import scaled_kaiming_init_  # noqa: E402

from helpers import compose_train  # noqa: E402


def build(cfg, variant: str) -> torch.nn.Module:
    init = "basicsr" if variant == "basicsr" else "scaled_residuals"
    net = instantiate(cfg.gen, init=init)
    if variant == "output_x0.1":
        scaled_kaiming_init_([net.tail[2]], 0.1)
    return net


def probe_ratio(net, probe, skip_mode: str) -> float:
    with torch.no_grad():
        ours = sum(F.l1_loss(net(lr), hr).item() for lr, hr in probe)
        skip = sum(F.l1_loss(F.interpolate(lr, scale_factor=net.scale, mode=skip_mode, align_corners=False),
                             hr).item() for lr, hr in probe)
    return ours / skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--inits", nargs="+", default=["scaled_residuals", "basicsr"])
    parser.add_argument("--steps", nargs="+", type=int, default=[0, 200, 500])
    parser.add_argument("--lr", type=float, default=None, help="default: the quickstart's lr")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overrides", nargs="*", default=[], help="extra Hydra overrides, e.g. gen.blocks=16")
    args = parser.parse_args()

    cfg = compose_train(["experiment=quickstart", *args.overrides], output_dir=Path("/tmp"))
    lr = args.lr or float(cfg.lr)
    dm = instantiate(cfg.data)
    dm.setup("fit")
    batches = _endless(dm)
    probe = [(b["lr"], b["hr"]) for b in (next(batches) for _ in range(4))]  # fixed crops, drawn first
    stream = [(b["lr"], b["hr"]) for b in (next(batches) for _ in range(max(args.steps)))]
    print(f"{cfg.gen._target_.rsplit('.', 1)[-1]} blocks={cfg.gen.blocks} channels={cfg.gen.channels} "
          f"skip={cfg.gen.image_skip} lr={lr:g} batch={cfg.batch_size} crop={cfg.crop}; "
          f"probe L1 / skip L1 at steps {args.steps}")
    for variant in args.inits:
        torch.manual_seed(args.seed)
        net = build(cfg, variant)
        opt = torch.optim.Adam(net.parameters(), lr=lr)
        ratios, start = [], time.perf_counter()
        for step in range(max(args.steps) + 1):
            if step in args.steps:
                ratios.append(probe_ratio(net, probe, net.image_skip))
            if step == max(args.steps):
                break
            x, y = stream[step]
            loss = F.l1_loss(net(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        cells = "  ".join(f"{s}: {r:.4f}" for s, r in zip(args.steps, ratios))
        print(f"{variant:>17}  {cells}   ({time.perf_counter() - start:.0f} s)", flush=True)


def _endless(dm):
    """Training batches epoch after epoch, as the Trainer draws them."""
    while True:
        yield from dm.train_dataloader()


if __name__ == "__main__":
    main()
