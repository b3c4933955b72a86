"""JSON <-> TF Serving protobufs for the REST API: TF Serving's ``util/json_tensor.cc``, rule for rule.

Requests: ``{"signature_name": ..., "instances": [...]}`` (row format: one entry per batch item, an
object per item when the signature has several inputs) or ``{"inputs": ...}`` (columnar: one tensor,
or an object of named tensors); ``{"b64": "..."}`` is a binary string. Each JSON value must be of
the input's dtype as rapidjson sees it (``2.0`` is not an int32, ``true`` is not a number), lists
must be dense, and every input of the signature must be present. Classify/Regress take
``{"examples": [{feature: value|list}], "context": {...}}``: ints become ``int64_list``, other
numbers ``float_list``, strings and b64 objects ``bytes_list``, booleans 0/1.

Responses are written as TF Serving's rapidjson ``PrettyWriter`` writes them (4-space indentation,
rows on one line): ``predictions`` (row format; a list of objects when there are several outputs)
or ``outputs`` (columnar; the bare tensor for a single output), ``results`` for Classify
(``[[label, score], ...]`` per example) and Regress; floats as ``%g`` when that round-trips, else
with 9 (17 for doubles) digits, whole numbers with ``.0``, ``NaN``/``Infinity``; string outputs
whose alias ends in ``_bytes`` as ``{"b64": ...}``. Error messages are upstream's.

Big numeric tensors take a fast path (one ``numpy.array`` call) only when it is certain to give what
the element-by-element rules give; anything else, errors included, goes through those rules.
"""

from __future__ import annotations

import base64
import binascii
import gc
import json
import math
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import grpc
import numpy as np
import tensorflow as tf
from tensorflow.core.example import example_pb2, feature_pb2
from tensorflow.core.framework import tensor_pb2, types_pb2
from tensorflow.core.protobuf import meta_graph_pb2
from tensorflow_serving.apis import classification_pb2, regression_pb2

from tf_server.errors import ServingError, invalid_argument
from tf_server.tensors import short_dtype_name

ROW, COLUMNAR = "row", "columnar"  # JsonPredictRequestFormat
DEBUG_LIMIT = 256  # kMaxJsonDebugStringBytes
BASE64_KEY = "b64"
BYTES_SUFFIX = "_bytes"

InputInfos = Callable[[str], Mapping[str, meta_graph_pb2.TensorInfo]]

_INT32 = (-(2**31), 2**31 - 1)
_INT64 = (-(2**63), 2**63 - 1)
_UINT32 = (0, 2**32 - 1)
_UINT64 = (0, 2**64 - 1)
# dtype -> (TensorProto field, accepted integer range or None for non-integers)
_FIELDS: dict[int, tuple[str, tuple[int, int] | None]] = {
    types_pb2.DT_FLOAT: ("float_val", None),
    types_pb2.DT_DOUBLE: ("double_val", None),
    types_pb2.DT_INT32: ("int_val", _INT32),
    types_pb2.DT_INT16: ("int_val", _INT32),
    types_pb2.DT_INT8: ("int_val", _INT32),
    types_pb2.DT_UINT8: ("int_val", _INT32),
    types_pb2.DT_STRING: ("string_val", None),
    types_pb2.DT_INT64: ("int64_val", _INT64),
    types_pb2.DT_BOOL: ("bool_val", None),
    types_pb2.DT_UINT32: ("uint32_val", _UINT32),
    types_pb2.DT_UINT64: ("uint64_val", _UINT64),
}
_NUMPY = {
    types_pb2.DT_FLOAT: np.float32,
    types_pb2.DT_DOUBLE: np.float64,
    types_pb2.DT_INT32: np.int32,
    types_pb2.DT_INT16: np.int16,
    types_pb2.DT_INT8: np.int8,
    types_pb2.DT_UINT8: np.uint8,
    types_pb2.DT_INT64: np.int64,
    types_pb2.DT_BOOL: np.bool_,
    types_pb2.DT_UINT32: np.uint32,
    types_pb2.DT_UINT64: np.uint64,
}
# Narrow ints travel as int32 and are cast by TensorFlow (static_cast: they wrap around).
_WRAP = {types_pb2.DT_INT16: np.int16, types_pb2.DT_INT8: np.int8, types_pb2.DT_UINT8: np.uint8}

# rapidjson's string escapes (control characters as \u00XX in upper case; '/' and non-ASCII as is).
_ESCAPES = {i: f"\\u{i:04X}" for i in range(0x20)}
_ESCAPES.update({0x08: "\\b", 0x09: "\\t", 0x0A: "\\n", 0x0C: "\\f", 0x0D: "\\r", 0x22: '\\"', 0x5C: "\\\\"})


