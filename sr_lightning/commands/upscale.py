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

from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from sr_lightning.errors import EXIT_USER_ERROR, UserError, report_user_error
from sr_lightning.inference.batch import (
    UpscaleError,
    check_writable,
    find_inputs,
    output_folder,
    overwrite_mode,
    plan_outputs,
    skip_existing,
    upscale_files,
)
from sr_lightning.loading import LoadedGenerator, runs_as_exported, runs_on_onnxruntime
from sr_lightning.precision import resolve_device, resolve_precision

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


def _max_pixels(cfg: DictConfig) -> int | None:
    from sr_lightning.data.imageio import resolve_max_pixels

    try:
        return resolve_max_pixels(cfg.get("max_pixels", "default"), "max_pixels")
    except ValueError as err:
        raise UpscaleError(str(err)) from None


# --- command --------------------------------------------------------------------------------------------------

def run(cfg: DictConfig) -> int:
    from sr_lightning.inference import Upscaler

    inputs, input_is_dir = find_inputs(cfg.get("input"))
    overwrite = overwrite_mode(cfg.get("overwrite"))
    targets = plan_outputs(inputs, input_is_dir, cfg.get("output"), cfg.get("ext"), overwrite)
    if overwrite == "skip":
        pending, targets = skip_existing(inputs, targets)
        if len(pending) < len(inputs):
            print(f"overwrite=skip: {len(inputs) - len(pending)} of {len(inputs)} output(s) already exist, kept",
                  flush=True)
        if not pending:
            return 0
        inputs = pending
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

    done = upscale_files(upscaler, inputs, targets, max_pixels, progress=bool(cfg.get("progress", True)))
    where = targets[0] if len(targets) == 1 else targets[0].parent
    print(f"upscaled {done.done} image(s) x{upscaler.scale}: {done.mp_in:.2f} MP in -> {done.mp_out:.2f} MP out in "
          f"{done.seconds:.1f} s ({done.mp_out / max(done.seconds, 1e-9):.2f} MP/s)"
          + (f", {done.failed} failed" if done.failed else "") + f" -> {where}")
    # Failed images were named on their own error lines and the rest are done: exit 2 when one was refused for
    # the user's reason, as for any user error; 1 when only writes failed (disk full, a folder gone).
    return EXIT_USER_ERROR if done.refused else 1 if done.failed else 0


def main(cfg: DictConfig) -> int:
    try:
        return run(cfg)
    except UserError as err:
        return report_user_error(err)
