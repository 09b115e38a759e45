"""Upscaling throughput and memory: untiled vs tiled, fp32 vs the default precision, peak RSS when tiling.

    python benchmarks/upscale.py                 # SRResNet-16 and RRDB-23, x4, 512x512 and 1024x1024 inputs
    python benchmarks/upscale.py --quick         # small inputs for a 2-core CPU (minutes, not hours)
    python benchmarks/upscale.py --skip-large    # without the 4000x3000 x4 peak-RSS case
    python benchmarks/upscale.py --cli-only --cli-size 6000x4000 --large-model tiny   # the `upscale` command's
                                                 # peak RSS on a 6000x4000 file at x4 (read, upscale, write PNG)

For each model and input size it times one forward pass of the whole image ("untiled") and of a 2x2 grid of
tiles with the default overlap ("tiled") through `Upscaler`, the code path of the `upscale` command, and
prints output megapixels per second, the tiled/untiled ratio (target >= 0.9) and the largest difference
between the two in 8-bit grey levels. "fp32" is plain float32 NCHW; "default" is what `precision=auto
channels_last=auto` resolves to on this machine (bf16 autocast only on CPUs with native bf16).

The large case (4000x3000 input, x4 -> 16000x12000 output) runs tiled in a subprocess and reports its peak
RSS (resource.getrusage), next to the size of the uint8 output it must hold and of one full-size feature
map that an untiled pass would need. Weights are random: speed and memory do not depend on them.

The command case (`--cli-size`, default 6000x4000) runs `python -m sr_lightning upscale ... tile=auto` on a PNG
file, as a user would, in a child of a fresh wrapper process, and reports that child's peak RSS
(getrusage(RUSAGE_CHILDREN)) and wall time: reading, tiling, quantising and writing the 24000x16000 PNG
together, next to the 1.07 GiB the uint8 output itself takes. Measured on the shared 2-core reference CPU with
the tiny model (SRResNet, 8 channels, 1 block; memory and the I/O path do not depend on the model's weights):
5.69 GiB peak before issue 15 (full-width float strips of 1024 px tiles, float copies of the input, Pillow's
RGBX copy of the result), 2.52 GiB after (CPU time 204 s before, 210 s after). Of the 2.52 GiB, `import torch`
(a CUDA build) is ~0.9 GiB and Lightning, which sr_lightning.checkpoint imports, 0.28 GiB: without that import
the same run peaked at 2.26 GiB. With that import gone from the upscale path (checkpoint_io.py), the command
peaks at 2.30 GiB (178 s wall, machine otherwise running the test suite). At equal tile size the pixels are bit
for bit those of the strip version;
tile=auto now picks 536 px instead of 1024 here, which moves the cross-fades (max 1 grey level, 0.08% of pixels).
"""
from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sr_lightning.inference import Upscaler  # noqa: E402
from sr_lightning.inference.tiling import _activation_floats_per_pixel, available_memory_bytes  # noqa: E402
from sr_lightning.loading import LoadedGenerator  # noqa: E402
from sr_lightning.models.rrdbnet import RRDBNet  # noqa: E402
from sr_lightning.models.srresnet import SRResNet  # noqa: E402
from sr_lightning.precision import resolve_precision  # noqa: E402

MODELS = {
    "srresnet16": lambda: SRResNet(scale=4, channels=64, blocks=16),
    "rrdb23": lambda: RRDBNet(scale=4, channels=64, blocks=23, growth=32),
    "tiny": lambda: SRResNet(scale=4, channels=8, blocks=1),  # pipeline overhead only (large case on slow CPUs)
}
SCALE = 4


def _loaded(name: str) -> LoadedGenerator:
    torch.manual_seed(0)
    return LoadedGenerator(net=MODELS[name]().eval(), scale=SCALE, value_range=(0.0, 1.0), color="rgb", cfg={},
                           source=name)


