"""`python -m sr_lightning upscale ckpt=<path> input=<file or folder> output=<folder or file>`.

Super-resolves every image of `input` with a training checkpoint (`ckpt=`), exported weights with their
sidecar (`weights=<file>.safetensors|.pt|.onnx`), or bare weights plus the preset they were trained with
(`weights=<file>.safetensors model=<preset> scale=<n>`). Any size (`tile=<px>|auto` bounds the memory),
gray/RGB/RGBA, 8 or 16 bit, EXIF orientation applied; the output keeps the input's channels and bit depth and
its format comes from the extension. Existing files are never replaced unless `overwrite=true`;
`overwrite=skip` keeps them and does the rest, which continues an interrupted folder (each output is written to a
temporary name and renamed, so an existing file is always a finished one).
Unreadable inputs, and inputs over `max_pixels=` (the decompression-bomb guard), are named on one `error:` line
each; the rest of the folder is done and the command exits 2, as for any user error (1 when only writes failed).
An output folder that cannot be written stops the command before the model is loaded. Loading is
`sr_lightning.loading`, the image pipeline `sr_lightning.inference`; see conf/upscale.yaml for every key.
"""
from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from sr_lightning.errors import EXIT_USER_ERROR, UserError, report_user_error
from sr_lightning.loading import LoadedGenerator, runs_as_exported, runs_on_onnxruntime
from sr_lightning.precision import resolve_device, resolve_precision

log = logging.getLogger("sr_lightning.upscale")


class UpscaleError(UserError, RuntimeError):
    """A problem with the command's arguments; printed as one `error:` line naming the key or file."""


# --- model ----------------------------------------------------------------------------------------------------

def load_model(cfg: DictConfig) -> LoadedGenerator:
    """The generator named by ``ckpt=`` or ``weights=``.

    ``weights=``: an export with its sidecar; bare .safetensors with ``model=<preset>``; or, with neither, a
    community .pth/.safetensors whose architecture, size and scale spandrel detects."""
    from sr_lightning.loading import load_bare_weights, load_generator, sidecar_path

    ckpt, weights = cfg.get("ckpt"), cfg.get("weights")
    if bool(ckpt) == bool(weights):
        raise UpscaleError("give exactly one of ckpt=<run>/checkpoints/best.ckpt or weights=<exported file>"
                           + (" (got both)" if ckpt else ""))
    if ckpt:
        return load_generator(Path(str(ckpt)).expanduser(), use_ema=bool(cfg.get("use_ema", True)))
    path = Path(str(weights)).expanduser()
    if not path.is_file():
        raise UpscaleError(f"weights={path}: file not found")
    if sidecar_path(path).is_file() or not cfg.get("gen"):
        # an export (its sidecar rebuilds it), or with no preset a community model file (spandrel detects it)
        return load_generator(path)
    if path.suffix.lower() != ".safetensors":
        raise UpscaleError(f"weights={path}: no sidecar {sidecar_path(path).name} next to it; model=<preset> "
                           f"takes bare .safetensors weights (drop model= to let spandrel detect a community "
                           f"model file's architecture)")
    return load_bare_weights(path, OmegaConf.to_container(cfg.gen, resolve=True), int(cfg.scale), str(cfg.color),
                             tuple(float(v) for v in cfg.value_range), name=_choice("model") or "?")


def _choice(group: str) -> str | None:
    try:
        from hydra.core.hydra_config import HydraConfig

        return HydraConfig.get().runtime.choices.get(group)
    except Exception:  # called outside a Hydra run (tests, notebooks)
        return None


def resolve_run_options(cfg: DictConfig, device: torch.device, eager: bool) -> tuple[str, torch.dtype | None, bool]:
    """(precision name, autocast dtype or None, channels_last) with the same `auto` rules as training."""
    name, amp, channels_last = resolve_precision(str(cfg.get("precision", "auto")),
                                                 "gpu" if device.type == "cuda" else "cpu",
                                                 cfg.get("channels_last", "auto"))
    if not eager:  # TorchScript / ONNX graphs run as exported, in fp32
        return "32-true", None, False
    return name, (getattr(torch, amp) if amp else None), channels_last


def _tile_option(cfg: DictConfig) -> tuple[int | str | None, int]:
    tile, overlap = cfg.get("tile"), cfg.get("tile_overlap", 16)
    if not isinstance(overlap, int) or isinstance(overlap, bool) or overlap < 0:
        raise UpscaleError(f"tile_overlap: got {overlap!r}; allowed: an integer >= 0 (input pixels)")
    if tile is None or tile == "auto":
        return tile, overlap
    if not isinstance(tile, int) or isinstance(tile, bool) or tile <= 2 * overlap:
        raise UpscaleError(f"tile: got {tile!r}; allowed: null, auto, or an integer > 2 * tile_overlap "
                           f"= {2 * overlap} (input pixels per tile)")
    return tile, overlap


