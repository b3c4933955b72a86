"""Per-model settings: a ``gateway.toml`` beside the model that overrides what discovery decides.

Signatures say names, dtypes and shapes, but not everything: whether a float input wants pixels in
0-255, 0-1 or ImageNet mean/std, whether a free-form signature is a YOLO or a KerasHub detector.
A small TOML file beside the model (``tf_server/models/<name>/gateway.toml``, next to its label map)
settles it. Every key is optional; an unknown key or a wrong value is an error that names the key,
so a typo never silently falls back to a default.

    family = "yolo"            # which adapter reads the model (see web/reading/adapters)
    preprocessing = "gateway"  # gateway | in_model: who converts 0-255 pixels for the network
    resize = "letterbox"       # stretch | letterbox | crop | none
    pixel_range = "0-1"        # 0-255 | 0-1 | -1-1
    mean = [0.485, 0.456, 0.406]
    std = [0.229, 0.224, 0.225]
    channel_order = "RGB"      # RGB | BGR
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

SETTINGS_FILE = "gateway.toml"
MAX_SETTINGS_BYTES = 64 * 1024

PREPROCESSING_PLACES = ("gateway", "in_model")
# Where a preprocessing value came from (shown per value in GET /api/v1/models/<m>).
FAMILY_DEFAULT, EXPORT_METADATA, GATEWAY_TOML = "family default", "export metadata", "gateway.toml"
VALUE_SOURCES = (FAMILY_DEFAULT, EXPORT_METADATA, GATEWAY_TOML)
RESIZE_MODES = ("stretch", "letterbox", "crop", "none")
PIXEL_RANGES = ("0-255", "0-1", "-1-1")
CHANNEL_ORDERS = ("RGB", "BGR")
BOX_COORDINATES = ("normalized", "pixels")
BOX_FORMATS = ("yxyx", "xyxy", "xywh", "center_xywh")
SCORE_ACTIVATIONS = ("none", "sigmoid", "softmax")
# The model families, in the order the adapters are tried. Named here because gateway.toml is read
# below the adapters (they take its settings); web.reading.adapters refuses to import when its
# ADAPTERS and this list disagree.
FAMILIES = ("tf_od_api", "model_garden", "keras_hub", "yolo", "yolo_nms", "classifier")


class ModelSettingsError(ValueError):
    """A gateway.toml cannot be used; the message names the file and the key."""


@dataclass(frozen=True)
class ModelSettings:
    """What a gateway.toml says; None means "the family's default"."""

    family: str | None = None
    preprocessing: str | None = None  # gateway | in_model
    resize: str | None = None
    pixel_range: str | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    channel_order: str | None = None
    pad_value: int | None = None
    box_coordinates: str | None = None
    box_format: str | None = None
    class_offset: int | None = None
    score_activation: str | None = None
    iou_threshold: float | None = None
    class_agnostic_nms: bool | None = None
    top_k: int | None = None
    source: str | None = None  # the file it came from (None: no file)

    def given(self) -> dict[str, Any]:
        """The keys the file set, as written (for the model detail)."""
        return {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if f.name != "source" and getattr(self, f.name) is not None
        }


def _choice(options: tuple[str, ...], *, fold: bool = False):
    def check(value: Any) -> str:
        if not isinstance(value, str):
            raise ValueError(f"must be a string, one of {', '.join(options)}")
        text = value.strip()
        lookup = {o.lower(): o for o in options} if fold else {o: o for o in options}
        found = lookup.get(text.lower() if fold else text)
        if found is None:
            raise ValueError(f"must be one of {', '.join(options)}, not {value!r}")
        return found

    return check


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"must be a number, not {value!r}")
    return float(value)


def _triple(value: Any) -> tuple[float, ...]:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return (_number(value),)
    if not isinstance(value, list) or len(value) not in (1, 3):
        raise ValueError("must be a number or a list of 1 or 3 numbers (one per channel)")
    return tuple(_number(v) for v in value)


def _std(value: Any) -> tuple[float, ...]:
    numbers = _triple(value)
    if any(v <= 0 for v in numbers):
        raise ValueError("must be positive (the values are divided by it)")
    return numbers


def _integer(low: int, high: int):
    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ValueError(f"must be an integer from {low} to {high}, not {value!r}")
        return value

    return check


def _fraction(value: Any) -> float:
    number = _number(value)
    if not 0.0 < number <= 1.0:
        raise ValueError(f"must be a number in (0, 1], not {value!r}")
    return number


def _boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"must be true or false, not {value!r}")
    return value


_PARSERS = {
    "family": _choice(FAMILIES),
    "preprocessing": _choice(PREPROCESSING_PLACES),
    "resize": _choice(RESIZE_MODES),
    "pixel_range": _choice(PIXEL_RANGES),
    "mean": _triple,
    "std": _std,
    "channel_order": _choice(CHANNEL_ORDERS, fold=True),
    "pad_value": _integer(0, 255),
    "box_coordinates": _choice(BOX_COORDINATES),
    "box_format": _choice(BOX_FORMATS),
    "class_offset": _integer(-1000, 1000),
    "score_activation": _choice(SCORE_ACTIVATIONS),
    "iou_threshold": _fraction,
    "class_agnostic_nms": _boolean,
    "top_k": _integer(1, 1000),
}
KEYS = tuple(_PARSERS)


def parse_model_settings(text: str, source: str = SETTINGS_FILE) -> ModelSettings:
    """Parse and validate a gateway.toml; raise ModelSettingsError naming the file and the key."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ModelSettingsError(f"{source} is not valid TOML: {exc}") from None
    values: dict[str, Any] = {}
    for key, value in raw.items():
        parse = _PARSERS.get(key)
        if parse is None:
            raise ModelSettingsError(f"{source}: unknown key '{key}'; the keys are {', '.join(KEYS)}")
        try:
            values[key] = parse(value)
        except ValueError as exc:
            raise ModelSettingsError(f"{source}: '{key}' {exc}") from None
    return ModelSettings(**values, source=source)


def load_model_settings(path: Path, shown_as: str | None = None) -> ModelSettings:
    """Read a gateway.toml from disk (`shown_as` is the name used in messages, default the path)."""
    name = shown_as or str(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ModelSettingsError(f"cannot read {name}: {exc.strerror}") from None
    if len(data) > MAX_SETTINGS_BYTES:
        raise ModelSettingsError(f"{name} is larger than {MAX_SETTINGS_BYTES // 1024} KiB")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ModelSettingsError(f"{name} is not UTF-8 text (byte {exc.start} is invalid)") from None
    return parse_model_settings(text, name)
