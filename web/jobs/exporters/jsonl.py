"""`predictions.jsonl`: the gateway's own prediction JSON, one picture per line, with its path in the zip."""

from __future__ import annotations

import json
from pathlib import Path

from web.jobs.exporters.base import AtomicFile, Exporter, LabelMap, Record


class JsonLinesExporter(Exporter):
    """Each record exactly as the gateway answered it for /predict (plus "file"): nothing is lost."""

    file_name = "predictions.jsonl"

    def __init__(self, folder: Path, labels: LabelMap) -> None:
        super().__init__(folder, labels)
        self._file = AtomicFile(self.folder / self.file_name)

    def add(self, record: Record) -> None:
        self._file.stream.write(json.dumps(record, ensure_ascii=False, separators=(",", ":")))
        self._file.stream.write("\n")

    def _finish(self) -> Path:
        return self._file.commit()

    def _discard(self) -> None:
        self._file.abort()
