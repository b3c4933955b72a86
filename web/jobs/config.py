"""The job system's settings, read from environment variables (the gateway and every worker read the same)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

DEFAULT_JOBS_FOLDER = "output/jobs"


@dataclass(frozen=True)
class JobSettings:
    """Where jobs live, which queue carries them, and how workers split and retry the work."""

    jobs_folder: Path = Path(DEFAULT_JOBS_FOLDER)  # JOBS_FOLDER: shared by the gateway and all workers
    queue_url: str | None = None  # JOB_QUEUE_URL: unset = SQLite under JOBS_FOLDER; redis://host:port/db
    chunk_size: int = 16  # JOB_CHUNK_SIZE: pictures per queued task
    worker_threads: int = 2  # JOB_WORKER_THREADS: chunks one worker process runs at once
    in_flight: int = 4  # JOB_PICTURES_IN_FLIGHT: predictions one chunk keeps in flight
    stale_s: float = 30.0  # JOB_STALE_S: a chunk whose worker is silent this long is queued again
    reclaim_interval_s: float = 10.0  # JOB_RECLAIM_INTERVAL_S: how often a worker looks for such chunks
    retries: int = 5  # JOB_PREDICT_RETRIES: tries after the first when the model server is unavailable
    retry_backoff_s: float = 0.5  # JOB_RETRY_BACKOFF_S: first wait between tries, doubled each time
    max_backoff_s: float = 30.0  # JOB_MAX_BACKOFF_S
    retention_s: float = 7 * 24 * 3600.0  # JOB_RETENTION_S: ended jobs are deleted this long after
    poll_s: float = 1.0  # JOB_QUEUE_POLL_S: longest wait of an idle worker between looks at the SQLite queue
    shutdown_timeout_s: float = (
        20.0  # JOB_SHUTDOWN_TIMEOUT_S: on SIGTERM, running chunks get this long to end
    )

    def __post_init__(self) -> None:
        for name in ("chunk_size", "worker_threads", "in_flight"):
            if getattr(self, name) < 1:
                raise ValueError(f"{ENV_NAMES[name]} must be at least 1, not {getattr(self, name)}")
        for name in ("stale_s", "reclaim_interval_s", "retention_s", "poll_s", "shutdown_timeout_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{ENV_NAMES[name]} must be a positive number of seconds")
        if self.retries < 0 or self.retry_backoff_s < 0 or self.max_backoff_s < 0:
            raise ValueError(
                "JOB_PREDICT_RETRIES, JOB_RETRY_BACKOFF_S and JOB_MAX_BACKOFF_S cannot be negative"
            )

    @property
    def heartbeat_s(self) -> float:
        """How often a working chunk refreshes its claim and the job's progress: well inside `stale_s`."""
        return min(self.stale_s / 3, 1.0)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> JobSettings:
        """Settings from `env` (default os.environ); ValueError naming the variable for a bad value."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for item in fields(cls):
            raw = env.get(ENV_NAMES[item.name], "").strip()
            if not raw:
                continue
            default = getattr(cls(), item.name)
            kind = type(default) if isinstance(default, int | float | Path) else str
            try:
                values[item.name] = kind(raw)
            except ValueError:
                raise ValueError(f"{ENV_NAMES[item.name]}={raw!r} is not a valid {kind.__name__}") from None
        return cls(**values)

    def to_env(self) -> dict[str, str]:
        """The environment variables that give these settings (for starting workers as subprocesses)."""
        out = {}
        for item in fields(self):
            value = getattr(self, item.name)
            if value is not None:
                out[ENV_NAMES[item.name]] = str(value)
        return out


ENV_NAMES = {
    "jobs_folder": "JOBS_FOLDER",
    "queue_url": "JOB_QUEUE_URL",
    "chunk_size": "JOB_CHUNK_SIZE",
    "worker_threads": "JOB_WORKER_THREADS",
    "in_flight": "JOB_PICTURES_IN_FLIGHT",
    "stale_s": "JOB_STALE_S",
    "reclaim_interval_s": "JOB_RECLAIM_INTERVAL_S",
    "retries": "JOB_PREDICT_RETRIES",
    "retry_backoff_s": "JOB_RETRY_BACKOFF_S",
    "max_backoff_s": "JOB_MAX_BACKOFF_S",
    "retention_s": "JOB_RETENTION_S",
    "poll_s": "JOB_QUEUE_POLL_S",
    "shutdown_timeout_s": "JOB_SHUTDOWN_TIMEOUT_S",
}
