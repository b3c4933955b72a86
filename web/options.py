"""Per-request prediction options, validated once for both the REST API and the HTML form."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from web.errors import BadRequest

MAX_DETECTIONS_LIMIT = 1000


@dataclass(frozen=True)
class PredictOptions:
    """Score threshold, how many detections to keep, NMS overlap, and which model version to ask for."""

    min_score: float = 0.5
    max_detections: int = 100
    version: int | None = None
    version_label: str | None = None
    iou_threshold: float | None = None  # NMS in the gateway (YOLO raw); None: the model's setting

    def to_dict(self) -> dict[str, float | int | str | None]:
        """The options as stored with a result."""
        return {
            "min_score": self.min_score,
            "max_detections": self.max_detections,
            "version": self.version,
            "version_label": self.version_label,
            "iou_threshold": self.iou_threshold,
        }

    @classmethod
    def from_mapping(cls, values: Mapping[str, str]) -> PredictOptions:
        """Read `min_score`, `max_detections`, `version`, `version_label`, `iou_threshold` (query or form);
        empty = default.

        Raises BadRequest with a message naming the field and the accepted range.
        """
        defaults = cls()
        min_score = _get(values, "min_score")
        max_detections = _get(values, "max_detections")
        version = _get(values, "version")
        version_label = _get(values, "version_label")
        iou = _get(values, "iou_threshold")
        options = cls(
            min_score=defaults.min_score if min_score is None else _score(min_score),
            max_detections=defaults.max_detections if max_detections is None else _count(max_detections),
            version=None if version is None else _version(version),
            version_label=version_label,
            iou_threshold=None if iou is None else _iou(iou),
        )
        if options.version is not None and options.version_label is not None:
            raise BadRequest("give either version or version_label, not both")
        return options


def _get(values: Mapping[str, str], key: str) -> str | None:
    value = values.get(key)
    if value is None:
        return None
    value = str(value).strip()
    return value or None


def _score(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0.0 <= value <= 1.0:
        raise BadRequest(f"min_score must be a number between 0 and 1, got {text!r}")
    return value


def _iou(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0.0 < value <= 1.0:
        raise BadRequest(f"iou_threshold must be a number above 0 and at most 1, got {text!r}")
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= MAX_DETECTIONS_LIMIT:
        raise BadRequest(f"max_detections must be an integer from 1 to {MAX_DETECTIONS_LIMIT}, got {text!r}")
    return value


def _version(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise BadRequest(f"version must be a positive integer (a model version number), got {text!r}")
    return value
