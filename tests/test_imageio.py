"""Image loading: every format, mode and orientation a desk sees, and every bad file refused.

All images are generated here with numpy and written with Pillow; nothing is mocked.
"""

from __future__ import annotations

import io
import os
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageChops, ImageFile

from edge.errors import EdgeError, ImageError
from edge.imageio import BYTES_NAME, LoadedImage, load_image

LIMITS = {"max_pixels": 50_000_000, "max_bytes": 50_000_000}

# Four flat quadrants in distinct colours (RGB): any flip or rotation moves one of them.
_QUADRANTS_RGB = ((220, 30, 30), (30, 200, 30), (30, 30, 220), (240, 240, 40))


def quadrants(width: int = 64, height: int = 48) -> np.ndarray:
    """An H x W x 3 RGB image that is asymmetric under every flip and rotation."""
    img = np.empty((height, width, 3), np.uint8)
    h2, w2 = height // 2, width // 2
    img[:h2, :w2], img[:h2, w2:] = _QUADRANTS_RGB[0], _QUADRANTS_RGB[1]
    img[h2:, :w2], img[h2:, w2:] = _QUADRANTS_RGB[2], _QUADRANTS_RGB[3]
    return img


def photo_like(width: int, height: int, seed: int = 0) -> np.ndarray:
    """Gradients plus noise: compresses to a realistic size, so truncation hits pixel data."""
    rng = np.random.default_rng(seed)
    x = np.linspace(0, 255, width, dtype=np.float32)[None, :]
    y = np.linspace(0, 255, height, dtype=np.float32)[:, None]
    img = np.stack([np.broadcast_to(x, (height, width)), np.broadcast_to(y, (height, width)),
                    (x + y) / 2 * np.ones((height, 1), np.float32)], axis=2)
    img += rng.normal(0, 12, img.shape).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


def encode(im: Image.Image, fmt: str, **params: object) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **params)
    return buf.getvalue()


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def as_bgr(rgb: np.ndarray) -> np.ndarray:
    return rgb[:, :, ::-1]


def mean_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return (struct.pack(">I", len(payload)) + kind + payload
            + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF))