# --- files ----------------------------------------------------------------------------------------------------

def find_inputs(value: Any) -> tuple[list[Path], bool]:
    """(image files, whether `input` is a folder)."""
    from sr_lightning.data.imageio import SUPPORTED_EXTENSIONS, is_image_file

    if not value:
        raise UpscaleError("input: missing; give input=<image file or folder of images>")
    path = Path(str(value)).expanduser()
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and is_image_file(p) and not p.name.startswith("."))
        if not files:
            raise UpscaleError(f"input={path}: no images in this folder (extensions: "
                               f"{', '.join(SUPPORTED_EXTENSIONS)})")
        return files, True
    if path.is_file():
        if not is_image_file(path):
            raise UpscaleError(f"input={path}: unsupported extension '{path.suffix}'; readable: "
                               f"{', '.join(SUPPORTED_EXTENSIONS)}")
        return [path], False
    raise UpscaleError(f"input={path}: no such file or folder")


def overwrite_mode(value: Any) -> str:
    """`overwrite=`: false -> "refuse" (the default), true -> "replace", skip -> "skip" (keep existing outputs)."""
    modes = {"false": "refuse", "none": "refuse", "true": "replace", "skip": "skip"}
    if str(value).lower() not in modes:
        raise UpscaleError(f"overwrite: got {value!r}; allowed: false (refuse to replace outputs), true (replace "
                           f"them), skip (keep existing outputs and upscale the rest)")
    return modes[str(value).lower()]


def plan_outputs(inputs: list[Path], input_is_dir: bool, output: Any, ext: Any, overwrite: str) -> list[Path]:
    """Output file per input; refuses (before any work) to replace existing files when ``overwrite`` (a mode of
    overwrite_mode) is "refuse"."""
    from sr_lightning.data.imageio import SUPPORTED_EXTENSIONS

    if not output:
        raise UpscaleError("output: missing; give output=<folder> (or output=<file.png> for a single input)")
    out = Path(str(output)).expanduser()
    if ext:
        ext = "." + str(ext).lower().lstrip(".")
        if ext not in SUPPORTED_EXTENSIONS:
            raise UpscaleError(f"ext: got {ext!r}; allowed: {', '.join(e.lstrip('.') for e in SUPPORTED_EXTENSIONS)}")
    as_file = not input_is_dir and out.suffix != "" and not out.is_dir()
    if as_file:
        if out.suffix.lower() not in SUPPORTED_EXTENSIONS:
            raise UpscaleError(f"output={out}: cannot write '{out.suffix}' images; use one of "
                               f"{', '.join(SUPPORTED_EXTENSIONS)} (or give a folder)")
        targets = [out]
    else:
        if out.is_file():
            raise UpscaleError(f"output={out} is a file but input={inputs[0].parent if input_is_dir else inputs[0]} "
                               f"needs a folder; give output=<folder>")
        targets = [out / f"{p.stem}{ext or p.suffix.lower()}" for p in inputs]
    seen: dict[Path, Path] = {}
    for src, dst in zip(inputs, targets):
        if dst in seen:
            raise UpscaleError(f"{seen[dst].name} and {src.name} would both be written to {dst}; "
                               f"rename one of them or drop ext=")
        seen[dst] = src
        if dst.resolve() == src.resolve():
            raise UpscaleError(f"{dst} would replace its own input; choose another output= folder")
    existing = [t for t in targets if t.exists()]
    if existing and overwrite == "refuse":
        listed = ", ".join(str(p) for p in existing[:3])
        listed += f" and {len(existing) - 3} more" if len(existing) > 3 else ""
        raise UpscaleError(f"{listed} already exist{'s' if len(existing) == 1 else ''}; pass overwrite=true to "
                           f"replace {'it' if len(existing) == 1 else 'them'}, overwrite=skip to keep "
                           f"{'it' if len(existing) == 1 else 'them'} and do the rest, or choose another output=")
    return targets


def output_folder(targets: list[Path]) -> Path:
    """The one folder every target is written into (plan_outputs puts them all in one)."""
    return targets[0].parent


def check_writable(folder: Path) -> None:
    """Create ``folder`` if needed and write (then remove) a probe file in it, so that an unwritable output
    stops the command before the model is loaded and any image computed, not at every image's write.

    A real write rather than os.access: as root, permission bits do not stop writes while a read-only mount
    or a file in the way does, and only trying tells.
    """
    import tempfile

    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".upscale-probe-"):
            pass
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise UpscaleError(f"output={folder}: cannot write into this folder ({reason}); choose another output= "
                           f"folder or fix its permissions") from None


