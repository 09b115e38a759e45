"""Train-loader throughput next to the model's consumption rate: is the GPU/CPU ever waiting for data?

Prints samples/s of `SRDataModule.train_dataloader()` for
  * cached:   the bundled sample photos decoded once into memory (the default),
  * decoding: the same photos as PNG files with the cache off (every patch decodes its image again),
with 0/1/2 DataLoader workers, and the time of one SRResNet training step (batch 16, 96 px HR crops, x4,
forward + backward + Adam) on the chosen device. "share" is the loader's time per batch over the step time:
with 0 workers that time adds to every step; with workers it overlaps, and the step waits only when the
loader is slower than the model (the "wait" column). Also prints the decode time of one DIV2K-size PNG.

    python benchmarks/data.py [--device cuda] [--batches 20] [--steps 5]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def loader_rate(dm, batches: int) -> tuple[float, float]:
    """(samples/s, seconds per batch) of the train loader, after one warm-up batch (worker start-up)."""
    loader = dm.train_dataloader()
    it = iter(loader)
    next(it)
    start = time.perf_counter()
    n = 0
    for _ in range(batches):
        batch = next(it)
        n += batch["hr"].shape[0]
    elapsed = time.perf_counter() - start
    del it
    return n / elapsed, elapsed / batches


def model_step_time(device: str, steps: int, batch_size: int = 16, crop: int = 96, scale: int = 4) -> float:
    try:
        from sr_lightning.models import SRResNet
    except ImportError:
        return float("nan")
    torch.manual_seed(0)
    net = SRResNet(scale=scale).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=1e-4)
    lr = torch.rand(batch_size, 3, crop // scale, crop // scale, device=device)
    hr = torch.rand(batch_size, 3, crop, crop, device=device)

    def step():
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.mse_loss(net(lr), hr)
        loss.backward()
        opt.step()

    step()  # warm-up (allocator, cuDNN autotune)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps


def png_decode_ms(folder: Path) -> float:
    from PIL import Image

    from sr_lightning.data.imageio import read_rgb_uint8
    from sr_lightning.data.sample import load_sample

    # A DIV2K-size photo (2040 x 1356): the retina photo tiled, so it compresses like a real photo would.
    base = load_sample("retina")[:1356, :1020]
    Image.fromarray(np.concatenate([base, base[:, ::-1]], axis=1)).save(folder / "div2k_size.png")
    read_rgb_uint8(folder / "div2k_size.png")
    start = time.perf_counter()
    for _ in range(3):
        read_rgb_uint8(folder / "div2k_size.png")
    return (time.perf_counter() - start) / 3 * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--workers", default="0,1,2")
    args = parser.parse_args()

    from PIL import Image

    from sr_lightning.data import FolderSource, SampleSource, SRDataModule
    from sr_lightning.data.sample import DEFAULT_TRAIN, load_sample

    torch.set_num_threads(max(1, torch.get_num_threads()))
    step = model_step_time(args.device, args.steps)
    print(f"model: SRResNet (16 blocks, 64 ch) train step, batch 16, crop 96, x4 on {args.device}: "
          f"{step * 1000:.1f} ms/step = {16 / step:.0f} samples/s consumed")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "png"
        folder.mkdir()
        for name in DEFAULT_TRAIN:
            Image.fromarray(load_sample(name)).save(folder / f"{name}.png")
        print(f"decode one DIV2K-size PNG (2040x1356): {png_decode_ms(Path(tmp)):.0f} ms")
        print(f"{'loader':<10}{'workers':>8}{'samples/s':>12}{'ms/batch':>10}{'share':>9}{'wait':>8}")
        for label, source, cache_mb in (("cached", SampleSource(DEFAULT_TRAIN), 2048),
                                        ("decoding", FolderSource(folder), 0)):
            for workers in (int(w) for w in args.workers.split(",")):
                dm = SRDataModule(source, None, scale=4, crop=96, batch_size=16, patches_per_image=200,
                                  num_workers=workers, cache_mb=cache_mb, persistent_workers=False)
                dm.setup("fit")
                rate, per_batch = loader_rate(dm, args.batches)
                share = per_batch / step
                wait = max(0.0, per_batch - step) / step if workers else share
                print(f"{label:<10}{workers:>8}{rate:>12.0f}{per_batch * 1000:>10.1f}{share:>8.1%}{wait:>8.1%}")
    print("share = loader time per batch / model step time; wait = the part of a step spent waiting for data "
          "(0 workers: all of the loader time)")


if __name__ == "__main__":
    main()
