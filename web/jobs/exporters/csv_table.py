"""`predictions.csv`: one row per detection, for spreadsheets and pandas.

A picture with no detection still gets one row (its file and size, the detection columns empty), so
the table lists every picture that was looked at and "nothing found" differs from "not processed".
A classifier's record gives one row per class it answered (label, class_id, score; no box).
"""

from __future__ import annotations

import csv
from pathlib import Path

from web.jobs.exporters.base import AtomicFile, Exporter, LabelMap, Record, image_size

COLUMNS = (
    "file", "label", "class_id", "score", "xmin", "ymin", "xmax", "ymax", "image_width", "image_height",
)  # fmt: skip


class CsvExporter(Exporter):
    """Boxes in pixels of the picture as the gateway answered them (not clamped, not rounded)."""

    file_name = "predictions.csv"

    def __init__(self, folder: Path, labels: LabelMap) -> None:
        super().__init__(folder, labels)
        self._file = AtomicFile(self.folder / self.file_name)
        self._writer = csv.writer(self._file.stream)
        self._writer.writerow(COLUMNS)

    def add(self, record: Record) -> None:
        width, height = image_size(record)
        file = record["file"]
        rows = []
        for det in record.get("detections") or ():
            box = det["box"]
            rows.append(
                [file, det["label"], det["class_id"], det["score"],
                 box["xmin"], box["ymin"], box["xmax"], box["ymax"], width, height]
            )  # fmt: skip
        for cls in record.get("classes") or ():
            rows.append([file, cls["label"], cls["class_id"], cls["score"], "", "", "", "", width, height])
        self._writer.writerows(rows or [[file, "", "", "", "", "", "", "", width, height]])

    def _finish(self) -> Path:
        return self._file.commit()

    def _discard(self) -> None:
        self._file.abort()
