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
# mallopt parameters (malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8
# Blocks this big or bigger (decoded photos, 36 MB for 12 MP) get their own mapping, returned to the
# OS the moment they are freed; smaller ones (a 640x480 request's 0.9 MB tensor) are reused from the
# heap instead of being mapped, faulted in and unmapped on every request.
MMAP_THRESHOLD_BYTES = 4 * 1024 * 1024
# Free memory at the top of a heap is kept up to this much before glibc gives it back by itself: more
# than one small request needs (about 5 MB for a 640x480 tensor input), little enough that a worker
# stays near 100 MB after 12 MP photos (32 MiB left it at 110-125 MB).
TRIM_THRESHOLD_BYTES = 8 * 1024 * 1024
# After a request body this large, trim explicitly: memory from pieces under MMAP_THRESHOLD_BYTES
# that a big upload needed at once would otherwise stay with the worker.
TRIM_AFTER_BODY_BYTES = 1024 * 1024
# And at most once a second, after any requests: freed memory between live blocks (what many
# concurrent requests leave) only goes back to the OS with an explicit trim. A trim costs 0.7-3.7 ms
# plus the page faults after it, so once a second is a few hundredths of a millisecond per request at
# 40 req/s, where trimming after every request cost all of it every time.
TRIM_INTERVAL_S = 1.0
_served = 0  # requests answered since the last periodic trim (no lock: only "any or none" matters)


def post_fork(server, worker) -> None:
    """Fixed malloc thresholds and two arenas for threads that mostly wait on gRPC (glibc's default is
    one arena per thread, each keeping its own freed memory).

    glibc's default thresholds adapt: a freed 1 MB block raises the mmap threshold, and then the top of
    the heap is trimmed back to the OS at every free, so each request faulted its buffers in again.
    Fixed thresholds keep a small request's memory warm (measured: building and serializing a 640x480
    tensor request, 2.3 ms of CPU before, 0.2 ms after) while photos still leave nothing behind.
    """
    global _LIBC
    _LIBC = _libc()
    if _LIBC is not None:
        _LIBC.mallopt(M_ARENA_MAX, 2)
        _LIBC.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
        _LIBC.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)
        import threading

        threading.Thread(target=_trim_every_interval, name="malloc-trim", daemon=True).start()


def _trim_every_interval() -> None:
    import time

    while True:
        time.sleep(TRIM_INTERVAL_S)
        trim_if_served()


def trim_if_served() -> bool:
    """One periodic step: trim when requests were answered since the last step; idle workers sleep."""
    global _served
    if not _served or _LIBC is None:
        return False
    _served = 0
    _LIBC.malloc_trim(0)
    return True


def post_request(worker, req, environ, resp) -> None:
    """Give memory back to the OS after a large upload (a 12 MP photo), not after every request: a
    trim costs 0.7-3.7 ms of CPU in the call and the page faults that follow it."""
    global _served
    _served += 1
    if _LIBC is None:
        return
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    if length >= TRIM_AFTER_BODY_BYTES:
        _LIBC.malloc_trim(0)
