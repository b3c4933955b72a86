"""One video frame drawn: the gateway's renderer for masks, boxes and captions (a tracked detection's
caption starts with its `#id`), and each live track's trail as a line through its recent centres."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from web.pipeline.render import class_color, detections_from_json, render_prediction


def draw_frame(
    rgb: np.ndarray,
    prediction: dict[str, Any] | None,
    trails: dict[int, tuple[int, list[tuple[float, float]]]] | None = None,
) -> np.ndarray:
    """`rgb` (uint8 [H, W, 3]) with `prediction` drawn (None: the frame as it is); `trails` maps a track
    id to (class id, centre points in the prediction's pixels)."""
    if prediction is None:
        return rgb
    height, width = rgb.shape[:2]
    picture = Image.fromarray(rgb)
    detections, classes = detections_from_json(prediction, (width, height))
    tracked = [d.get("track_id") for d in prediction.get("detections") or []]
    detections = [
        replace(det, label=f"#{track} {det.label}") if track is not None else det
        for det, track in zip(detections, tracked, strict=True)
    ]
    render_prediction(picture, detections, classes, in_place=True)
    if trails:
        shown = prediction.get("image") or {}
        sx = width / max(1, int(shown.get("width") or width))
        sy = height / max(1, int(shown.get("height") or height))
        draw = ImageDraw.Draw(picture)
        line = max(2, round(max(width, height) / 400))
        for class_id, points in trails.values():
            if len(points) > 1:
                draw.line([(x * sx, y * sy) for x, y in points], fill=class_color(class_id), width=line)
    return np.asarray(picture)
