"""Reading and writing images with every oddity of real files handled in one place.

`read_image` returns the file's own pixels (uint8 or uint16; gray, RGB or RGBA) with the EXIF orientation
applied and palettes expanded, so nothing downstream ever sees a sideways photo or palette indices.
`read_rgb_uint8` is the view training and evaluation use: always `(H, W, 3)` uint8.

Pillow decodes almost everything, but it silently truncates 16-bit *colour* PNG/TIFF to 8 bit (it has no
16-bit RGB mode), so those files are decoded with OpenCV instead. Every failure is an `ImageReadError`
whose message names the file and says what to do about it.

Decompression bombs: a file whose header claims more than `max_pixels` pixels is refused before any decoding
with an `ImageTooLargeError` (file, size, limit, and the `max_pixels=` key that raises the limit). The default
is the size Pillow itself refuses (`DEFAULT_MAX_PIXELS`, ~179 MP, e.g. 14000x13000 is refused), so every
file that loaded before still loads; `max_pixels=None` or `0` turns the guard off on purpose.
"""
from __future__ import annotations

import os
import threading
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from sr_lightning.errors import UserError

# Formats a super-resolution data set is realistically stored in. Anything else is refused up front:
# guessing at e.g. a RAW or a PDF would only produce a confusing error later.
SUPPORTED_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pnm")
# EXIF tag 274 = Orientation; values 5..8 swap width and height.
_EXIF_ORIENTATION = 274
# Pillow warns above Image.MAX_IMAGE_PIXELS and refuses above twice that (178,956,970 px in Pillow 13). Our
# default is that refusal, so the guard stays on and no file that Pillow reads is newly refused.
DEFAULT_MAX_PIXELS = 2 * int(Image.MAX_IMAGE_PIXELS or 89_478_485)
MAX_PIXELS_KEY = "max_pixels"


class ImageReadError(UserError, ValueError):
    """An image that cannot be used; the message names the file and the remedy."""

    def __init__(self, path: str | os.PathLike, problem: str, remedy: str):
        super().__init__(f"{path}: {problem}. {remedy}")
        self.path = Path(path)


class ImageTooLargeError(ImageReadError):
    """An image over the decompression-bomb limit; the message names the file, its size, the limit and the key."""

    def __init__(self, path: str | os.PathLike, width: int, height: int, limit: int, key: str = MAX_PIXELS_KEY):
        self.width, self.height, self.pixels, self.limit = int(width), int(height), int(width) * int(height), limit
        super().__init__(
            path,
            f"{width}x{height} = {self.pixels:,} pixels is over the decompression-bomb limit of {limit:,} pixels",
            f"If you trust the file, raise the limit with {key}={_round_up(self.pixels)} (or {key}=0 for no limit)",
        )