def quote(text: str) -> str:
    return '"' + text.translate(_ESCAPES) + '"'


def _quote_bytes(data: bytes) -> str:
    # rapidjson copies the bytes as they are; surrogateescape carries invalid UTF-8 through to encode().
    return quote(data.decode("utf-8", "surrogateescape"))


def encode(text: str) -> bytes:
    """The response body: what was decoded with surrogateescape goes back as the original bytes."""
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a lone surrogate escaped in the request JSON, echoed in a message
        return text.encode("utf-8", "replace")


# ---------------------------------------------------------------------------------------- writing


class _Limit(Exception):
    """The debug string reached its size limit."""


class PrettyWriter:
    """rapidjson::PrettyWriter (4 spaces), with ``single_line`` = kFormatSingleLineArray."""

    def __init__(self, limit: int | None = None) -> None:
        self.parts: list[str] = []
        self.size = 0
        self.single_line = False
        self._levels: list[list] = []  # [in_array, value_count]
        self._limit = limit

    def _put(self, text: str) -> None:
        self.parts.append(text)
        self.size += len(text)

    def _check(self) -> None:
        if self._limit is not None and self.size >= self._limit:
            raise _Limit

    def _prefix(self) -> None:
        self._check()
        if not self._levels:
            return
        level = self._levels[-1]
        count = level[1]
        if level[0]:
            if count:
                self._put(", " if self.single_line else ",")
            if not self.single_line:
                self._put("\n" + "    " * len(self._levels))
        else:
            if count:
                self._put(",\n" if count % 2 == 0 else ": ")
            else:
                self._put("\n")
            if count % 2 == 0:
                self._put("    " * len(self._levels))
        level[1] = count + 1

    def value(self, token: str) -> None:
        self._prefix()
        self._put(token)

    def key(self, name: str) -> None:
        self.value(quote(name))

    def start_object(self) -> None:
        self._prefix()
        self._put("{")
        self._levels.append([False, 0])

    def end_object(self) -> None:
        self._check()
        if self._levels.pop()[1]:
            self._put("\n" + "    " * len(self._levels))
        self._put("}")

    def start_array(self) -> None:
        self._prefix()
        self._put("[")
        self._levels.append([True, 0])

    def end_array(self) -> None:
        self._check()
        if self._levels.pop()[1] and not self.single_line:
            self._put("\n" + "    " * len(self._levels))
        self._put("]")

    def array_of(self, tokens: list[str]) -> None:
        """A whole array of scalar tokens (what start_array, value... end_array write)."""
        self.start_array()
        if tokens:
            if self.single_line:
                self._put(", ".join(tokens))
            else:
                indent = "\n" + "    " * len(self._levels)
                self._put(indent + ("," + indent).join(tokens))
            self._levels[-1][1] = len(tokens)
        self.end_array()

    def text(self) -> str:
        return "".join(self.parts)


def _rapidjson_double(value: float) -> str:
    """rapidjson's Writer::Double (shortest digits, Prettify's layout); NaN/Inf stop the writer."""
    if not math.isfinite(value):
        raise _Limit
    if value == 0:
        return "-0.0" if math.copysign(1.0, value) < 0 else "0.0"
    sign = "-" if value < 0 else ""
    digits_tuple, exponent = Decimal(repr(abs(value))).normalize().as_tuple()[1:]
    digits = "".join(map(str, digits_tuple))
    length, k = len(digits), int(exponent)
    kk = length + k
    if 0 <= k and kk <= 21:
        text = digits + "0" * k + ".0"
    elif 0 < kk <= 21:
        text = digits[:kk] + "." + digits[kk:]
    elif -6 < kk <= 0:
        text = "0." + "0" * -kk + digits
    elif length == 1:
        text = f"{digits}e{kk - 1}"
    else:
        text = f"{digits[0]}.{digits[1:]}e{kk - 1}"
    return sign + text


def _emit(writer: PrettyWriter, value: Any) -> None:
    if isinstance(value, dict):
        writer.start_object()
        for key, item in value.items():
            writer.key(key)
            _emit(writer, item)
        writer.end_object()
    elif isinstance(value, list):
        writer.start_array()
        for item in value:
            _emit(writer, item)
        writer.end_array()
    elif value is None:
        writer.value("null")
    elif value is True or value is False:
        writer.value("true" if value else "false")
    elif isinstance(value, int):
        writer.value(str(value))
    elif isinstance(value, float):
        writer.value(_rapidjson_double(value))
    else:
        writer.value(quote(value))


