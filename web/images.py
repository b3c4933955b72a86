"""Upload validation, decoding and resizing of images, with Pillow and numpy only.

Validation is cheap and happens before anything is sent: the type from the magic bytes, width and
height from the header via Pillow's lazy ``Image.open`` (no pixel data is decoded), the pixel limit
(decompression bombs), and a truncation check. Tensor-input models get ONE decode straight into
a contiguous uint8 array, downsized while decoding where JPEG allows (``draft``); encoded-string
models get the uploaded bytes as they are.

EXIF orientation (phone photos stored sideways) is read from the header and applied first: sizes,
decoded pictures and the bytes sent to encoded-string models are all in the displayed (upright)
frame, as browsers show the picture.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import ExifTags, Image, UnidentifiedImageError

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
# EXIF orientation -> the transpose that makes the stored pixels upright (5-8 swap width and height).
UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


@dataclass(frozen=True)
class ImageInfo:
    """What the header says about an upload: format (Pillow's name), displayed size (EXIF orientation
    applied), the EXIF orientation (1 = stored upright), and the name for messages."""

    format: str
    width: int
    height: int
    name: str = "image"
    orientation: int = 1

    @property
    def stored_size(self) -> tuple[int, int]:
        """(width, height) of the pixels as stored in the file (before the orientation is applied)."""
        return (self.height, self.width) if self.orientation in (5, 6, 7, 8) else (self.width, self.height)

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
                orientation = _orientation(img)
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
    if orientation in (5, 6, 7, 8):
        width, height = height, width
    info = ImageInfo(fmt, width, height, name, orientation)
    ensure_complete(data, info)
    return info


def _orientation(img: Image.Image) -> int:
    """The EXIF orientation tag (1-8), 1 when absent or unreadable; never decodes pixels."""
    if img.format == "PNG" and "exif" not in img.info:
        return 1  # asking a PNG for EXIF found after its pixel data would decode the whole file
    try:
        value = img.getexif().get(ExifTags.Base.Orientation, 1)
    except (OSError, SyntaxError, ValueError, TypeError, KeyError, IndexError):
        return 1
    return value if isinstance(value, int) and value in UPRIGHT else 1


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


def decode_image(data: bytes, info: ImageInfo, *, size: tuple[int, int] | None = None) -> Image.Image:
    """Decode once into an upright RGB picture of `size` (width, height; default: as displayed).

    For JPEG, `draft` lets the decoder scale by 1/2, 1/4 or 1/8 while decoding, so big photos
    bound for a small input cost a fraction of a full decode. The EXIF orientation is applied
    after resizing, on the smaller picture.
    """
    upright = UPRIGHT.get(info.orientation)
    swapped = info.orientation in (5, 6, 7, 8)
    stored = (size[1], size[0]) if size and swapped else size
    try:
        # No `with`: closing the image would free the pixels we return (the source is in memory).
        img = Image.open(io.BytesIO(data), formats=[info.format])
        if stored and img.format == "JPEG" and stored != img.size:
            img.draft("RGB", stored)
        img.load()
        rgb = img if img.mode == "RGB" else img.convert("RGB")
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as exc:
        raise BadRequest(_corrupt(info, exc)) from None
    if stored and rgb.size != stored:
        rgb = rgb.resize(stored, Image.Resampling.BILINEAR, reducing_gap=2.0)
    return rgb.transpose(upright) if upright is not None else rgb


def decode_rgb(data: bytes, info: ImageInfo, *, size: tuple[int, int] | None = None) -> np.ndarray:
    """`decode_image` as a C-contiguous uint8 [H, W, 3] array (what tensor inputs are built from)."""
    return np.asarray(decode_image(data, info, size=size), dtype=np.uint8)


def to_model_bytes(data: bytes, info: ImageInfo) -> bytes:
    """The bytes to send to an encoded-string model: the upload itself for an upright JPEG/PNG.

    Model graphs decode pixels as stored (TensorFlow ignores EXIF), so a rotated photo is decoded,
    turned upright and re-encoded (JPEG quality 95 for JPEGs, else PNG); other formats become PNG.
    """
    if info.format in MODEL_NATIVE_FORMATS and info.orientation == 1:
        return data
    fmt = "jpeg" if info.format == "JPEG" else "png"
    return encode_image(decode_image(data, info), fmt, quality=95)


def encode_image(img: Image.Image, fmt: str, quality: int = 90) -> bytes:
    """JPEG (`quality`) or PNG bytes of a picture."""
    buf = io.BytesIO()
    if fmt == "png":
        img.save(buf, format="PNG", compress_level=3)
    else:
        img.convert("RGB").save(buf, format="JPEG", quality=quality)
    return buf.getvalue()
