"""Where the model's input lies in the upload: resize modes, and boxes mapped back. Pure functions.

Every prediction has two frames: the upload as people see it (EXIF orientation applied) and the
tensor the model received (downsized, stretched, letterboxed or cropped). One affine map per axis
links them, ``input = upload * scale + offset``, so every family's boxes come back the same way:
the adapter brings its boxes into input pixels, `Frame.to_upload` does the rest (and clips).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Frame:
    """The upload (`width` x `height`, displayed orientation) and the model input it was turned into.

    `content_*` is the size the upload was resized to before being placed at (`offset_x`,
    `offset_y`) on the `input_*` canvas: equal to the input for stretch, smaller (padding around
    it) for letterbox, larger (cut at the edges) for crop.
    """

    width: int
    height: int
    input_width: int
    input_height: int
    content_width: int
    content_height: int
    offset_x: int = 0
    offset_y: int = 0

    @classmethod
    def identity(cls, width: int, height: int) -> Frame:
        """The model gets the upload itself (encoded-string inputs)."""
        return cls(width, height, width, height, width, height)

    @property
    def scale_x(self) -> float:
        return self.content_width / self.width

    @property
    def scale_y(self) -> float:
        return self.content_height / self.height

    @property
    def resized(self) -> bool:
        return (self.content_width, self.content_height) != (self.width, self.height)

    @property
    def padded(self) -> bool:
        return (self.content_width, self.content_height, self.offset_x, self.offset_y) != (
            self.input_width,
            self.input_height,
            0,
            0,
        )

    def to_upload(self, boxes_xyxy: np.ndarray) -> np.ndarray:
        """[N, 4] boxes [xmin, ymin, xmax, ymax] in input pixels -> upload pixels, clipped to the upload."""
        boxes = np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4)
        offset = np.array([self.offset_x, self.offset_y, self.offset_x, self.offset_y], dtype=np.float64)
        scale = np.array([self.scale_x, self.scale_y, self.scale_x, self.scale_y], dtype=np.float64)
        upload = (boxes - offset) / scale
        return np.clip(upload, 0.0, [self.width, self.height, self.width, self.height])

    def normalized_to_input(self, boxes_xyxy: np.ndarray) -> np.ndarray:
        """Boxes normalized to [0, 1] of the input -> input pixels."""
        size = np.array([self.input_width, self.input_height] * 2, dtype=np.float64)
        return np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4) * size


def downsized(width: int, height: int, max_side: int | None) -> tuple[int, int]:
    """(width, height) scaled down so the longer side is at most `max_side` (never scaled up)."""
    if not max_side or max(width, height) <= max_side:
        return width, height
    scale = max_side / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def plan_frame(
    width: int,
    height: int,
    *,
    mode: str,
    input_size: tuple[int, int] | None,
    max_side: int | None = None,
) -> Frame:
    """How an upload of `width` x `height` becomes the model input.

    `input_size` is the model's fixed (width, height), or None when it takes any size. Modes:
    ``none`` sends the upload (downsized to `max_side`; a fixed-size input is stretched),
    ``stretch`` resizes to the input ignoring the aspect ratio, ``letterbox`` keeps the aspect ratio
    and pads the rest evenly (Ultralytics' LetterBox), ``crop`` keeps the aspect ratio, fills the
    input and cuts the overflow evenly (a centre crop).
    """
    if input_size is None:
        content = downsized(width, height, max_side)
        return Frame(width, height, *content, *content)
    in_w, in_h = input_size
    if mode in ("stretch", "none"):
        return Frame(width, height, in_w, in_h, in_w, in_h)
    if mode == "letterbox":
        ratio = min(in_w / width, in_h / height)
    elif mode == "crop":
        ratio = max(in_w / width, in_h / height)
    else:
        raise ValueError(f"unknown resize mode {mode!r}")
    new_w, new_h = max(1, round(width * ratio)), max(1, round(height * ratio))
    # Ultralytics pads round(d - 0.1) on the top/left and the rest on the bottom/right.
    off_x = round((in_w - new_w) / 2 - 0.1) if mode == "letterbox" else -((new_w - in_w) // 2)
    off_y = round((in_h - new_h) / 2 - 0.1) if mode == "letterbox" else -((new_h - in_h) // 2)
    return Frame(width, height, in_w, in_h, new_w, new_h, off_x, off_y)


def xywh_center_to_xyxy(boxes: np.ndarray) -> np.ndarray:
    """[N, 4] (center x, center y, width, height) -> [xmin, ymin, xmax, ymax]."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    half = boxes[:, 2:] / 2.0
    return np.concatenate([boxes[:, :2] - half, boxes[:, :2] + half], axis=1)


def to_xyxy(boxes: np.ndarray, box_format: str) -> np.ndarray:
    """[N, 4] boxes in `box_format` (yxyx, xyxy, xywh, center_xywh) -> [xmin, ymin, xmax, ymax]."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if box_format == "xyxy":
        return boxes
    if box_format == "yxyx":
        return boxes[:, [1, 0, 3, 2]]
    if box_format == "xywh":
        return np.concatenate([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]], axis=1)
    if box_format == "center_xywh":
        return xywh_center_to_xyxy(boxes)
    raise ValueError(f"unknown box format {box_format!r}")
