"""Steps every family's decoding shares: pick the best rows, check and activate scores, reframe masks.

Pure functions: no gRPC, no Flask. The family-specific reading of outputs lives in
``web/reading/adapters``; these helpers turn what an adapter found (boxes already in upload pixels) into
domain objects, so every family labels, thresholds and masks the same way.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

from web.domain import Box, Classification, Detection, Mask
from web.errors import UnsupportedModel
from web.reading.label_maps import LabelMap

MASK_THRESHOLD = 0.5
PROBABILITY_SLACK = 1e-3  # float rounding in a model's sigmoid/softmax


def activate(values: np.ndarray, activation: str, axis: int = -1) -> np.ndarray:
    """Scores as probabilities: `softmax` over `axis`, `sigmoid` elementwise, or `none` (as they are)."""
    values = np.asarray(values, dtype=np.float64)
    if activation == "softmax":
        if values.size == 0:
            return values
        shifted = np.exp(values - values.max(axis=axis, keepdims=True))
        return shifted / shifted.sum(axis=axis, keepdims=True)
    if activation == "sigmoid":
        return 1.0 / (1.0 + np.exp(-np.clip(values, -60.0, 60.0)))
    return values


def require_probabilities(scores: np.ndarray, model: str, output: str, settings_path: str) -> None:
    """Refuse (422) scores that are not probabilities instead of reporting them as if they were.

    Which activation a model applied is not in its signature; when it answers values outside
    [0, 1] the gateway says how to declare it rather than guessing.
    """
    values = np.asarray(scores)
    if values.size == 0:
        return
    low, high = float(np.min(values)), float(np.max(values))
    if low >= -PROBABILITY_SLACK and high <= 1.0 + PROBABILITY_SLACK and math.isfinite(low + high):
        return
    raise UnsupportedModel(
        f"model '{model}' answered scores from {low:.4g} to {high:.4g} in output '{output}': they are not "
        "probabilities, so the gateway will not report them as such. If they are logits, set "
        'score_activation = "softmax" (one class per image) or "sigmoid" (independent scores) '
        f"in {settings_path}"
    )


def best_rows(
    scores: np.ndarray, min_score: float, limit: int, valid: np.ndarray | None = None
) -> np.ndarray:
    """Indices of rows scoring at least `min_score` (and `valid`), best first, at most `limit`."""
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    ok = scores >= min_score
    if valid is not None:
        ok &= np.asarray(valid, dtype=bool).reshape(-1)
    candidates = np.flatnonzero(ok)
    order = np.argsort(-scores[candidates], kind="stable")
    return candidates[order][:limit]


def label_for(labels: LabelMap, class_id: int, class_offset: int) -> str:
    """The label of a model class: label map id `class_id + class_offset`, else `class <class_id>`."""
    return labels.names.get(class_id + class_offset, f"class {class_id}")


def make_detections(
    boxes: np.ndarray,
    scores: np.ndarray,
    class_ids: np.ndarray,
    labels: LabelMap,
    class_offset: int,
    masks: list[Mask | None] | None = None,
) -> list[Detection]:
    """Domain detections from rows already selected, boxes [N, 4] xyxy in upload pixels."""
    found = []
    for row, (xmin, ymin, xmax, ymax) in enumerate(np.asarray(boxes, dtype=np.float64).reshape(-1, 4)):
        class_id = int(class_ids[row])
        box = Box(xmin=float(xmin), ymin=float(ymin), xmax=float(xmax), ymax=float(ymax))
        mask = None if masks is None else masks[row]
        found.append(
            Detection(class_id, label_for(labels, class_id, class_offset), float(scores[row]), box, mask)
        )
    return found


def reframe_mask(probabilities: np.ndarray, box: Box, image_size: tuple[int, int]) -> Mask:
    """A box-relative [h, w] probability mask -> binary Mask of an image of `image_size` (H, W).

    The small mask is resized to the box's pixel size (bilinear, like TF's reframing) and thresholded
    at 0.5; only that patch is stored.
    """
    height, width = image_size
    left, top = math.floor(box.xmin), math.floor(box.ymin)
    right, bottom = max(left + 1, math.ceil(box.xmax)), max(top + 1, math.ceil(box.ymax))
    small = np.asarray(probabilities, dtype=np.float32)
    if small.ndim != 2 or small.size == 0:
        return Mask((height, width), 0, 0, np.zeros((0, 0), dtype=bool))
    levels = Image.fromarray(np.clip(small * 255.0 + 0.5, 0, 255).astype(np.uint8), mode="L")
    resized = np.asarray(levels.resize((right - left, bottom - top), Image.Resampling.BILINEAR))
    patch = resized >= int(MASK_THRESHOLD * 255 + 0.5)
    return _clipped_mask(patch, top, left, height, width)


def sample_mask(
    probabilities: np.ndarray,
    box: Box,
    image_size: tuple[int, int],
    map_scale: tuple[float, float],
    map_offset: tuple[float, float],
) -> Mask:
    """A probability map over a whole frame (e.g. YOLO's prototype masks) -> the binary Mask in `box`.

    Upload pixel (x, y) lies at (x * map_scale[0] + map_offset[0], y * map_scale[1] + map_offset[1])
    of the map. The map is sampled (bilinear) over the box's patch at upload resolution and
    thresholded at 0.5: the cost follows the box, not the image.
    """
    height, width = image_size
    left, top = math.floor(box.xmin), math.floor(box.ymin)
    right, bottom = max(left + 1, math.ceil(box.xmax)), max(top + 1, math.ceil(box.ymax))
    (scale_x, scale_y), (offset_x, offset_y) = map_scale, map_offset
    extent = (
        left * scale_x + offset_x,
        top * scale_y + offset_y,
        right * scale_x + offset_x,
        bottom * scale_y + offset_y,
    )
    levels = Image.fromarray(np.ascontiguousarray(probabilities, dtype=np.float32), mode="F")
    sampled = levels.transform(
        (right - left, bottom - top), Image.Transform.EXTENT, extent, Image.Resampling.BILINEAR
    )
    patch = np.asarray(sampled) >= MASK_THRESHOLD
    return _clipped_mask(patch, top, left, height, width)


def _clipped_mask(patch: np.ndarray, top: int, left: int, height: int, width: int) -> Mask:
    """Clip a patch placed at (top, left) to the image (boxes are clipped; this guards rounding)."""
    bottom, right = top + patch.shape[0], left + patch.shape[1]
    top_c, left_c = max(top, 0), max(left, 0)
    bottom_c, right_c = min(bottom, height), min(right, width)
    if bottom_c <= top_c or right_c <= left_c:
        return Mask((height, width), 0, 0, np.zeros((0, 0), dtype=bool))
    patch = patch[top_c - top : bottom_c - top, left_c - left : right_c - left]
    return Mask((height, width), top_c, left_c, np.ascontiguousarray(patch))


def top_classes(
    probabilities: np.ndarray,
    *,
    min_score: float,
    top_k: int,
    labels: LabelMap,
    class_offset: int,
    names: np.ndarray | None = None,
) -> list[Classification]:
    """A classifier's [C] probabilities -> the `top_k` best classes, best first.

    The best class is always reported (a classifier always has an answer); the next ones only when
    they reach `min_score`. `names` (optional, [C]) names each score: class ids (ints or numeric
    strings) or label strings; without it the score's index is the class id.
    """
    values = np.asarray(probabilities, dtype=np.float64).reshape(-1)
    order = np.argsort(-values, kind="stable")[:top_k]
    named = None if names is None else np.asarray(names).reshape(-1)
    found = []
    for rank, i in enumerate(order):
        if rank > 0 and values[i] < min_score:
            break
        class_id, label = int(i), label_for(labels, int(i), class_offset)
        if named is not None and i < len(named):
            class_id, label = _named_class(named[i], int(i), labels, class_offset)
        found.append(Classification(class_id, label, float(values[i])))
    return found


def _named_class(value: object, index: int, labels: LabelMap, class_offset: int) -> tuple[int, str]:
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    if isinstance(value, str):
        if value.strip().lstrip("-").isdigit():
            class_id = int(value)
            return class_id, label_for(labels, class_id, class_offset)
        return index, value
    class_id = int(value)  # numeric class ids
    return class_id, label_for(labels, class_id, class_offset)
