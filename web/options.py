"""The predict endpoints' request options, declared once.

Each `Option` names its type, default, bounds, choices and help. From this one table come the
server's checks (`PredictOptions.from_mapping`, `parse_flag`, `parse_choice`), the OpenAPI
parameters of `/swagger.json` (`Option.openapi`: `minimum`, `maximum`, `enum`, `default` as schema
fields), the HTML form's defaults and limits (`Option.form_default`, `Option.html_limits`) and the
command-line client's checks (`Option.problem`), so none of them can drift from the others.

Standard library only (the command-line client imports it), like `web.errors`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from web.errors import BadRequest

MAX_DETECTIONS_LIMIT = 1000
TRUE_VALUES = frozenset({"1", "true", "yes", "on"})
FALSE_VALUES = frozenset({"", "0", "false", "no", "off"})
_OPENAPI_TYPES = {float: "number", int: "integer", str: "string", bool: "boolean"}


@dataclass(frozen=True)
class Option:
    """One request option (query string or form field)."""

    name: str
    type: type  # float | int | str | bool
    help: str
    default: Any = None  # None: absent (the server decides, e.g. the latest version)
    minimum: float | None = None
    maximum: float | None = None
    exclusive_minimum: bool = False  # `minimum` itself is not allowed
    enum: tuple[str, ...] | None = None  # accepted values (case-insensitive); aliases map onto them
    aliases: Mapping[str, str] | None = None  # also accepted: alias -> one of `enum`
    meaning: str = ""  # added to the range in messages, e.g. "(a model version number)"
    step: float | None = None  # the HTML form's granularity

    # -- checking ------------------------------------------------------------------------------
    def expected(self) -> str:
        """What the option takes, as messages say it: "a number between 0 and 1"."""
        if self.enum is not None:
            return " or ".join(self.enum)
        if self.type is bool:
            return "true or false"
        low, high = self.minimum, self.maximum
        if self.type is int:
            if low is not None and high is not None:
                text = f"an integer from {low:g} to {high:g}"
            elif low == 1:
                text = "a positive integer"
            else:
                text = "an integer"
        elif self.type is float:
            if low is not None and high is not None:
                text = (
                    f"a number above {low:g} and at most {high:g}"
                    if self.exclusive_minimum
                    else f"a number between {low:g} and {high:g}"
                )
            else:
                text = "a number"
        else:
            text = "text"
        return f"{text} {self.meaning}" if self.meaning else text

    def in_range(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        if self.minimum is not None:
            if value < self.minimum or (self.exclusive_minimum and value == self.minimum):
                return False
        return self.maximum is None or value <= self.maximum

    def problem(self, value: Any) -> str | None:
        """Why an already-typed value is not accepted (None when it is): the CLI's check."""
        if self.enum is not None:
            accepted = str(value).lower() in self._accepted()
            return None if accepted else f"{self.name} must be {self.expected()}"
        if self.type in (int, float) and not self.in_range(float(value)):
            return f"{self.name} must be {self.expected()}"
        return None

    def parse(self, text: str) -> Any:
        """The value of a non-empty query/form text; BadRequest naming the option and its range."""
        if self.type is str and self.enum is None:
            return text
        if self.type is bool:
            return parse_flag(self, text)
        if self.enum is not None:
            return parse_choice(self, text)
        try:
            value: float = self.type(text)
        except ValueError:
            value = math.nan
        if not self.in_range(float(value)):
            raise BadRequest(f"{self.name} must be {self.expected()}, got {text!r}")
        return value

    def _accepted(self) -> dict[str, str]:
        accepted = {choice.lower(): choice for choice in self.enum or ()}
        accepted.update({alias.lower(): target for alias, target in (self.aliases or {}).items()})
        return accepted

    # -- describing ----------------------------------------------------------------------------
    def openapi(self, location: str = "query") -> dict[str, Any]:
        """The Swagger 2.0 parameter object (flask-restx `params` entry) for this option."""
        param: dict[str, Any] = {"in": location, "type": _OPENAPI_TYPES[self.type], "description": self.help}
        if self.default is not None:
            param["default"] = self.default
        if self.minimum is not None:
            param["minimum"] = self.minimum
            if self.exclusive_minimum:
                param["exclusiveMinimum"] = True
        if self.maximum is not None:
            param["maximum"] = self.maximum
        if self.enum is not None:
            param["enum"] = list(self.enum)
        return param

    def form_default(self) -> str:
        """The form field's initial text ("" for an option without a default)."""
        if self.default is None:
            return ""
        return str(self.default).lower() if self.type is bool else str(self.default)

    def html_limits(self) -> dict[str, str]:
        """`min`/`max`/`step` attributes for the form's input: the same bounds the server enforces (an
        exclusive minimum becomes the first step above it)."""
        attributes: dict[str, str] = {}
        if self.minimum is not None:
            low = self.minimum + (self.step or 0) if self.exclusive_minimum else self.minimum
            attributes["min"] = f"{low:g}"
        if self.maximum is not None:
            attributes["max"] = f"{self.maximum:g}"
        if self.step is not None:
            attributes["step"] = f"{self.step:g}"
        return attributes


