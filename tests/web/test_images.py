"""Upload validation and decoding: magic bytes, header-only size, pixel limit, truncation, one decode."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from tests.web.helpers import encode
from web.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType
from web.pipeline.images import (
    ImageInfo,
    decode_rgb,
    inspect_image,
    sniff_format,
    to_model_bytes,
)
from web.reading.adapters.frames import downsized

LIMIT = 40_000_000


def picture(width: int = 64, height: int = 48) -> Image.Image:
    """A non-uniform picture (gradient), so codecs cannot collapse it."""
    x = np.linspace(0, 255, width, dtype=np.float32)[None, :, None]
    y = np.linspace(0, 255, height, dtype=np.float32)[:, None, None]
    rgb = np.concatenate(
        [
            np.broadcast_to(x, (height, width, 1)),
            np.broadcast_to(y, (height, width, 1)),
            np.full((height, width, 1), 90, np.float32),
        ],
        axis=2,
    )
    return Image.fromarray(rgb.astype(np.uint8))


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims `width` x `height` (a decompression bomb never gets further than this)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "GIF", "BMP", "WEBP", "TIFF"])
def test_every_accepted_format_is_recognised_from_its_bytes(fmt: str) -> None:
    data = encode(picture(), fmt)
    assert sniff_format(data) == fmt
    info = inspect_image(data, max_pixels=LIMIT, name="p")
    assert (info.format, info.width, info.height) == (fmt, 64, 48)
    assert decode_rgb(data, info).shape == (48, 64, 3)


@pytest.mark.parametrize(
    "data,error,fragment",
    [
        (b"", BadRequest, "is empty"),
        (b"hello, I am a text file\n", UnsupportedMediaType, "not an image we can read"),
        (b"%PDF-1.7\n", UnsupportedMediaType, "JPEG, PNG"),
        (b"\xff\xd8\xff\xe0" + b"\x00" * 40, BadRequest, "truncated or damaged"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 30, BadRequest, "truncated or damaged"),
    ],
    ids=["empty", "text", "pdf", "jpeg-magic-only", "png-magic-only"],
)
def test_not_an_image(data: bytes, error: type, fragment: str) -> None:
    with pytest.raises(error) as caught:
        inspect_image(data, max_pixels=LIMIT, name="upload.bin")
    assert fragment in caught.value.message and "upload.bin" in caught.value.message


@pytest.mark.parametrize("fmt,keep", [("JPEG", 0.6), ("PNG", 0.6), ("GIF", 0.5), ("WEBP", 0.5), ("BMP", 0.5)])
def test_truncated_images_are_refused(fmt: str, keep: float) -> None:
    data = encode(picture(320, 240), fmt)
    with pytest.raises(BadRequest, match="truncated"):
        inspect_image(data[: int(len(data) * keep)], max_pixels=LIMIT, name="cut")


def test_pixel_limit_is_checked_from_the_header() -> None:
    data = png_header_only(8000, 6000)  # 48 MP claimed in a few dozen bytes
    with pytest.raises(PayloadTooLarge) as caught:
        inspect_image(data, max_pixels=LIMIT, name="bomb.png")
    assert "8000x6000" in caught.value.message and "MAX_IMAGE_PIXELS=40000000" in caught.value.message
    assert caught.value.status == 413


def test_decompression_bomb_beyond_pillows_own_limit() -> None:
    data = png_header_only(30000, 30000)  # 900 MP: Pillow itself refuses to open it
    with pytest.raises(PayloadTooLarge, match="MAX_IMAGE_PIXELS"):
        inspect_image(data, max_pixels=10**10, name="bomb.png")


def test_trailing_bytes_after_the_end_marker_are_fine() -> None:
    data = encode(picture(), "JPEG") + b"\x00" * 16
    assert inspect_image(data, max_pixels=LIMIT).format == "JPEG"


@pytest.mark.parametrize(
    "size,max_side,expected",
    [((4000, 3000), 1600, (1600, 1200)), ((300, 200), 1600, (300, 200)), ((1000, 4000), 500, (125, 500))],
)
def test_downsized_keeps_aspect_and_never_enlarges(size, max_side, expected) -> None:
    assert downsized(*size, max_side) == expected


def test_big_jpeg_is_decoded_straight_to_the_target_size() -> None:
    data = encode(Image.new("RGB", (4000, 3000), (10, 200, 30)), "JPEG", quality=90)
    info = inspect_image(data, max_pixels=LIMIT)
    pixels = decode_rgb(data, info, size=(1600, 1200))
    assert pixels.shape == (1200, 1600, 3) and pixels.dtype == np.uint8 and pixels.flags["C_CONTIGUOUS"]
    assert np.abs(pixels.astype(int) - (10, 200, 30)).max() <= 6


@pytest.mark.parametrize("mode", ["L", "P", "RGBA", "LA", "CMYK"])
def test_every_mode_becomes_rgb(mode: str) -> None:
    fmt = "JPEG" if mode in ("L", "CMYK") else "PNG"
    data = encode(picture().convert(mode), fmt)
    pixels = decode_rgb(data, inspect_image(data, max_pixels=LIMIT))
    assert pixels.shape == (48, 64, 3)


def test_model_bytes_are_the_upload_itself_for_jpeg_and_png() -> None:
    for fmt in ("JPEG", "PNG"):
        data = encode(picture(), fmt)
        assert to_model_bytes(data, inspect_image(data, max_pixels=LIMIT)) is data


def test_other_formats_are_converted_to_png_for_encoded_models() -> None:
    data = encode(picture(), "BMP")
    sent = to_model_bytes(data, ImageInfo("BMP", 64, 48))
    assert sniff_format(sent) == "PNG"
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(sent))), np.asarray(picture()))


def jpeg_claiming(width: int, height: int) -> bytes:
    """A tiny real JPEG whose frame header (SOF) is patched to claim width x height."""
    data = bytearray(encode(picture(16, 16), "JPEG"))
    sof = max(data.find(b"\xff\xc0"), data.find(b"\xff\xc2"))
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def test_a_tiny_file_claiming_millions_of_pixels_is_refused_before_decoding() -> None:
    bomb = jpeg_claiming(6000, 6000)
    assert len(bomb) < 1000
    with pytest.raises(BadRequest) as caught:
        inspect_image(bomb, max_pixels=LIMIT, name="bomb.jpg")
    assert "claims 6000x6000 pixels, but its" in caught.value.message and caught.value.status == 400
    with pytest.raises(BadRequest, match="cannot hold that many"):
        inspect_image(png_header_only(6000, 6000), max_pixels=LIMIT, name="bomb.png")


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_big_plain_pictures_are_not_mistaken_for_bombs(fmt: str) -> None:
    data = encode(
        Image.new("RGB", (6000, 6000), (128, 128, 128)), fmt, **({"optimize": True} if fmt == "PNG" else {})
    )
    info = inspect_image(data, max_pixels=LIMIT)
    assert (info.width, info.height) == (6000, 6000)


@pytest.mark.parametrize("progressive", [False, True])
def test_half_a_jpeg_with_an_end_marker_is_truncated(progressive: bool) -> None:
    rng = np.random.default_rng(0)
    data = encode(
        Image.fromarray((rng.random((240, 320, 3)) * 255).astype(np.uint8)), "JPEG", progressive=progressive
    )
    half = data[: len(data) // 2] + b"\xff\xd9"
    with pytest.raises(BadRequest) as caught:
        inspect_image(half, max_pixels=LIMIT, name="half.jpg")
    assert "half.jpg is truncated or corrupt" in caught.value.message


def test_half_a_png_with_an_end_chunk_is_truncated() -> None:
    data = encode(picture(320, 240), "PNG")
    iend = data[-12:]
    with pytest.raises(BadRequest, match="chunks end before IEND"):
        inspect_image(data[: len(data) // 2] + iend, max_pixels=LIMIT, name="half.png")
