"""Helpers of the job queue tests: pictures and zips, `python -m web.worker` subprocesses, bounded waits."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image

from web.jobs.config import JobSettings
from web.jobs.queue import JobQueue

REPO = Path(__file__).resolve().parents[3]
PREDICTOR = "tests.web.jobs.fake_model:Predictor"


def wait_for(condition: Callable[[], object], timeout: float, what: str) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def jpeg(seed: int, size: tuple[int, int] = (24, 16)) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG")
    return buf.getvalue()


def make_zip(path: Path, pictures: int, extra: dict[str, bytes] | None = None) -> dict[str, bytes]:
    """A zip of `pictures` JPEGs in two folders (plus `extra` entries); {path: bytes} of the pictures."""
    files = {f"{'a' if i % 2 else 'b/c'}/pic_{i:03d}.jpg": jpeg(i) for i in range(pictures)}
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in {**files, **(extra or {})}.items():
            zf.writestr(name, data)
    return files


# -- servers and workers -----------------------------------------------------------------------------


def job_settings(tmp_path: Path, queue_url: str | None, **overrides) -> JobSettings:
    base = JobSettings(
        jobs_folder=tmp_path / "jobs",
        queue_url=queue_url,
        chunk_size=8,
        worker_threads=2,
        in_flight=2,
        stale_s=2.0,
        reclaim_interval_s=0.3,
        retries=2,
        retry_backoff_s=0.05,
        poll_s=0.1,
    )
    return replace(base, **overrides)


class Workers:
    """`python -m web.worker` subprocesses for one queue; all killed at the end of the test."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.calls = tmp_path / "calls.log"
        self.processes: list[subprocess.Popen] = []

    def start(self, settings: JobSettings, predictor: str | None = PREDICTOR, **env: str) -> subprocess.Popen:
        """Start a worker; `predictor` None: its default one, the gateway's predict API at GATEWAY_URL."""
        log = open(self.tmp_path / f"worker-{len(self.processes)}.log", "wb")
        environ = {
            **os.environ,
            **settings.to_env(),
            "JOB_PREDICTOR": predictor or "",
            "FAKE_MODEL_CALLS": str(self.calls),
            "PYTHONPATH": str(REPO),
            **env,
        }
        if settings.queue_url is None:
            environ.pop("JOB_QUEUE_URL", None)
        process = subprocess.Popen(
            [sys.executable, "-m", "web.worker", "--log-level", "INFO"],
            cwd=REPO,
            env=environ,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        self.processes.append(process)
        return process

    def calls_by(self) -> list[tuple[int, str]]:
        if not self.calls.exists():
            return []
        lines = self.calls.read_text().splitlines()
        return [(int(pid), name) for pid, name in (line.split(" ", 1) for line in lines)]

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.tmp_path.glob("worker-*.log")))

    def stop_all(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)


def new_job(queue: JobQueue, tmp_path: Path, pictures: int, extra: dict[str, bytes] | None = None):
    upload = queue.store.incoming()
    files = make_zip(upload, pictures, extra)
    job = queue.create(model="shapes", archive=upload, options={"min_score": 0.3})
    return job, files


def wait_until_ended(queue: JobQueue, job_id: str, timeout: float, workers: Workers) -> list[int]:
    """Wait for the job to end; the progress values seen on the way."""
    seen: list[int] = []

    def ended() -> bool:
        job = queue.store.get(job_id)
        seen.append(job.progress["done"])
        return job.terminal

    try:
        wait_for(ended, timeout, f"job {job_id} to end")
    except AssertionError:
        raise AssertionError(
            f"job did not end: {queue.store.get(job_id)}\n{workers.logs()[-4000:]}"
        ) from None
    return seen


def result_lines(queue: JobQueue, job_id: str) -> list[dict]:
    path = queue.store.result_path(job_id, "predictions.jsonl")
    return [json.loads(line) for line in path.read_text().splitlines()]


def new_job_from(queue: JobQueue, entries: dict[str, bytes], model: str = "shapes", **fields):
    """A created (not yet submitted) job for a zip of `entries`."""
    upload = queue.store.incoming()
    with zipfile.ZipFile(upload, "w") as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return queue.create(model=model, archive=upload, **fields)
