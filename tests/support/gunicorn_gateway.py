"""The gateway as it runs in production, for tests: `gunicorn "web:create_app()"` in a subprocess on a
free loopback port (gunicorn.conf.py applies), in front of a model server the test started."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import requests

from tests.support.model_server import REPO_ROOT, free_port
from tools.processes import log_tail, stop_process

START_TIMEOUT_S = 60.0


@contextmanager
def running_gateway(
    folder: Path,
    *,
    workers: int = 1,
    threads: int = 4,
    preexec_fn: Callable[[], None] | None = None,
    **settings: str | Path,
) -> Iterator[str]:
    """Yield the base URL of gunicorn serving the gateway; `settings` are its environment variables
    (TF_SERVING_ADDRESS, MODEL_CONFIG_FILE, ...); results and the log go to `folder`."""
    port = free_port()
    folder.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, UPLOAD_FOLDER=str(folder / "upload_folder"), OUTPUT_FOLDER=str(folder / "output"))
    env.update({key: str(value) for key, value in settings.items()})  # may name other folders
    log_path = folder / "gunicorn.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                f"--workers={workers}",
                f"--threads={threads}",
                f"--bind=127.0.0.1:{port}",
                "web:create_app()",
            ],
            cwd=REPO_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=preexec_fn,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            assert proc.poll() is None, f"gunicorn exited:\n{log_tail(log_path)}"
            try:
                if requests.get(f"{base}/healthz", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline, f"gunicorn did not come up:\n{log_tail(log_path)}"
            time.sleep(0.2)
        yield base
    finally:
        stop_process(proc, 30)
