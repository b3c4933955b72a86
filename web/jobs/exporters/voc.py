"""`voc.zip`: one Pascal VOC XML per picture, the format LabelImg, CVAT and most older tools read.

Layout as in the VOC devkit: `Annotations/<path in the archive without suffix>.xml` and the list
of those ids in `ImageSets/Main/default.txt` (Datumaro, behind CVAT, finds the annotations through
it). Box corners are whole pixels as the format specifies (rounded, clamped into the picture).
VOC has no confidence field and keeps masks as PNG files, so scores and masks stay in the other
results.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path, PurePosixPath

from web.jobs.exporters.base import LabelMap, Record, ZipExporter, box_of, detections, image_size, stem_path


def _add(parent: ET.Element, tag: str, text: object) -> ET.Element:
    element = ET.SubElement(parent, tag)
    element.text = str(text)
    return element


def voc_xml(record: Record) -> str:
    """The VOC annotation of one record."""
    file = PurePosixPath(record["file"])
    width, height = image_size(record)
    root = ET.Element("annotation")
    _add(root, "folder", str(file.parent) if str(file.parent) != "." else "")
    _add(root, "filename", file.name)
    _add(root, "path", str(file))
    _add(ET.SubElement(root, "source"), "database", "Unknown")
    size = ET.SubElement(root, "size")
    _add(size, "width", width)
    _add(size, "height", height)
    _add(size, "depth", 3)
    _add(root, "segmented", 0)
    for det in detections(record):
        box = box_of(det, width, height)
        obj = ET.SubElement(root, "object")
        _add(obj, "name", det["label"])
        _add(obj, "pose", "Unspecified")
        _add(obj, "truncated", 0)
        _add(obj, "difficult", 0)
        bndbox = ET.SubElement(obj, "bndbox")
        corners = {"xmin": box.xmin, "ymin": box.ymin, "xmax": box.xmax, "ymax": box.ymax}
        for tag, value in corners.items():
            _add(bndbox, tag, round(value))
    ET.indent(root)
    return ET.tostring(root, encoding="unicode") + "\n"


class VocExporter(ZipExporter):
    file_name = "voc.zip"

    def __init__(self, folder: Path, labels: LabelMap) -> None:
        super().__init__(folder, labels)
        self._ids: list[str] = []

    def add(self, record: Record) -> None:
        stem = stem_path(record["file"])
        member = f"Annotations/{stem}.xml"
        if self._claim(member, record["file"]):
            self._write(member, voc_xml(record))
            self._ids.append(stem)

    def _write_last(self) -> None:
        self._write("ImageSets/Main/default.txt", "".join(f"{stem}\n" for stem in self._ids))
