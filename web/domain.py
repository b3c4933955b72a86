"""Domain types of a prediction, independent of gRPC, protobuf and Flask.

`Prediction.to_dict()` produces the prediction JSON (docs/architecture.md), so the REST API, the
HTML result pages and the stored results all share one representation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pycocotools import mask as coco_mask


@dataclass(frozen=True)
class Box:
    """An axis-aligned box in pixels of the uploaded image."""

    xmin: float
    ymin: float
    xmax: float
    ymax: float

    @property
    def width(self) -> float:
        return max(0.0, self.xmax - self.xmin)

    @property
    def height(self) -> float:
        return max(0.0, self.ymax - self.ymin)

    def to_dict(self) -> dict[str, float]:
        return {k: round(float(getattr(self, k)), 2) for k in ("xmin", "ymin", "xmax", "ymax")}


@dataclass(frozen=True, eq=False)
class Mask:
    """A binary instance mask of an image of `size` (height, width), stored as the patch it covers.

    Keeping only the patch (not a full-image array per instance) keeps 100 instances on a 12 MP
    image cheap; `full()` (or `np.asarray(mask)`) gives the full-image bool [H, W] array.
    """

    size: tuple[int, int]
    top: int
    left: int
    patch: np.ndarray  # bool [h, w], placed at (top, left), inside the image

    @property
    def shape(self) -> tuple[int, int]:
        return self.size

    def full(self) -> np.ndarray:
        """The mask as a bool [H, W] array of the whole image."""
        out = np.zeros(self.size, dtype=bool)
        h, w = self.patch.shape
        out[self.top : self.top + h, self.left : self.left + w] = self.patch
        return out

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        full = self.full()
        return full if dtype is None else full.astype(dtype)

    def area(self) -> int:
        return int(np.count_nonzero(self.patch))

    def rle(self) -> dict[str, Any]:
        """COCO run-length encoding of the full-image mask, `counts` as str (JSON-ready); cached.

        The runs are counted on the patch's columns only (COCO RLE is column-major, so the columns
        left and right of the patch are one run of zeros each), then pycocotools compresses them:
        the cost follows the patch, not the image.
        """
        cached = self.__dict__.get("_rle")
        if cached is None:
            cached = _encode_rle(self)
            object.__setattr__(self, "_rle", cached)
        return cached


def _encode_rle(mask: Mask) -> dict[str, Any]:
    height, width = mask.size
    h, w = mask.patch.shape
    if h == 0 or w == 0 or not mask.patch.any():
        counts = [height * width]
    else:
        columns = np.zeros((height, w), dtype=np.uint8, order="F")
        columns[mask.top : mask.top + h] = mask.patch
        flat = columns.ravel(order="F")
        changes = np.flatnonzero(flat[1:] != flat[:-1]) + 1
        counts = np.diff(np.concatenate(([0], changes, [flat.size]))).tolist()
        if flat[0]:
            counts.insert(0, 0)  # RLE always starts with a run of zeros
        counts[0] += mask.left * height
        trailing = (width - mask.left - w) * height
        if trailing and flat[-1]:
            counts.append(trailing)
        elif trailing:
            counts[-1] += trailing
    encoded = coco_mask.frPyObjects({"counts": counts, "size": [height, width]}, height, width)
    return {"size": [height, width], "counts": encoded["counts"].decode("ascii")}


@dataclass
class Detection:
    """One detected instance; `mask` is set for segmentation models only."""

    class_id: int
    label: str
    score: float
    box: Box
    mask: Mask | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "label": self.label,
            "class_id": self.class_id,
            "score": round(float(self.score), 4),
            "box": self.box.to_dict(),
        }
        if self.mask is not None:
            out["mask"] = self.mask.rle()
        return out


@dataclass
class Classification:
    """One class of a classifier's answer."""

    class_id: int
    label: str
    score: float

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "class_id": self.class_id, "score": round(float(self.score), 4)}


@dataclass
class Prediction:
    """What a model said about one image, in the uploaded image's coordinates."""

    model_name: str
    model_version: int
    width: int
    height: int
    detections: list[Detection] = field(default_factory=list)
    classes: list[Classification] | None = None
    timings_ms: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The prediction JSON: `classes` replaces `detections` for classifiers."""
        out: dict[str, Any] = {
            "model": {"name": self.model_name, "version": self.model_version},
            "image": {"width": self.width, "height": self.height},
        }
        if self.classes is not None:
            out["classes"] = [c.to_dict() for c in self.classes]
        else:
            out["detections"] = [d.to_dict() for d in self.detections]
        out["timings_ms"] = {k: round(float(v), 2) for k, v in self.timings_ms.items()}
        return out
