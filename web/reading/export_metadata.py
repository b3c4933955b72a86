"""What an exporter wrote beside a SavedModel that its signature cannot say.

Ultralytics writes ``metadata.yaml`` into every ``*_saved_model`` folder it exports, so it sits in
the model's version folder once copied into the TF Serving layout. It names the task (``detect``,
``segment``, ``classify``, ``pose``, ``obb``) and the class names. The signature of a pose model
(``[1, 56, 8400]``) looks like a 52-class detector's; the task tells them apart, and the names
make a label map unnecessary.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

METADATA_FILE = "metadata.yaml"
MAX_METADATA_BYTES = 1024 * 1024


@dataclass(frozen=True)
class ExportMetadata:
    """The parts of an exporter's metadata the gateway uses."""

    file: str  # where it was read, for messages and the model detail
    exporter: str  # "Ultralytics"
    task: str | None
    names: dict[int, str] = field(default_factory=dict)  # the model's own (0-based) class ids

    def to_dict(self) -> dict:
        return {"file": self.file, "exporter": self.exporter, "task": self.task, "classes": len(self.names)}


def read_export_metadata(version_dir: Path, shown_as: str | None = None) -> ExportMetadata | None:
    """Ultralytics' metadata.yaml in a version folder, or None when there is none (or not one of
    theirs). A file that cannot be read or parsed is ignored: it only adds what the signature lacks."""
    path = version_dir / METADATA_FILE
    try:
        if not path.is_file() or path.stat().st_size > MAX_METADATA_BYTES:
            return None
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    if not isinstance(data, dict) or "Ultralytics" not in str(data.get("author", "")):
        return None
    task = data.get("task")
    return ExportMetadata(
        file=shown_as or str(path),
        exporter="Ultralytics",
        task=str(task) if task else None,
        names=_names(data.get("names")),
    )


def _names(value: object) -> dict[int, str]:
    """`names` as Ultralytics writes it: a mapping {0: person, ...} (or, in old files, a list)."""
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    names = {}
    for key, name in items:
        try:
            names[int(key)] = str(name)
        except (TypeError, ValueError):
            continue
    return names