MIN_SCORE = Option(
    name="min_score",
    type=float,
    help="score threshold: detections and classes below it are left out",
    default=0.5,
    minimum=0.0,
    maximum=1.0,
    step=0.01,
)
MAX_DETECTIONS = Option(
    name="max_detections",
    type=int,
    help="at most this many detections (or classes) per image, best first",
    default=100,
    minimum=1,
    maximum=MAX_DETECTIONS_LIMIT,
    step=1,
)
IOU_THRESHOLD = Option(
    name="iou_threshold",
    type=float,
    help="overlap above which NMS drops a box, for models whose NMS the gateway runs (YOLO raw); "
    "default: the model's gateway.toml, else 0.7",
    minimum=0.0,
    maximum=1.0,
    exclusive_minimum=True,
    step=0.01,
)
OPERATING_SCORE = Option(
    name="operating_score",
    type=float,
    help="evaluate jobs: the score at which true and false positives, the confusion matrix and the "
    "worst pictures are counted (the metrics themselves use every prediction, as COCO's protocol does)",
    default=0.5,
    minimum=0.0,
    maximum=1.0,
    step=0.01,
)
VERSION = Option(
    name="version",
    type=int,
    help="model version (default: the latest)",
    minimum=1,
    meaning="(a model version number)",
    step=1,
)
VERSION_LABEL = Option(name="version_label", type=str, help="model version label, e.g. stable")
STORE = Option(
    name="store",
    type=bool,
    help="keep the result for the HTML result pages; adds result_url to the answer",
    default=False,
)
PICTURE = Option(
    name="picture",
    type=str,
    help="also answer the picture with the prediction drawn, base64-encoded in `picture` "
    "(one request for both, as the command-line client's --out uses it)",
    enum=("jpeg", "png"),
    aliases={"jpg": "jpeg"},
)
FORMAT = Option(
    name="format",
    type=str,
    help="picture format of the answer",
    default="jpeg",
    enum=("jpeg", "png"),
    aliases={"jpg": "jpeg"},
)
FPS = Option(
    name="fps",
    type=float,
    help="video jobs: analyse at most this many frames per second (default: every frame, up to "
    "MAX_VIDEO_FRAMES); the annotated video keeps every frame, drawn with the latest detections",
    minimum=0.0,
    maximum=240.0,
    exclusive_minimum=True,
    step=0.1,
)
TRACK = Option(
    name="track",
    type=bool,
    help="video jobs: follow objects across frames (ByteTrack): a stable track_id per detection, "
    "drawn as ids and trails, and one summary per track",
    default=False,
)
PREDICT_OPTIONS: tuple[Option, ...] = (MIN_SCORE, MAX_DETECTIONS, IOU_THRESHOLD, VERSION, VERSION_LABEL)
VIDEO_OPTIONS: tuple[Option, ...] = (FPS, TRACK)
BY_NAME = {
    option.name: option
    for option in (*PREDICT_OPTIONS, STORE, PICTURE, FORMAT, OPERATING_SCORE, *VIDEO_OPTIONS)
}


def parse_flag(option: Option, text: str | None) -> bool:
    """A boolean option; anything but true/false/1/0/yes/no/on/off (or empty: the default) is a 400."""
    value = (text or "").strip().lower()
    if not value:
        return bool(option.default)
    if value in TRUE_VALUES:
        return True
    if value in FALSE_VALUES:
        return False
    raise BadRequest(f"{option.name} must be true or false, not {value[:40]!r}")


def parse_choice(option: Option, text: str | None) -> str | None:
    """One of `option.enum` (case-insensitive, aliases accepted), the default when empty; else a 400."""
    value = (text or "").strip().lower()
    if not value:
        return option.default
    found = option._accepted().get(value)
    if found is None:
        raise BadRequest(f"{option.name} must be {option.expected()}, not {value[:40]!r}")
    return found


@dataclass(frozen=True)
class PredictOptions:
    """Score threshold, how many detections to keep, NMS overlap, and which model version to ask for."""

    min_score: float = MIN_SCORE.default
    max_detections: int = MAX_DETECTIONS.default
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
        """Read every option of PREDICT_OPTIONS (query or form); empty = default.

        Raises BadRequest with a message naming the field and the accepted range.
        """
        parsed: dict[str, Any] = {}
        for option in PREDICT_OPTIONS:
            text = values.get(option.name)
            text = None if text is None else str(text).strip()
            if text:
                parsed[option.name] = option.parse(text)
        options = cls(**parsed)
        if options.version is not None and options.version_label is not None:
            raise BadRequest("give either version or version_label, not both")
        return options
