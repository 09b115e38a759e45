"""Checkpoint save: Lightning's atomic save (the earlier AtomicCheckpointIO) vs the one-write save of today.

Earlier: `torch.save` into an in-memory buffer, `getvalue()` (a second copy), fsspec's transaction writes it to a
file in the system temp folder and moves it to `.last.ckpt.tmp` (a copy when /tmp is another file system), then
fsync + rename. Now: `torch.save` straight into `.last.ckpt.tmp` beside the target, fsync, rename.

Each variant runs in a fresh process (so peak RSS is its own) on a checkpoint-like dict of `--mb` MB of float32
tensors (default 256 MB, about an RRDBNet-23 run's G + EMA + D + Adam states); it reports the median wall time
over `--repeats` saves and the peak RSS above the process's level before the save.

usage: python benchmarks/checkpoint_save.py [--mb 256] [--repeats 3] [--dir DIR]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _checkpoint(mb: int) -> dict:
    import torch

    n = mb * 1_000_000 // 4 // 64
    return {"global_step": 1, "state_dict": {f"layer{i}.weight": torch.randn(n) for i in range(64)}}


def _old_save(checkpoint: dict, path: Path) -> None:
    from lightning.fabric.utilities.cloud_io import _atomic_save

    tmp = path.with_name(f".{path.name}.tmp")
    _atomic_save(checkpoint, tmp)
    with open(tmp, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def _new_save(checkpoint: dict, path: Path) -> None:
    from sr_lightning.checkpoint_io import AtomicCheckpointIO

    AtomicCheckpointIO().save_checkpoint(checkpoint, path)


def _child(variant: str, mb: int, repeats: int, folder: str) -> None:
    from lightning.fabric.utilities.cloud_io import _atomic_save  # noqa: F401 - imports before the RSS baseline

    from sr_lightning.checkpoint_io import AtomicCheckpointIO  # noqa: F401

    checkpoint = _checkpoint(mb)
    save = _old_save if variant == "lightning_atomic_save" else _new_save
    path = Path(folder) / f"{variant}.ckpt"
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        save(checkpoint, path)
        times.append(time.perf_counter() - start)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"variant": variant, "seconds": statistics.median(times),
                      "extra_peak_rss_mb": (peak - base) / 1024, "file_mb": path.stat().st_size / 1e6}))
    path.unlink()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dir", default=None, help="where to save (default: a temporary folder in the cwd)")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return _child(args.child, args.mb, args.repeats, args.dir)
    with tempfile.TemporaryDirectory(dir=args.dir or ".") as folder:
        rows = []
        for variant in ("lightning_atomic_save", "one_write_beside_target"):
            out = subprocess.run([sys.executable, __file__, "--child", variant, "--mb", str(args.mb), "--repeats",
                                  str(args.repeats), "--dir", folder], check=True, capture_output=True, text=True)
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    for row in rows:
        print(f"{row['variant']:<24} {row['seconds']:.2f} s  +{row['extra_peak_rss_mb']:.0f} MB peak RSS  "
              f"({row['file_mb']:.0f} MB file)")
    old, new = rows
    print(f"time new/old {new['seconds'] / old['seconds']:.2f}; extra peak RSS {old['extra_peak_rss_mb']:.0f} MB -> "
          f"{new['extra_peak_rss_mb']:.0f} MB")


if __name__ == "__main__":
    main()
