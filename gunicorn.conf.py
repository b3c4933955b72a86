"""gunicorn settings every launcher shares (`make run`, the Docker image, `make bench`).

gunicorn reads ./gunicorn.conf.py from its working directory, so these hooks apply wherever the
gateway is started from the repository root (or /app in the image). Command-line flags and
GUNICORN_CMD_ARGS still set binds, workers and threads.

Metrics: each worker is a separate process, so prometheus-client's multiprocess mode is needed
for /metrics to add up all workers. It requires PROMETHEUS_MULTIPROC_DIR to name an empty
folder before any worker imports prometheus_client, and dead workers to be marked so their
gauges are dropped.
"""

import os
import tempfile
from pathlib import Path


def on_starting(server) -> None:
    folder = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not folder:
        folder = tempfile.mkdtemp(prefix="gateway-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = folder
    path = Path(folder)
    path.mkdir(parents=True, exist_ok=True)
    for stale in path.glob("*.db"):  # numbers of a previous run would be added to this one's
        stale.unlink()


def child_exit(server, worker) -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
