"""TF Serving's JSON writer: rapidjson's ``PrettyWriter`` as ``util/json_tensor.cc`` drives it.

4-space indentation, arrays of a row on one line (``single_line``), rapidjson's string escapes
(control characters as ``\\u00XX``; '/' and non-ASCII as they are) and its number formats: floats as
``%g`` when that round-trips, else with 9 (17 for doubles) digits, whole numbers with ``.0``,
``NaN``/``Infinity``. ``debug_string`` is the cut-short form error messages quote a value in;
``make_json_from_error`` is the ``{"error": ...}`` body of every refused request.
"""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Any

import numpy as np

DEBUG_LIMIT = 256  # kMaxJsonDebugStringBytes


# rapidjson's string escapes (control characters as \u00XX in upper case; '/' and non-ASCII as is).
_ESCAPES = {i: f"\\u{i:04X}" for i in range(0x20)}
_ESCAPES.update({0x08: "\\b", 0x09: "\\t", 0x0A: "\\n", 0x0C: "\\f", 0x0D: "\\r", 0x22: '\\"', 0x5C: "\\\\"})


def quote(text: str) -> str:
    return '"' + text.translate(_ESCAPES) + '"'


def quote_bytes(data: bytes) -> str:
    # rapidjson copies the bytes as they are; surrogateescape carries invalid UTF-8 through to encode().
    return quote(data.decode("utf-8", "surrogateescape"))


def encode(text: str) -> bytes:
    """The response body: what was decoded with surrogateescape goes back as the original bytes."""
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a lone surrogate escaped in the request JSON, echoed in a message
        return text.encode("utf-8", "replace")


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


def float_tokens(array: np.ndarray) -> list[str]:
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
    return float_tokens(np.array([value], dtype=np.float64 if double else np.float32))[0]


def make_json_from_error(message: str) -> str:
    """``MakeJsonFromStatus``: ``{"error": "<message>"}``."""
    writer = PrettyWriter()
    writer.start_object()
    writer.key("error")
    writer.value(quote(message))
    writer.end_object()
    return writer.text()
