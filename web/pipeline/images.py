"""Upload validation, decoding and resizing of images, with Pillow and numpy only.

Validation is cheap and happens before anything is sent: the type from the magic bytes, width and
height from the header via Pillow's lazy ``Image.open`` (no pixel data is decoded), the pixel limit
(decompression bombs), whether the compressed data could hold that many pixels at all, and
truncation: PNG chunks must reach IEND; JPEG entropy data must cover every block (libjpeg-turbo's
strict mode through simplejpeg, at 1/8 scale: the entropy data is read, almost no pixels are made).
Tensor-input models get ONE decode straight into a contiguous uint8 array, downsized while
decoding where JPEG allows (DCT scaling); encoded-string models get the uploaded bytes as they are.

EXIF orientation (phone photos stored sideways) is read from the header and applied first: sizes,
decoded pictures and the bytes sent to encoded-string models are all in the displayed (upright)
frame, as browsers show the picture.
"""

from __future__ import annotations

import io
import math
import warnings
from dataclasses import dataclass

import numpy as np
import simplejpeg
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
# The least compressed data a picture can be made of: a JPEG spends at least 1/8 bit on each 8x8 block
# of its first component even when the whole picture is one colour (Huffman coding needs 2 bits or
# more; 1/8 leaves room for arithmetic coding); deflate (PNG) compresses at most 1032:1.
JPEG_BLOCKS_PER_BYTE = 64
DEFLATE_MAX_RATIO = 1032
PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # colour type -> samples per pixel
JPEG_CMYK = frozenset({"CMYK", "YCCK"})
NO_END_MARKER = "no end marker"
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


def inspect_image(data: bytes, *, max_pixels: int, name: str = "image", complete: bool = True) -> ImageInfo:
    """Validate an upload without decoding its pixels; raise a 4xx GatewayError saying what to fix.

    `complete=False` leaves out `ensure_complete`, for callers that decode the whole file strictly
    anyway (`decode_image` refuses truncated JPEGs itself) or run the check later.
    """
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
    least = _least_data_bytes(fmt, data, width, height)
    if least is not None and len(data) < least:
        raise BadRequest(
            f"{name} claims {width}x{height} pixels, but its {len(data)} bytes cannot hold that many "
            f"(any {fmt} of that size needs at least {least}): it is damaged or a decompression bomb; "
            "upload the complete file"
        )
    if orientation in (5, 6, 7, 8):
        width, height = height, width
    info = ImageInfo(fmt, width, height, name, orientation)
    if complete:
        ensure_complete(data, info)
    return info


def _least_data_bytes(fmt: str, data: bytes, width: int, height: int) -> int | None:
    """The fewest bytes a JPEG or PNG of this size and layout can have (None for other formats)."""
    if fmt == "JPEG":
        return math.ceil(width / 8) * math.ceil(height / 8) // JPEG_BLOCKS_PER_BYTE
    if fmt == "PNG" and len(data) >= 26:
        bit_depth, color_type = data[24], data[25]  # IHDR, right after the signature
        samples = PNG_CHANNELS.get(color_type, 1)
        row_bytes = 1 + math.ceil(width * samples * max(1, bit_depth) / 8)
        return height * row_bytes // DEFLATE_MAX_RATIO
    return None


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
    """Reject truncated files without making their pixels: PNG chunks must run to IEND, JPEG entropy
    data must cover every block (strict libjpeg-turbo at 1/8 scale); other formats are decoded."""
    if info.format == "PNG":
        if not _png_chunks_complete(data):
            raise BadRequest(_corrupt(info, "its chunks end before IEND"))
        return
    if info.format == "JPEG":
        validate_jpeg(data, info)
        return
    try:
        with Image.open(io.BytesIO(data), formats=[info.format]) as img:
            img.load()
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as exc:
        raise BadRequest(_corrupt(info, exc)) from None


def _png_chunks_complete(data: bytes) -> bool:
    """Whether the chunk lengths lead from the signature to an IEND chunk inside the data."""
    position = 8
    while position + 12 <= len(data):
        length = int.from_bytes(data[position : position + 4], "big")
        kind = data[position + 4 : position + 8]
        end = position + 12 + length
        if end > len(data):
            return False
        if kind == b"IEND":
            return True
        position = end
    return False


def validate_jpeg(data: bytes, info: ImageInfo) -> None:
    """Refuse a JPEG whose entropy data ends early or is corrupt (what plain decoders fill with grey)."""
    if not _has_end_marker(data):
        raise BadRequest(_corrupt(info, NO_END_MARKER))
    try:
        colorspace = simplejpeg.decode_jpeg_header(data)[2]
        _strict_scan(data, "CMYK" if colorspace in JPEG_CMYK else "GRAY" if colorspace == "Gray" else "RGB")
    except (ValueError, RuntimeError) as exc:
        raise BadRequest(_corrupt(info, exc)) from None


def _strict_scan(data: bytes, colorspace: str) -> None:
    """Read all of a JPEG's entropy data in libjpeg-turbo's strict mode at 1/8 scale (almost no
    pixels made); raises ValueError or RuntimeError when it ends early or is corrupt."""
    simplejpeg.decode_jpeg(data, colorspace=colorspace, strict=True, min_width=1, min_height=1)


