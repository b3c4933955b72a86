"""Model outputs (numpy arrays) -> domain objects, for both detection conventions and classifiers.

Pure functions: no gRPC, no Flask. Boxes end up in pixels of the uploaded image whatever the model
saw (a downsized or fixed-size copy); box-relative masks are reframed into the image per box by
resizing the small mask to the box's pixel size and pasting it (no full-image work per instance).
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

from web.domain import Box, Classification, Detection, Mask
from web.label_maps import LabelMap

MASK_THRESHOLD = 0.5


class Convention(enum.StrEnum):
    """How a detection model reports boxes (see DESIGN.md, "Model contract")."""

    OD_API = "tf_od_api"  # normalized [ymin, xmin, ymax, xmax], 1-based float classes
    MODEL_GARDEN = "model_garden"  # pixels of the model's resized input + image_info, int classes


@dataclass(frozen=True)
class Geometry:
    """The uploaded image's size and the size of the copy the model received (equal unless resized)."""

    width: int
    height: int
    sent_width: int
    sent_height: int


def detections_from_outputs(
    outputs: dict[str, np.ndarray],
    index: int,
    geometry: Geometry,
    *,
    min_score: float,
    max_detections: int,
    label_map: LabelMap,
) -> list[Detection]:
    """Detections of batch item `index`, best first, filtered by `min_score`, at most `max_detections`."""
    boxes = np.asarray(outputs["detection_boxes"][index], dtype=np.float64).reshape(-1, 4)
    scores = np.asarray(outputs["detection_scores"][index], dtype=np.float64).reshape(-1)
    classes = np.asarray(outputs["detection_classes"][index]).reshape(-1)
    count = min(len(scores), len(boxes), len(classes))
    if "num_detections" in outputs:
        count = min(count, max(0, int(np.asarray(outputs["num_detections"]).reshape(-1)[index])))
    keep = [i for i in np.argsort(-scores[:count], kind="stable") if scores[i] >= min_score][:max_detections]
    pixel_boxes = boxes_to_image(boxes[keep], geometry, outputs.get("image_info"), index)
    masks = outputs.get("detection_masks")
    found = []
    for row, i in enumerate(keep):
        ymin, xmin, ymax, xmax = pixel_boxes[row]
        box = Box(xmin=float(xmin), ymin=float(ymin), xmax=float(xmax), ymax=float(ymax))
        class_id = int(round(float(classes[i])))
        mask = None
        if masks is not None:
            mask = reframe_mask(np.asarray(masks[index][i]), box, (geometry.height, geometry.width))
        found.append(Detection(class_id, label_map.name_for(class_id), float(scores[i]), box, mask))
    return found


def boxes_to_image(
    boxes: np.ndarray, geometry: Geometry, image_info: np.ndarray | None = None, index: int = 0
) -> np.ndarray:
    """[N, 4] model boxes ([ymin, xmin, ymax, xmax]) -> pixels of the uploaded image, clipped to it.

    With `image_info` (Model Garden) boxes are pixels of the model's resized input: undo its
    offset and scale to get pixels of what was sent. Without it, boxes are normalized (TF OD API);
    a model that answers in pixels of its input anyway (values well above 1) is recognised too.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if image_info is not None:
        info = np.asarray(image_info, dtype=np.float64)[index].reshape(4, 2)
        scale_y, scale_x = info[2]
        offset_y, offset_x = info[3]
        sent = (boxes + [offset_y, offset_x, offset_y, offset_x]) / [
            scale_y or 1.0,
            scale_x or 1.0,
            scale_y or 1.0,
            scale_x or 1.0,
        ]
        factor = [geometry.height / geometry.sent_height, geometry.width / geometry.sent_width] * 2
        pixels = sent * factor
    elif boxes.size and float(np.max(boxes)) > 2.0:
        factor = [geometry.height / geometry.sent_height, geometry.width / geometry.sent_width] * 2
        pixels = boxes * factor
    else:
        pixels = boxes * [geometry.height, geometry.width, geometry.height, geometry.width]
    limits = [geometry.height, geometry.width, geometry.height, geometry.width]
    return np.clip(pixels, 0.0, limits)


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
    # Clip the patch to the image (boxes are already clipped; this guards rounding at the edges).
    top_c, left_c = max(top, 0), max(left, 0)
    bottom_c, right_c = min(bottom, height), min(right, width)
    if bottom_c <= top_c or right_c <= left_c:
        return Mask((height, width), 0, 0, np.zeros((0, 0), dtype=bool))
    patch = patch[top_c - top : bottom_c - top, left_c - left : right_c - left]
    return Mask((height, width), top_c, left_c, np.ascontiguousarray(patch))


def classifications_from_outputs(
    scores: np.ndarray,
    classes: np.ndarray | None,
    *,
    min_score: float,
    top_k: int,
    label_map: LabelMap,
) -> list[Classification]:
    """A classifier's [C] scores (probabilities, or logits turned into them) -> top-k, best first.

    The best class is always reported (a classifier always has an answer); the next ones only when
    their score reaches `min_score`.

    `classes` (optional, [C]) names each score: class ids (ints or numeric strings) or label
    strings. Without it, the score index is the class id and the label map is read by index.
    """
    values = np.asarray(scores, dtype=np.float64).reshape(-1)
    if values.size and (values.min() < 0.0 or values.max() > 1.0):
        shifted = np.exp(values - values.max())
        values = shifted / shifted.sum()
    order = np.argsort(-values, kind="stable")[:top_k]
    names = None if classes is None else np.asarray(classes).reshape(-1)
    found = []
    for rank, i in enumerate(order):
        if rank > 0 and values[i] < min_score:  # the best class is always reported
            break
        class_id, label = int(i), label_map.name_for_index(int(i))
        if names is not None and i < len(names):
            class_id, label = _named_class(names[i], int(i), label_map)
        found.append(Classification(class_id, label, float(values[i])))
    return found


def _named_class(value: object, index: int, label_map: LabelMap) -> tuple[int, str]:
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    if isinstance(value, str):
        if value.strip().lstrip("-").isdigit():
            class_id = int(value)
            return class_id, label_map.name_for(class_id)
        return index, value
    class_id = int(value)  # numeric class ids
    return class_id, label_map.name_for(class_id)
