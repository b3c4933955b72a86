"""Upload validation, decoding and resizing of images, with Pillow and numpy only.

Validation is cheap and happens before anything is sent: the type from the magic bytes, width and
height from the header via Pillow's lazy ``Image.open`` (no pixel data is decoded), the pixel limit
(decompression bombs), and a truncation check. Tensor-input models get ONE decode straight into
a contiguous uint8 array, downsized while decoding where JPEG allows (``draft``); encoded-string
models get the uploaded bytes as they are.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, UnidentifiedImageError

from web.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType

# (magic prefix, Pillow format name); WEBP is checked separately (RIFF....WEBP).
_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
)
EXTENSIONS = {"JPEG": "jpg", "PNG": "png", "GIF": "gif", "BMP": "bmp", "WEBP": "webp", "TIFF": "tif"}
MIME_TYPES = {
    "JPEG": "image/jpeg",
    "PNG": "image/png",
    "GIF": "image/gif",
    "BMP": "image/bmp",
    "WEBP": "image/webp",
    "TIFF": "image/tiff",
}
SUPPORTED = "JPEG, PNG, GIF, BMP, WEBP or TIFF"
# Formats every TF image-decoding model graph reads (decode_image/decode_jpeg/decode_png); others are
# converted to PNG before being sent to encoded-string models.
MODEL_NATIVE_FORMATS = frozenset({"JPEG", "PNG"})


@dataclass(frozen=True)
class ImageInfo:
    """What the header says about an upload: format (Pillow's name), size, and the name for messages."""

    format: str
    width: int
    height: int
    name: str = "image"

    @property
    def extension(self) -> str:
        return EXTENSIONS[self.format]

    @property
    def mime_type(self) -> str:
        return MIME_TYPES[self.format]


def sniff_format(data: bytes) -> str | None:
    """The image format from the first bytes, or None if this is not an image we accept."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    for magic, fmt in _MAGIC:
        if data.startswith(magic):
            return fmt
    return None


def inspect_image(data: bytes, *, max_pixels: int, name: str = "image") -> ImageInfo:
    """Validate an upload without decoding its pixels; raise a 4xx GatewayError saying what to fix."""
    if not data:
        raise BadRequest(f"{name} is empty: upload a {SUPPORTED} image")
    fmt = sniff_format(data)
    if fmt is None:
        raise UnsupportedMediaType(f"{name} is not an image we can read: upload a {SUPPORTED} file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=[fmt]) as img:
                width, height = img.size
    except Image.DecompressionBombError:
        raise PayloadTooLarge(
            f"{name} has more pixels than allowed (MAX_IMAGE_PIXELS={max_pixels}): upload a smaller image"
        ) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError):
        raise BadRequest(
            f"{name} is not a valid {fmt} image (truncated or damaged): upload the complete file"
        ) from None
    if width <= 0 or height <= 0:
        raise BadRequest(f"{name} has no pixels ({width}x{height})")
    if width * height > max_pixels:
        raise PayloadTooLarge(
            f"{name} is {width}x{height} = {width * height} pixels, more than MAX_IMAGE_PIXELS={max_pixels}: "
            "upload a smaller image"
        )
    info = ImageInfo(fmt, width, height, name)
    ensure_complete(data, info)
    return info


def ensure_complete(data: bytes, info: ImageInfo) -> None:
    """Reject truncated files: a cheap end-marker check for JPEG/PNG, a full decode otherwise."""
    tail = data[-64:].rstrip(b"\x00\r\n\t ")
    if info.format == "JPEG" and tail.endswith(b"\xff\xd9"):
        return
    if info.format == "PNG" and tail.endswith(b"IEND\xaeB`\x82"):
        return
    try:
        with Image.open(io.BytesIO(data), formats=[info.format]) as img:
            img.load()
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as exc:
        raise BadRequest(_corrupt(info, exc)) from None


def _corrupt(info: ImageInfo, exc: BaseException) -> str:
    return f"{info.name} is truncated or corrupt ({exc}): upload the complete {info.format} file"


def target_size(width: int, height: int, max_side: int | None) -> tuple[int, int]:
    """(width, height) scaled down so the longer side is at most `max_side` (never scaled up)."""
    if not max_side or max(width, height) <= max_side:
        return width, height
    scale = max_side / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def decode_image(data: bytes, info: ImageInfo, *, size: tuple[int, int] | None = None) -> Image.Image:
    """Decode once into an RGB picture of `size` (width, height; default: as uploaded).

    For JPEG, `draft` lets the decoder scale by 1/2, 1/4 or 1/8 while decoding, so big photos
    bound for a small input cost a fraction of a full decode.
    """
    try:
        # No `with`: closing the image would free the pixels we return (the source is in memory).
        img = Image.open(io.BytesIO(data), formats=[info.format])
        if size and img.format == "JPEG" and size != img.size:
            img.draft("RGB", size)
        img.load()
        rgb = img if img.mode == "RGB" else img.convert("RGB")
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as exc:
        raise BadRequest(_corrupt(info, exc)) from None
    if size and rgb.size != size:
        rgb = rgb.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)
    return rgb


def decode_rgb(data: bytes, info: ImageInfo, *, size: tuple[int, int] | None = None) -> np.ndarray:
    """`decode_image` as a C-contiguous uint8 [H, W, 3] array (what tensor inputs are built from)."""
    return np.asarray(decode_image(data, info, size=size), dtype=np.uint8)


def to_model_bytes(data: bytes, info: ImageInfo) -> bytes:
    """The bytes to send to an encoded-string model: the upload itself for JPEG/PNG, else a PNG of it."""
    if info.format in MODEL_NATIVE_FORMATS:
        return data
    return encode_image(Image.fromarray(decode_rgb(data, info)), "png")


def encode_image(img: Image.Image, fmt: str) -> bytes:
    """JPEG (quality 90) or PNG bytes of a picture."""
    buf = io.BytesIO()
    if fmt == "png":
        img.save(buf, format="PNG", compress_level=3)
    else:
        img.convert("RGB").save(buf, format="JPEG", quality=90)
    return buf.getvalue()
