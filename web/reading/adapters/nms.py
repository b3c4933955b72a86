"""Non-maximum suppression in numpy, for families that export raw candidates (YOLO without nms=True)."""

from __future__ import annotations

import numpy as np

MAX_CANDIDATES = 10_000  # like Ultralytics' max_nms: the best-scoring candidates enter NMS, no more


def box_iou(box: np.ndarray, others: np.ndarray) -> np.ndarray:
    """IoU of one [4] box [xmin, ymin, xmax, ymax] with each of [N, 4] boxes."""
    x0 = np.maximum(box[0], others[:, 0])
    y0 = np.maximum(box[1], others[:, 1])
    x1 = np.minimum(box[2], others[:, 2])
    y1 = np.minimum(box[3], others[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = max(0.0, float(box[2] - box[0])) * max(0.0, float(box[3] - box[1]))
    areas = np.clip(others[:, 2] - others[:, 0], 0, None) * np.clip(others[:, 3] - others[:, 1], 0, None)
    union = area + areas - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def non_max_suppression(
    boxes: np.ndarray,
    scores: np.ndarray,
    classes: np.ndarray,
    *,
    iou_threshold: float,
    class_agnostic: bool = False,
    max_keep: int = 300,
) -> np.ndarray:
    """Greedy NMS: indices of the kept boxes, best score first.

    A box is dropped when it overlaps a better-scoring kept box by more than `iou_threshold`; with
    `class_agnostic` false only boxes of the same class suppress each other (Ultralytics' default).
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    order = np.argsort(-scores, kind="stable")[:MAX_CANDIDATES]
    if not class_agnostic and len(order):
        # Shift each class to its own region so boxes of different classes never overlap.
        span = float(np.max(np.abs(boxes[order]))) * 2.0 + 1.0
        shifted = boxes + (np.asarray(classes, dtype=np.float64).reshape(-1, 1) * span)
    else:
        shifted = boxes
    keep: list[int] = []
    remaining = order
    while remaining.size and len(keep) < max_keep:
        best = remaining[0]
        keep.append(int(best))
        rest = remaining[1:]
        if not rest.size:
            break
        remaining = rest[box_iou(shifted[best], shifted[rest]) <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)