def debug_string(value: Any) -> str:
    """``JsonValueToDebugString``: single-line arrays, cut after 256 bytes."""
    writer = PrettyWriter(limit=DEBUG_LIMIT)
    writer.single_line = True
    try:
        _emit(writer, value)
    except _Limit:
        pass
    return writer.text()


def _float_tokens(array: np.ndarray) -> list[str]:
    """``WriteDecimal`` for every value: %g if it round-trips at the array's precision, else
    max_digits10 digits; '.0' added to whole numbers; NaN, Infinity, -Infinity."""
    flat = array.ravel()
    values = flat.tolist()
    tokens = [f"{v:g}" for v in values]
    if not tokens:
        return tokens
    back = np.array(tokens, dtype=np.float64).astype(flat.dtype)
    finite = np.isfinite(flat)
    digits = 9 if flat.dtype == np.float32 else 17
    for i in np.flatnonzero((back != flat) & finite):
        tokens[i] = f"{values[i]:.{digits}g}"
    tokens = [t if ("." in t or "e" in t) else t + ".0" for t in tokens]
    for i in np.flatnonzero(~finite):
        v = values[i]
        tokens[i] = "NaN" if math.isnan(v) else ("-Infinity" if v < 0 else "Infinity")
    return tokens


def float_token(value: float, double: bool = False) -> str:
    return _float_tokens(np.array([value], dtype=np.float64 if double else np.float32))[0]


@dataclass
class _Tensor:
    """An output tensor ready for writing: dims, one JSON token per value, and whether the values
    are binary strings (base64 objects, which rapidjson lays out over several lines)."""

    dims: list[int]
    tokens: list[str]
    base64: bool = False


_INTEGER_TYPES = frozenset(
    {
        types_pb2.DT_INT32,
        types_pb2.DT_INT16,
        types_pb2.DT_INT8,
        types_pb2.DT_UINT8,
        types_pb2.DT_INT64,
        types_pb2.DT_UINT32,
        types_pb2.DT_UINT64,
    }
)


def _tokens(name: str, proto: tensor_pb2.TensorProto) -> _Tensor:
    """``AddSingleValueAndAdvance`` for every value of an output tensor."""
    dims = [dim.size for dim in proto.tensor_shape.dim]
    dtype = proto.dtype
    array = tf.make_ndarray(proto)
    if array.size == 0:
        return _Tensor(dims, [])
    values = array.ravel().tolist()
    if dtype in (types_pb2.DT_FLOAT, types_pb2.DT_DOUBLE):
        return _Tensor(dims, _float_tokens(array))
    if dtype in _INTEGER_TYPES:
        return _Tensor(dims, [str(v) for v in values])
    if dtype == types_pb2.DT_BOOL:
        return _Tensor(dims, ["true" if v else "false" for v in values])
    if dtype == types_pb2.DT_STRING:
        if name.endswith(BYTES_SUFFIX):
            return _Tensor(dims, [quote(base64.b64encode(v).decode("ascii")) for v in values], base64=True)
        return _Tensor(dims, [_quote_bytes(v) for v in values])
    raise invalid_argument(f"Failed to write JSON value for tensor type: {short_dtype_name(dtype)}")


def _write_token(writer: PrettyWriter, tensor: _Tensor, offset: int) -> None:
    if tensor.base64:  # { "b64": "..." }, broken over lines even inside single-line arrays
        writer.start_object()
        writer.key(BASE64_KEY)
        writer.value(tensor.tokens[offset])
        writer.end_object()
    else:
        writer.value(tensor.tokens[offset])


def _write_values(writer: PrettyWriter, tensor: _Tensor, dim: int, offset: int) -> int:
    """``AddTensorValues``: nested arrays from ``dim`` on; returns the next value's offset."""
    dims = tensor.dims
    if dim > len(dims) - 1:
        _write_token(writer, tensor, offset)
        return offset + 1
    size = dims[dim]
    if dim == len(dims) - 1:
        if tensor.base64:
            writer.start_array()
            for index in range(offset, offset + size):
                _write_token(writer, tensor, index)
            writer.end_array()
        else:
            writer.array_of(tensor.tokens[offset : offset + size])
        return offset + size
    writer.start_array()
    for _ in range(size):
        offset = _write_values(writer, tensor, dim + 1, offset)
    writer.end_array()
    return offset


