"""Image reading/writing: every odd kind of file a data folder can hold (tiny images made with PIL)."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
from PIL import Image, ImageOps

from sr_lightning.data.imageio import (
    ImageReadError,
    ImageWarning,
    _apply_orientation,
    image_size,
    read_image,
    read_rgb_uint8,
    write_image,
)

from helpers import write_png_bomb


def _rgb(h=6, w=9, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_rgb_png_round_trip(tmp_path):
    img = _rgb()
    Image.fromarray(img).save(tmp_path / "a.png")
    out = read_image(tmp_path / "a.png")
    assert out.dtype == np.uint8 and out.shape == (6, 9, 3)
    np.testing.assert_array_equal(out, img)


def test_grayscale_is_2d_raw_and_replicated_for_training(tmp_path):
    gray = _rgb()[:, :, 0]
    Image.fromarray(gray, mode="L").save(tmp_path / "g.png")
    raw = read_image(tmp_path / "g.png")
    assert raw.shape == (6, 9) and raw.dtype == np.uint8
    rgb = read_rgb_uint8(tmp_path / "g.png")
    assert rgb.shape == (6, 9, 3)
    for c in range(3):
        np.testing.assert_array_equal(rgb[:, :, c], gray)


def test_rgba_alpha_dropped_with_warning_naming_file(tmp_path):
    rgba = np.concatenate([_rgb(), np.full((6, 9, 1), 7, np.uint8)], axis=2)
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "t.png")
    assert read_image(tmp_path / "t.png").shape == (6, 9, 4)
    with pytest.warns(ImageWarning, match=r"t\.png.*alpha"):
        rgb = read_rgb_uint8(tmp_path / "t.png")
    np.testing.assert_array_equal(rgb, rgba[:, :, :3])


def test_16bit_gray_png_kept_raw_and_scaled_to_8bit(tmp_path):
    values = ((np.arange(6 * 9).reshape(6, 9) * 1000) % 65536).astype(np.uint16)
    values[0, 0], values[0, 1] = 65535, 257 * 100
    Image.fromarray(values).save(tmp_path / "g16.png")
    raw = read_image(tmp_path / "g16.png")
    assert raw.dtype == np.uint16
    np.testing.assert_array_equal(raw, values)
    rgb = read_rgb_uint8(tmp_path / "g16.png")
    assert rgb.dtype == np.uint8 and rgb[0, 0, 0] == 255 and rgb[0, 1, 0] == 100
    np.testing.assert_array_equal(rgb[:, :, 1], np.round(values / 257.0).astype(np.uint8))


def test_16bit_rgb_png_not_truncated_by_pillow(tmp_path):
    cv2 = pytest.importorskip("cv2")
    img16 = np.random.default_rng(1).integers(0, 65536, (5, 7, 3), dtype=np.uint16)
    cv2.imwrite(str(tmp_path / "c16.png"), img16[:, :, ::-1])  # OpenCV writes BGR
    raw = read_image(tmp_path / "c16.png")
    assert raw.dtype == np.uint16
    np.testing.assert_array_equal(raw, img16)
    np.testing.assert_array_equal(read_rgb_uint8(tmp_path / "c16.png"), np.round(img16 / 257.0).astype(np.uint8))


@pytest.mark.parametrize("transparency", [False, True])
def test_palette_image_expanded(tmp_path, transparency):
    rgb = _rgb()
    pal = Image.fromarray(rgb).quantize(colors=8)
    if transparency:
        pal.info["transparency"] = 0
        pal.save(tmp_path / "p.png", transparency=0)
    else:
        pal.save(tmp_path / "p.png")
    raw = read_image(tmp_path / "p.png")
    expected = np.asarray(pal.convert("RGB"))
    assert raw.shape == (6, 9, 4 if transparency else 3)
    np.testing.assert_array_equal(raw[:, :, :3], expected)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ImageWarning)
        np.testing.assert_array_equal(read_rgb_uint8(tmp_path / "p.png"), expected)


def test_exif_rotated_jpeg_orientation_applied(tmp_path):
    # A 10x20 (H x W) image: left half black, right half white, saved with EXIF orientation 6 ("rotate 90 CW
    # to display"). Displayed, it is 20x10 with the white half at the bottom.
    img = np.zeros((10, 20, 3), np.uint8)
    img[:, 10:] = 255
    exif = Image.Exif()
    exif[274] = 6
    Image.fromarray(img).save(tmp_path / "r.jpg", exif=exif, quality=95)
    out = read_image(tmp_path / "r.jpg")
    assert out.shape == (20, 10, 3)
    assert out[:8].mean() < 20 and out[12:].mean() > 235
    assert image_size(tmp_path / "r.jpg") == (20, 10)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_numpy_orientation_matches_pillow(orientation):
    # The 16-bit colour path applies EXIF orientation with numpy; it must agree with Pillow for all 8 values.
    img = _rgb(4, 7, seed=orientation)
    pil = Image.fromarray(img)
    exif = pil.getexif()
    exif[274] = orientation
    pil.info["exif"] = exif.tobytes()
    expected = np.asarray(ImageOps.exif_transpose(pil))
    np.testing.assert_array_equal(_apply_orientation(img, orientation), expected)


def test_corrupt_file_names_file_and_remedy(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"this is not a png at all" * 10)
    with pytest.raises(ImageReadError, match=r"bad\.png.*(corrupt|re-download)"):
        read_image(tmp_path / "bad.png")


def test_truncated_png_names_file(tmp_path):
    Image.fromarray(_rgb(64, 64)).save(tmp_path / "full.png")
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageReadError, match=r"cut\.png.*truncated"):
        read_image(tmp_path / "cut.png")


def test_unreadable_extension_lists_supported(tmp_path):
    Image.fromarray(_rgb()).save(tmp_path / "x.png")
    (tmp_path / "x.xyz").write_bytes((tmp_path / "x.png").read_bytes())
    with pytest.raises(ImageReadError, match=r"x\.xyz.*unsupported file extension.*\.png"):
        read_image(tmp_path / "x.xyz")


def test_missing_file(tmp_path):
    with pytest.raises(ImageReadError, match=r"nope\.png: file not found"):
        read_image(tmp_path / "nope.png")


@pytest.mark.parametrize("ext", [".png", ".tif"])
@pytest.mark.parametrize("shape,dtype", [((5, 6), np.uint8), ((5, 6, 3), np.uint8), ((5, 6, 4), np.uint8),
                                         ((5, 6), np.uint16), ((5, 6, 3), np.uint16)])
def test_write_read_lossless_round_trip(tmp_path, ext, shape, dtype):
    if dtype == np.uint16 and len(shape) == 3:
        pytest.importorskip("cv2")
    info = np.iinfo(dtype)
    arr = np.random.default_rng(2).integers(0, int(info.max) + 1, shape, dtype=dtype)
    path = write_image(tmp_path / f"w{ext}", arr)
    back = read_image(path)
    assert back.dtype == dtype
    np.testing.assert_array_equal(back, arr)
    assert not list(tmp_path.glob(".*tmp*")), "temporary file left behind"


def test_write_float_and_jpeg(tmp_path):
    arr = np.linspace(0, 1, 5 * 6 * 3, dtype=np.float32).reshape(5, 6, 3)
    back = read_image(write_image(tmp_path / "f.png", arr))
    np.testing.assert_array_equal(back, np.round(arr * 255).astype(np.uint8))
    jpg = read_image(write_image(tmp_path / "f.jpg", back, quality=100))
    assert np.abs(jpg.astype(int) - back).mean() < 3
    with pytest.raises(ValueError, match="JPEG has no alpha"):
        write_image(tmp_path / "a.jpg", np.zeros((4, 4, 4), np.uint8))
    with pytest.raises(ValueError, match="extension"):
        write_image(tmp_path / "a.xyz", back)


# --- decompression bombs (max_pixels) ---------------------------------------------------------------------------

_png_header_only = write_png_bomb


def test_bomb_refused_by_default_naming_file_size_limit_and_key(tmp_path):
    from sr_lightning.data.imageio import DEFAULT_MAX_PIXELS, ImageTooLargeError

    bomb = _png_header_only(tmp_path / "huge.png", 14000, 13000)
    for reader in (read_image, read_rgb_uint8):
        with pytest.raises(ImageTooLargeError) as info:
            reader(bomb)
        msg = str(info.value)
        assert "huge.png" in msg and "14000x13000" in msg and "182,000,000 pixels" in msg
        assert f"{DEFAULT_MAX_PIXELS:,}" in msg and "max_pixels=" in msg
        assert isinstance(info.value, ImageReadError)   # callers catching ImageReadError keep working
    # The header is still readable (listing a folder must not decode), and a limit there refuses it up front.
    assert image_size(bomb) == (13000, 14000)
    with pytest.raises(ImageTooLargeError, match=r"huge\.png"):
        image_size(bomb, max_pixels=DEFAULT_MAX_PIXELS)


@pytest.mark.parametrize("no_limit", [None, 0, "0", "none"])
def test_bomb_guard_can_be_turned_off_on_purpose(tmp_path, no_limit):
    from PIL import Image as PILImage

    from sr_lightning.data.imageio import ImageTooLargeError

    bomb = _png_header_only(tmp_path / "huge.png", 14000, 13000)
    before = PILImage.MAX_IMAGE_PIXELS
    # Past the size check, the decoder finds the data truncated: a plain ImageReadError, not the size refusal.
    with pytest.raises(ImageReadError, match=r"huge\.png.*(truncated|decode)") as info:
        read_image(bomb, max_pixels=no_limit)
    assert not isinstance(info.value, ImageTooLargeError)
    assert PILImage.MAX_IMAGE_PIXELS == before, "Pillow's global guard must be restored"


def test_max_pixels_limit_is_applied_exactly(tmp_path):
    from sr_lightning.data.imageio import ImageTooLargeError

    Image.fromarray(_rgb(6, 9)).save(tmp_path / "a.png")
    assert read_image(tmp_path / "a.png", max_pixels=54).shape == (6, 9, 3)     # 54 px: at the limit
    with pytest.raises(ImageTooLargeError, match=r"a\.png: 9x6 = 54 pixels .* limit of 53 pixels"):
        read_rgb_uint8(tmp_path / "a.png", max_pixels=53)
    # Above Pillow's own refusal too: ours is the only check, Pillow's is off while we read.
    assert read_image(tmp_path / "a.png", max_pixels=10**12).shape == (6, 9, 3)


@pytest.mark.parametrize("bad", [-1, "lots", 1.5, True])
def test_bad_max_pixels_value_names_key(bad):
    from sr_lightning.data.imageio import resolve_max_pixels

    with pytest.raises(ValueError, match=r"^max_pixels: got .*allowed"):
        resolve_max_pixels(bad)


def test_max_pixels_values():
    from sr_lightning.data.imageio import DEFAULT_MAX_PIXELS, resolve_max_pixels

    assert resolve_max_pixels("default") == DEFAULT_MAX_PIXELS == 2 * Image.MAX_IMAGE_PIXELS  # Pillow refuses above
    assert resolve_max_pixels(3e8) == 300_000_000 and resolve_max_pixels("3e8") == 300_000_000
    assert resolve_max_pixels(0) is None and resolve_max_pixels(None) is None
