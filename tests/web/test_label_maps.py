"""Label maps: TF OD API StringIntLabelMap text protos and labels.txt, with errors that point at the line."""

from __future__ import annotations

import pytest

from web.errors import LabelMapError
from web.reading.label_maps import LabelMap, parse_label_map

OD_API_STYLE = b"""
# The TF OD API's own files have comments, keypoints, frequency and more.
item {
  name: "/m/01g317"
  id: 1
  display_name: "person"
  keypoints { id: 0 label: "nose" }
  frequency: FREQUENT
}
item {
  name: "bicycle"
  id: 2
}
item { id: 90 name: "toothbrush" }
"""


def test_pbtxt_prefers_display_name_and_skips_unknown_fields() -> None:
    label_map = parse_label_map(OD_API_STYLE, "label_map.pbtxt")
    assert label_map.names == {1: "person", 2: "bicycle", 90: "toothbrush"}
    assert label_map.name_for(2) == "bicycle"
    assert label_map.name_for(7) == "class 7"
    assert label_map.to_dict() == {"1": "person", "2": "bicycle", "90": "toothbrush"}


def test_labels_txt_is_one_name_per_line_from_id_1() -> None:
    label_map = parse_label_map(b"circle\r\nsquare\n  triangle  \n\n", "labels.txt")
    assert label_map.names == {1: "circle", 2: "square", 3: "triangle"}


def test_format_is_decided_by_content_too() -> None:
    assert parse_label_map(b'item { id: 4 name: "kite" }', "labels.txt").names == {4: "kite"}
    assert parse_label_map(b"kite\nball\n", "upload").names == {1: "kite", 2: "ball"}
    assert parse_label_map('\ufeffitem { id: 1 name: "é" }'.encode(), "x.pbtxt").names == {1: "é"}


def test_empty_map_falls_back_to_class_ids() -> None:
    assert LabelMap().name_for(3) == "class 3"


@pytest.mark.parametrize(
    "data,filename,fragment",
    [
        (
            b'item {\n  id: 1\n  name: "a"\n',
            "broken.pbtxt",
            'label map broken.pbtxt: line 3, column 9: Expected "}"',
        ),
        (b'item {\n  id: one\n  name: "a"\n}\n', "bad.pbtxt", "line 2, column 7"),
        (b'item { id: 1 name: "a" }\nitem { id: 1 name: "b" }', "dup.pbtxt", "id 1 is used twice"),
        (b'item { name: "a" }', "noid.pbtxt", "item #1 has no id"),
        (b'item { id: -2 name: "a" }', "neg.pbtxt", "negative id"),
        (b"item { id: 3 }", "noname.pbtxt", "has no name"),
        (b"# only a comment\n", "empty.pbtxt", "has no `item"),
        (b"", "labels.txt", "is empty"),
        (b"cat\n\ndog\n", "labels.txt", "line 2 is blank"),
        (b"\xff\xfe\x00garbage", "labels.txt", "not UTF-8"),
    ],
)
def test_broken_label_maps_say_where(data: bytes, filename: str, fragment: str) -> None:
    with pytest.raises(LabelMapError) as caught:
        parse_label_map(data, filename)
    assert fragment in caught.value.message
    assert caught.value.status == 400


def test_oversized_label_map_is_refused() -> None:
    with pytest.raises(LabelMapError, match="larger than"):
        parse_label_map(b"x\n" * 600_000, "labels.txt")
