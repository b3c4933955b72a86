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


def _libc():
    """glibc, or None elsewhere (musl, macOS): the allocator tuning below is glibc's."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt, libc.malloc_trim  # noqa: B018 - both must exist
    except (OSError, AttributeError):
        return None
    return libc


_LIBC = None


def post_fork(server, worker) -> None:
    """Two malloc arenas are plenty for threads that mostly wait on gRPC (glibc's default is one per
    thread, each keeping its own freed memory)."""
    global _LIBC
    _LIBC = _libc()
    if _LIBC is not None:
        m_arena_max = -8
        _LIBC.mallopt(m_arena_max, 2)


def post_request(worker, req, environ, resp) -> None:
    """Give freed memory back to the OS after each request.

    A 4000x3000 upload needs a few 36 MB buffers for a moment; glibc keeps freed heap memory for
    reuse, so without this a worker's RSS stays at its peak. malloc_trim costs microseconds when
    there is nothing to return, and is not on the request's own latency (the answer is sent).
    """
    if _LIBC is not None:
        _LIBC.malloc_trim(0)
