"""Fixtures of the job queue tests: a real redis-server, queues on SQLite and Redis, worker subprocesses."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.model_server import free_port
from tests.web.jobs.queue_helpers import Workers, job_settings, wait_for
from web.jobs.queue import JobQueue


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real redis-server on a free loopback port (Debian's package; `make test` installs it)."""
    binary = shutil.which("redis-server")
    assert binary, "redis-server is missing: apt-get install -y redis-server (make test installs it)"
    folder = tmp_path_factory.mktemp("redis")
    port = free_port()
    args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    process = subprocess.Popen(
        [*args, "--dir", str(folder)], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
    )
    try:
        import redis

        client = redis.Redis(host="127.0.0.1", port=port)

        def ping() -> bool:
            try:
                return bool(client.ping())
            except redis.ConnectionError:
                assert process.poll() is None, "redis-server exited at start"
                return False

        wait_for(ping, 20, "redis-server to answer PING")
        client.close()
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


@pytest.fixture(params=["sqlite", "redis"])
def backend(request: pytest.FixtureRequest) -> str | None:
    """The queue URL: None (embedded SQLite) or the test redis-server's."""
    return request.getfixturevalue("redis_url") if request.param == "redis" else None


@pytest.fixture()
def make_queue(tmp_path: Path) -> Iterator[Callable[..., JobQueue]]:
    made: list[JobQueue] = []

    def factory(queue_url: str | None, **overrides) -> JobQueue:
        queue = JobQueue(job_settings(tmp_path, queue_url, **overrides))
        queue.huey.flush()  # the session's redis-server is shared by the tests
        made.append(queue)
        return queue

    yield factory
    for queue in made:
        queue.huey.flush()


@pytest.fixture()
def workers(tmp_path: Path) -> Iterator[Workers]:
    pool = Workers(tmp_path)
    yield pool
    pool.stop_all()


@pytest.fixture()
def serving(signature_server: str, signature_models: Path, tmp_path: Path) -> dict[str, str]:
    """The signature models' server and a fresh jobs folder, as the jobs API and evaluate tests run them."""
    return {
        "TF_SERVING_ADDRESS": signature_server,
        "MODEL_CONFIG_FILE": str(signature_models / "models.config"),
        "JOBS_FOLDER": str(tmp_path / "jobs"),
        "JOB_QUEUE_POLL_S": "0.1",
        "JOB_CHUNK_SIZE": "4",
    }
