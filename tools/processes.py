"""Starting and stopping the stack's processes: shared by `make run`, `make bench` and the tests."""

from __future__ import annotations

import signal
import socket
import subprocess
from pathlib import Path


def free_port() -> int:
    """A loopback TCP port nobody listens on right now (the usual bind-to-0 trick)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def log_tail(path: Path, limit: int = 4000) -> str:
    """The end of a process's log, for error messages."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "<no output>"
    return text[-limit:] if text else "<no output>"


def stop_process(proc: subprocess.Popen, timeout: float = 20.0) -> None:
    """SIGTERM (gunicorn and the model server shut down gracefully on it), then SIGKILL if needed."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout)
