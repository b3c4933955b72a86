"""What every result writer shares: records in one at a time, a file that appears whole or not at all.

A job's pictures can number in the thousands, so a writer never holds the records: `add` writes (or
spools) each one as it comes, and `close` finishes the file under a temporary name and renames it, so
a reader (or a crashed worker's successor) never sees half a result. Records must come in the order
the results should list them (the archive's sorted paths); the same records give the same bytes.
"""

from __future__ import annotations

import os
import uuid
import zipfile
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any

from web.domain import Box

Record = Mapping[str, Any]  # the prediction JSON of one picture plus "file", its path in the archive
LabelMap = Mapping[int, str]  # the model's labels: class id -> name
ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # fixed timestamps: the same results give the same zip


@dataclass(frozen=True)
class Omitted:
    """A picture a format could not hold (two pictures mapping to one label file), and why."""

    file: str
    reason: str


def image_size(record: Record) -> tuple[int, int]:
    """(width, height) of the record's picture."""
    image = record["image"]
    return int(image["width"]), int(image["height"])


def detections(record: Record) -> list[Mapping[str, Any]]:
    """The record's detections (a classifier's record has none)."""
    return list(record.get("detections") or ())


def box_of(detection: Mapping[str, Any], width: int, height: int) -> Box:
    """The detection's box clamped into the picture (models may overshoot the edges)."""
    box = detection["box"]
    return Box(
        min(max(float(box["xmin"]), 0.0), width),
        min(max(float(box["ymin"]), 0.0), height),
        min(max(float(box["xmax"]), 0.0), width),
        min(max(float(box["ymax"]), 0.0), height),
    )


def stem_path(file: str) -> str:
    """The picture's path without its suffix ("a/b/c.jpg" -> "a/b/c"): the key of per-picture files."""
    return str(PurePosixPath(file).with_suffix(""))


def model_version(record: Record) -> str:
    """ "name:version" of the model that made the record, for formats that keep a model version."""
    model = record.get("model") or {}
    return f"{model.get('name', '')}:{model.get('version', '')}".strip(":")


class AtomicFile:
    """A file written under a hidden temporary name in its final folder, renamed into place on commit."""

    def __init__(self, final: Path, mode: str = "w") -> None:
        self.final = final
        self.temp = final.with_name(f".{final.name}.{uuid.uuid4().hex}.tmp")
        final.parent.mkdir(parents=True, exist_ok=True)
        kwargs = {"encoding": "utf-8", "newline": ""} if "b" not in mode else {}
        self.stream: IO[Any] = open(self.temp, mode, **kwargs)  # closed by commit or abort

    def commit(self) -> Path:
        self.stream.flush()
        os.fsync(self.stream.fileno())
        self.stream.close()
        os.replace(self.temp, self.final)
        return self.final

    def abort(self) -> None:
        self.stream.close()
        self.temp.unlink(missing_ok=True)


def remove_temporaries(folder: Path) -> list[Path]:
    """Delete the temporary files a killed writer left in `folder`, before the results are written again."""
    removed = [p for p in Path(folder).glob(".*.tmp") if p.is_file()]
    for path in removed:
        path.unlink(missing_ok=True)
    return removed


def zip_text(zf: zipfile.ZipFile, name: str, text: str) -> None:
    """Add a text member with a fixed timestamp and mode, so the zip's bytes depend only on its content."""
    info = zipfile.ZipInfo(name, ZIP_DATE)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = 0o644 << 16
    zf.writestr(info, text.encode("utf-8"))


class Exporter(ABC):
    """One result file. Subclasses set `file_name` and implement `add` and `_finish`."""

    file_name: str = ""

    def __init__(self, folder: Path, labels: LabelMap) -> None:
        self.folder = Path(folder)
        self.labels = dict(labels)
        self.omitted: list[Omitted] = []
        self._closed = False

    @abstractmethod
    def add(self, record: Record) -> None:
        """Write one picture's results."""

    @abstractmethod
    def _finish(self) -> Path:
        """Complete and rename the file; the path of the result."""

    @abstractmethod
    def _discard(self) -> None:
        """Remove every temporary file."""

    def close(self) -> Path:
        """Finish the file: it appears under `folder / file_name` whole."""
        self._closed = True
        return self._finish()

    def abort(self) -> None:
        """Give up: no result file appears and no temporary file stays."""
        if not self._closed:
            self._closed = True
            self._discard()


class ZipExporter(Exporter):
    """A result that is a zip of one small text file per picture plus a few files written at the end."""

    def __init__(self, folder: Path, labels: LabelMap) -> None:
        super().__init__(folder, labels)
        self._file = AtomicFile(self.folder / self.file_name, "wb")
        self._zip = zipfile.ZipFile(self._file.stream, "w", zipfile.ZIP_DEFLATED)
        self._members: dict[str, str] = {}  # member name -> the file that claimed it

    def _claim(self, member: str, file: str) -> bool:
        """Whether `file` may write `member` (the first picture with a given stem wins)."""
        first = self._members.setdefault(member, file)
        if first != file:
            self.omitted.append(Omitted(file, f"{self.file_name}: same name without suffix as {first}"))
            return False
        return True

    def _write(self, member: str, text: str) -> None:
        zip_text(self._zip, member, text)

    def _finish(self) -> Path:
        self._write_last()
        self._zip.close()
        return self._file.commit()

    def _discard(self) -> None:
        self._zip.close()
        self._file.abort()

    def _write_last(self) -> None:
        """Files that need every record first (data.yaml, the image list)."""