def _round_up(pixels: int) -> int:
    """A readable limit just above `pixels` (two significant digits), for the remedy in the message."""
    step = 10 ** max(0, len(str(pixels)) - 2)
    return -(-pixels // step) * step


def resolve_max_pixels(value, key: str = MAX_PIXELS_KEY) -> int | None:
    """A `max_pixels` config value -> a limit in pixels, or None for no limit.

    Allowed: a positive number of pixels (3e8 is fine), `default` (Pillow's limit, `DEFAULT_MAX_PIXELS`), and
    0 / null / `none` for no limit. Anything else is a `ValueError` naming `key`.
    """
    if value is None or (isinstance(value, str) and value.strip().lower() in ("none", "null", "0", "")):
        return None
    if isinstance(value, str) and value.strip().lower() in ("default", "pillow"):
        return DEFAULT_MAX_PIXELS
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    if isinstance(value, bool) or not number >= 0 or number != int(number):
        raise ValueError(f"{key}: got {value!r}; allowed: a whole number of pixels (e.g. {key}=300000000), "
                         f"default (Pillow's limit, {DEFAULT_MAX_PIXELS:,}) or 0 for no limit")
    return int(number) or None


def check_pixels(path: str | os.PathLike, height: int, width: int, max_pixels=DEFAULT_MAX_PIXELS) -> None:
    """Raise `ImageTooLargeError` when height x width is over `max_pixels` (None / 0: no limit)."""
    limit = resolve_max_pixels(max_pixels)
    if limit is not None and int(height) * int(width) > limit:
        raise ImageTooLargeError(path, width, height, limit)


# Pillow's own bomb check reads the process-wide Image.MAX_IMAGE_PIXELS inside Image.open and refuses before
# we could name the file or honour a larger max_pixels. While any of our reads is opening a file the global is
# set to None (counted, so concurrent reads in threads do not restore it early); our check on the header size
# replaces it. Other code that opens images in the same moment briefly runs without Pillow's check.
_guard_lock = threading.Lock()
_guard_users = 0
_saved_limit: int | None = None


@contextmanager
def _pillow_bomb_check_off():
    global _guard_users, _saved_limit
    with _guard_lock:
        if _guard_users == 0:
            _saved_limit = Image.MAX_IMAGE_PIXELS
            Image.MAX_IMAGE_PIXELS = None
        _guard_users += 1
    try:
        yield
    finally:
        with _guard_lock:
            _guard_users -= 1
            if _guard_users == 0:
                Image.MAX_IMAGE_PIXELS = _saved_limit


class ImageWarning(UserWarning):
    """Something was changed about an image to make it usable (e.g. its alpha channel was dropped)."""


def is_image_file(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in SUPPORTED_EXTENSIONS


def _check_extension(path: Path) -> None:
    if not is_image_file(path):
        raise ImageReadError(
            path,
            f"unsupported file extension '{path.suffix or '(none)'}'",
            f"Convert it to PNG (lossless) or remove it; readable extensions: {', '.join(SUPPORTED_EXTENSIONS)}",
        )


def _open(path: Path, max_pixels: int | None) -> tuple[Image.Image, bool]:
    """(decoded image, whether the file is 16-bit colour that Pillow would truncate). Call with Pillow's check off."""
    if not path.is_file():
        raise ImageReadError(path, "file not found", "Check the path (and the data.* directories in the config)")
    _check_extension(path)
    try:
        image = Image.open(path)
        if max_pixels is not None and image.width * image.height > max_pixels:  # header only: nothing decoded yet
            image.close()
            raise ImageTooLargeError(path, image.width, image.height, max_pixels)
        high_bit = _is_high_bit_colour(image)  # the tile list is only there before load()
        image.load()  # force the decode now so truncation/corruption surfaces here, not later
    except ImageReadError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageReadError(
            path,
            f"cannot decode the image ({type(exc).__name__}: {exc})",
            "The file is corrupt or truncated: re-download or re-export it, or delete it from the folder",
        ) from exc
    return image, high_bit


def _is_high_bit_colour(image: Image.Image) -> bool:
    """Pillow exposes 16-bit RGB(A) PNG/TIFF as 8-bit 'RGB'; the raw mode of its tiles tells the truth."""
    for tile in getattr(image, "tile", None) or []:
        args = tile[3] if len(tile) > 3 else None
        rawmode = args if isinstance(args, str) else (args[0] if isinstance(args, tuple) and args else "")
        if isinstance(rawmode, str) and rawmode.startswith(("RGB;16", "RGBA;16", "RGBX;16")):
            return True
    return False


def _orientation(image: Image.Image) -> int:
    try:
        return int(image.getexif().get(_EXIF_ORIENTATION, 1))
    except Exception:  # a broken EXIF block must not make a good image unreadable
        return 1


def _apply_orientation(array: np.ndarray, orientation: int) -> np.ndarray:
    """Numpy version of EXIF orientation (for arrays decoded without Pillow)."""
    ops = {
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1],
        5: lambda a: np.swapaxes(a, 0, 1),
        6: lambda a: np.rot90(a, -1),
        7: lambda a: np.rot90(a, -1)[::-1],  # transverse
        8: lambda a: np.rot90(a, 1),
    }
    op = ops.get(orientation)
    return np.ascontiguousarray(op(array)) if op else array


def _read_high_bit_colour(path: Path, orientation: int) -> np.ndarray:
    import cv2

    data = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if data is None:
        raise ImageReadError(path, "cannot decode the 16-bit colour image", "Re-export it as an 8- or 16-bit PNG")
    if data.ndim == 3:
        data = data[..., [2, 1, 0, 3][: data.shape[2]]] if data.shape[2] in (3, 4) else data
    return _apply_orientation(data, orientation)


def _to_array(image: Image.Image, path: Path) -> np.ndarray:
    mode = image.mode
    if mode.startswith("I;16"):
        return np.asarray(image).astype(np.uint16, copy=False)
    if mode == "I":  # 32-bit integer (some TIFF/PNG writers): accept if the values fit 16 bit
        data = np.asarray(image)
        if data.size and (data.min() < 0 or data.max() > 65535):
            raise ImageReadError(path, "32-bit integer pixels outside 0..65535", "Re-export it as an 8- or 16-bit PNG")
        return data.astype(np.uint16)
    if mode == "F":
        raise ImageReadError(path, "floating-point pixels (mode F)", "Re-export it as an 8- or 16-bit PNG")
    if mode == "1":
        image = image.convert("L")
    elif mode in ("P", "PA"):
        has_alpha = mode == "PA" or "transparency" in image.info
        image = image.convert("RGBA" if has_alpha else "RGB")
    elif mode == "LA":
        image = image.convert("RGBA")
    elif mode not in ("L", "RGB", "RGBA"):  # CMYK, YCbCr, LAB, HSV, RGBX, ...
        image = image.convert("RGB")
    return np.asarray(image).copy()


def read_image(path: str | os.PathLike, max_pixels: int | str | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """The file's pixels: uint8 or uint16, `(H, W)` or `(H, W, C)` with C in 1/3/4.

    EXIF orientation is applied and palettes are expanded (to RGB, or RGBA when the palette has transparency).
    Raises `ImageReadError` (naming the file and the remedy) for missing, corrupt, truncated or unsupported files,
    and its subclass `ImageTooLargeError` before decoding a file of more than `max_pixels` pixels (default:
    Pillow's decompression-bomb limit; None or 0: no limit).
    """
    path = Path(path)
    limit = resolve_max_pixels(max_pixels)
    with _pillow_bomb_check_off():
        image, high_bit = _open(path, limit)
        orientation = _orientation(image)
        if high_bit:
            return _read_high_bit_colour(path, orientation)
        if orientation != 1:
            image = ImageOps.exif_transpose(image)
        return _to_array(image, path)


def image_size(path: str | os.PathLike, max_pixels: int | str | None = None) -> tuple[int, int]:
    """(height, width) after EXIF orientation, read from the header only (no full decode).

    Header sizes of any magnitude are returned (nothing is decoded); with `max_pixels` a size over it raises
    `ImageTooLargeError`, so data sets can refuse a bomb when they are listed rather than when it is read.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(path, "file not found", "Check the path (and the data.* directories in the config)")
    _check_extension(path)
    try:
        with _pillow_bomb_check_off(), Image.open(path) as image:
            width, height = image.size
            orientation = _orientation(image)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageReadError(
            path, f"cannot read the image header ({type(exc).__name__}: {exc})",
            "The file is corrupt or not an image: re-download or re-export it, or delete it from the folder",
        ) from exc
    check_pixels(path, height, width, max_pixels)
    return (width, height) if orientation in (5, 6, 7, 8) else (height, width)


def to_rgb_uint8(array: np.ndarray, name: str = "image") -> np.ndarray:
    """Convert any `read_image` result to `(H, W, 3)` uint8 (the training/evaluation view)."""
    if array.dtype == np.uint16:
        # 65535 / 257 == 255 exactly, so full scale maps to full scale.
        array = np.round(array.astype(np.float32) / 257.0).astype(np.uint8)
    elif array.dtype != np.uint8:
        raise ImageReadError(name, f"unsupported pixel type {array.dtype}", "Re-export it as an 8- or 16-bit PNG")
    if array.ndim == 2:
        array = array[:, :, None]
    channels = array.shape[2]
    if channels == 4:
        warnings.warn(f"{name}: alpha channel dropped (RGBA -> RGB); flatten it onto a background yourself "
                      "if transparent areas matter", ImageWarning, stacklevel=3)
        array = array[:, :, :3]
    elif channels == 2:  # gray + alpha
        warnings.warn(f"{name}: alpha channel dropped (gray+alpha -> RGB)", ImageWarning, stacklevel=3)
        array = array[:, :, :1]
    if array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    if array.shape[2] != 3:
        raise ImageReadError(name, f"{channels} channels", "Use gray, RGB or RGBA images")
    return np.ascontiguousarray(array)


def read_rgb_uint8(path: str | os.PathLike, max_pixels: int | str | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """`(H, W, 3)` uint8: alpha dropped with an `ImageWarning`, 16 bit scaled to 8 bit, gray replicated.

    `max_pixels` as in `read_image` (files over it raise `ImageTooLargeError` before decoding).
    """
    return to_rgb_uint8(read_image(path, max_pixels), str(path))


def write_image(path: str | os.PathLike, array: np.ndarray, *, quality: int = 95, compress_level: int = 3) -> Path:
    """Write an array; the format comes from the extension. uint8 or uint16 (PNG/TIFF), gray/RGB/RGBA.

    Float arrays are taken as values in [0, 1] and rounded to uint8. The file is written next to its final
    name and renamed into place, so an interrupted run never leaves a half-written image behind.
    """
    path = Path(path)
    ext = path.suffix.lower()
    if ext not in SUPPORTED_EXTENSIONS:
        raise ValueError(f"{path}: cannot write extension '{ext}'; use one of {', '.join(SUPPORTED_EXTENSIONS)}")
    array = np.asarray(array)
    if np.issubdtype(array.dtype, np.floating):
        array = np.round(np.clip(array, 0.0, 1.0) * 255.0).astype(np.uint8)
    if array.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"{path}: cannot write pixel type {array.dtype}; pass uint8, uint16 or floats in [0, 1]")
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)):
        raise ValueError(f"{path}: cannot write an array of shape {array.shape}; expected (H, W), (H, W, 3) or (H, W, 4)")
    if array.dtype == np.uint16 and ext not in (".png", ".tif", ".tiff"):
        raise ValueError(f"{path}: 16-bit images can only be written as PNG or TIFF")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")
    try:
        if array.dtype == np.uint16 and array.ndim == 3:
            import cv2  # Pillow has no 16-bit colour mode

            bgr = array[..., [2, 1, 0, 3][: array.shape[2]]]
            params = [cv2.IMWRITE_PNG_COMPRESSION, compress_level] if ext == ".png" else []
            if not cv2.imwrite(str(tmp), np.ascontiguousarray(bgr), params):
                raise OSError(f"OpenCV could not write {path}")
        else:
            image = Image.fromarray(array.astype("<u2") if array.dtype == np.uint16 else array)
            kwargs: dict = {}
            if ext in (".jpg", ".jpeg"):
                if image.mode == "RGBA":
                    raise ValueError(f"{path}: JPEG has no alpha channel; write PNG or drop the alpha")
                kwargs = {"quality": quality}
            elif ext == ".png":
                kwargs = {"compress_level": compress_level}
            elif ext == ".webp":
                kwargs = {"quality": quality}
            image.save(tmp, format=Image.registered_extensions()[ext], **kwargs)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def is_grayscale_file(path: str | os.PathLike) -> bool:
    """Whether an image *file* stores one grey channel (papers score such test images on their grey values).

    Decided from the file header (no decoding): an RGB file whose three channels happen to be equal is not
    grayscale — the reference tables score e.g. Set14's img_010 on Y.
    """
    try:
        with _pillow_bomb_check_off(), Image.open(path) as image:  # header only: any size is fine here
            return image.mode in ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F")
    except (OSError, SyntaxError, ValueError) as err:
        raise ImageReadError(path, f"cannot read the image header ({err})", "Replace or remove the file") from err
