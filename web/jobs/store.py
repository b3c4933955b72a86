"""The state of every job, as files under JOBS_FOLDER, which the gateway and workers on many machines share.

Nothing about a job lives in a process or in the queue: a restarted gateway or worker reads it back
from disk. One folder per job::

    <JOBS_FOLDER>/<id>/job.json       the state (the contract's job JSON plus internal fields)
                       input.zip      the upload, as received
                       listing.json   the archive's pictures and skipped entries (workers do not re-sniff)
                       chunks/<i>.jsonl, chunks/<i>.claim   each chunk's records, and who works on it
                       results/       the result files, written once every chunk is done
                       lock           serialises updates (fcntl.flock), across processes and machines

Every file is written under a temporary name and renamed into place, so a reader never sees half of
one and a killed writer leaves nothing half-written; `update` holds the job's lock while it reads,
changes and writes job.json, so concurrent workers never lose each other's changes.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from web.jobs.archives import Archive, ArchiveLimits, open_archive

KINDS = ("predict", "evaluate", "video")
QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED = "queued", "running", "succeeded", "failed", "cancelled"
STATUSES = (QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED)
TERMINAL = frozenset({SUCCEEDED, FAILED, CANCELLED})
DEFAULT_CHUNK_SIZE = 16
RESULT_URL = "/api/v1/jobs/{id}/results/{name}"
FINISH = "finish"  # the claim name of the step that assembles the results
_JOB_ID = re.compile(r"[0-9a-f]{32}")
VIDEO_INPUT = "input.video"  # a video job's upload, in its folder (the others' is input.zip)
GALLERY = "gallery"  # results/gallery/: pictures an evaluation report shows, named in report.json
_RESULT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
INCOMING, TRASH = ".incoming", ".trash"  # uploads being received; deleted jobs being removed


class JobNotFound(KeyError):
    """No job with this id (never created, deleted or expired); the HTTP layer answers 404."""

    def __init__(self, job_id: str) -> None:
        super().__init__(job_id)
        self.job_id = job_id
        self.message = f"no job {job_id!r}: it never existed, or it was deleted or expired"

    def __str__(self) -> str:
        return self.message


def now_iso(now: float | None = None) -> str:
    """UTC time as ISO 8601 with milliseconds: sortable, and what the job JSON shows."""
    moment = datetime.fromtimestamp(time.time() if now is None else now, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_iso(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


@dataclass
class Job:
    """One job. `to_json` is the contract's job JSON; the other fields serve the workers and owner checks."""

    id: str
    kind: str
    model: dict[str, Any]  # {"name": str, "version": int | None}
    status: str
    progress: dict[str, int]  # {"done": int, "total": int}
    created: str
    error: str | None = None
    skipped: list[dict[str, str]] = field(default_factory=list)  # [{"file", "reason"}]
    results: list[str] = field(default_factory=list)  # result file names, in results/
    finished: str | None = None
    # Internal: not in the job JSON.
    owner: str | None = None  # the API key id (or browser session) that started it
    options: dict[str, Any] = field(default_factory=dict)  # predict options, passed to the predictor
    labels: dict[int, str] = field(default_factory=dict)  # class id -> name, for the exports
    exports: dict[str, Any] = field(default_factory=dict)  # {"files": [...], "options": {file: {...}}}
    chunk_size: int = DEFAULT_CHUNK_SIZE
    chunk_done: list[int] = field(default_factory=list)  # pictures done per chunk (never decreases)
    omitted: list[dict[str, str]] = field(default_factory=list)  # pictures one result format could not hold
    started: str | None = None
    compare: dict[str, Any] | None = None  # evaluate jobs: the second model {"name", "version"}
    evaluation: dict[str, Any] = field(default_factory=dict)  # evaluate jobs: {"operating_score", ...}

    @property
    def chunks(self) -> int:
        return len(self.chunk_done)

    @property
    def total(self) -> int:
        return int(self.progress["total"])

    def chunk_range(self, index: int) -> range:
        """The picture indexes (into the listing's sorted pictures) of chunk `index`."""
        start = index * self.chunk_size
        return range(start, min(start + self.chunk_size, self.total))

    def advance(self, index: int, done: int) -> None:
        """Record `done` pictures of chunk `index`: progress only grows, and never past the chunk's size."""
        size = len(self.chunk_range(index))
        self.chunk_done[index] = max(self.chunk_done[index], min(done, size))
        self.progress["done"] = max(self.progress["done"], sum(self.chunk_done))

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    def visible_to(self, owner: str | None) -> bool:
        """Whether `owner` may see this job: None (no API keys) sees every job."""
        return owner is None or self.owner == owner

    def to_json(self, result_url: Callable[[str, str], str] | None = None) -> dict[str, Any]:
        """The contract's job JSON; `result_url(job_id, file name)` makes the links (default: the API's)."""
        url = result_url or (lambda job_id, name: RESULT_URL.format(id=job_id, name=name))
        return {
            "id": self.id,
            "kind": self.kind,
            "model": {"name": self.model["name"], "version": self.model.get("version")},
            "status": self.status,
            "progress": {"done": self.progress["done"], "total": self.progress["total"]},
            "error": self.error,
            "skipped": [dict(item) for item in self.skipped],
            "results": {name: url(self.id, name) for name in self.results},
            "created": self.created,
            "finished": self.finished,
        }

    def to_state(self) -> dict[str, Any]:
        state = asdict(self)
        state["labels"] = {str(k): v for k, v in self.labels.items()}
        return state

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> Job:
        data = {name: state[name] for name in cls.__dataclass_fields__ if name in state}
        data["labels"] = {int(k): v for k, v in (state.get("labels") or {}).items()}
        return cls(**data)