def _max_pixels(cfg: DictConfig) -> int | None:
    from sr_lightning.data.imageio import resolve_max_pixels

    try:
        return resolve_max_pixels(cfg.get("max_pixels", "default"), "max_pixels")
    except ValueError as err:
        raise UpscaleError(str(err)) from None


# --- command --------------------------------------------------------------------------------------------------

def run(cfg: DictConfig) -> int:
    from tqdm import tqdm

    from sr_lightning.data.imageio import ImageReadError, read_image
    from sr_lightning.inference import Upscaler
    from sr_lightning.inference.write import write_result

    inputs, input_is_dir = find_inputs(cfg.get("input"))
    overwrite = overwrite_mode(cfg.get("overwrite"))
    targets = plan_outputs(inputs, input_is_dir, cfg.get("output"), cfg.get("ext"), overwrite)
    if overwrite == "skip":
        pending = [(src, dst) for src, dst in zip(inputs, targets) if not dst.exists()]
        if len(pending) < len(inputs):
            print(f"overwrite=skip: {len(inputs) - len(pending)} of {len(inputs)} output(s) already exist, kept",
                  flush=True)
        if not pending:
            return 0
        inputs, targets = [p[0] for p in pending], [p[1] for p in pending]
    tile, overlap = _tile_option(cfg)
    max_pixels = _max_pixels(cfg)
    check_writable(output_folder(targets))
    loaded = load_model(cfg)
    on_onnxruntime = runs_on_onnxruntime(loaded.net)
    device = torch.device("cpu") if on_onnxruntime else resolve_device(cfg.get("device", "auto"))
    precision, amp, channels_last = resolve_run_options(cfg, device, eager=not runs_as_exported(loaded.net))
    try:
        upscaler = Upscaler(loaded, tile=tile, tile_overlap=overlap, autocast_dtype=amp, channels_last=channels_last,
                            device=device, window=str(cfg.get("window", "cosine")))
    except ValueError as err:
        raise UpscaleError(str(err)) from err
    tile_note = {None: "untiled"}.get(upscaler.tile, f"tile {upscaler.tile}px, overlap {overlap}px")
    print(f"{loaded.name}: x{upscaler.scale} {upscaler.color.upper()} model on {device} ({precision}, {tile_note}"
          f"{', channels_last' if channels_last else ''}), {len(inputs)} image(s)", flush=True)

    # A failed image is named on its own error line and the rest are done. `refused` counts the user's part of
    # it (an unreadable or too large input, an output format that cannot hold the image): exit 2 as for any
    # user error; an output that could not be written (disk full, a folder gone) alone gives exit 1.
    start, done, failed, refused, mp_in, mp_out = time.perf_counter(), 0, 0, 0, 0.0, 0.0
    for src, dst in zip(inputs, targets):
        try:
            image = read_image(src, max_pixels=max_pixels)
        except ImageReadError as err:
            print(f"error: {err}", file=sys.stderr)
            failed, refused = failed + 1, refused + 1
            continue
        height, width = image.shape[:2]
        with tqdm(total=upscaler.tiles_for(height, width), desc=src.name, unit="tile", leave=False,
                  disable=not cfg.get("progress", True), file=sys.stderr, dynamic_ncols=True) as bar:
            try:
                result = upscaler.upscale(image, on_tile=lambda i, n: bar.update(1))
            except ValueError as err:  # e.g. a generator whose output is not scale x its input
                raise UpscaleError(f"{src}: {err}") from err
        try:
            write_result(dst, result)
        except (ValueError, OSError) as err:
            print(f"error: {err}", file=sys.stderr)
            failed, refused = failed + 1, refused + (not isinstance(err, OSError))
            continue
        finally:
            # Drop both arrays now: held until the next image's result exists, a folder of big images would
            # peak at two full-size outputs.
            out_pixels = result.shape[0] * result.shape[1]
            del image, result
        done += 1
        mp_in += height * width / 1e6
        mp_out += out_pixels / 1e6
    seconds = time.perf_counter() - start
    where = targets[0] if len(targets) == 1 else targets[0].parent
    print(f"upscaled {done} image(s) x{upscaler.scale}: {mp_in:.2f} MP in -> {mp_out:.2f} MP out in {seconds:.1f} s "
          f"({mp_out / max(seconds, 1e-9):.2f} MP/s)" + (f", {failed} failed" if failed else "") + f" -> {where}")
    return EXIT_USER_ERROR if refused else 1 if failed else 0


def main(cfg: DictConfig) -> int:
    try:
        return run(cfg)
    except UserError as err:
        return report_user_error(err)
