"""A Label Studio project's labeling config: which picture the tasks show, and which controls on it the
gateway can fill, with their label values; then the model's labels matched to those values.

The config is XML sent by whoever calls /predict, so it is parsed with the standard library's expat
with every DOCTYPE and entity declaration refused (no entity expansion, no external entities: what
defusedxml does, without the dependency), and bounded in size.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from xml.parsers import expat

from web.errors import BadRequest
from web.settings import label_pairs

MAX_CONFIG_BYTES = 1024 * 1024
# Control tag (lower case, as Label Studio compares them) -> the result type it stores.
CONTROL_TYPES = {
    "rectanglelabels": "rectanglelabels",
    "polygonlabels": "polygonlabels",
    "brushlabels": "brushlabels",
    "choices": "choices",
}
SUPPORTED = "RectangleLabels, PolygonLabels, BrushLabels (detectors) or Choices (classifiers)"


class LabelConfigError(BadRequest):
    """The labeling config cannot be used: not XML, no <Image>, no control the gateway can fill."""


@dataclass(frozen=True)
class LabelValue:
    """One <Label>/<Choice>: its `value` is what results carry; `alias` and `predicted_values` are
    other names a model's label may go by."""

    value: str
    alias: str | None = None
    predicted_values: tuple[str, ...] = ()

    def names(self) -> tuple[str, ...]:
        return tuple(n.casefold() for n in (self.value, self.alias, *self.predicted_values) if n)


@dataclass(frozen=True)
class Control:
    """A control tag on the picture: `name` and `to_name` are the results' from_name and to_name."""

    tag: str  # lower case: rectanglelabels, polygonlabels, brushlabels, choices
    name: str
    to_name: str
    labels: tuple[LabelValue, ...]

    @property
    def result_type(self) -> str:
        return CONTROL_TYPES[self.tag]


@dataclass(frozen=True)
class LabelConfig:
    """The picture (`image_name`, and the task data key its URL is under) and its controls."""

    image_name: str
    data_key: str
    controls: tuple[Control, ...]

    def of(self, tag: str) -> tuple[Control, ...]:
        return tuple(c for c in self.controls if c.tag == tag)

    @classmethod
    def parse(cls, text: str) -> LabelConfig:
        root = _parse_xml(text)
        images = {}
        for element in root.iter():
            if _tag(element) == "image" and element.get("name"):
                images[element.get("name")] = element.get("value", "")
        if not images:
            raise LabelConfigError('the labeling config has no <Image name="..." value="$image"/> tag')
        controls = []
        for element in root.iter():
            tag = _tag(element)
            if tag not in CONTROL_TYPES or element.get("toName") not in images:
                continue
            child = "choice" if tag == "choices" else "label"
            labels = tuple(_label_value(e) for e in element.iter() if _tag(e) == child and e.get("value"))
            controls.append(Control(tag, element.get("name", ""), element.get("toName", ""), labels))
        controls = [c for c in controls if c.name]
        if not controls:
            raise LabelConfigError(
                f"the labeling config has no control on its <Image> the gateway can fill: add {SUPPORTED}"
                " "
                'with toName="' + next(iter(images)) + '"'
            )
        image_name = controls[0].to_name
        controls = [c for c in controls if c.to_name == image_name]  # one picture per task
        value = images[image_name]
        if not value.startswith("$") or len(value) < 2:
            raise LabelConfigError(
                f'the <Image name="{image_name}"> tag needs value="$<key>", the task data key of its URL'
            )
        return cls(image_name, value[1:], tuple(controls))


def _tag(element: ET.Element) -> str:
    return str(element.tag).rpartition("}")[2].lower()


def _label_value(element: ET.Element) -> LabelValue:
    predicted = tuple(v.strip() for v in (element.get("predicted_values") or "").split(",") if v.strip())
    return LabelValue(element.get("value", ""), element.get("alias") or None, predicted)


def _refuse(*_args: object) -> None:
    raise LabelConfigError("the labeling config declares a DOCTYPE or entities, which are not accepted")


def _parse_xml(text: str) -> ET.Element:
    if not isinstance(text, str) or not text.strip():
        raise LabelConfigError(
            "label_config is missing: send the project's labeling config (XML) as label_config"
        )
    if len(text.encode("utf-8", "replace")) > MAX_CONFIG_BYTES:
        raise LabelConfigError(f"the labeling config is larger than {MAX_CONFIG_BYTES // 1024} KiB")
    builder = ET.TreeBuilder()
    parser = expat.ParserCreate()
    parser.StartElementHandler = builder.start
    parser.EndElementHandler = builder.end
    parser.CharacterDataHandler = builder.data
    parser.StartDoctypeDeclHandler = _refuse
    parser.EntityDeclHandler = _refuse
    parser.UnparsedEntityDeclHandler = _refuse
    parser.ExternalEntityRefHandler = _refuse
    try:
        parser.Parse(text, True)
        return builder.close()
    except (expat.ExpatError, AssertionError) as exc:
        raise LabelConfigError(f"the labeling config is not well-formed XML: {exc}") from None


@dataclass(frozen=True)
class LabelMatcher:
    """The model's labels to a control's values: first the mapping (`model label -> project label`, from
    LABEL_STUDIO_LABEL_MAP or the request's label_map), then the same name ignoring case, as a value,
    an alias or one of a label's predicted_values. A model label with no counterpart is dropped."""

    mapping: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, pairs: Iterable[tuple[str, str]]) -> LabelMatcher:
        return cls({model.casefold(): target for model, target in pairs})

    def match(self, model_label: str, control: Control) -> str | None:
        """The control's value for `model_label`, or None."""
        wanted = self.mapping.get(model_label.casefold())
        if wanted is not None:
            for label in control.labels:
                if wanted.casefold() in (label.value.casefold(), (label.alias or "").casefold()):
                    return label.value
        key = model_label.casefold()
        for label in control.labels:
            if key in label.names():
                return label.value
        return None


def parse_label_map_param(text: str | None) -> tuple[tuple[str, str], ...]:
    """`label_map=model_label:ls_label,...` from a query string, read as the setting is."""
    try:
        return label_pairs(text or "")
    except ValueError as error:
        raise BadRequest(f"label_map: {error}") from None
