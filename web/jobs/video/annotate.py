"""One video frame drawn: the gateway's renderer for masks, boxes and captions (a tracked detection's
caption starts with its `#id`), and each live track's trail as a line through its recent centres.

A prediction is turned into what the renderer draws once (`Drawing.of`: boxes scaled, masks decoded),
then drawn on its own frame and on every frame up to the next analysed one."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from web.domain import Classification, Detection
from web.pipeline.render import class_color, detections_from_json, render_prediction


@dataclass(frozen=True)
class Drawing:
    """A prediction ready to draw on frames of `size`; `scale` maps its pixels to the frames'."""

    detections: list[Detection]
    classes: list[Classification] | None
    scale: tuple[float, float]

    @classmethod
    def of(cls, prediction: dict[str, Any], size: tuple[int, int]) -> Drawing:
        width, height = size
        detections, classes = detections_from_json(prediction, size)
        tracked = [d.get("track_id") for d in prediction.get("detections") or []]
        detections = [
            replace(det, label=f"#{track} {det.label}") if track is not None else det
            for det, track in zip(detections, tracked, strict=True)
        ]
        shown = prediction.get("image") or {}
        sx = width / max(1, int(shown.get("width") or width))
        sy = height / max(1, int(shown.get("height") or height))
        return cls(detections, classes, (sx, sy))


def draw_frame(
    rgb: np.ndarray,
    drawing: Drawing | None,
    trails: dict[int, tuple[int, list[tuple[float, float]]]] | None = None,
) -> np.ndarray:
    """`rgb` (uint8 [H, W, 3]) with `drawing` drawn (None: the frame as it is); `trails` maps a track id
    to (class id, centre points in the prediction's pixels)."""
    if drawing is None:
        return rgb
    height, width = rgb.shape[:2]
    picture = Image.fromarray(rgb)
    render_prediction(picture, drawing.detections, drawing.classes, in_place=True)
    if trails:
        sx, sy = drawing.scale
        draw = ImageDraw.Draw(picture)
        line = max(2, round(max(width, height) / 400))
        for class_id, points in trails.values():
            if len(points) > 1:
                draw.line([(x * sx, y * sy) for x, y in points], fill=class_color(class_id), width=line)
    return np.asarray(picture)
