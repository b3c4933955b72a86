"""Classify's and Regress's JSON (``util/json_tensor.cc``): ``tf.Example`` request bodies, and
the results.

Requests: ``{"examples": [{feature: value|list}], "context": {...}}``: ints become ``int64_list``,
other numbers ``float_list``, strings and b64 objects ``bytes_list``, booleans 0/1. Answers:
``{"results": [[[label, score], ...], ...]}`` per example for Classify, ``{"results": [value, ...]}``
for Regress.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from tensorflow.core.example import example_pb2, feature_pb2
from tensorflow_serving.apis import classification_pb2, regression_pb2

from tf_server.dtypes import INT64_RANGE, UINT64_RANGE
from tf_server.errors import ServingError, invalid_argument
from tf_server.rest_json.parser import (
    TOO_BIG,
    decode_base64,
    fill_signature,
    format_error,
    is_base64_object,
    json_type,
    parse_json,
    to_bytes,
)
from tf_server.rest_json.writer import PrettyWriter, float_token, float_tokens, quote


def make_json_from_classification(result: classification_pb2.ClassificationResult) -> str:
    """``MakeJsonFromClassificationResult``: ``{"results": [[[label, score], ...], ...]}``."""
    if not result.classifications:
        raise invalid_argument("Cannot convert empty ClassificationResults to JSON")
    writer = PrettyWriter()
    writer.start_object()
    writer.key("results")
    writer.start_array()
    for classifications in result.classifications:
        writer.single_line = True
        writer.start_array()
        for item in classifications.classes:
            writer.array_of([quote(item.label), float_token(item.score)])
        writer.end_array()
        writer.single_line = False
    writer.end_array()
    writer.end_object()
    return writer.text()


def make_json_from_regression(result: regression_pb2.RegressionResult) -> str:
    """``MakeJsonFromRegressionResult``: ``{"results": [value, ...]}``."""
    if not result.regressions:
        raise invalid_argument("Cannot convert empty RegressionResults to JSON")
    writer = PrettyWriter()
    writer.start_object()
    writer.key("results")
    writer.single_line = True
    writer.array_of(float_tokens(np.array([r.value for r in result.regressions], dtype=np.float32)))
    writer.end_object()
    return writer.text()


def _as_double(value: float) -> float:
    try:
        return float(value)
    except OverflowError:  # parse_json refuses such numbers already
        raise invalid_argument(f"JSON Parse error: {TOO_BIG}") from None


def _feature_kind_error(name: str, kind: str | None) -> ServingError:
    return invalid_argument(f"Unexpected element type in feature: {name} expecting type: {kind or 'UNKNOWN'}")


def _feature(name: str, content: Any) -> feature_pb2.Feature:
    """A feature from a JSON value or list (``AddValueToFeature`` for each element)."""
    kind: str | None = None
    values: list[Any] = []
    for value in content if isinstance(content, list) else [content]:
        if (
            value is None
            or isinstance(value, list)
            or (isinstance(value, dict) and not is_base64_object(value))
        ):
            raise invalid_argument(
                f"Feature: {name} has element with unexpected JSON type: {json_type(value)}"
            )
        if isinstance(value, bool):
            wanted, item = "int64", int(value)
        elif isinstance(value, dict):
            wanted, item = "bytes", None
        elif isinstance(value, str):
            wanted, item = "bytes", to_bytes(value)
        elif isinstance(value, float) or not INT64_RANGE[0] <= value <= UINT64_RANGE[1]:
            wanted, item = "float", _as_double(value)  # rapidjson reads too big integers as doubles
        else:
            wanted, item = "int64", value
        if kind is not None and kind != wanted:
            raise _feature_kind_error(name, kind)
        if wanted == "bytes" and item is None:
            item = decode_base64(value)
        if wanted == "int64" and item > INT64_RANGE[1]:
            raise invalid_argument(f"Feature: {name} has uint64_t element. Only int64_t is supported.")
        kind = wanted
        values.append(item)
    feature = feature_pb2.Feature()
    if kind == "int64":
        feature.int64_list.value.extend(values)
    elif kind == "float":
        feature.float_list.value.extend(values)
    elif kind == "bytes":
        feature.bytes_list.value.extend(values)
    return feature


def _fill_example(value: Any, example: example_pb2.Example) -> None:
    """``MakeExampleFromJsonObject``."""
    if not isinstance(value, dict):
        raise invalid_argument(f"Example must be JSON object but got JSON {json_type(value)}")
    for name, content in value.items():
        example.features.feature[name].CopyFrom(_feature(name, content))


def fill_examples_request(body: bytes, request: Any) -> None:
    """``FillClassificationRequestFromJson`` / ``FillRegressionRequestFromJson``."""
    document = parse_json(body)
    fill_signature(document, request)
    has_context = "context" in document
    if has_context:
        _fill_example(document["context"], request.input.example_list_with_context.context)
    if "examples" not in document:
        raise format_error(document, "When method is classify, key 'examples' is expected and was not found")
    examples = document["examples"]
    if not isinstance(examples, list):
        raise format_error(document, "Expecting 'examples' value to be an list/array")
    if not examples:
        raise format_error(document, "'examples' value is an empty array")
    target = (
        request.input.example_list_with_context.examples
        if has_context
        else request.input.example_list.examples
    )
    for value in examples:
        _fill_example(value, target.add())