def _has_end_marker(data: bytes) -> bool:
    """Whether a JPEG ends with EOI (trailing padding allowed): the cheap half of the truncation check."""
    return data[-64:].rstrip(b"\x00\r\n\t ").endswith(b"\xff\xd9")


def _corrupt(info: ImageInfo, reason: BaseException | str) -> str:
    return f"{info.name} is truncated or corrupt ({reason}): upload the complete {info.format} file"


def decode_image(
    data: bytes, info: ImageInfo, *, size: tuple[int, int] | None = None, strict: bool = True
) -> Image.Image:
    """Decode once into an upright RGB picture of `size` (width, height; default: as displayed).

    JPEGs are scaled by 1/2, 1/4 or 1/8 while decoding (DCT scaling), so big photos bound for a
    small input cost a fraction of a full decode. The EXIF orientation is applied after resizing,
    on the smaller picture. `strict=False` is for uploads already checked (drawing a result): Pillow
    then decodes JPEGs straight into its own buffer, a third faster at full size than a strict
    decode that must be copied into one.
    """
    upright = UPRIGHT.get(info.orientation)
    swapped = info.orientation in (5, 6, 7, 8)
    stored = (size[1], size[0]) if size and swapped else size
    try:
        pixels = _decode_jpeg(data, stored) if strict and info.format == "JPEG" else None
        if pixels is not None:
            rgb = Image.fromarray(pixels)
        else:
            # No `with`: closing the image would free the pixels we return (the source is in memory).
            img = Image.open(io.BytesIO(data), formats=[info.format])
            if stored and img.format == "JPEG" and stored != img.size:
                img.draft("RGB", stored)
            img.load()
            rgb = img if img.mode == "RGB" else img.convert("RGB")
    except (OSError, SyntaxError, ValueError, EOFError, RuntimeError, Image.DecompressionBombError) as exc:
        raise BadRequest(_corrupt(info, exc)) from None
    if stored and rgb.size != stored:
        rgb = _resize(rgb, stored)
    return rgb.transpose(upright) if upright is not None else rgb


def _resize(picture: Image.Image, size: tuple[int, int]) -> Image.Image:
    return picture.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)


def _decode_jpeg(data: bytes, stored: tuple[int, int] | None) -> np.ndarray | None:
    """libjpeg-turbo through simplejpeg (about twice Pillow's speed), scaled by 1/2, 1/4 or 1/8 while
    decoding when the target is that much smaller; None for CMYK files (Pillow knows Adobe's
    inverted CMYK). Strict, like `validate_jpeg`: truncated or corrupt entropy data is an error, so
    a decoded upload needs no separate completeness check."""
    if not _has_end_marker(data):
        raise ValueError(NO_END_MARKER)
    if simplejpeg.decode_jpeg_header(data)[2] in JPEG_CMYK:
        _strict_scan(data, "CMYK")  # Pillow fills corrupt data with grey: check first, it is rare
        return None
    scale = {"min_width": stored[0], "min_height": stored[1]} if stored else {}
    return simplejpeg.decode_jpeg(data, colorspace="RGB", strict=True, **scale)


def decode_rgb(data: bytes, info: ImageInfo, *, size: tuple[int, int] | None = None) -> np.ndarray:
    """`decode_image` as a C-contiguous uint8 [H, W, 3] array (what tensor inputs are built from).

    An upright JPEG goes from libjpeg-turbo's array to the caller without passing through a Pillow
    image (two copies fewer) unless it needs resizing after DCT scaling.
    """
    if info.format == "JPEG" and info.orientation == 1:
        try:
            pixels = _decode_jpeg(data, size)
        except (ValueError, RuntimeError) as exc:
            raise BadRequest(_corrupt(info, exc)) from None
        if pixels is not None:
            if size is None or (pixels.shape[1], pixels.shape[0]) == tuple(size):
                return pixels
            return np.asarray(_resize(Image.fromarray(pixels), size), dtype=np.uint8)
    return np.asarray(decode_image(data, info, size=size), dtype=np.uint8)


def sent_as_uploaded(info: ImageInfo) -> bool:
    """Whether an encoded-string model gets the upload's own bytes (an upright JPEG or PNG)."""
    return info.format in MODEL_NATIVE_FORMATS and info.orientation == 1


def to_model_bytes(data: bytes, info: ImageInfo) -> bytes:
    """The bytes to send to an encoded-string model: the upload itself for an upright JPEG/PNG.

    Model graphs decode pixels as stored (TensorFlow ignores EXIF), so a rotated photo is decoded,
    turned upright and re-encoded (JPEG quality 95 for JPEGs, else PNG); other formats become PNG.
    """
    if sent_as_uploaded(info):
        return data
    fmt = "jpeg" if info.format == "JPEG" else "png"
    return encode_image(decode_image(data, info), fmt, quality=95)


def encode_image(img: Image.Image, fmt: str, quality: int = 90) -> bytes:
    """JPEG (`quality`) or PNG bytes of a picture."""
    buf = io.BytesIO()
    if fmt == "png":
        img.save(buf, format="PNG", compress_level=3)
    else:
        (img if img.mode == "RGB" else img.convert("RGB")).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()
