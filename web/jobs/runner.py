"""What a worker does with a queued chunk: predict its pictures, keep its claim fresh, write its records.

The predictions come from a `Predictor`, injected so that the queue path does not care where the model
is (`HttpPredictor` asks the gateway's own predict API, so every picture gets /predict's checks). A
chunk's records are written whole (`chunks/<i>.jsonl`, renamed into place), so a chunk that runs twice
(its worker was thought dead) overwrites the same file and each picture is in the results once.

Huey pops a task before running it, so a worker killed mid-chunk loses the task: each running chunk
holds a claim (`chunks/<i>.claim`: worker id and heartbeat) refreshed every `heartbeat_s`, and
`reclaim` queues again every unfinished chunk whose claim went stale. Retries of an unavailable model
server happen here, per picture with exponential back-off, rather than as Huey task retries: the
chunk keeps its finished pictures and its claim while it waits, and a cancel interrupts the wait.
"""

from __future__ import annotations

import contextlib
import fcntl
import http.client
import json
import logging
import os
import shutil
import socket
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from web.jobs.archives import EntryError, Picture, sniff_picture
from web.jobs.config import JobSettings
from web.jobs.exporters import RESULT_FILES, ExportSet, remove_temporaries
from web.jobs.kinds import Assembly, Finisher, JobError, PictureError, Stopped, Stream, Streamer
from web.jobs.store import (
    FAILED,
    FINISH,
    QUEUED,
    RUNNING,
    SUCCEEDED,
    VIDEO_INPUT,
    Claim,
    Job,
    JobNotFound,
    JobStore,
    now_iso,
    parse_iso,
    write_atomic,
)

log = logging.getLogger(__name__)
CLAIM_QUEUED, CLAIM_RUNNING = "queued", "running"
_PROCESS_TOKEN = uuid.uuid4().hex[:8]  # tells this process apart from an earlier one with the same pid


class RetryableError(Exception):
    """The model server is unavailable for now: the picture is tried again after a back-off."""


@runtime_checkable
class Predictor(Protocol):
    def predict(
        self, model: str, version: int | None, data: bytes, file_name: str, options: Mapping[str, Any]
    ) -> dict[str, Any]:
        """The prediction JSON of one picture (as /api/v1/models/<model>/predict answers it)."""
        ...


def worker_id() -> str:
    """host:pid:token of this process; a claim's worker adds the thread."""
    return f"{socket.gethostname()}:{os.getpid()}:{_PROCESS_TOKEN}"


def _claimant() -> str:
    return f"{worker_id()}/{threading.get_ident()}"


def _process_is_gone(claim: Claim) -> bool:
    """Whether the claim's process is certainly dead: same host, and no process with its pid."""
    try:
        host, pid, _token = claim.worker.split("/", 1)[0].split(":")
        if host != socket.gethostname() or int(pid) == os.getpid():
            return False
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except (ValueError, PermissionError, OSError):
        return False
    return False


def is_stale(claim: Claim, now: float, stale_s: float, pending: int) -> bool:
    """Whether the claimed work is lost: a running claim without heartbeat, or a queued one the queue lost."""
    if claim.state == CLAIM_RUNNING:
        return now - claim.at > stale_s or _process_is_gone(claim)
    # Queued: while the queue holds tasks, this one may be among them (waiting is not lost).
    return pending == 0 and now - claim.at > stale_s


class _JobFailed(Exception):
    pass


