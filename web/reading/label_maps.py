"""Label maps: class id -> name, from a TF OD API ``label_map.pbtxt`` or a plain ``labels.txt``.

``.pbtxt`` files are parsed by protobuf's own ``text_format`` against the ``StringIntLabelMap``
schema in ``web/reading/label_map.proto`` (generated into ``web/serving/protos/label_map_pb2.py``),
so syntax errors carry line and column and unknown fields (keypoints, frequency, ...) are skipped.
After editing the schema, regenerate the module with:

    .venv/bin/python -m grpc_tools.protoc -Iweb/reading --python_out=web/serving/protos \
        web/reading/label_map.proto
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

from google.protobuf import text_format

from web.errors import LabelMapError
from web.serving.protos import label_map_pb2

MAX_LABEL_MAP_BYTES = 1024 * 1024
MAX_NESTING = 32  # StringIntLabelMap nests 3 deep (item { keypoints { ... } }); protobuf's parser recurses
PBTXT_SUFFIXES = (".pbtxt", ".pbtext", ".prototxt", ".textproto", ".pb.txt")
_PBTXT_START = re.compile(rb"^\s*(#[^\n]*\n\s*)*item\s*\{", re.DOTALL)


@dataclass(frozen=True)
class LabelMap:
    """Label map ids to display names; `source` says where it came from (a file name).

    Ids start at 1 in both formats (a labels.txt's line n is id n). Models whose classes start at 0
    (YOLO, KerasHub, classifiers) are looked up at class + 1: their adapter's `class_offset`.
    """

    names: dict[int, str] = field(default_factory=dict)
    source: str = ""

    def name_for(self, class_id: int) -> str:
        """The name for a label map id, or `class <id>` when the map does not have it."""
        return self.names.get(class_id, f"class {class_id}")

    def to_dict(self) -> dict[str, str]:
        return {str(k): v for k, v in sorted(self.names.items())}


def parse_label_map(data: bytes, filename: str) -> LabelMap:
    """Parse a label map by extension and content; raise LabelMapError saying what to fix."""
    name = Path(filename or "label map").name
    if not data.strip():
        raise LabelMapError(f"label map {name} is empty")
    if len(data) > MAX_LABEL_MAP_BYTES:
        raise LabelMapError(f"label map {name} is larger than {MAX_LABEL_MAP_BYTES // 1024} KiB")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise LabelMapError(f"label map {name} is not UTF-8 text (byte {exc.start} is invalid)") from None
    if name.lower().endswith(PBTXT_SUFFIXES) or _PBTXT_START.match(data):
        return _parse_pbtxt(text, name)
    return _parse_lines(text, name)


def load_label_map(path: Path) -> LabelMap:
    """Read and parse a label map stored on disk (beside a model)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise LabelMapError(f"cannot read label map {path}: {exc.strerror}") from None
    return parse_label_map(data, path.name)


def nesting_depth(text: str) -> int:
    """How deep `{ }` / `< >` blocks nest in a text proto, outside strings and comments."""
    depth = deepest = 0
    quote = None
    escaped = comment = False
    for char in text:
        if comment:
            comment = char != "\n"
        elif quote:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == quote:
                quote = None
        elif char in "\"'":
            quote = char
        elif char == "#":
            comment = True
        elif char in "{<":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "}>":
            depth = max(0, depth - 1)
    return deepest


def _parse_pbtxt(text: str, name: str) -> LabelMap:
    depth = nesting_depth(text)
    if depth > MAX_NESTING:
        raise LabelMapError(
            f"label map {name} nests blocks {depth} levels deep; a StringIntLabelMap needs 3 and at most "
            f"{MAX_NESTING} are read"
        )
    message = label_map_pb2.StringIntLabelMap()
    logger = logging.getLogger("google.protobuf.text_format")
    previous = logger.level
    logger.setLevel(logging.ERROR)  # unknown fields are expected (keypoints, frequency, ...)
    try:
        text_format.Parse(text, message, allow_unknown_field=True)
    except RecursionError:
        raise LabelMapError(f"label map {name} nests blocks too deeply to read") from None
    except text_format.ParseError as exc:
        detail = re.sub(r"^\d+:\d+ : ", "", str(exc))
        where = f"line {exc.GetLine()}, column {exc.GetColumn()}" if exc.GetLine() else "syntax"
        raise LabelMapError(f"label map {name}: {where}: {detail}") from None
    finally:
        logger.setLevel(previous)
    if not message.item:
        raise LabelMapError(f"label map {name} has no `item {{ id: ... name: ... }}` entries")
    names: dict[int, str] = {}
    for position, item in enumerate(message.item, start=1):
        if not item.HasField("id"):
            raise LabelMapError(f"label map {name}: item #{position} has no id")
        if item.id < 0:
            raise LabelMapError(f"label map {name}: item #{position} has a negative id {item.id}")
        label = item.display_name or item.name
        if not label:
            raise LabelMapError(f"label map {name}: item #{position} (id {item.id}) has no name")
        if item.id in names:
            raise LabelMapError(
                f"label map {name}: id {item.id} is used twice ({names[item.id]!r} and {label!r})"
            )
        names[item.id] = label
    return LabelMap(names=names, source=name)


def _parse_lines(text: str, name: str) -> LabelMap:
    lines = [line.strip() for line in text.splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    for number, line in enumerate(lines, start=1):
        if not line:
            raise LabelMapError(
                f"label map {name}: line {number} is blank; a labels.txt has one class name per line "
                "(line 1 is class id 1)"
            )
    return LabelMap(names={i: label for i, label in enumerate(lines, start=1)}, source=name)
