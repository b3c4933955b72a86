"""Result storage for the HTML pages: originals, rendered pictures and prediction JSON on disk.

Why it looks like this:

* Several gunicorn workers (each with threads) write at once, so there is no in-memory index
  that could go stale: the listing is derived from the folders every time.
* A result is three files named by a server-generated id: the original under ``upload_folder``,
  the rendered picture and a JSON record under ``output_folder``. Each file is written to a temp
  file in its own folder and moved into place with ``os.replace``; the JSON record is written
  last and is the commit marker, so a result either shows up complete or not at all. On any
  failure the files already written are removed again.
* Ids start with a UTC timestamp, so sorting names sorts by age, and end with 64 random bits.
  Lookups accept only ids matching ``RESULT_ID_RE``: nothing a client sends can name a path.
* Retention is bounded by count and bytes; the oldest results go first. Pruning runs after every
  save under an exclusive ``flock`` so concurrent pruners agree on what to delete.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import secrets
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

RESULT_ID_RE = re.compile(r"^[0-9]{8}T[0-9]{12}Z-[0-9a-f]{16}$")
_EXT_RE = re.compile(r"^[a-z0-9]{1,5}$")
# Extensions a stored picture may have; anything else is a programming error upstream.
IMAGE_EXTENSIONS = frozenset({"jpg", "png", "gif", "bmp", "webp", "tif"})
_EXT_ALIASES = {"jpeg": "jpg", "tiff": "tif"}
MIME_TYPES = {
    "jpg": "image/jpeg",
    "png": "image/png",
    "gif": "image/gif",
    "bmp": "image/bmp",
    "webp": "image/webp",
    "tif": "image/tiff",
}
RECORD_SUFFIX = ".json"
TEMP_PREFIX = ".tmp-"
LOCK_NAME = ".retention.lock"
# Temp files and record-less leftovers (a worker killed mid-save) older than this are swept.
STALE_AFTER_S = 3600.0
SOURCE_NAME_MAX = 200


class StorageError(Exception):
    """A result could not be stored (disk full, folder missing, ...); nothing was left behind."""


@dataclass(frozen=True)
class StoredResult:
    """One stored result as the pages need it; paths point at files that existed when it was read."""

    result_id: str
    created_at: datetime
    original_path: Path
    rendered_path: Path
    record_path: Path
    prediction: dict[str, Any]
    source_name: str | None = None
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def original_mimetype(self) -> str:
        return MIME_TYPES[self.original_path.suffix.lstrip(".")]

    @property
    def rendered_mimetype(self) -> str:
        return MIME_TYPES[self.rendered_path.suffix.lstrip(".")]

    @property
    def model_name(self) -> str:
        return str(self.prediction.get("model", {}).get("name", ""))

    @property
    def model_version(self) -> Any:
        return self.prediction.get("model", {}).get("version")

    @property
    def is_classification(self) -> bool:
        return self.prediction.get("classes") is not None

    @property
    def detection_count(self) -> int:
        """Detections for detectors, classes for classifiers: what the listing shows as a count."""
        items = self.prediction.get("detections")
        if items is None:
            items = self.prediction.get("classes") or []
        return len(items)

    def size_bytes(self) -> int:
        return sum(_size(p) for p in (self.original_path, self.rendered_path, self.record_path))


def is_valid_result_id(result_id: str) -> bool:
    """True only for ids this store generates (so an id can never climb out of the folders)."""
    return isinstance(result_id, str) and RESULT_ID_RE.fullmatch(result_id) is not None


def normalize_extension(ext: str) -> str:
    """'.JPEG' -> 'jpg'; raises ValueError for anything that is not a known picture type."""
    clean = ext.lower().lstrip(".")
    clean = _EXT_ALIASES.get(clean, clean)
    if not _EXT_RE.fullmatch(clean) or clean not in IMAGE_EXTENSIONS:
        raise ValueError(f"unsupported picture extension {ext!r}; expected one of {sorted(IMAGE_EXTENSIONS)}")
    return clean


def new_result_id(now: float | None = None) -> str:
    """A sortable, unguessable id: UTC timestamp to the microsecond plus 64 random bits."""
    now = time.time() if now is None else now
    stamp = datetime.fromtimestamp(now, UTC)
    return f"{stamp:%Y%m%dT%H%M%S%f}Z-{secrets.token_hex(8)}"


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _write_atomic(folder: Path, name: str, data: bytes) -> Path:
    """Write `data` to folder/name via a temp file in the same folder, so readers never see half."""
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=TEMP_PREFIX)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        target = folder / name
        os.replace(tmp, target)
        return target
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


class ResultStore:
    """Stores and lists results on disk; safe across processes and threads (see module doc)."""

    def __init__(self, upload_folder: Path, output_folder: Path, max_count: int = 200,
                 max_bytes: int = 512 * 1024 * 1024) -> None:
        if max_count < 1:
            raise ValueError("max_count must be at least 1")
        if max_bytes < 1:
            raise ValueError("max_bytes must be at least 1")
        self.upload_folder = Path(upload_folder)
        self.output_folder = Path(output_folder)
        self.max_count = max_count
        self.max_bytes = max_bytes

    def storage_problem(self) -> str | None:
        """Why results cannot be stored here (a folder missing and not creatable, or not writable by
        this process, e.g. a shared volume owned by root), or None. Cheap: no file is written."""
        for folder in (self.upload_folder, self.output_folder):
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                return f"cannot create {folder}: {exc.strerror}"
            if not os.access(folder, os.W_OK | os.X_OK):
                return f"{folder} is not writable by uid {os.getuid()}"
        return None

    @classmethod
    def from_settings(cls, settings: Any) -> ResultStore:
        """Build from `web.settings.Settings` (upload/output folders, RESULTS_MAX_COUNT/BYTES)."""
        return cls(
            upload_folder=Path(settings.upload_folder),
            output_folder=Path(settings.output_folder),
            max_count=int(getattr(settings, "results_max_count", 200)),
            max_bytes=int(getattr(settings, "results_max_bytes", 512 * 1024 * 1024)),
        )

    # -- paths ---------------------------------------------------------------------------------

    def _record_path(self, result_id: str) -> Path:
        return self.output_folder / f"{result_id}{RECORD_SUFFIX}"

    def _ensure_folders(self) -> None:
        for folder in (self.upload_folder, self.output_folder):
            folder.mkdir(parents=True, exist_ok=True)

    # -- writing -------------------------------------------------------------------------------

    def save(self, original: bytes, original_ext: str, rendered: bytes, rendered_ext: str,
             prediction: Mapping[str, Any], *, source_name: str | None = None,
             options: Mapping[str, Any] | None = None) -> str:
        """Store one result and return its new id; on failure remove what was written and raise.

        `source_name` (the client's file name) is kept for display only, never used in a path.
        Raises ValueError for an unknown extension, StorageError when the disk write fails.
        """
        original_ext = normalize_extension(original_ext)
        rendered_ext = normalize_extension(rendered_ext)
        result_id = new_result_id()
        created = datetime.now(UTC)
        record = {
            "id": result_id,
            "created_at": created.isoformat(timespec="milliseconds"),
            "original": f"{result_id}.{original_ext}",
            "rendered": f"{result_id}.{rendered_ext}",
            "source_name": (source_name or None) and str(source_name)[:SOURCE_NAME_MAX],
            "options": dict(options or {}),
            "prediction": dict(prediction),
        }
        # Serialize before touching the disk: a prediction that is not JSON fails fast.
        record_bytes = json.dumps(record, ensure_ascii=False, allow_nan=False).encode("utf-8")

        written: list[Path] = []
        try:
            self._ensure_folders()
            written.append(_write_atomic(self.upload_folder, record["original"], original))
            written.append(_write_atomic(self.output_folder, record["rendered"], rendered))
            written.append(_write_atomic(self.output_folder, record_path_name(result_id), record_bytes))
        except BaseException as exc:
            for path in reversed(written):
                with contextlib.suppress(OSError):
                    path.unlink()
            if isinstance(exc, OSError):
                raise StorageError(f"could not store the result: {exc.strerror or exc}") from exc
            raise
        self.prune(keep=result_id)
        return result_id

    # -- reading -------------------------------------------------------------------------------

    def get(self, result_id: str) -> StoredResult | None:
        """The stored result, or None for an invalid, unknown, pruned or unreadable id."""
        if not is_valid_result_id(result_id):
            return None
        return self._load(self._record_path(result_id))

    def recent(self, limit: int = 50) -> list[StoredResult]:
        """Up to `limit` newest results, newest first (read from the folder, not from memory)."""
        if limit <= 0:
            return []
        results: list[StoredResult] = []
        for record_path in reversed(self._record_paths()):
            loaded = self._load(record_path)
            if loaded is not None:
                results.append(loaded)
                if len(results) >= limit:
                    break
        return results

    def _record_paths(self) -> list[Path]:
        """Committed records, oldest first (ids sort by creation time)."""
        try:
            entries = list(os.scandir(self.output_folder))
        except FileNotFoundError:
            return []
        names = [
            e.name for e in entries
            if e.name.endswith(RECORD_SUFFIX) and is_valid_result_id(e.name[: -len(RECORD_SUFFIX)])
        ]
        return [self.output_folder / n for n in sorted(names)]

    def _load(self, record_path: Path) -> StoredResult | None:
        try:
            record = json.loads(record_path.read_bytes())
            result_id = record["id"]
            if record_path.name != record_path_name(result_id):
                return None
            original_ext = normalize_extension(Path(record["original"]).suffix)
            rendered_ext = normalize_extension(Path(record["rendered"]).suffix)
            created_at = datetime.fromisoformat(record["created_at"])
            prediction = record["prediction"]
            if not isinstance(prediction, dict):
                return None
        except (OSError, ValueError, KeyError, TypeError):
            return None
        source_name = record.get("source_name")
        options = record.get("options")
        return StoredResult(
            result_id=result_id,
            created_at=created_at,
            original_path=self.upload_folder / f"{result_id}.{original_ext}",
            rendered_path=self.output_folder / f"{result_id}.{rendered_ext}",
            record_path=record_path,
            prediction=prediction,
            source_name=source_name if isinstance(source_name, str) else None,
            options=options if isinstance(options, dict) else {},
        )

    # -- retention -----------------------------------------------------------------------------

    @contextlib.contextmanager
    def _retention_lock(self) -> Iterator[None]:
        with open(self.output_folder / LOCK_NAME, "a+b") as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)

    def prune(self, keep: str | None = None) -> list[str]:
        """Delete the oldest results until count and bytes are within bounds; return deleted ids.

        Works from one directory scan (names and sizes, no JSON parsing), so it stays cheap with
        hundreds of results. `keep` (the result just saved) is never deleted, so the redirect to it
        cannot 404 even when that one result alone is larger than the byte budget.
        """
        self._ensure_folders()
        deleted: list[str] = []
        with self._retention_lock():
            groups = self._scan()
            records = {self._record_path(i) for i in groups}
            committed = sorted(i for i, files in groups.items() if any(f[0] in records for f in files))
            sizes = {i: sum(size for _, size, _ in groups[i]) for i in committed}
            count, total = len(committed), sum(sizes.values())
            for result_id in committed:
                if count <= self.max_count and total <= self.max_bytes:
                    break
                if result_id == keep:
                    continue
                # The record goes first: from then on nobody lists or opens the result.
                files = sorted(groups[result_id], key=lambda f: f[0].suffix != RECORD_SUFFIX)
                for path, _, _ in files:
                    with contextlib.suppress(OSError):
                        path.unlink()
                deleted.append(result_id)
                count -= 1
                total -= sizes[result_id]
            self._sweep_stale(groups, set(committed))
        return deleted

    def _scan(self) -> dict[str, list[tuple[Path, int, float]]]:
        """Files named after a result id in both folders: id -> [(path, size, mtime)]."""
        groups: dict[str, list[tuple[Path, int, float]]] = {}
        for folder in (self.upload_folder, self.output_folder):
            try:
                entries = list(os.scandir(folder))
            except FileNotFoundError:
                continue
            for entry in entries:
                stem = entry.name.partition(".")[0]
                if entry.name.startswith(TEMP_PREFIX):
                    stem = entry.name  # temp files form their own group, swept when stale
                elif not is_valid_result_id(stem):
                    continue
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                groups.setdefault(stem, []).append((Path(entry.path), st.st_size, st.st_mtime))
        return groups

    def _sweep_stale(self, groups: dict[str, list[tuple[Path, int, float]]], committed: set[str]) -> None:
        """Remove temp files and record-less pictures left by a worker that died mid-save."""
        cutoff = time.time() - STALE_AFTER_S
        for stem, files in groups.items():
            if stem in committed:
                continue
            for path, _, mtime in files:
                if mtime < cutoff:
                    with contextlib.suppress(OSError):
                        path.unlink()


def record_path_name(result_id: str) -> str:
    """The JSON record's file name for an id."""
    return f"{result_id}{RECORD_SUFFIX}"