def _image(size: int, seed: int = 0) -> np.ndarray:
    """A photo-like test image (smooth shapes + texture) rather than noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    base = np.stack([0.5 + 0.4 * np.sin(6 * xx + c) * np.cos(4 * yy - c) for c in range(3)], axis=2)
    return np.clip((base + 0.05 * rng.standard_normal(base.shape)) * 255, 0, 255).astype(np.uint8)


def _options(kind: str) -> tuple[str, torch.dtype | None, bool]:
    if kind == "fp32":
        return "32-true", None, False
    name, amp, channels_last = resolve_precision("auto", "cpu", "auto")
    return name, (getattr(torch, amp) if amp else None), channels_last


def _time(upscaler: Upscaler, image: np.ndarray, budget: float = 15.0, most: int = 3) -> tuple[float, np.ndarray]:
    """Fastest of up to ``most`` runs while they fit in ``budget`` seconds: the first run of a new input shape
    also pays for oneDNN's kernel selection, and a shared machine adds noise that only ever slows a run down."""
    times, spent, out = [], 0.0, None
    while len(times) < most and (not times or spent + times[-1] <= budget):
        start = time.perf_counter()
        out = upscaler.upscale(image)
        times.append(time.perf_counter() - start)
        spent += times[-1]
    return min(times), out


def throughput(models: list[str], sizes: dict[str, list[int]], overlap: int, kinds: list[str]) -> list[dict]:
    rows = []
    for name in models:
        loaded = _loaded(name)
        for size in sizes[name]:
            image = _image(size)
            tile = math.ceil((size + overlap) / 2)  # a 2x2 grid of tiles
            for kind in kinds:
                precision, amp, channels_last = _options(kind)
                whole = Upscaler(loaded, None, overlap, amp, channels_last)
                tiled = Upscaler(loaded, tile, overlap, amp, channels_last)
                t_whole, out_whole = _time(whole, image)
                t_tiled, out_tiled = _time(tiled, image)
                mp = (size * SCALE) ** 2 / 1e6
                row = {"model": name, "input": size, "kind": kind, "precision": precision,
                       "channels_last": channels_last, "tile": tile, "overlap": overlap,
                       "untiled_mp_s": mp / t_whole, "tiled_mp_s": mp / t_tiled, "ratio": t_whole / t_tiled,
                       "max_diff_grey": int(np.abs(out_whole.astype(int) - out_tiled).max()),
                       "p99_diff_grey": float(np.percentile(np.abs(out_whole.astype(int) - out_tiled), 99))}
                rows.append(row)
                print(f"{name:<11} {size:>5}^2 {kind:<8} ({precision}{', channels_last' if channels_last else ''}): "
                      f"untiled {row['untiled_mp_s']:.3f} MP/s, tiled ({tile}px/{overlap}) {row['tiled_mp_s']:.3f} "
                      f"MP/s, tiled/untiled {row['ratio']:.2f}x, max |diff| {row['max_diff_grey']} grey levels "
                      f"(99th pct {row['p99_diff_grey']:.0f})", flush=True)
    return rows


def large_case(model: str, height: int, width: int, tile: str | int, overlap: int) -> dict:
    """Run in a fresh process so ru_maxrss is this case's own peak."""
    code = f"""
import json, resource, sys, time
sys.path.insert(0, {str(ROOT)!r})
sys.argv = ['x']
import numpy as np, torch
torch.set_num_threads({torch.get_num_threads()})
from benchmarks.upscale import _loaded, _options
from sr_lightning.inference import Upscaler
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
precision, amp, channels_last = _options('default')
up = Upscaler(_loaded({model!r}), {tile!r}, {overlap}, amp, channels_last)
image = np.random.default_rng(0).integers(0, 256, ({height}, {width}, 3), dtype=np.uint8)
start = time.perf_counter()
out = up.upscale(image)
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({{"peak_rss_gb": peak / 2**20, "import_rss_gb": base / 2**20, "seconds": seconds,
                  "tile": up.tile, "output_shape": list(out.shape), "output_gb": out.nbytes / 2**30}}))
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=str(ROOT))
    if result.returncode != 0:
        raise SystemExit(f"large case failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def _photo(height: int, width: int, seed: int = 0) -> np.ndarray:
    """`_image` for any aspect ratio, built row band by row band (a 6000x4000 float64 grid would take 1.5 GB)."""
    rng = np.random.default_rng(seed)
    out = np.empty((height, width, 3), dtype=np.uint8)
    xx = np.arange(width)[None, :] / width
    for r0 in range(0, height, 500):
        yy = np.arange(r0, min(height, r0 + 500))[:, None] / height
        for c in range(3):
            band = 0.5 + 0.4 * np.sin(6 * xx + c) * np.cos(4 * yy - c) + 0.05 * rng.standard_normal((len(yy), width))
            out[r0:r0 + len(yy), :, c] = np.clip(band * 255, 0, 255).astype(np.uint8)
    return out


def _tiny_checkpoint(path: Path, model: str) -> Path:
    """A checkpoint in the layout `train` writes (as tests/conftest.py does), with MODELS[model]'s weights."""
    nets = {"tiny": {"_target_": "sr_lightning.models.srresnet.SRResNet", "scale": SCALE, "channels": 8,
                     "blocks": 1},
            "srresnet16": {"_target_": "sr_lightning.models.srresnet.SRResNet", "scale": SCALE, "channels": 64,
                           "blocks": 16}}
    if model not in nets:
        raise SystemExit(f"--large-model {model}: the command case supports {', '.join(nets)}")
    torch.manual_seed(0)
    from hydra.utils import instantiate

    state = {f"gen.{k}": v for k, v in instantiate(nets[model]).state_dict().items()}
    cfg = {"gen": nets[model], "scale": SCALE, "color": "rgb", "value_range": [0.0, 1.0], "model_name": model}
    torch.save({"state_dict": state, "hyper_parameters": {"cfg": cfg}, "global_step": 0}, path)
    return path


