"""PredictOptions: one validation for the API and the HTML form, with messages naming the field."""

from __future__ import annotations

import pytest

from web.errors import BadRequest
from web.options import PredictOptions


def test_defaults_and_empty_fields() -> None:
    assert PredictOptions.from_mapping({}) == PredictOptions(0.5, 100, None, None)
    blank = {"min_score": "", "max_detections": " ", "version": "", "version_label": ""}
    assert PredictOptions.from_mapping(blank) == PredictOptions()


def test_values_are_parsed() -> None:
    options = PredictOptions.from_mapping({"min_score": "0", "max_detections": "1000", "version": "3"})
    assert options == PredictOptions(min_score=0.0, max_detections=1000, version=3)
    assert PredictOptions.from_mapping({"version_label": "stable"}).version_label == "stable"


@pytest.mark.parametrize(
    "values,fragment",
    [
        ({"min_score": "1.5"}, "min_score must be a number between 0 and 1"),
        ({"min_score": "-0.1"}, "min_score"),
        ({"min_score": "nan"}, "min_score"),
        ({"min_score": "high"}, "min_score"),
        ({"max_detections": "0"}, "max_detections must be an integer from 1 to 1000"),
        ({"max_detections": "1001"}, "max_detections"),
        ({"max_detections": "2.5"}, "max_detections"),
        ({"version": "0"}, "version must be a positive integer"),
        ({"version": "latest"}, "version must be a positive integer"),
        ({"version": "2", "version_label": "stable"}, "either version or version_label"),
    ],
)
def test_bad_values_say_what_to_fix(values: dict[str, str], fragment: str) -> None:
    with pytest.raises(BadRequest, match=fragment) as caught:
        PredictOptions.from_mapping(values)
    assert caught.value.status == 400