@dataclass(frozen=True)
class Claim:
    """Who works on a chunk (or the finish step): `state` is "queued" (in the queue) or "running"."""

    worker: str
    state: str
    at: float  # enqueue time (queued) or last heartbeat (running), seconds since the epoch
    done: int = 0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def write_atomic(path: Path, data: bytes, fsync: bool = True) -> None:
    """Write `path` whole or not at all: a temporary file in the same folder, then os.replace.

    The folder is never created here: a job deleted meanwhile must stay deleted (FileNotFoundError).
    """
    temp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(temp, "xb") as fp:
            fp.write(data)
            if fsync:
                fp.flush()
                os.fsync(fp.fileno())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            temp.unlink()
        raise


def _json_bytes(data: Any) -> bytes:
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


class JobStore:
    """Jobs as folders under `root` (JOBS_FOLDER). Safe to use from many threads, processes and machines."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)  # made with the first upload: an app that never sees a job writes nothing

    # -- paths ---------------------------------------------------------------------------------------

    def folder(self, job_id: str) -> Path:
        """The job's folder; JobNotFound for anything that is not a job id (it comes from URLs)."""
        if not isinstance(job_id, str) or not _JOB_ID.fullmatch(job_id):
            raise JobNotFound(str(job_id))
        return self.root / job_id

    def chunk_path(self, job_id: str, index: int) -> Path:
        return self.folder(job_id) / "chunks" / f"{index}.jsonl"

    def claim_path(self, job_id: str, name: int | str) -> Path:
        return self.folder(job_id) / "chunks" / f"{name}.claim"

    def results_folder(self, job_id: str) -> Path:
        return self.folder(job_id) / "results"

    def result_path(self, job_id: str, name: str) -> Path:
        """The path of one of a succeeded job's result files; JobNotFound if it has no such result."""
        job = self.get(job_id)
        folder, _, picture = name.partition("/")
        if folder == GALLERY and job.status == SUCCEEDED and _RESULT_NAME.fullmatch(picture):
            path = self.results_folder(job_id) / GALLERY / picture  # drawn pictures a report shows
            if path.is_file():
                return path
        if name not in job.results or not _RESULT_NAME.fullmatch(name):
            raise JobNotFound(f"{job_id}/{name}")
        return self.results_folder(job_id) / name

    def incoming(self, suffix: str = ".zip") -> Path:
        """A fresh path to stream an upload to, on the jobs' file system (so `create` just renames it)."""
        folder = self.root / INCOMING
        folder.mkdir(parents=True, exist_ok=True)
        return folder / f"{uuid.uuid4().hex}{suffix}"

    # -- create, read, update ------------------------------------------------------------------------

    def create(
        self,
        *,
        model: str,
        archive: str | Path,
        version: int | None = None,
        kind: str = "predict",
        options: Mapping[str, Any] | None = None,
        owner: str | None = None,
        labels: Mapping[int, str] | None = None,
        limits: ArchiveLimits | None = None,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        exports: Mapping[str, Any] | None = None,
        compare: Mapping[str, Any] | None = None,
        evaluation: Mapping[str, Any] | None = None,
        prepare: Callable[[Path, Path, Archive], Archive] | None = None,
        probe: Callable[[Path, Path], int] | None = None,
    ) -> Job:
        """A queued job for the zip at `archive`, which is moved into the job's folder (it is gone on return).

        Raises ArchiveError (its `status` and `message` are the HTTP answer) for an archive that cannot be
        used; then nothing of the job stays on disk. `submit` it to the queue afterwards.
        """
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
        if chunk_size < 1:
            raise ValueError("chunk_size must be at least 1")
        job_id = uuid.uuid4().hex
        staging = self.root / INCOMING / f"{job_id}.job"
        staging.mkdir(parents=True)
        try:
            (staging / "chunks").mkdir()
            (staging / "results").mkdir()
            (staging / "lock").touch()
            if probe is not None:  # one file streamed through (a video): one chunk; `probe` counts frames
                video = staging / VIDEO_INPUT
                shutil.move(archive, video)
                total, chunks, skipped = probe(staging, video), 1, []
                chunk_size = max(total, 1)
            else:
                zip_path = staging / "input.zip"
                shutil.move(archive, zip_path)  # a rename when the upload is on the same file system
                listing = open_archive(zip_path, limits)
                if prepare is not None:  # an evaluate job reads its dataset (job folder, zip, listing)
                    listing = prepare(staging, zip_path, listing)
                write_atomic(
                    staging / "listing.json",
                    _json_bytes({"limits": asdict(listing.limits), **listing.to_json()}),
                )
                total, skipped = len(listing.pictures), [s.to_json() for s in listing.skipped]
                chunks = -(-total // chunk_size)
            job = Job(
                id=job_id,
                kind=kind,
                model={"name": model, "version": version},
                status=QUEUED,
                progress={"done": 0, "total": total},
                created=now_iso(),
                skipped=skipped,
                owner=owner,
                options=dict(options or {}),
                labels=dict(labels or {}),
                exports=dict(exports or {}),
                chunk_size=chunk_size,
                chunk_done=[0] * chunks,
                compare=dict(compare) if compare else None,
                evaluation=dict(evaluation or {}),
            )
            write_atomic(staging / "job.json", _json_bytes(job.to_state()))
            os.replace(staging, self.root / job_id)  # the job appears whole
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            with contextlib.suppress(OSError):
                Path(archive).unlink()
            raise
        return job

    def get(self, job_id: str) -> Job:
        """The job as last written (no lock: job.json is replaced whole)."""
        try:
            data = (self.folder(job_id) / "job.json").read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            raise JobNotFound(job_id) from None
        return Job.from_state(json.loads(data))

    def list(self, owner: str | None = None) -> list[Job]:
        """Every job `owner` may see (None: all), newest first."""
        jobs = []
        for path in self._entries():
            if not _JOB_ID.fullmatch(path.name):
                continue
            try:
                job = self.get(path.name)
            except (JobNotFound, ValueError):
                continue  # deleted while listing
            if job.visible_to(owner):
                jobs.append(job)
        jobs.sort(key=lambda job: (job.created, job.id), reverse=True)
        return jobs

    @contextlib.contextmanager
    def locked(self, job_id: str) -> Iterator[Path]:
        """Hold the job's lock (fcntl.flock, released by the kernel if the holder dies); yields its folder."""
        folder = self.folder(job_id)
        try:
            fd = os.open(folder / "lock", os.O_RDWR)  # never O_CREAT: a deleted job stays deleted
        except (FileNotFoundError, NotADirectoryError):
            raise JobNotFound(job_id) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if not (folder / "job.json").exists():  # deleted (moved away) while we waited
                raise JobNotFound(job_id)
            yield folder
        finally:
            os.close(fd)  # releases the lock

    def update(self, job_id: str, change: Callable[[Job], Any]) -> Job:
        """Apply `change` to the job under its lock and write it back (unless `change` returns False)."""
        with self.locked(job_id) as folder:
            job = self.get(job_id)
            if change(job) is not False:
                write_atomic(folder / "job.json", _json_bytes(job.to_state()))
            return job

    def archive(self, job: Job) -> Archive:
        """The job's archive as listed at creation (workers read pictures from it)."""
        folder = self.folder(job.id)
        try:
            data = json.loads((folder / "listing.json").read_bytes())
        except (FileNotFoundError, NotADirectoryError):
            raise JobNotFound(job.id) from None
        return Archive.from_json(folder / "input.zip", data, ArchiveLimits(**data["limits"]))

    # -- claims (who works on what) ------------------------------------------------------------------

    def read_claim(self, job_id: str, name: int | str) -> Claim | None:
        try:
            return Claim(**json.loads(self.claim_path(job_id, name).read_bytes()))
        except FileNotFoundError:
            return None
        except (ValueError, TypeError):
            return None  # unreadable: as good as none

    def write_claim(self, job_id: str, name: int | str, claim: Claim) -> None:
        write_atomic(self.claim_path(job_id, name), _json_bytes(claim.to_json()), fsync=False)

    def chunk_finished(self, job_id: str, index: int) -> bool:
        return self.chunk_path(job_id, index).exists()

    # -- lifecycle -----------------------------------------------------------------------------------

    def cancel(self, job_id: str) -> Job:
        """Cancel a job not yet ended (workers stop before their next picture); an ended one is unchanged."""

        def change(job: Job) -> bool:
            if job.terminal:
                return False
            job.status = CANCELLED
            job.finished = now_iso()
            return True

        return self.update(job_id, change)

    def delete(self, job_id: str) -> None:
        """Remove the job and every file of it. Workers still on it notice before their next picture."""
        with self.locked(job_id) as folder:
            trash = self.root / TRASH
            trash.mkdir(exist_ok=True)
            gone = trash / f"{job_id}.{uuid.uuid4().hex}"
            os.replace(folder, gone)  # at once invisible; the files go below
        shutil.rmtree(gone, ignore_errors=True)

    def expire(self, older_than_s: float, now: float | None = None) -> list[str]:
        """Delete the jobs that ended more than `older_than_s` ago (JOB_RETENTION_S), and abandoned uploads
        and leftovers of deletions as old; the ids of the jobs deleted."""
        now = time.time() if now is None else now
        deleted = []
        for job in self.list():
            if job.terminal and job.finished and now - parse_iso(job.finished) > older_than_s:
                with contextlib.suppress(JobNotFound):
                    self.delete(job.id)
                    deleted.append(job.id)
        for name in (INCOMING, TRASH):
            folder = self.root / name
            if not folder.is_dir():
                continue
            for path in folder.iterdir():
                with contextlib.suppress(FileNotFoundError):
                    if now - path.lstat().st_mtime > max(older_than_s, 3600):
                        if path.is_dir() and not path.is_symlink():
                            shutil.rmtree(path, ignore_errors=True)
                        else:
                            path.unlink()
        return deleted

    def _entries(self) -> list[Path]:
        """What JOBS_FOLDER holds (nothing yet when no job was ever uploaded)."""
        try:
            return list(self.root.iterdir())
        except FileNotFoundError:
            return []

    def usage_bytes(self) -> int:
        """Bytes of every file under JOBS_FOLDER (jobs, uploads being received, the embedded queue)."""
        total = 0
        for folder, _dirs, files in os.walk(self.root):
            for name in files:
                with contextlib.suppress(FileNotFoundError):
                    total += os.lstat(os.path.join(folder, name)).st_size
        return total

    def would_exceed(self, total_budget_bytes: int, incoming_bytes: int) -> bool:
        """Whether `incoming_bytes` more would take all jobs past the disk budget (then: refuse with 507)."""
        return self.usage_bytes() + incoming_bytes > total_budget_bytes
