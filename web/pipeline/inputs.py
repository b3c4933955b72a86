"""Upload -> what the model's image input takes, following the adapter's `Preprocessing`. Pure functions.

Tensor inputs: one decode straight to the planned size (upright), placed on the input canvas
(letterbox padding or centre crop), channels in the model's order, then for float inputs scaled to
the pixel range and normalized with mean/std. Encoded-string inputs: the uploaded bytes (made
upright first when EXIF says the photo is stored rotated).
"""

from __future__ import annotations

import numpy as np

from web.pipeline import images
from web.reading.adapters.base import Preprocessing
from web.reading.adapters.frames import Frame, plan_frame
from web.reading.signatures import ImageInput, InputKind
from web.serving.protos.tensorflow.core.framework import types_pb2

# How far under MAX_INPUT_SIDE a JPEG's directly decodable size may be and still be used as it is.
JPEG_SCALE_MIN_FILL = 0.9
FLOAT_NUMPY = {types_pb2.DT_FLOAT: np.float32, types_pb2.DT_DOUBLE: np.float64, types_pb2.DT_HALF: np.float16}


def plan_input(
    info: images.ImageInfo, image_input: ImageInput, preprocessing: Preprocessing, max_side: int | None
) -> Frame:
    """Where an upload will lie in the model's input (identity for encoded-string inputs)."""
    if image_input.kind == InputKind.ENCODED:
        return Frame.identity(info.width, info.height)
    if image_input.fixed_size is None and info.format == "JPEG":
        size = jpeg_scaled_size(info.width, info.height, max_side)
        if size is not None:
            return Frame(info.width, info.height, *size, *size)
    return plan_frame(
        info.width,
        info.height,
        mode=preprocessing.resize,
        input_size=image_input.fixed_size,
        max_side=max_side,
    )


def jpeg_scaled_size(width: int, height: int, max_side: int | None) -> tuple[int, int] | None:
    """For a JPEG larger than `max_side` going to a model that takes any size: the largest size
    libjpeg-turbo decodes it to directly (n/8 of each side, rounded up) whose longer side is within
    `max_side` and at most 10 % short of it; None when there is no such size.

    Decoding straight to that size skips resizing a bigger decode: for a 4000x3000 photo and the
    default 1600, a 1500x1125 input costs ~30 ms where 1600x1200 cost ~90 ms (decode at 1/2, then a
    bilinear resize of 3 MP).
    """
    longer = max(width, height)
    if not max_side or longer <= max_side:
        return None
    for eighths in range(7, 0, -1):
        side = -(-longer * eighths // 8)
        if side <= max_side:
            if side < JPEG_SCALE_MIN_FILL * max_side:
                return None
            return -(-width * eighths // 8), -(-height * eighths // 8)
    return None


def encoded_input(data: bytes, info: images.ImageInfo) -> bytes:
    """The bytes for an encoded-string input."""
    return images.to_model_bytes(data, info)


def tensor_input(
    data: bytes,
    info: images.ImageInfo,
    frame: Frame,
    image_input: ImageInput,
    preprocessing: Preprocessing,
) -> np.ndarray:
    """The [H, W, C] array for a tensor input: decoded once, placed, ordered, scaled."""
    size = (frame.content_width, frame.content_height)
    if image_input.channels == 1:
        pixels = np.asarray(images.decode_image(data, info, size=size).convert("L"), dtype=np.uint8)
    else:
        pixels = images.decode_rgb(data, info, size=size)
    if pixels.ndim == 2:
        pixels = pixels[:, :, np.newaxis]
    if frame.padded:
        pixels = place_on_canvas(pixels, frame, preprocessing.pad_value)
    if preprocessing.channel_order == "BGR" and pixels.shape[2] == 3:
        pixels = pixels[:, :, ::-1]
    if image_input.kind == InputKind.UINT8:
        return np.ascontiguousarray(pixels)
    return scale_pixels(pixels, preprocessing, FLOAT_NUMPY.get(image_input.dtype, np.float32))


def place_on_canvas(pixels: np.ndarray, frame: Frame, pad_value: int) -> np.ndarray:
    """Put the resized picture at the frame's offset on an input-sized canvas filled with `pad_value`
    (a negative offset crops)."""
    canvas = np.full((frame.input_height, frame.input_width, pixels.shape[2]), pad_value, dtype=np.uint8)
    src_x0, src_y0 = max(0, -frame.offset_x), max(0, -frame.offset_y)
    dst_x0, dst_y0 = max(0, frame.offset_x), max(0, frame.offset_y)
    width = min(pixels.shape[1] - src_x0, frame.input_width - dst_x0)
    height = min(pixels.shape[0] - src_y0, frame.input_height - dst_y0)
    if width > 0 and height > 0:
        canvas[dst_y0 : dst_y0 + height, dst_x0 : dst_x0 + width] = pixels[
            src_y0 : src_y0 + height, src_x0 : src_x0 + width
        ]
    return canvas


def scale_pixels(pixels: np.ndarray, preprocessing: Preprocessing, dtype: type = np.float32) -> np.ndarray:
    """uint8 pixels -> floats in `pixel_range` (0-255, 0-1 or -1-1), then (x - mean) / std."""
    values = pixels.astype(np.float32)
    if preprocessing.pixel_range == "0-1":
        values *= 1.0 / 255.0
    elif preprocessing.pixel_range == "-1-1":
        values = values * (2.0 / 255.0) - 1.0
    if preprocessing.mean is not None:
        values -= np.asarray(preprocessing.mean, dtype=np.float32)
    if preprocessing.std is not None:
        values /= np.asarray(preprocessing.std, dtype=np.float32)
    return np.ascontiguousarray(values, dtype=dtype)
