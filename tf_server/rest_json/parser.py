"""TF Serving's JSON reader: ``ParseJson`` with rapidjson's messages, and the value rules that
Predict, Classify and Regress bodies share (``{"b64": ...}`` objects, ``signature_name``).

As rapidjson: the first of duplicate keys wins, anything after the document is ignored, numbers past
a double's range are refused (checked only in bodies that may hold one: the check is costly), and
error offsets are in UTF-8 bytes. Invalid UTF-8 travels through as surrogate escapes, so strings
keep their bytes. Big bodies are parsed with the garbage collector paused, within a bound
(``MAX_COLLECTION_PAUSE_S``).
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
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from tf_server.errors import ServingError, invalid_argument
from tf_server.rest_json.writer import debug_string

BASE64_KEY = "b64"

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
TOO_BIG = "Number too big to be stored in double."
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
        raise invalid_argument(f"JSON Parse error: {TOO_BIG} at offset: {_too_big_offset(text)}") from None
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


def format_error(document: Any, *parts: str) -> ServingError:
    return invalid_argument(f"JSON Value: {debug_string(document)} " + "".join(parts))


def fill_signature(document: dict[str, Any], request: Any) -> None:
    """The optional ``signature_name``."""
    if "signature_name" in document:
        name = document["signature_name"]
        if not isinstance(name, str):
            raise format_error(
                document, "not formatted correctly. 'signature_name' key must be a string value."
            )
        request.model_spec.signature_name = name


def json_type(value: Any) -> str:
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


def is_base64_object(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get(BASE64_KEY), str)


def to_bytes(text: str) -> bytes:
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass")


def decode_base64(value: Any) -> bytes:
    """``JsonDecodeBase64Object`` (padding optional, as absl::Base64Unescape)."""
    if not is_base64_object(value):
        raise invalid_argument(f"JSON Value: {debug_string(value)} not formatted correctly for base64 data")
    text = value[BASE64_KEY]
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise invalid_argument("Unable to base64 decode") from None
