"""The task queue that carries job chunks from the gateway to the workers: Huey.

Huey because its SQLite storage needs no server (the embedded default: one file under JOBS_FOLDER,
shared by the gateway and the workers on one machine) and its Redis storage spans machines
(JOB_QUEUE_URL=redis://host:port/db), with the same tasks and the same consumer for both. Only chunk
ids travel through the queue; the pictures and every result stay in the job store, so losing the
queue loses no work (`reclaim` queues again what is missing).
"""

from __future__ import annotations

import logging
import threading
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from web.jobs.config import JobSettings
from web.jobs.runner import Finisher, Predictor, Runner, mark_submitted, reclaim
from web.jobs.store import Job, JobStore

if TYPE_CHECKING:  # Huey (and the redis client it imports) loads with the first use of the queue
    from huey import Huey
    from huey.consumer import Consumer

log = logging.getLogger(__name__)
QUEUE_NAME = "web-jobs"
SQLITE_FILE = "queue.db"
REDIS_SCHEMES = ("redis", "rediss", "unix")


def check_queue_url(queue_url: str) -> None:
    """ValueError unless `queue_url` is a Redis URL (redis://, rediss://, unix://)."""
    if urllib.parse.urlsplit(queue_url).scheme not in REDIS_SCHEMES:
        raise ValueError(
            f"JOB_QUEUE_URL must be redis://host:port/db (or unset for the embedded queue), not {queue_url!r}"
        )


def make_huey(queue_url: str | None, jobs_folder: str | Path) -> Huey:
    """SqliteHuey in `jobs_folder` when `queue_url` is unset, RedisHuey for redis://, rediss://, unix://."""
    from huey import RedisHuey, SqliteHuey

    if not queue_url:
        folder = Path(jobs_folder)
        folder.mkdir(parents=True, exist_ok=True)
        return SqliteHuey(QUEUE_NAME, filename=str(folder / SQLITE_FILE), results=False)
    check_queue_url(queue_url)
    # read_timeout: an idle worker's BRPOP returns every second, so a stop signal is noticed quickly.
    return RedisHuey(QUEUE_NAME, url=queue_url, results=False, read_timeout=1)


class JobQueue:
    """The store, the queue and the tasks that connect them; the gateway submits, a worker runs them.

    `predictor` is needed only where tasks run (a worker); the gateway leaves it None.
    """

    def __init__(
        self,
        settings: JobSettings,
        predictor: Predictor | None = None,
        huey: Huey | None = None,
        finishers: Mapping[str, Finisher] | None = None,
    ):
        """`finishers`: result writers by job kind, besides the predict job's (see runner.Assembly)."""
        self.settings = settings
        self.finishers = dict(finishers or {})
        self.store = JobStore(settings.jobs_folder)
        if settings.queue_url:  # a bad JOB_QUEUE_URL is a start-up error, not a first-job one
            check_queue_url(settings.queue_url)
        self._huey = huey
        self.predictor = predictor
        self._runner: Runner | None = None
        self._lock = threading.Lock()

    @property
    def huey(self) -> Huey:
        """The queue, made (and its tasks registered) on first use: a gateway that never sees a job
        never imports Huey or the redis client (0.13 s and several MB per worker)."""
        with self._lock:
            if self._huey is None:
                self._huey = make_huey(self.settings.queue_url, self.settings.jobs_folder)
            if not hasattr(self, "run_chunk_task"):
                self._register_tasks(self._huey)
            return self._huey

    @property
    def runner(self) -> Runner:
        with self._lock:
            if self._runner is None:
                if self.predictor is None:
                    raise RuntimeError("this JobQueue has no predictor: only workers run job tasks")
                self._runner = Runner(self.store, self.settings, self.predictor, self.finishers)
            return self._runner

    def _register_tasks(self, huey: Huey) -> None:
        from huey import crontab

        @huey.task(name="run_chunk")
        def run_chunk(job_id: str, index: int) -> None:
            self.runner.run_chunk(job_id, index)

        @huey.task(name="finish_job")
        def finish_job(job_id: str) -> None:
            self.runner.finish(job_id)

        @huey.periodic_task(crontab(minute="*"), name="reclaim_and_expire")
        def reclaim_and_expire() -> None:
            self.reclaim()
            expired = self.store.expire(self.settings.retention_s)
            if expired:
                log.info("deleted %d jobs older than JOB_RETENTION_S", len(expired))

        self.run_chunk_task, self.finish_job_task = run_chunk, finish_job

    def create(self, **fields: Any) -> Job:
        """`JobStore.create` with this queue's JOB_CHUNK_SIZE (unless `chunk_size` is given)."""
        fields.setdefault("chunk_size", self.settings.chunk_size)
        return self.store.create(**fields)

    def submit(self, job: Job | str) -> None:
        """Queue every chunk of a newly created job."""
        job = self.store.get(job) if isinstance(job, str) else job
        mark_submitted(self.store, job)
        self.huey  # noqa: B018 - makes the queue and registers the tasks
        for index in range(job.chunks):
            self.run_chunk_task(job.id, index)

    def pending(self) -> int:
        """Tasks waiting in the queue (the queue-length metric; workers scale on it)."""
        return self.huey.pending_count()

    def reclaim(self) -> list[tuple[str, int | str]]:
        """Queue again the lost chunks of live jobs (see runner.reclaim); what was queued."""
        self.huey  # noqa: B018 - makes the queue and registers the tasks
        return reclaim(
            self.store,
            self.settings,
            lambda job_id, index: self.run_chunk_task(job_id, index),
            lambda job_id: self.finish_job_task(job_id),
            self.pending,
        )

    def consumer(self, workers: int | None = None) -> Consumer:
        """A Huey consumer with `workers` threads (default JOB_WORKER_THREADS) running this queue's tasks.

        SIGTERM (what Docker and Kubernetes send) stops it gracefully: no new chunk starts, running ones get
        JOB_SHUTDOWN_TIMEOUT_S to end; one cut short then is queued again by `reclaim`. SIGINT also.
        """
        poll = self.settings.poll_s
        return self.huey.create_consumer(
            workers=workers or self.settings.worker_threads,
            worker_type="thread",
            periodic=True,
            initial_delay=min(0.05, poll),
            backoff=1.5,
            max_delay=poll,
            check_worker_health=True,
            graceful_signal="TERM",
            shutdown_timeout=self.settings.shutdown_timeout_s,
        )