class _Watch:
    """Tells the picture threads to stop: re-reads the job's status at most every 0.2 s, and the heartbeat
    says when the claim was lost."""

    def __init__(self, store: JobStore, job_id: str) -> None:
        self.store, self.job_id = store, job_id
        self.event = threading.Event()
        self._checked = 0.0

    def stopped(self) -> bool:
        if self.event.is_set():
            return True
        now = time.monotonic()
        if now - self._checked > 0.2:
            self._checked = now
            try:
                if self.store.get(self.job_id).terminal:
                    self.event.set()
            except (JobNotFound, ValueError):
                self.event.set()
        return self.event.is_set()

    def sleep(self, seconds: float) -> bool:
        """Wait `seconds` unless told to stop first; whether to stop."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            if self.stopped() or self.event.wait(min(left, 0.2)):
                return True
        return self.stopped()


class _Heartbeat:
    """Refreshes a claim (and the chunk's progress in the job) every `interval` s, in its own thread."""

    def __init__(
        self, store: JobStore, job_id: str, name: int | str, me: str, interval: float, watch: _Watch
    ):
        self.store, self.job_id, self.name, self.me, self.watch = store, job_id, name, me, watch
        self.interval = interval
        self.done = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{job_id[:8]}-{name}", daemon=True)

    def __enter__(self) -> _Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.beat()
            except (JobNotFound, FileNotFoundError):
                self.watch.event.set()
                return
            except Exception:  # a shared file system hiccup: try again next beat
                log.exception("heartbeat of job %s chunk %s failed", self.job_id, self.name)

    def beat(self) -> None:
        done = self.done

        def change(job: Job) -> bool:
            claim = self.store.read_claim(self.job_id, self.name)
            if claim is None or claim.worker != self.me or job.terminal:
                self.watch.event.set()  # reclaimed by another worker, or the job ended
                return False
            self.store.write_claim(self.job_id, self.name, Claim(self.me, CLAIM_RUNNING, time.time(), done))
            if isinstance(self.name, int) and done > job.chunk_done[self.name]:
                job.advance(self.name, done)
                return True
            return False

        self.store.update(self.job_id, change)


class Runner:
    """Runs chunks and finish steps of the jobs in `store` with `predictor`; one per worker process."""

    def __init__(
        self,
        store: JobStore,
        settings: JobSettings,
        predictor: Predictor,
        finishers: Mapping[str, Finisher] | None = None,
        streamers: Mapping[str, Streamer] | None = None,
    ) -> None:
        """`finishers` by job kind write the results (default: FINISHERS, the predict job's exports);
        `streamers` by job kind run jobs that one worker streams whole (default: STREAMERS, video)."""
        self.store, self.settings, self.predictor = store, settings, predictor
        self.finishers: dict[str, Finisher] = {**FINISHERS, **(finishers or {})}
        self.streamers: dict[str, Streamer] = {**STREAMERS, **(streamers or {})}

    # -- one chunk -----------------------------------------------------------------------------------

    def run_chunk(self, job_id: str, index: int) -> None:
        """Predict chunk `index` of the job, write its records; then, if it was the last, finish the job."""
        try:
            job = self.store.get(job_id)
            if job.terminal or not 0 <= index < job.chunks:
                return
            if job.kind in self.streamers:
                self._stream(job)
                return
            if not self.store.chunk_finished(job_id, index):
                me = _claimant()
                if not self._claim(job_id, index, me):
                    return
                watch = _Watch(self.store, job_id)
                try:
                    with _Heartbeat(self.store, job_id, index, me, self.settings.heartbeat_s, watch) as beat:
                        lines = self._predict_chunk(job, index, watch, beat)
                        write_atomic(self.store.chunk_path(job_id, index), _jsonl(lines))
                except Stopped:
                    return
                except _JobFailed as failure:
                    self.fail(job_id, str(failure))
                    return
                self.store.update(job_id, lambda j: _chunk_done(j, index, lines))
            if all(self.store.chunk_finished(job_id, i) for i in range(job.chunks)):
                self.finish(job_id)
        except (JobNotFound, FileNotFoundError):
            return  # deleted meanwhile: nothing to do

    def _stream(self, job: Job) -> None:
        """A job streamed whole by one worker (a video): its one chunk claimed and kept alive as any
        chunk's, the streamer's result files recorded when it returns (see `Stream`)."""
        me = _claimant()
        if not self._claim(job.id, 0, me):
            return
        watch = _Watch(self.store, job.id)
        folder = self.store.results_folder(job.id)
        remove_temporaries(folder)
        try:
            with _Heartbeat(self.store, job.id, 0, me, self.settings.heartbeat_s, watch) as beat:

                def progress(done: int) -> None:
                    beat.done = done

                stream = Stream(
                    job=job,
                    input=self.store.folder(job.id) / VIDEO_INPUT,
                    folder=folder,
                    predict=lambda data, name: self._predict(job, data, name, watch),
                    stopped=watch.stopped,
                    progress=progress,
                    settings=self.settings,
                )
                written = dict(self.streamers[job.kind](stream))
        except Stopped:
            self._remove_if_deleted(job.id)
            return
        except (_JobFailed, JobError) as failure:
            self.fail(job.id, str(failure))
            return
        except Exception as error:  # a bug or a file the probe let through: fail with what happened
            log.exception("job %s: streaming failed", job.id)
            self.fail(job.id, f"the worker failed: {type(error).__name__}: {error}")
            return

        def change(current: Job) -> bool:
            if current.status != RUNNING:
                return False
            current.status, current.results = SUCCEEDED, list(written)
            current.progress["done"] = current.total
            current.chunk_done = [current.total]
            if current.model.get("version") is None and stream.model_version is not None:
                current.model["version"] = stream.model_version
            current.finished = now_iso()
            return True

        self._record_results(job.id, change, written)

    def _claim(self, job_id: str, name: int | str, me: str) -> bool:
        """Take the chunk (or the finish step) unless another worker holds a live claim; job is running."""
        taken = False

        def change(job: Job) -> bool:
            nonlocal taken
            if job.terminal:
                return False
            claim = self.store.read_claim(job_id, name)
            if (
                claim is not None
                and claim.state == CLAIM_RUNNING
                and claim.worker != me
                and not is_stale(claim, time.time(), self.settings.stale_s, 1)
            ):
                return False  # a duplicate of a task someone is running
            self.store.write_claim(job_id, name, Claim(me, CLAIM_RUNNING, time.time(), 0))
            taken = True
            if job.status == QUEUED:
                job.status = RUNNING
                job.started = now_iso()
                return True
            return False

        self.store.update(job_id, change)
        return taken

    def _predict_chunk(self, job: Job, index: int, watch: _Watch, beat: _Heartbeat) -> list[dict[str, Any]]:
        archive = self.store.archive(job)
        pictures = [archive.pictures[i] for i in job.chunk_range(index)]

        def one(picture: Picture) -> dict[str, Any]:
            if watch.stopped():  # checked before each picture: a cancel stops the chunk within a picture
                raise Stopped
            try:
                data = archive.read(picture)
            except EntryError as error:
                return {"file": picture.path, "skipped": error.reason}
            try:
                prediction = self._predict(job, data, picture.path, watch)
                if job.compare:  # an evaluate job comparing two models: each picture goes to both
                    second = self._predict(job, data, picture.path, watch, job.compare)
                    return {"file": picture.path, "prediction": prediction, "compare": second}
            except PictureError as error:
                return {"file": picture.path, "skipped": error.reason}
            return {"file": picture.path, "prediction": prediction}

        pool = ThreadPoolExecutor(self.settings.in_flight, thread_name_prefix=f"job-{job.id[:8]}")
        try:
            futures = [pool.submit(one, picture) for picture in pictures]
            pending = set(futures)
            while pending:
                finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished:
                    error = future.exception()
                    if error is not None:
                        watch.event.set()  # the other threads stop before their next picture
                        raise error
                    beat.done += 1
            return [future.result() for future in futures]
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def _predict(
        self, job: Job, data: bytes, file_name: str, watch: _Watch, model: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """One picture's prediction by the job's model (or `model`), retried while the server is away."""
        settings = self.settings
        tries = settings.retries + 1
        options = dict(job.options)
        if model is not None:
            options.pop("version_label", None)  # the job's model's label; the second model names its version
        model = model or job.model
        for attempt in range(tries):
            try:
                prediction = self.predictor.predict(
                    model["name"], model.get("version"), data, file_name, options
                )
            except RetryableError as error:
                if attempt + 1 == tries:
                    raise _JobFailed(
                        f"the model server stayed unavailable ({error}); {file_name} was tried {tries} times"
                    ) from None
                delay = min(settings.retry_backoff_s * 2**attempt, settings.max_backoff_s)
                log.warning("job %s: %s, trying %s again in %.2f s", job.id, error, file_name, delay)
                if watch.sleep(delay):
                    raise Stopped from None
                continue
            except (PictureError, Stopped):
                raise
            except JobError as error:
                raise _JobFailed(str(error)) from None
            except Exception as error:  # a bug in the predictor: fail the job with what happened, never hang
                log.exception("job %s: predicting %s failed", job.id, file_name)
                raise _JobFailed(
                    f"the worker failed on {file_name}: {type(error).__name__}: {error}"
                ) from None
            if not isinstance(prediction, dict):
                raise _JobFailed(
                    f"the predictor answered {type(prediction).__name__} for {file_name}, not JSON"
                )
            return prediction
        raise AssertionError("unreachable")

    def fail(self, job_id: str, reason: str) -> None:
        def change(job: Job) -> bool:
            if job.terminal:
                return False
            job.status, job.error, job.finished = FAILED, reason, now_iso()
            return True

        with contextlib.suppress(JobNotFound):
            self.store.update(job_id, change)

    # -- the end of a job ----------------------------------------------------------------------------

    def finish(self, job_id: str) -> None:
        """Assemble the results from every chunk's records, in picture order, and mark the job succeeded.

        Claimed like a chunk, so it runs once even when several last chunks end together; a worker killed
        here leaves a stale claim, and `reclaim` queues the finish step again.
        """
        try:
            job = self.store.get(job_id)
            if job.terminal or not all(self.store.chunk_finished(job_id, i) for i in range(job.chunks)):
                return
            me = _claimant()
            if not self._claim(job_id, FINISH, me):
                return
            watch = _Watch(self.store, job_id)
            with _Heartbeat(self.store, job_id, FINISH, me, self.settings.heartbeat_s, watch):
                self._assemble(job, watch)
        except (JobNotFound, FileNotFoundError):
            return
        except _JobFailed as failure:
            self.fail(job_id, str(failure))

    def _records(self, job: Job) -> Iterator[dict[str, Any]]:
        for index in range(job.chunks):
            with open(self.store.chunk_path(job.id, index), encoding="utf-8") as lines:
                for line in lines:
                    yield json.loads(line)

    def _assemble(self, job: Job, watch: _Watch) -> None:
        finisher = self.finishers.get(job.kind)
        if finisher is None:
            raise _JobFailed(f"this worker cannot finish {job.kind!r} jobs")
        folder = self.store.results_folder(job.id)
        remove_temporaries(folder)
        assembly = Assembly(
            job, folder, lambda: self._records(job), watch.stopped, archive=lambda: self.store.archive(job)
        )
        try:
            written = dict(finisher(assembly))
        except Stopped:
            self._remove_if_deleted(job.id)
            return
        except JobError as error:  # nothing to report on (the models' labels meet no category, ...)
            raise _JobFailed(str(error)) from None
        except Exception as error:  # a bug in a finisher: fail the job with what happened, never hang
            log.exception("job %s: writing the results failed", job.id)
            raise _JobFailed(
                f"the worker failed while writing the results: {type(error).__name__}: {error}"
            ) from None
        listed = [item.to_json() for item in self.store.archive(job).skipped]
        skipped = [
            {"file": line["file"], "reason": line["skipped"]}
            for line in assembly.lines()
            if "skipped" in line
        ]

        def change(current: Job) -> bool:
            if current.status != RUNNING:
                return False  # cancelled while assembling
            current.status = SUCCEEDED
            current.results = list(written)
            current.skipped = sorted([*listed, *skipped], key=lambda item: item["file"])
            current.omitted = assembly.omitted
            current.progress["done"] = current.total
            current.chunk_done = [len(current.chunk_range(i)) for i in range(current.chunks)]
            if current.model.get("version") is None and assembly.model_version is not None:
                current.model["version"] = assembly.model_version
            current.finished = now_iso()
            return True

        self._record_results(job.id, change, written)

    def _record_results(
        self, job_id: str, change: Callable[[Job], bool], written: Mapping[str, Path]
    ) -> None:
        """Mark the job succeeded with its results (`change`, under the job's lock); a job cancelled or
        deleted meanwhile keeps none of the files just written."""
        try:
            job = self.store.update(job_id, change)
        except JobNotFound:
            self._remove_if_deleted(job_id)
            return
        if job.status != SUCCEEDED:
            for path in written.values():
                path.unlink(missing_ok=True)

    def _remove_if_deleted(self, job_id: str) -> None:
        """A job deleted while it was assembled: remove what the finisher re-created of its folder."""
        folder = self.store.folder(job_id)
        if not (folder / "job.json").exists():
            shutil.rmtree(folder, ignore_errors=True)


def export_predictions(assembly: Assembly) -> dict[str, Path]:
    """The predict job's finisher: every result file of web.jobs.exporters, records in picture order."""
    job = assembly.job
    labels = dict(job.labels)
    if not labels:  # no label map given: the labels the model answered with
        for line in assembly.lines():
            for detection in (line.get("prediction") or {}).get("detections") or ():
                if "class_id" in detection and "label" in detection:
                    labels.setdefault(int(detection["class_id"]), str(detection["label"]))
    files = list(job.exports.get("files") or RESULT_FILES)
    with ExportSet(assembly.folder, labels, files, job.exports.get("options")) as exports:
        for count, line in enumerate(assembly.lines()):
            if count % 64 == 0 and assembly.stopped():
                raise Stopped
            if "prediction" in line:
                prediction = line["prediction"]
                if assembly.model_version is None:
                    assembly.model_version = (prediction.get("model") or {}).get("version")
                exports.add({**prediction, "file": line["file"]})
        written = exports.close()
        assembly.omitted = [{"file": item.file, "reason": item.reason} for item in exports.omitted]
    return written


def finish_evaluation(assembly: Assembly) -> Mapping[str, Path]:
    """The evaluate job's finisher (web.jobs.evaluate, imported when a worker first finishes one)."""
    from web.jobs.evaluate.finisher import finish_evaluation as finish

    return finish(assembly)


def stream_video(stream: Stream) -> Mapping[str, Path]:
    """The video job's streamer (web.jobs.video, with PyAV, imported when a worker first runs one)."""
    from web.jobs.video.job import run_video

    return run_video(stream)


FINISHERS: dict[str, Finisher] = {"predict": export_predictions, "evaluate": finish_evaluation}
STREAMERS: dict[str, Streamer] = {"video": stream_video}


# -- recovering lost work ------------------------------------------------------------------------------


def reclaim(
    store: JobStore,
    settings: JobSettings,
    enqueue_chunk: Callable[[str, int], None],
    enqueue_finish: Callable[[str], None],
    pending: Callable[[], int],
    now: float | None = None,
) -> list[tuple[str, int | str]]:
    """Queue again each unfinished chunk (or finish step) of a live job whose claim is stale; what was queued.

    One reclaimer at a time (a non-blocking flock on JOBS_FOLDER/.reclaim.lock); the others skip a round.
    """
    lock_path = store.root / ".reclaim.lock"
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return []
        return _reclaim_locked(store, settings, enqueue_chunk, enqueue_finish, pending(), now)
    finally:
        os.close(fd)


def _reclaim_locked(store, settings, enqueue_chunk, enqueue_finish, queued: int, now):
    requeued: list[tuple[str, int | str]] = []
    me = f"reclaim:{worker_id()}"
    for job in store.list():
        if job.terminal:
            continue
        try:
            names: list[int | str] = [i for i in range(job.chunks) if not store.chunk_finished(job.id, i)]
            if not names:
                names = [FINISH]
            for name in names:
                moment = time.time() if now is None else now
                claim = store.read_claim(job.id, name)
                if claim is None and name == FINISH:
                    # The finish step runs right after the last chunk, not from the queue: lost if it has not
                    # begun `stale_s` after the last chunk was written, whatever the queue holds.
                    claim, queued_now = Claim("", CLAIM_QUEUED, _last_chunk_time(store, job)), 0
                elif claim is None:  # never queued: the gateway stopped between create and submit
                    claim, queued_now = Claim("", CLAIM_QUEUED, parse_iso(job.created)), queued
                else:
                    queued_now = queued
                if not is_stale(claim, moment, settings.stale_s, queued_now):
                    continue
                if _mark_queued(store, job.id, name, claim, me, moment):
                    log.warning(
                        "job %s: %s %s was lost (claim %s), queued again", job.id, "step", name, claim
                    )
                    if name == FINISH:
                        enqueue_finish(job.id)
                    else:
                        enqueue_chunk(job.id, int(name))
                    requeued.append((job.id, name))
        except JobNotFound:
            continue
    return requeued


def _last_chunk_time(store: JobStore, job: Job) -> float:
    times = [store.chunk_path(job.id, i).stat().st_mtime for i in range(job.chunks)]
    return max(times, default=parse_iso(job.created))


def _mark_queued(store: JobStore, job_id: str, name: int | str, seen: Claim, me: str, now: float) -> bool:
    """Replace the stale claim by a queued one, unless it changed since it was read (someone took it)."""
    marked = False

    def change(job: Job) -> bool:
        nonlocal marked
        current = store.read_claim(job_id, name)
        if job.terminal or (current is not None and current != seen):
            return False
        store.write_claim(job_id, name, Claim(me, CLAIM_QUEUED, now))
        marked = True
        return False

    store.update(job_id, change)
    return marked


def mark_submitted(store: JobStore, job: Job, now: float | None = None) -> None:
    """Write a queued claim for every chunk (before they are enqueued): a lost queue is then noticed."""
    moment = time.time() if now is None else now
    for index in range(job.chunks):
        store.write_claim(job.id, index, Claim("submit", CLAIM_QUEUED, moment))


def _chunk_done(job: Job, index: int, lines: list[dict[str, Any]]) -> None:
    """Count the chunk's pictures and list its skipped ones now (the job JSON shows them as it runs)."""
    job.advance(index, len(lines))
    known = {item["file"] for item in job.skipped}
    job.skipped.extend(
        {"file": line["file"], "reason": line["skipped"]}
        for line in lines
        if "skipped" in line and line["file"] not in known
    )


def _jsonl(lines: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(line, ensure_ascii=False).encode("utf-8") + b"\n" for line in lines)


# -- the default predictor: the gateway's own predict API ------------------------------------------------

_CONTENT_TYPES = {
    "JPEG": "image/jpeg",
    "PNG": "image/png",
    "WEBP": "image/webp",
    "BMP": "image/bmp",
    "GIF": "image/gif",
    "TIFF": "image/tiff",
}
_PICTURE_STATUSES = frozenset({400, 413, 415, 422})
_RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
_OPTION_NAMES = ("min_score", "max_detections", "iou_threshold", "version_label")


class HttpPredictor:
    """POSTs each picture to the gateway's `/api/v1/models/<model>/predict` (stdlib only, one keep-alive
    connection per thread), so a job's pictures get exactly the checks and answers of /predict.

    GATEWAY_URL (default http://127.0.0.1:5000) says where the gateway is, JOB_API_KEY the key to send
    when the gateway has API_KEYS set.
    """

    def __init__(
        self, base_url: str = "http://127.0.0.1:5000", api_key: str | None = None, timeout_s: float = 120.0
    ):
        parts = urllib.parse.urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"GATEWAY_URL must be http(s)://host[:port], not {base_url!r}")
        self.base_url, self.api_key, self.timeout_s = base_url.rstrip("/"), api_key, timeout_s
        self._parts = parts
        self._local = threading.local()

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> HttpPredictor:
        env = os.environ if env is None else env
        return cls(env.get("GATEWAY_URL") or "http://127.0.0.1:5000", env.get("JOB_API_KEY") or None)

    def _connection(self) -> http.client.HTTPConnection:
        connection = getattr(self._local, "connection", None)
        if connection is None:
            kind = (
                http.client.HTTPSConnection if self._parts.scheme == "https" else http.client.HTTPConnection
            )
            connection = kind(self._parts.hostname, self._parts.port, timeout=self.timeout_s)
            self._local.connection = connection
        return connection

    def _drop_connection(self) -> None:
        connection = getattr(self._local, "connection", None)
        if connection is not None:
            connection.close()
            self._local.connection = None

    def predict(
        self, model: str, version: int | None, data: bytes, file_name: str, options: Mapping[str, Any]
    ) -> dict[str, Any]:
        query = {name: options[name] for name in _OPTION_NAMES if options.get(name) is not None}
        if version is not None:
            query["version"] = version
        path = f"{self._parts.path.rstrip('/')}/api/v1/models/{urllib.parse.quote(model, safe='')}/predict"
        if query:
            path += "?" + urllib.parse.urlencode(query)
        name = Path(file_name).name
        ascii_name = name.encode("ascii", "replace").decode().replace('"', "_").replace("\\", "_")
        headers = {
            "Content-Type": _CONTENT_TYPES.get(sniff_picture(data[:512]) or "", "application/octet-stream"),
            "Content-Disposition": (
                f"inline; filename=\"{ascii_name}\"; filename*=UTF-8''{urllib.parse.quote(name, safe='')}"
            ),
            "Accept": "application/json",
        }
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        for attempt in range(2):  # a keep-alive connection the gateway closed: one fresh try
            try:
                connection = self._connection()
                connection.request("POST", path, body=data, headers=headers)
                response = connection.getresponse()
                body = response.read()
                status = response.status
                break
            except (OSError, http.client.HTTPException) as error:
                self._drop_connection()
                if attempt == 1:
                    raise RetryableError(f"cannot reach the gateway at {self.base_url}: {error}") from None
        if status == 200:
            try:
                result = json.loads(body)
            except ValueError:
                raise RetryableError("the gateway answered 200 with something that is not JSON") from None
            if isinstance(result, dict):
                return result
            raise RetryableError("the gateway answered 200 with JSON that is not an object")
        message = _error_message(status, body)
        if status in _PICTURE_STATUSES:
            raise PictureError(message)
        if status in _RETRY_STATUSES:
            raise RetryableError(f"HTTP {status}: {message}")
        if status in (401, 403):
            raise JobError(
                f"the gateway refused the worker (HTTP {status}: {message}): set JOB_API_KEY to a key"
            )
        raise JobError(f"HTTP {status}: {message}")


def _error_message(status: int, body: bytes) -> str:
    try:
        return str(json.loads(body)["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return body.decode("utf-8", errors="replace").strip()[:300] or f"HTTP {status} without a body"