def png_claiming(width: int, height: int, idat: bytes) -> bytes:
    """A PNG whose header states ``width`` x ``height`` RGB, with whatever pixel data we like."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat)
            + png_chunk(b"IEND", b""))


def jpeg_with_size(data: bytes, width: int, height: int) -> bytes:
    """Rewrite the frame header (SOF0) of a baseline JPEG to claim another size."""
    pos = data.index(b"\xff\xc0")
    # SOF0: marker, length (2), precision (1), height (2), width (2), ...
    return data[:pos + 5] + struct.pack(">HH", height, width) + data[pos + 9:]


def strip_adobe_marker(data: bytes) -> bytes:
    """Remove the APP14 "Adobe" segment, leaving a plain (non-inverted) CMYK JPEG header."""
    pos = 2  # after SOI; walk the marker segments up to the start of scan
    while data[pos] == 0xFF and data[pos + 1] != 0xDA:
        length = struct.unpack(">H", data[pos + 2:pos + 4])[0]
        if data[pos + 1] == 0xEE and data[pos + 4:pos + 9] == b"Adobe":
            return data[:pos] + data[pos + 2 + length:]
        pos += 2 + length
    raise AssertionError("no Adobe segment found")


# --- formats ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "suffix", "params", "lossless"),
    [
        ("JPEG", "jpg", {"quality": 95}, False),
        ("PNG", "png", {}, True),
        ("WEBP", "webp", {"lossless": True}, True),
        ("WEBP", "webp", {"quality": 90}, False),
        ("BMP", "bmp", {}, True),
    ],
)
def test_format_round_trip_gives_bgr_uint8(tmp_path: Path, fmt: str, suffix: str,
                                           params: dict[str, object], lossless: bool) -> None:
    rgb = quadrants(80, 56)
    path = write(tmp_path, f"img.{suffix}", encode(Image.fromarray(rgb), fmt, **params))
    loaded = load_image(path, **LIMITS)
    assert isinstance(loaded, LoadedImage)
    assert loaded.format == fmt
    assert loaded.pixels.shape == (56, 80, 3)
    assert loaded.pixels.dtype == np.uint8
    assert loaded.pixels.flags.c_contiguous and loaded.pixels.flags.writeable
    assert loaded.scale == 1.0
    assert loaded.original_size == (80, 56)
    if lossless:
        np.testing.assert_array_equal(loaded.pixels, as_bgr(rgb))
    else:
        assert mean_abs_diff(loaded.pixels, as_bgr(rgb)) < 4
    # BGR, not RGB: the red top-left quadrant has its large value in the last channel.
    b, g, r = loaded.pixels[10, 10]
    assert r > 180 and b < 80 and g < 80


def test_str_path_and_bytes_give_the_same_pixels(tmp_path: Path) -> None:
    data = encode(Image.fromarray(quadrants()), "PNG")
    path = write(tmp_path, "img.png", data)
    from_str = load_image(str(path), **LIMITS)
    from_bytes = load_image(data, **LIMITS)
    from_bytearray = load_image(bytearray(data), **LIMITS)
    np.testing.assert_array_equal(from_str.pixels, from_bytes.pixels)
    np.testing.assert_array_equal(from_bytes.pixels, from_bytearray.pixels)
    assert from_bytes.format == "PNG"


def test_loaded_image_is_immutable() -> None:
    loaded = load_image(encode(Image.fromarray(quadrants()), "PNG"), **LIMITS)
    with pytest.raises(AttributeError):
        loaded.scale = 2.0  # type: ignore[misc]


# --- EXIF orientation ------------------------------------------------------------------------


def stored_for(upright: np.ndarray, orientation: int) -> np.ndarray:
    """The pixels a camera stores for ``upright`` with this EXIF orientation (TIFF/EXIF spec)."""
    transposed = (1, 0, 2)
    return {
        1: upright,
        2: upright[:, ::-1],                              # mirrored left-right
        3: upright[::-1, ::-1],                           # rotated 180
        4: upright[::-1],                                 # mirrored top-bottom
        5: upright.transpose(transposed),                 # mirrored along the main diagonal
        6: np.rot90(upright, 1),                          # viewer rotates 90 clockwise
        7: np.rot90(upright, 2).transpose(transposed),    # mirrored along the anti-diagonal
        8: np.rot90(upright, -1),                         # viewer rotates 90 anticlockwise
    }[orientation]


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_gives_upright_pixels(tmp_path: Path, orientation: int) -> None:
    upright = quadrants(64, 48)
    stored = np.ascontiguousarray(stored_for(upright, orientation))
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = encode(Image.fromarray(stored), "JPEG", quality=95, exif=exif)
    loaded = load_image(write(tmp_path, "o.jpg", data), **LIMITS)
    assert loaded.original_size == (64, 48)
    assert loaded.pixels.shape == (48, 64, 3)
    assert loaded.pixels.flags.c_contiguous
    # A wrong orientation moves whole quadrants: a mean error of ~100, not JPEG noise.
    assert mean_abs_diff(loaded.pixels, as_bgr(upright)) < 4


def test_exif_orientation_in_png_is_honoured() -> None:
    upright = quadrants(64, 48)
    exif = Image.Exif()
    exif[0x0112] = 6
    data = encode(Image.fromarray(np.ascontiguousarray(stored_for(upright, 6))), "PNG", exif=exif)
    loaded = load_image(data, **LIMITS)
    np.testing.assert_array_equal(loaded.pixels, as_bgr(upright))
    assert loaded.original_size == (64, 48)


# --- pixel modes -----------------------------------------------------------------------------


def test_grayscale_becomes_three_equal_channels() -> None:
    gray = np.tile(np.arange(256, dtype=np.uint8), (16, 1))
    loaded = load_image(encode(Image.fromarray(gray, "L"), "PNG"), **LIMITS)
    assert loaded.pixels.shape == (16, 256, 3)
    for channel in range(3):
        np.testing.assert_array_equal(loaded.pixels[:, :, channel], gray)


def test_bilevel_image_loads_as_black_and_white() -> None:
    bits = np.zeros((16, 16), bool)
    bits[:, 8:] = True
    loaded = load_image(encode(Image.fromarray(bits), "BMP"), **LIMITS)
    assert (loaded.pixels[:, :8] == 0).all() and (loaded.pixels[:, 8:] == 255).all()


def test_gray_with_alpha_is_composited_onto_white() -> None:
    la = np.zeros((8, 24, 2), np.uint8)
    la[:, :8] = (50, 255)    # opaque dark grey stays as it is
    la[:, 8:16] = (0, 0)     # fully transparent black becomes white
    la[:, 16:] = (0, 128)    # half-transparent black becomes mid grey
    loaded = load_image(encode(Image.fromarray(la, "LA"), "PNG"), **LIMITS)
    assert (loaded.pixels[:, :8] == 50).all()
    assert (loaded.pixels[:, 8:16] == 255).all()
    assert (np.abs(loaded.pixels[:, 16:].astype(int) - 127) <= 1).all()


def test_rgba_is_composited_onto_white() -> None:
    rgba = np.zeros((8, 24, 4), np.uint8)
    rgba[:, :8] = (200, 10, 10, 255)     # opaque red
    rgba[:, 8:16] = (0, 0, 0, 0)         # transparent black: white, not black
    rgba[:, 16:] = (0, 0, 255, 128)      # half-transparent blue over white
    loaded = load_image(encode(Image.fromarray(rgba, "RGBA"), "PNG"), **LIMITS)
    np.testing.assert_array_equal(loaded.pixels[0, 0], (10, 10, 200))
    np.testing.assert_array_equal(loaded.pixels[0, 10], (255, 255, 255))
    assert np.abs(loaded.pixels[0, 20].astype(int) - (255, 127, 127)).max() <= 1


def test_rgba_webp_is_composited_onto_white() -> None:
    rgba = np.zeros((16, 16, 4), np.uint8)
    rgba[:, 8:] = (0, 200, 0, 255)
    loaded = load_image(encode(Image.fromarray(rgba, "RGBA"), "WEBP", lossless=True), **LIMITS)
    np.testing.assert_array_equal(loaded.pixels[:, :8], 255)
    np.testing.assert_array_equal(loaded.pixels[0, 12], (0, 200, 0))


def test_palette_with_transparent_index_is_composited_onto_white() -> None:
    indices = np.zeros((8, 16), np.uint8)
    indices[:, 8:] = 1
    im = Image.fromarray(indices, "P")
    im.putpalette([0, 0, 0, 255, 0, 0] + [0] * (256 * 3 - 6))
    loaded = load_image(encode(im, "PNG", transparency=0), **LIMITS)
    assert (loaded.pixels[:, :8] == 255).all()                      # transparent black -> white
    assert (loaded.pixels[:, 8:] == (0, 0, 255)).all()              # opaque red, in BGR


def test_palette_without_transparency_keeps_its_colours() -> None:
    indices = np.zeros((8, 16), np.uint8)
    indices[:, 8:] = 1
    im = Image.fromarray(indices, "P")
    im.putpalette([0, 0, 0, 0, 0, 255] + [0] * (256 * 3 - 6))
    loaded = load_image(encode(im, "GIF"), **LIMITS)
    assert loaded.format == "GIF"
    assert (loaded.pixels[:, :8] == 0).all()
    assert (loaded.pixels[:, 8:] == (255, 0, 0)).all()              # blue, in BGR


@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
def test_16_bit_grayscale_is_scaled_not_clipped(fmt: str) -> None:
    values = np.linspace(0, 65535, 64 * 64).round().astype(np.uint16).reshape(64, 64)
    values[0, :4] = (1000, 32768, 65535, 300)
    im = Image.fromarray(values)
    assert im.mode == "I;16"
    loaded = load_image(encode(im, fmt), **LIMITS)
    gray = loaded.pixels[:, :, 0]
    assert (loaded.pixels == gray[:, :, None]).all()
    np.testing.assert_array_equal(gray[0, :4], (4, 128, 255, 1))    # round(v / 257)
    expected = ((values.astype(np.uint32) + 128) // 257).astype(np.uint8)
    np.testing.assert_array_equal(gray, expected)
    # Clipping at 255 would make almost every pixel white.
    assert (gray == 255).mean() < 0.01


def test_32_bit_integer_data_is_stretched_to_its_range() -> None:
    values = np.linspace(-1000, 1000, 32 * 32).round().astype(np.int32).reshape(32, 32)
    loaded = load_image(encode(Image.fromarray(values, "I"), "TIFF"), **LIMITS)
    gray = loaded.pixels[:, :, 0]
    assert gray.min() == 0 and gray.max() == 255
    assert (np.diff(gray.ravel().astype(int)) >= 0).all()           # order kept


def test_float_data_is_stretched_to_its_range() -> None:
    values = np.linspace(0.0, 1.0, 32 * 32, dtype=np.float32).reshape(32, 32)
    loaded = load_image(encode(Image.fromarray(values, "F"), "TIFF"), **LIMITS)
    assert loaded.pixels[0, 0, 0] == 0 and loaded.pixels[-1, -1, 0] == 255


def cmyk_patches() -> Image.Image:
    """Four 16x16 patches: white, pure cyan, pure black, and C+M (blue)."""
    cmyk = np.zeros((16, 64, 4), np.uint8)
    cmyk[:, 16:32] = (255, 0, 0, 0)
    cmyk[:, 32:48] = (0, 0, 0, 255)
    cmyk[:, 48:] = (255, 255, 0, 0)
    return Image.frombytes("CMYK", (64, 16), cmyk.tobytes())


def test_adobe_cmyk_jpeg_gives_the_right_colours() -> None:
    data = encode(cmyk_patches(), "JPEG", quality=95)
    assert Image.open(io.BytesIO(data)).info.get("adobe") is not None  # Adobe (inverted) file
    loaded = load_image(data, **LIMITS)
    assert loaded.format == "JPEG"
    expected_bgr = [(255, 255, 255), (255, 255, 0), (0, 0, 0), (255, 0, 0)]
    for i, bgr in enumerate(expected_bgr):
        patch = loaded.pixels[4:12, 16 * i + 4:16 * i + 12].reshape(-1, 3).mean(axis=0)
        assert np.abs(patch - bgr).max() < 12, (i, patch)


def test_plain_cmyk_jpeg_without_adobe_marker_is_not_inverted() -> None:
    # Pillow always writes Adobe-inverted values; writing the inverse of the patches and dropping
    # the marker gives a file whose plain (non-inverted) values are the patches themselves.
    data = strip_adobe_marker(encode(ImageChops.invert(cmyk_patches()), "JPEG", quality=95))
    assert "adobe" not in Image.open(io.BytesIO(data)).info
    loaded = load_image(data, **LIMITS)
    expected_bgr = [(255, 255, 255), (255, 255, 0), (0, 0, 0), (255, 0, 0)]
    for i, bgr in enumerate(expected_bgr):
        patch = loaded.pixels[4:12, 16 * i + 4:16 * i + 12].reshape(-1, 3).mean(axis=0)
        assert np.abs(patch - bgr).max() < 12, (i, patch)


def test_unsupported_mode_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "lab.tiff", encode(Image.new("LAB", (8, 8)), "TIFF"))
    with pytest.raises(ImageError, match=r"lab\.tiff.*unsupported pixel mode 'LAB'"):
        load_image(path, **LIMITS)


# --- pixel limit, checked from the header ------------------------------------------------------


def test_pixel_limit_is_checked_from_the_header_before_decoding() -> None:
    # The header says 1000x1000 but the pixel data is garbage: decoding it would fail. Under a
    # limit of 999_999 the error must be the limit, so the check ran before any decoding.
    forged = png_claiming(1000, 1000, zlib.compress(b"\x00" * 100))
    with pytest.raises(ImageError, match=r"1000x1000 = 1000000 pixels .* 999999 \(max_pixels\)"):
        load_image(forged, max_pixels=999_999, max_bytes=10_000)
    with pytest.raises(ImageError, match="truncated or corrupt"):
        load_image(forged, max_pixels=1_000_000, max_bytes=10_000)


def test_decompression_bomb_png_is_refused(tmp_path: Path) -> None:
    bomb = png_claiming(30000, 30000, zlib.compress(b"\x00" * 1000))
    assert len(bomb) < 200
    path = write(tmp_path, "bomb.png", bomb)
    with pytest.raises(ImageError, match=r"bomb\.png.*max_pixels"):
        load_image(path, **LIMITS)


def test_forged_jpeg_header_size_is_refused() -> None:
    small = encode(Image.fromarray(quadrants()), "JPEG")
    forged = jpeg_with_size(small, 9000, 9000)  # 81 Mpx: below Pillow's own limits
    assert Image.open(io.BytesIO(forged)).size == (9000, 9000)
    with pytest.raises(ImageError, match=r"9000x9000 = 81000000 pixels.*max_pixels"):
        load_image(forged, **LIMITS)


@pytest.mark.parametrize("action", ["error", "ignore"])
def test_pillow_bomb_warning_cannot_crash_or_bypass(action: str) -> None:
    # 10000x10000 = 100 Mpx is above Pillow's warning threshold (~89 Mpx) but below its error
    # threshold: under an "error" filter the warning is raised from Image.open itself.
    image = png_claiming(10000, 10000, zlib.compress(b"\x00" * 1000))
    with warnings.catch_warnings():
        warnings.simplefilter(action, Image.DecompressionBombWarning)
        with pytest.raises(ImageError, match="max_pixels"):
            load_image(image, **LIMITS)


def test_images_at_the_pixel_limit_load() -> None:
    data = encode(Image.fromarray(quadrants(64, 48)), "PNG")
    assert load_image(data, max_pixels=64 * 48, max_bytes=10_000).pixels.shape == (48, 64, 3)


# --- size and file-system errors -------------------------------------------------------------


def test_file_over_max_bytes_is_refused(tmp_path: Path) -> None:
    data = encode(Image.fromarray(photo_like(64, 64)), "PNG")
    path = write(tmp_path, "big.png", data)
    with pytest.raises(ImageError, match=rf"big\.png: {len(data)} bytes .* {len(data) - 1} "):
        load_image(path, max_pixels=10_000, max_bytes=len(data) - 1)
    with pytest.raises(ImageError, match=rf"{BYTES_NAME}: .*max_bytes"):
        load_image(data, max_pixels=10_000, max_bytes=len(data) - 1)
    assert load_image(path, max_pixels=10_000, max_bytes=len(data)).pixels.shape == (64, 64, 3)


@pytest.mark.parametrize(("fmt", "suffix"), [("JPEG", "jpg"), ("PNG", "png"), ("WEBP", "webp")])
def test_truncated_image_is_refused(tmp_path: Path, fmt: str, suffix: str) -> None:
    data = encode(Image.fromarray(photo_like(256, 192)), fmt)
    path = write(tmp_path, f"cut.{suffix}", data[: len(data) // 2])
    with pytest.raises(ImageError, match=rf"cut\.{suffix}.*(truncated|corrupt)"):
        load_image(path, **LIMITS)


def test_truncation_is_detected_even_near_the_end() -> None:
    data = encode(Image.fromarray(photo_like(256, 192)), "JPEG")
    with pytest.raises(ImageError, match="truncated"):
        load_image(data[:-200], **LIMITS)


def test_corrupt_png_data_is_refused() -> None:
    data = bytearray(encode(Image.fromarray(photo_like(64, 64)), "PNG"))
    start = data.index(b"IDAT") + 4
    data[start + 10:start + 60] = bytes(range(50))  # breaks both the zlib stream and the CRC
    with pytest.raises(ImageError, match=f"{BYTES_NAME}: .*(corrupt|truncated)"):
        load_image(bytes(data), **LIMITS)


def test_random_bytes_are_not_an_image(tmp_path: Path) -> None:
    noise = np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes()
    with pytest.raises(ImageError, match=r"noise\.bin: not an image"):
        load_image(write(tmp_path, "noise.bin", noise), **LIMITS)


def test_text_file_named_jpg_is_not_an_image(tmp_path: Path) -> None:
    path = write(tmp_path, "notes.jpg", b"Meeting notes\nnot a photo at all\n" * 10)
    with pytest.raises(ImageError, match=r"notes\.jpg: not an image"):
        load_image(path, **LIMITS)


def test_format_pillow_knows_but_we_do_not_accept_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "img.pcx", encode(Image.fromarray(quadrants()), "PCX"))
    assert Image.open(path).format == "PCX"
    with pytest.raises(ImageError, match=r"img\.pcx: not an image, or not a supported format"):
        load_image(path, **LIMITS)


def test_empty_file_and_empty_bytes_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match=r"empty\.jpg: empty file"):
        load_image(write(tmp_path, "empty.jpg", b""), **LIMITS)
    with pytest.raises(ImageError, match=f"{BYTES_NAME}: empty"):
        load_image(b"", **LIMITS)


def test_missing_path_is_refused(tmp_path: Path) -> None:
    missing = tmp_path / "nobody.jpg"
    with pytest.raises(ImageError, match=r"nobody\.jpg: no such file") as info:
        load_image(missing, **LIMITS)
    assert str(missing) in str(info.value)
    assert isinstance(info.value, EdgeError)


def test_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="is a directory"):
        load_image(tmp_path, **LIMITS)


def test_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    with pytest.raises(ImageError, match=r"pipe\.jpg: not a regular file"):
        load_image(fifo, **LIMITS)


def test_bad_limits_are_a_programming_error() -> None:
    data = encode(Image.fromarray(quadrants()), "PNG")
    with pytest.raises(ValueError, match="max_pixels"):
        load_image(data, max_pixels=0, max_bytes=100)
    with pytest.raises(ValueError, match="target_side"):
        load_image(data, target_side=0, **LIMITS)


def test_truncated_images_flag_set_elsewhere_is_a_loud_bug(monkeypatch: pytest.MonkeyPatch) -> None:
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with pytest.raises(RuntimeError, match="LOAD_TRUNCATED_IMAGES"):
        load_image(encode(Image.fromarray(quadrants()), "PNG"), **LIMITS)


# --- reduced-size decoding of large JPEGs ----------------------------------------------------


@pytest.fixture(scope="module")
def large_jpeg() -> tuple[bytes, np.ndarray]:
    # Not a multiple of 8 on purpose: libjpeg rounds the reduced size up.
    rgb = photo_like(2563, 1925, seed=3)
    return encode(Image.fromarray(rgb), "JPEG", quality=90), rgb


@pytest.mark.parametrize(
    ("target", "factor"),
    [(320, 8), (321, 4), (640, 4), (641, 2), (1281, 2), (1282, 1), (None, 1)],
)
def test_large_jpeg_is_decoded_at_reduced_size(large_jpeg: tuple[bytes, np.ndarray],
                                               target: int | None, factor: int) -> None:
    data, rgb = large_jpeg
    loaded = load_image(data, target_side=target, **LIMITS)
    height, width = loaded.pixels.shape[:2]
    assert loaded.scale == float(factor)
    assert (width, height) == (-(-2563 // factor), -(-1925 // factor))
    assert loaded.original_size == (2563, 1925)
    if target is not None:
        assert max(width, height) >= target
    # The reduced image is the photo, smaller: compare with a box-filtered original.
    if factor > 1:
        crop = rgb[: 1925 // factor * factor, : 2563 // factor * factor].astype(np.float32)
        small = crop.reshape(1925 // factor, factor, 2563 // factor, factor, 3).mean(axis=(1, 3))
        decoded = loaded.pixels[: small.shape[0], : small.shape[1], ::-1].astype(np.float32)
        assert float(np.abs(decoded - small).mean()) < 6


def test_reduced_decode_keeps_the_longer_side_of_portraits_and_orientation() -> None:
    # Stored landscape 2000x1200 with orientation 6: the upright photo is a 1200x2000 portrait.
    exif = Image.Exif()
    exif[0x0112] = 6
    data = encode(Image.fromarray(photo_like(2000, 1200)), "JPEG", exif=exif)
    loaded = load_image(data, target_side=500, **LIMITS)
    assert loaded.scale == 4.0
    assert loaded.original_size == (1200, 2000)
    assert loaded.pixels.shape == (500, 300, 3)


def test_small_image_is_never_reduced() -> None:
    data = encode(Image.fromarray(photo_like(1279, 720)), "JPEG")
    loaded = load_image(data, target_side=640, **LIMITS)  # 1279 < 2 x 640
    assert loaded.scale == 1.0
    assert loaded.pixels.shape == (720, 1279, 3)


def test_non_jpeg_is_decoded_at_full_size() -> None:
    data = encode(Image.fromarray(photo_like(1400, 700)), "PNG")
    loaded = load_image(data, target_side=320, **LIMITS)
    assert loaded.scale == 1.0
    assert loaded.pixels.shape == (700, 1400, 3)