# Runs the command as its child, so RUSAGE_CHILDREN is that one command's peak (this wrapper is fresh, so no
# earlier child of the benchmark counts).
_WRAPPER = """
import json, resource, subprocess, sys, time
start = time.perf_counter()
done = subprocess.run(sys.argv[1:], capture_output=True, text=True)
seconds = time.perf_counter() - start
print(json.dumps({"rc": done.returncode, "seconds": seconds, "stdout": done.stdout[-2000:],
                  "stderr": done.stderr[-3000:],
                  "peak_rss_gb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20}))
"""


def cli_case(model: str, height: int, width: int, tile: str | int, overlap: int, workdir: Path,
             keep: Path | None = None) -> dict:
    """`python -m sr_lightning upscale` on a height x width PNG: peak RSS and wall time of the whole command."""
    from PIL import Image

    workdir.mkdir(parents=True, exist_ok=True)
    src = workdir / f"in_{width}x{height}.png"
    if not src.is_file():
        Image.fromarray(_photo(height, width)).save(src, compress_level=1)
    ckpt = _tiny_checkpoint(workdir / f"{model}.ckpt", model)
    out = keep or workdir / "out"
    cmd = [sys.executable, "-m", "sr_lightning", "upscale", f"ckpt={ckpt}", f"input={src}", f"output={out}",
           f"tile={tile}", f"tile_overlap={overlap}", "progress=false", "overwrite=true"]
    result = subprocess.run([sys.executable, "-c", _WRAPPER, *cmd], capture_output=True, text=True, cwd=str(ROOT))
    if result.returncode != 0:
        raise SystemExit(f"command case failed:\n{result.stderr[-3000:]}")
    res = json.loads(result.stdout.strip().splitlines()[-1])
    if res["rc"] != 0:
        raise SystemExit(f"upscale exited {res['rc']}:\n{res['stdout']}\n{res['stderr']}")
    res["output_gb"] = height * width * SCALE * SCALE * 3 / 2**30
    res["output"] = str(out / src.name)
    return res


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small inputs (2-core CPUs): SRResNet-16 on 192/384 px, "
                        "RRDB-23 on 96 px, an 8-channel model for the 4000x3000 case")
    parser.add_argument("--models", default="srresnet16,rrdb23")
    parser.add_argument("--sizes", default=None, help="input sizes for every model, e.g. 512,1024")
    parser.add_argument("--overlap", type=int, default=16, help="tile_overlap (input px), as upscale's default")
    parser.add_argument("--kinds", default="fp32,default", help="fp32 and/or default")
    parser.add_argument("--skip-large", action="store_true", help="skip the 4000x3000 x4 peak-RSS case")
    parser.add_argument("--large-model", default=None, help="model of the large case (default: srresnet16; "
                        "tiny with --quick)")
    parser.add_argument("--large-size", default="4000x3000", help="WIDTHxHEIGHT of the large case's input")
    parser.add_argument("--large-tile", default="auto", help="tile of the large case: auto or px")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--cli-size", default="6000x4000", help="WIDTHxHEIGHT of the command case's input")
    parser.add_argument("--cli-only", action="store_true", help="only the command case (peak RSS of `upscale`)")
    parser.add_argument("--skip-cli", action="store_true", help="skip the command case")
    parser.add_argument("--workdir", default=None, help="folder for the command case's input, checkpoint and "
                        "output (default: a temporary folder, removed)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    models = [m for m in args.models.split(",") if m]
    if args.sizes:
        sizes = {m: [int(s) for s in args.sizes.split(",")] for m in models}
    elif args.quick:
        sizes = {"srresnet16": [192, 384], "rrdb23": [96], "tiny": [256, 512]}
    else:
        sizes = {m: [512, 1024] for m in models}
    default = _options("default")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, x{SCALE}; default precision on this "
          f"machine: {default[0]}{' + channels_last' if default[2] else ''}")

    if args.cli_only:
        models, args.skip_large = [], True
    rows = throughput(models, sizes, args.overlap, [k for k in args.kinds.split(",") if k])
    if rows:
        ratios = [r["ratio"] for r in rows]
        print(f"tiled/untiled throughput: min {min(ratios):.2f}x, median {float(np.median(ratios)):.2f}x "
              f"(target >= 0.9x; the unavoidable share of recomputed overlap on these sizes is "
              + ", ".join(sorted({f"{r['input']}px: {(r['input'] / (r['input'] + r['overlap'])) ** 2:.2f}x"
                                  for r in rows})) + ")")
        by_key = {(r["model"], r["input"], r["kind"]): r for r in rows}
        for (model, size, kind), r in by_key.items():
            if kind == "default" and (model, size, "fp32") in by_key:
                base = by_key[(model, size, "fp32")]
                print(f"default/fp32 {model} {size}px: untiled {r['untiled_mp_s'] / base['untiled_mp_s']:.2f}x, "
                      f"tiled {r['tiled_mp_s'] / base['tiled_mp_s']:.2f}x")

    if not args.skip_large:
        width, height = (int(v) for v in args.large_size.lower().split("x"))
        model = args.large_model or ("tiny" if args.quick else "srresnet16")
        tile = args.large_tile if args.large_tile == "auto" else int(args.large_tile)
        res = large_case(model, height, width, tile, args.overlap)
        loaded = _loaded(model)
        feature_gb = _activation_floats_per_pixel(loaded.net, 3, torch.device("cpu")) * height * width * 4 / 2**30
        print(f"large: {model} {width}x{height} x{SCALE} -> {res['output_shape'][1]}x{res['output_shape'][0]}, tiled "
              f"(tile {res['tile']}px, overlap {args.overlap}) in {res['seconds']:.0f} s: peak RSS "
              f"{res['peak_rss_gb']:.2f} GiB (of which {res['import_rss_gb']:.2f} GiB before the image; the uint8 "
              f"output alone is {res['output_gb']:.2f} GiB; free memory now {available_memory_bytes() / 2**30:.1f} "
              f"GiB). Untiled, its largest single feature map alone would be {feature_gb:.1f} GiB.")

    if not args.skip_cli:
        import shutil
        import tempfile

        width, height = (int(v) for v in args.cli_size.lower().split("x"))
        model = args.large_model or ("tiny" if args.quick or args.cli_only else "srresnet16")
        tile = args.large_tile if args.large_tile == "auto" else int(args.large_tile)
        workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="sr_upscale_bench_"))
        try:
            res = cli_case(model, height, width, tile, args.overlap, workdir)
        finally:
            if not args.workdir:
                shutil.rmtree(workdir, ignore_errors=True)
        summary = next((line for line in res["stdout"].splitlines() if line.startswith("upscaled")), "")
        print(f"command: upscale {model} {width}x{height} x{SCALE} -> {width * SCALE}x{height * SCALE} PNG, "
              f"tile={tile}, overlap {args.overlap}: peak RSS {res['peak_rss_gb']:.2f} GiB (the uint8 output alone "
              f"is {res['output_gb']:.2f} GiB), {res['seconds']:.0f} s wall including start-up and the PNG write "
              f"({summary})", flush=True)


if __name__ == "__main__":
    main()
