"""The result files of a predict job, one module per format, all fed the same records one at a time.

A record is the gateway's prediction JSON for one picture plus `"file"`, its path in the archive;
`labels` is the model's label map (class id -> name). Pictures that were skipped or failed are simply
not fed. `write_exports` is the whole job's end: it streams the records once through every writer.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from web.jobs.exporters.base import AtomicFile, Exporter, LabelMap, Omitted, Record, remove_temporaries
from web.jobs.exporters.coco import CocoExporter
from web.jobs.exporters.csv_table import CsvExporter
from web.jobs.exporters.jsonl import JsonLinesExporter
from web.jobs.exporters.label_studio import LabelStudioExporter
from web.jobs.exporters.voc import VocExporter
from web.jobs.exporters.yolo import YoloExporter

EXPORTERS: dict[str, type[Exporter]] = {
    cls.file_name: cls
    for cls in (JsonLinesExporter, CocoExporter, YoloExporter, VocExporter, LabelStudioExporter, CsvExporter)
}
RESULT_FILES: tuple[str, ...] = tuple(EXPORTERS)  # the predict job's result file names, in this order


class ExportSet:
    """Several writers fed together; used as a context manager, an exception leaves no file behind."""

    def __init__(
        self,
        folder: Path,
        labels: LabelMap,
        files: Sequence[str] = RESULT_FILES,
        options: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        """`options` are keyword arguments per file name, e.g. {"label_studio.json": {"image_root": ...}}."""
        options = options or {}
        unknown = [name for name in [*files, *options] if name not in EXPORTERS]
        if unknown:
            raise ValueError(f"unknown result files {unknown}: choose from {list(EXPORTERS)}")
        self.exporters: list[Exporter] = []
        try:
            for name in files:
                self.exporters.append(EXPORTERS[name](Path(folder), labels, **options.get(name, {})))
        except BaseException:
            self.abort()
            raise

    def add(self, record: Record) -> None:
        for exporter in self.exporters:
            exporter.add(record)

    def close(self) -> dict[str, Path]:
        """Finish every file; {file name: path}. A writer that fails aborts the ones not yet finished."""
        done: dict[str, Path] = {}
        try:
            for exporter in self.exporters:
                done[exporter.file_name] = exporter.close()
        except BaseException:
            self.abort()
            raise
        return done

    def abort(self) -> None:
        for exporter in self.exporters:
            exporter.abort()

    @property
    def omitted(self) -> list[Omitted]:
        return [item for exporter in self.exporters for item in exporter.omitted]

    def __enter__(self) -> ExportSet:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if kind is not None:
            self.abort()


def write_exports(
    records: Iterable[Record],
    folder: Path,
    labels: LabelMap,
    files: Sequence[str] = RESULT_FILES,
    options: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, Path]:
    """Write every result file from `records` (in result order); {file name: path of the file}."""
    with ExportSet(folder, labels, files, options) as exports:
        for record in records:
            exports.add(record)
        return exports.close()


__all__ = [
    "EXPORTERS", "RESULT_FILES", "AtomicFile", "CocoExporter", "CsvExporter", "ExportSet", "Exporter",
    "JsonLinesExporter", "LabelMap", "LabelStudioExporter", "Omitted", "Record", "VocExporter",
    "YoloExporter", "remove_temporaries", "write_exports",
]  # fmt: skip