def make_json_from_tensors(outputs: Mapping[str, tensor_pb2.TensorProto], request_format: str) -> str:
    """``MakeJsonFromTensors``: ``predictions`` (row) or ``outputs`` (columnar); aliases sorted."""
    if not outputs:
        raise invalid_argument("Cannot convert empty tensor map to JSON")
    names = sorted(outputs)
    writer = PrettyWriter()
    several = len(names) > 1
    if request_format == ROW:
        batch = -1
        for name in names:
            dims = outputs[name].tensor_shape.dim
            if not dims:
                raise invalid_argument(f"Tensor name: {name} has no shape information ")
            if batch >= 0 and batch != dims[0].size:
                raise invalid_argument(
                    f"Tensor name: {name} has inconsistent batch size: {dims[0].size} expecting: {batch}"
                )
            batch = dims[0].size
        tensors = {name: _tokens(name, outputs[name]) for name in names}
        offsets = dict.fromkeys(names, 0)
        writer.start_object()
        writer.key("predictions")
        writer.start_array()
        for _ in range(batch):
            if several:
                writer.start_object()
            writer.single_line = True
            for name in names:
                if several:
                    writer.key(name)
                offsets[name] = _write_values(writer, tensors[name], 1, offsets[name])
            writer.single_line = False
            if several:
                writer.end_object()
        writer.end_array()
        writer.end_object()
    elif request_format == COLUMNAR:
        writer.start_object()
        writer.key("outputs")
        if several:
            writer.start_object()
        for name in names:
            if several:
                writer.key(name)
            _write_values(writer, _tokens(name, outputs[name]), 0, 0)
        if several:
            writer.end_object()
        writer.end_object()
    else:
        raise invalid_argument("Invalid request format")
    return writer.text()


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
    writer.array_of(_float_tokens(np.array([r.value for r in result.regressions], dtype=np.float32)))
    writer.end_object()
    return writer.text()


def make_json_from_error(message: str) -> str:
    """``MakeJsonFromStatus``: ``{"error": "<message>"}``."""
    writer = PrettyWriter()
    writer.start_object()
    writer.key("error")
    writer.value(quote(message))
    writer.end_object()
    return writer.text()


# ---------------------------------------------------------------------------------------- reading

_PARSE_MESSAGES = (
    ("Expecting value", "Invalid value."),
    ("Expecting property name enclosed in double quotes", "Missing a name for object member."),
    ("Expecting ':' delimiter", "Missing a colon after a name of object member."),
    ("Unterminated string", "Missing a closing quotation mark in string."),
    ("Invalid control character", "Invalid encoding in string."),
    ("Invalid \\uXXXX escape", "Incorrect hex digit after \\u escape in string."),
    ("Invalid \\escape", "Invalid escape character in string."),
)


def _innermost_container(text: str, end: int) -> str:
    """'[' or '{': what is open at ``end`` (for rapidjson's 'Missing a comma' messages)."""
    stack: list[str] = []
    in_string = escaped = False
    for char in text[:end]:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            stack.append(char)
        elif char in "]}" and stack:
            stack.pop()
    return stack[-1] if stack else "["


