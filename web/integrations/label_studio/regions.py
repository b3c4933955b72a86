"""A gateway prediction as a Label Studio prediction on a project's controls.

Each detection becomes a rectangle on every RectangleLabels control that has its label, a brush
(Label Studio's brush RLE) on BrushLabels, and a polygon on PolygonLabels: the outline of its mask
(the box's corners for a model without masks). A classifier's best class becomes a Choices answer.
Coordinates are percent of the picture, as Label Studio stores them; the region builders are the
job exporter's (web/jobs/exporters/label_studio.py), so both write the same regions.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from contourpy import LineType, contour_generator

from web.domain import Box, Detection, Mask, Prediction
from web.integrations.label_studio.label_config import Control, LabelConfig, LabelMatcher
from web.jobs.exporters.label_studio import brush_value, rectangle_value, region

POLYGON_TOLERANCE_PX = 1.0  # outline simplification: at most a pixel off the mask's edge
MAX_POLYGON_POINTS = 500


def model_version(name: str, version: int) -> str:
    """How predictions name the model: `<model>:v<version>`."""
    return f"{name}:v{version}"


def prediction_result(prediction: Prediction, config: LabelConfig, matcher: LabelMatcher) -> dict[str, Any]:
    """{"result": [...], "score", "model_version"} for one task."""
    size = (prediction.width, prediction.height)
    results: list[dict[str, Any]] = []
    scores: list[float] = []
    for n, det in enumerate(prediction.detections):
        placed = False
        for control in config.controls:
            label = _first_match(det.label, control, config, matcher)
            if label is None:
                continue
            value = _value(control, det, size, label)
            if value is None:
                continue
            region_id = f"d{n}" if not placed else f"d{n}{control.tag[0]}"
            results.append(region(region_id, control.result_type, control.name, control.to_name, size, value,
                                  round(float(det.score), 4)))  # fmt: skip
            placed = True
        if placed:
            scores.append(float(det.score))
    if prediction.classes:
        for control in config.of("choices"):
            best = next((c for c in prediction.classes if matcher.match(c.label, control)), None)
            if best is not None:
                choice = matcher.match(best.label, control)
                results.append(region("c0", "choices", control.name, control.to_name, size,
                                      {"choices": [choice]}, round(float(best.score), 4)))  # fmt: skip
                scores.append(float(best.score))
                break
    return {
        "result": results,
        "score": round(sum(scores) / len(scores), 4) if scores else 0.0,
        "model_version": model_version(prediction.model_name, prediction.model_version),
    }


def _first_match(label: str, control: Control, config: LabelConfig, matcher: LabelMatcher) -> str | None:
    """The control's label for a detection, but only on the first control of its tag that has one (two
    RectangleLabels controls would otherwise get the same box twice)."""
    if control.tag == "choices":
        return None
    for candidate in config.of(control.tag):
        found = matcher.match(label, candidate)
        if found is not None:
            return found if candidate is control else None
    return None


def _value(control: Control, det: Detection, size: tuple[int, int], label: str) -> dict[str, Any] | None:
    width, height = size
    box = Box(
        min(max(det.box.xmin, 0.0), width), min(max(det.box.ymin, 0.0), height),
        min(max(det.box.xmax, 0.0), width), min(max(det.box.ymax, 0.0), height),
    )  # fmt: skip
    if control.tag == "rectanglelabels":
        return rectangle_value(box, size, label)
    if control.tag == "brushlabels":
        return None if det.mask is None else brush_value(det.mask.full(), label)
    if control.tag == "polygonlabels":
        points = mask_polygon(det.mask) if det.mask is not None else _box_corners(box)
        if len(points) < 3:
            return None
        percent = [[round(100.0 * x / width, 4), round(100.0 * y / height, 4)] for x, y in points]
        return {"points": percent, "closed": True, "polygonlabels": [label]}
    return None


def _box_corners(box: Box) -> list[tuple[float, float]]:
    return [(box.xmin, box.ymin), (box.xmax, box.ymin), (box.xmax, box.ymax), (box.xmin, box.ymax)]


def mask_polygon(mask: Mask) -> list[tuple[float, float]]:
    """The outline of a mask's largest part, in picture pixels (pixel edges, not centres), simplified to
    within POLYGON_TOLERANCE_PX. contourpy's marching squares at 0.5 run on the patch padded with zeros,
    so every outline closes."""
    patch = np.pad(np.asarray(mask.patch, dtype=np.float32), 1)
    if not patch.any():
        return []
    lines = contour_generator(z=patch, line_type=LineType.Separate).lines(0.5)
    rings = [np.asarray(line, dtype=np.float64) for line in lines if len(line) >= 4]
    if not rings:
        return []
    ring = max(rings, key=_area)
    if np.allclose(ring[0], ring[-1]):
        ring = ring[:-1]
    # Padded patch index (i, j) is pixel (left + j - 1, top + i - 1); its centre sits at +0.5.
    ring = ring + np.array([mask.left - 1 + 0.5, mask.top - 1 + 0.5])
    simplified = _simplify(ring, POLYGON_TOLERANCE_PX)
    tolerance = POLYGON_TOLERANCE_PX
    while len(simplified) > MAX_POLYGON_POINTS:
        tolerance *= 2
        simplified = _simplify(ring, tolerance)
    return [(float(x), float(y)) for x, y in simplified]


def _area(ring: np.ndarray) -> float:
    x, y = ring[:, 0], ring[:, 1]
    return abs(float(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1)))) / 2


def _simplify(ring: np.ndarray, tolerance: float) -> np.ndarray:
    """Ramer-Douglas-Peucker on a closed ring, split at its two farthest-apart points."""
    if len(ring) <= 4:
        return ring
    far = int(np.argmax(np.hypot(*(ring - ring[0]).T)))
    first = _rdp(ring[: far + 1], tolerance)
    second = _rdp(np.vstack([ring[far:], ring[:1]]), tolerance)
    return np.vstack([first[:-1], second[:-1]])


def _rdp(points: np.ndarray, tolerance: float) -> np.ndarray:
    keep = np.zeros(len(points), dtype=bool)
    keep[0] = keep[-1] = True
    stack = [(0, len(points) - 1)]
    while stack:
        start, end = stack.pop()
        if end - start < 2:
            continue
        a, b = points[start], points[end]
        segment = points[start + 1 : end]
        direction = b - a
        length = float(np.hypot(*direction))
        if length == 0:
            distances = np.hypot(*(segment - a).T)
        else:
            distances = np.abs(direction[0] * (segment[:, 1] - a[1]) - direction[1] * (segment[:, 0] - a[0]))
            distances = distances / length
        index = int(np.argmax(distances))
        if distances[index] > tolerance:
            middle = start + 1 + index
            keep[middle] = True
            stack.extend([(start, middle), (middle, end)])
    return points[keep]
