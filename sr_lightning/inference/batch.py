"""Upscaling image files: which inputs, where their outputs go, and the loop that does a folder.

`find_inputs` / `plan_outputs` / `check_writable` settle every question about the files before the model is
loaded (a missing input, an output that would replace its own input or an existing file, a folder that cannot be
written); `upscale_files` then runs an `Upscaler` over the pairs. An image that cannot be read or written is
reported and the rest are done: `BatchResult` says how many failed and how many of those were refused for a
reason the user can fix (an unreadable or too large input, a format that cannot hold the image), which
`upscale` turns into its exit code.
"""
from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sr_lightning.errors import UserError, report_user_error


class UpscaleError(UserError, RuntimeError):
    """A problem with what upscale was asked to do; printed as one `error:` line naming the key or file."""


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


def skip_existing(inputs: list[Path], targets: list[Path]) -> tuple[list[Path], list[Path]]:
    """The (input, output) pairs whose output does not exist yet (overwrite=skip continues a folder)."""
    pending = [(src, dst) for src, dst in zip(inputs, targets) if not dst.exists()]
    return [p[0] for p in pending], [p[1] for p in pending]


# --- the loop -------------------------------------------------------------------------------------------------

@dataclass
class BatchResult:
    done: int = 0
    failed: int = 0
    refused: int = 0       # of the failed: refused for the user's reason (input unreadable or too large, format)
    mp_in: float = 0.0
    mp_out: float = 0.0
    seconds: float = 0.0


def upscale_files(upscaler: Any, inputs: list[Path], targets: list[Path], max_pixels: int | None = None,
                  progress: bool = True, on_failure: Callable[[BaseException], Any] = report_user_error) -> BatchResult:
    """Upscale each input into its target with ``upscaler`` (a `sr_lightning.inference.Upscaler`).

    An input that cannot be read, or an output that cannot be written, goes to ``on_failure`` (one `error:` line
    by default) and the rest are done. A generator that gives the wrong size is no per-image problem: it raises.
    """
    from tqdm import tqdm

    from sr_lightning.data.imageio import ImageReadError, read_image
    from sr_lightning.inference.write import write_result

    summary = BatchResult()
    start = time.perf_counter()
    for src, dst in zip(inputs, targets):
        try:
            image = read_image(src, max_pixels=max_pixels)
        except ImageReadError as err:
            on_failure(err)
            summary.failed, summary.refused = summary.failed + 1, summary.refused + 1
            continue
        height, width = image.shape[:2]
        with tqdm(total=upscaler.tiles_for(height, width), desc=src.name, unit="tile", leave=False,
                  disable=not progress, file=sys.stderr, dynamic_ncols=True) as bar:
            try:
                result = upscaler.upscale(image, on_tile=lambda i, n: bar.update(1))
            except ValueError as err:  # e.g. a generator whose output is not scale x its input
                raise UpscaleError(f"{src}: {err}") from err
        try:
            write_result(dst, result)
        except (ValueError, OSError) as err:  # ValueError: the format cannot hold it; OSError: disk full, ...
            on_failure(err)
            summary.failed += 1
            summary.refused += not isinstance(err, OSError)
            continue
        finally:
            # Drop both arrays now: held until the next image's result exists, a folder of big images would
            # peak at two full-size outputs.
            out_pixels = result.shape[0] * result.shape[1]
            del image, result
        summary.done += 1
        summary.mp_in += height * width / 1e6
        summary.mp_out += out_pixels / 1e6
    summary.seconds = time.perf_counter() - start
    return summary