def _first_wins(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """rapidjson's FindMember finds the first of duplicate keys."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        out.setdefault(key, value)
    return out


_DECODER = json.JSONDecoder(object_pairs_hook=_first_wins)
_TOO_BIG = "Number too big to be stored in double."
# A body that may hold a number past a double's range has, with every digit read as 0 and "E" as
# "e": a positive exponent of three digits or more, or 200 zeros (less, with a two-digit exponent,
# stays under 1e300). Only such bodies are decoded with the (slower) checking hooks; the test costs
# 40-80 ms for a 19 MB body of 640x480x3 floats, whose decode takes about 580 ms.
_DIGITS_AS_ZERO = bytes.maketrans(b"123456789E", b"000000000e")
_BIG_EXPONENT = re.compile(rb"e\+?000")  # a literal first byte: scanned fast
_LONG_DIGITS = b"0" * 200


def _may_be_too_big(body: bytes) -> bool:
    if len(body) < 200 and b"e" not in body and b"E" not in body:
        return False
    folded = body.translate(_DIGITS_AS_ZERO)
    return _LONG_DIGITS in folded or _BIG_EXPONENT.search(folded) is not None


_NUMBER_OR_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|-?[0-9]+(?:\.[0-9]*)?(?:[eE][+-]?[0-9]+)?')


class _NumberTooBig(ValueError):
    """A JSON number rapidjson refuses (``kParseErrorNumberTooBig``)."""


def _checked_int(text: str) -> int | float:
    """rapidjson keeps integers of (u)int64 range, reads bigger ones as doubles, and refuses those
    past a double's range. Python keeps the big ones exact (``_feature`` reads them as doubles)."""
    if len(text) - text.startswith("-") > 309:
        raise _NumberTooBig(text)  # also keeps int() from its 4300-digit ValueError
    value = int(text)
    try:
        float(value)
    except OverflowError:
        raise _NumberTooBig(text) from None
    return value


def _checked_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise _NumberTooBig(text)
    return value


_CHECKING_DECODER = json.JSONDecoder(
    object_pairs_hook=_first_wins, parse_int=_checked_int, parse_float=_checked_float
)


def _too_big_offset(text: str) -> int:
    """The offset (in UTF-8 bytes) of the first number outside strings that is too big."""
    for match in _NUMBER_OR_STRING.finditer(text):
        token = match.group()
        if token.startswith('"'):
            continue
        try:
            if "." in token or "e" in token or "E" in token:
                _checked_float(token)
            else:
                _checked_int(token)
        except _NumberTooBig:
            return len(text[: match.start()].encode("utf-8", "surrogateescape"))
    return 0


_BIG_BODY = 64 * 1024
MAX_COLLECTION_PAUSE_S = 0.25


class _CollectionPause:
    """Parsing a big body (an image as nested lists) allocates a list per row, and the garbage
    collections that triggers cost about as much as the parse itself, even after the server's
    ``gc.freeze()`` (a 640x480x3 image as integers: 124 ms paused, 233 ms not; as floats: 306 and
    392 ms). The collector is
    paused while such bodies are parsed, counted across threads, and strictly bounded: while
    overlapping parses keep it paused, whichever parse starts or ends more than
    ``MAX_COLLECTION_PAUSE_S`` after the pause (or its last collection) began runs a full
    collection, so garbage is collected at least that often between parses."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pauses = 0
        self._was_enabled = False
        self._since = 0.0

    def _bound(self) -> None:
        if time.monotonic() - self._since > MAX_COLLECTION_PAUSE_S:
            gc.collect()
            self._since = time.monotonic()

    @contextmanager
    def __call__(self) -> Iterator[None]:
        with self._lock:
            if self._pauses == 0:
                self._was_enabled = gc.isenabled()
                self._since = time.monotonic()
                gc.disable()
            elif self._was_enabled:
                self._bound()
            self._pauses += 1
        try:
            yield
        finally:
            with self._lock:
                self._pauses -= 1
                if self._was_enabled:
                    if self._pauses == 0:
                        gc.enable()
                    else:
                        self._bound()


_paused_collection = _CollectionPause()


def parse_json(body: bytes) -> dict[str, Any]:
    """``ParseJson``: a JSON object (anything after it is ignored, as rapidjson's
    kParseStopWhenDoneFlag does), or INVALID_ARGUMENT with rapidjson's message."""
    if not body:
        raise invalid_argument("JSON Parse error: The document is empty")
    text = body.decode("utf-8", "surrogateescape")
    if text.startswith("\ufeff"):
        text = text[1:]
    start = len(text) - len(text.lstrip(" \t\n\r"))
    if start == len(text):
        raise invalid_argument(f"JSON Parse error: The document is empty. at offset: {len(body)}")
    decoder = _CHECKING_DECODER if _may_be_too_big(body) else _DECODER
    try:
        if len(body) > _BIG_BODY:
            with _paused_collection():
                document, _ = decoder.raw_decode(text, start)
        else:
            document, _ = decoder.raw_decode(text, start)
    except _NumberTooBig:
        raise invalid_argument(f"JSON Parse error: {_TOO_BIG} at offset: {_too_big_offset(text)}") from None
    except json.JSONDecodeError as error:
        message = "Invalid value."
        if error.msg.startswith("Expecting ',' delimiter"):
            if _innermost_container(text, error.pos) == "{":
                message = "Missing a comma or '}' after an object member."
            else:
                message = "Missing a comma or ']' after an array element."
        else:
            for prefix, rapidjson_message in _PARSE_MESSAGES:
                if error.msg.startswith(prefix):
                    message = rapidjson_message
                    break
        offset = len(text[: error.pos].encode("utf-8", "surrogateescape"))
        raise invalid_argument(f"JSON Parse error: {message} at offset: {offset}") from None
    except RecursionError:
        raise invalid_argument("JSON Parse error: Invalid value. at offset: 0") from None
    if not isinstance(document, dict):
        raise invalid_argument(f"JSON Value: {debug_string(document)} Is not object")
    return document


def _format_error(document: Any, *parts: str) -> ServingError:
    return invalid_argument(f"JSON Value: {debug_string(document)} " + "".join(parts))


def fill_signature(document: dict[str, Any], request: Any) -> None:
    """The optional ``signature_name``."""
    if "signature_name" in document:
        name = document["signature_name"]
        if not isinstance(name, str):
            raise _format_error(
                document, "not formatted correctly. 'signature_name' key must be a string value."
            )
        request.model_spec.signature_name = name


def _json_type(value: Any) -> str:
    if value is None:
        return "Null"
    if value is True:
        return "True"
    if value is False:
        return "False"
    if isinstance(value, dict):
        return "Object"
    if isinstance(value, list):
        return "Array"
    if isinstance(value, str):
        return "String"
    return "Number"


def _type_error(value: Any, dtype: int) -> ServingError:
    return invalid_argument(
        f"JSON Value: {debug_string(value)} Type: {_json_type(value)} is not of expected type: "
        f"{short_dtype_name(dtype)}"
    )


def _is_base64_object(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get(BASE64_KEY), str)


def _to_bytes(text: str) -> bytes:
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass")


def _decode_base64(value: Any) -> bytes:
    """``JsonDecodeBase64Object`` (padding optional, as absl::Base64Unescape)."""
    if not _is_base64_object(value):
        raise invalid_argument(f"JSON Value: {debug_string(value)} not formatted correctly for base64 data")
    text = value[BASE64_KEY]
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise invalid_argument("Unable to base64 decode") from None


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _scalar(value: Any, dtype: int) -> Any:
    """``AddValueToTensor``: the value for the dtype's typed field, or the error."""
    spec = _FIELDS.get(dtype)
    if spec is None:
        raise ServingError(
            grpc.StatusCode.UNIMPLEMENTED,
            f"Conversion of JSON Value: {debug_string(value)} to type: {short_dtype_name(dtype)}",
        )
    bounds = spec[1]
    if dtype in (types_pb2.DT_FLOAT, types_pb2.DT_DOUBLE):
        if not _is_number(value):
            raise _type_error(value, dtype)
        try:
            return float(value)
        except OverflowError:  # parse_json refuses such numbers already
            raise invalid_argument(f"JSON Parse error: {_TOO_BIG}") from None
    if dtype == types_pb2.DT_STRING:
        if not isinstance(value, str):
            raise _type_error(value, dtype)
        return _to_bytes(value)
    if dtype == types_pb2.DT_BOOL:
        if not isinstance(value, bool):
            raise _type_error(value, dtype)
        return value
    assert bounds is not None
    if not (isinstance(value, int) and not isinstance(value, bool) and bounds[0] <= value <= bounds[1]):
        raise _type_error(value, dtype)
    wrap = _WRAP.get(dtype)
    return int(np.array(value, dtype=np.int64).astype(wrap)) if wrap is not None else value


def _dense_shape(value: Any) -> list[int]:
    """``GetDenseTensorShape``: sizes along the first elements."""
    dims: list[int] = []
    while isinstance(value, list):
        dims.append(len(value))
        if not value:
            break
        value = value[0]
    return dims


def _fill_values(value: Any, level: int, dtype: int, dims: list[int], out: list[Any]) -> None:
    """``FillTensorProto``: append the values of a dense nested list (checked against ``dims``)."""
    rank = len(dims)
    if not isinstance(value, list):
        if level != rank:
            raise invalid_argument(
                f"JSON Value: {debug_string(value)} found at incorrect level: {level + 1} in the JSON DOM. "
                f"Expected at level: {rank}"
            )
        if isinstance(value, dict):
            if dtype != types_pb2.DT_STRING:
                raise _type_error(value, dtype)
            out.append(_decode_base64(value))
        else:
            out.append(_scalar(value, dtype))
        return
    if level >= rank:
        raise invalid_argument(f"Encountered list at unexpected level: {level} expected < {rank}")
    if len(value) != dims[level]:
        raise invalid_argument(
            f"Encountered list at unexpected size: {len(value)} at level: {level} "
            f"expected size: {dims[level]}"
        )
    for item in value:
        _fill_values(item, level + 1, dtype, dims, out)


def _fast_array(value: Any, dtype: int, no_bools: bool) -> np.ndarray | None:
    """The tensor in one numpy call when the element rules would surely accept every value the
    same way; None sends the caller to those rules. ``no_bools``: the body has no true/false
    (numpy would quietly turn them into numbers)."""
    target = _NUMPY.get(dtype)
    if target is None:
        return None
    try:
        array = np.array(value)
    except (ValueError, TypeError, OverflowError):
        return None
    kind = array.dtype.kind
    if dtype == types_pb2.DT_BOOL:
        return array if kind == "b" and array.size else None
    if not no_bools or not array.size:
        return None
    if dtype in (types_pb2.DT_FLOAT, types_pb2.DT_DOUBLE):
        # float32 via double, as rapidjson's GetFloat() rounds
        if kind not in "iuf":
            return None
        with np.errstate(over="ignore"):  # beyond float32: +-inf, as the C++ cast gives
            return array.astype(np.float64).astype(target)
    low, high = _FIELDS[dtype][1]  # type: ignore[misc]
    if kind not in "iu" or array.min() < low or array.max() > high:
        return None
    return array.astype(target)  # narrow ints wrap, as TensorFlow's cast from int32 does


def _proto_from_array(array: np.ndarray, dtype: int) -> tensor_pb2.TensorProto:
    proto = tensor_pb2.TensorProto(dtype=dtype, tensor_content=np.ascontiguousarray(array).tobytes())
    for size in array.shape:
        proto.tensor_shape.dim.add(size=size)
    return proto


def _proto_from_values(dtype: int, dims: list[int], values: list[Any]) -> tensor_pb2.TensorProto:
    proto = tensor_pb2.TensorProto(dtype=dtype)
    for size in dims:
        proto.tensor_shape.dim.add(size=size)
    getattr(proto, _FIELDS[dtype][0]).extend(values)
    return proto


def _status_text(error: ServingError) -> str:
    return f"{error.code.name}: {error.message}"


def _shape_text(dims: list[int]) -> str:
    return "[" + ",".join(str(d) for d in dims) + "]"


def _instances_by_rules(
    instances: list[Any], infos: Mapping[str, meta_graph_pb2.TensorInfo]
) -> dict[str, tensor_pb2.TensorProto]:
    """``FillTensorMapFromInstancesList``, value by value."""
    objects = isinstance(instances[0], dict) and not _is_base64_object(instances[0])
    input_names = sorted(infos)
    values: dict[str, list[Any]] = {}
    shapes: dict[str, list[int]] = {}
    sizes: dict[str, int] = {}

    def add_item(item: Any, name: str) -> None:  # AddInstanceItem
        if name not in infos:
            raise invalid_argument(f"JSON object: does not have named input: {name}")
        dims = _dense_shape(item)
        out = values.setdefault(name, [])
        before = len(out)
        _fill_values(item, 0, infos[name].dtype, dims, out)
        size = len(out) - before
        if name not in sizes:
            sizes[name], shapes[name] = size, dims
        elif sizes[name] != size:
            raise invalid_argument(f"Expecting tensor size: {sizes[name]} but got: {size}")
        elif shapes[name] != dims:
            raise invalid_argument(
                f"Expecting shape {_shape_text(shapes[name])} but got: {_shape_text(dims)}"
            )

    for index, element in enumerate(instances):
        element_is_object = isinstance(element, dict) and not _is_base64_object(element)
        if objects:
            if not element_is_object:
                raise invalid_argument(f"Expecting object but got list at item {index} of input list")
            for name, item in element.items():
                try:
                    add_item(item, name)
                except ServingError as error:
                    raise invalid_argument(
                        f"Failed to process element: {index} key: {name} of 'instances' list. "
                        f"Error: {_status_text(error)}"
                    ) from None
            if set(element) != set(input_names):
                raise invalid_argument(
                    f"Failed to process element: {index} of 'instances' list. JSON object: "
                    f"{debug_string(element)} keys must be equal to: {','.join(input_names)}"
                )
        else:
            if element_is_object:
                raise invalid_argument(f"Expecting value/list but got object at item {index} of input list")
            name = next(iter(infos))
            try:
                add_item(element, name)
            except ServingError as error:
                raise invalid_argument(
                    f"Failed to process element: {index} of 'instances' list. Error: {_status_text(error)}"
                ) from None
    return {
        name: _proto_from_values(infos[name].dtype, [len(instances), *shapes[name]], values[name])
        for name in values
    }


def _instances(
    instances: list[Any], infos: Mapping[str, meta_graph_pb2.TensorInfo], no_bools: bool
) -> dict[str, tensor_pb2.TensorProto]:
    if not isinstance(instances[0], dict) and len(infos) > 1:
        raise invalid_argument(
            "instances is a plain list, but expecting list of objects as multiple input tensors required "
            "as per tensorinfo_map"
        )
    names = set(infos)
    fast: dict[str, tensor_pb2.TensorProto] = {}
    if isinstance(instances[0], dict) and not _is_base64_object(instances[0]):
        if all(isinstance(e, dict) and set(e) == names for e in instances):
            for name in names:
                array = _fast_array([e[name] for e in instances], infos[name].dtype, no_bools)
                if array is None:
                    break
                fast[name] = _proto_from_array(array, infos[name].dtype)
            else:
                return fast
    else:
        name = next(iter(infos))
        array = _fast_array(instances, infos[name].dtype, no_bools)
        if array is not None and array.ndim >= 1:
            return {name: _proto_from_array(array, infos[name].dtype)}
    return _instances_by_rules(instances, infos)


def _columnar_tensor(value: Any, dtype: int, no_bools: bool) -> tensor_pb2.TensorProto:
    array = _fast_array(value, dtype, no_bools)
    if array is not None:
        return _proto_from_array(array, dtype)
    dims = _dense_shape(value)
    out: list[Any] = []
    _fill_values(value, 0, dtype, dims, out)
    return _proto_from_values(dtype, dims, out)


def _columnar(
    value: Any, infos: Mapping[str, meta_graph_pb2.TensorInfo], no_bools: bool
) -> dict[str, tensor_pb2.TensorProto]:
    """``FillTensorMapFromInputsMap``: one tensor, or an object with every input (others ignored)."""
    if not isinstance(value, dict) or _is_base64_object(value):
        if len(infos) > 1:
            raise invalid_argument(
                "inputs is a plain value/list, but expecting an object as multiple input tensors required "
                "as per tensorinfo_map"
            )
        name = next(iter(infos))
        return {name: _columnar_tensor(value, infos[name].dtype, no_bools)}
    tensors = {}
    for name, info in infos.items():
        if name not in value:
            raise invalid_argument(f"Missing named input: {name} in 'inputs' object.")
        tensors[name] = _columnar_tensor(value[name], info.dtype, no_bools)
    return tensors


def fill_predict_request(body: bytes, input_infos: InputInfos, request: Any) -> str:
    """``FillPredictRequestFromJson``: fill ``request`` (model_spec name/version already set);
    return ROW or COLUMNAR. ``input_infos(signature_name)`` gives the signature's inputs."""
    document = parse_json(body)
    fill_signature(document, request)
    signature_name = request.model_spec.signature_name
    infos = input_infos(signature_name)
    if not infos:
        raise invalid_argument(f"Failed to get input map for signature: {signature_name or 'DEFAULT'}")
    no_bools = b"true" not in body and b"false" not in body
    if "instances" in document:
        if "inputs" in document:
            raise _format_error(
                document,
                "Not formatted correctly expecting only one of 'inputs' or 'instances' keys to exist ",
            )
        instances = document["instances"]
        if not isinstance(instances, list):
            raise _format_error(document, "Expecting 'instances' to be an list/array")
        if not instances:
            raise _format_error(document, "No values in 'instances' array")
        tensors, request_format = _instances(instances, infos, no_bools), ROW
    elif "inputs" in document:
        tensors, request_format = _columnar(document["inputs"], infos, no_bools), COLUMNAR
    else:
        raise invalid_argument("Missing 'inputs' or 'instances' key")
    for name, proto in tensors.items():
        request.inputs[name].CopyFrom(proto)
    return request_format


def _as_double(value: float) -> float:
    try:
        return float(value)
    except OverflowError:  # parse_json refuses such numbers already
        raise invalid_argument(f"JSON Parse error: {_TOO_BIG}") from None


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
            or (isinstance(value, dict) and not _is_base64_object(value))
        ):
            raise invalid_argument(
                f"Feature: {name} has element with unexpected JSON type: {_json_type(value)}"
            )
        if isinstance(value, bool):
            wanted, item = "int64", int(value)
        elif isinstance(value, dict):
            wanted, item = "bytes", None
        elif isinstance(value, str):
            wanted, item = "bytes", _to_bytes(value)
        elif isinstance(value, float) or not _INT64[0] <= value <= _UINT64[1]:
            wanted, item = "float", _as_double(value)  # rapidjson reads too big integers as doubles
        else:
            wanted, item = "int64", value
        if kind is not None and kind != wanted:
            raise _feature_kind_error(name, kind)
        if wanted == "bytes" and item is None:
            item = _decode_base64(value)
        if wanted == "int64" and item > _INT64[1]:
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
        raise invalid_argument(f"Example must be JSON object but got JSON {_json_type(value)}")
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
        raise _format_error(document, "When method is classify, key 'examples' is expected and was not found")
    examples = document["examples"]
    if not isinstance(examples, list):
        raise _format_error(document, "Expecting 'examples' value to be an list/array")
    if not examples:
        raise _format_error(document, "'examples' value is an empty array")
    target = (
        request.input.example_list_with_context.examples
        if has_context
        else request.input.example_list.examples
    )
    for value in examples:
        _fill_example(value, target.add())
