"""Start the local TF-Serving-compatible model server (``python -m tf_server``) in a subprocess.

Used by the tests and `make bench`. The server opens its port only after its initial models have
loaded and warmed up (as ``tensorflow_model_server`` does), so a ready gRPC channel means the
models are AVAILABLE. A subprocess keeps TensorFlow out of the calling process.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc

from tools.processes import free_port, log_tail, stop_process

REPO_ROOT = Path(__file__).resolve().parent.parent
STOP_TIMEOUT_S = 30.0


class ModelServerStartError(RuntimeError):
    """The model server exited or did not open its port in time; carries its stderr tail."""


def _wait_until_serving(proc: subprocess.Popen, address: str, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(address) as channel:
        while True:
            if proc.poll() is not None:
                raise ModelServerStartError(
                    f"model server exited with code {proc.returncode} before serving; "
                    f"output tail:\n{log_tail(log)}"
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ModelServerStartError(
                    f"model server did not serve on {address} within {timeout:.0f}s; "
                    f"output tail:\n{log_tail(log)}"
                )
            try:
                grpc.channel_ready_future(channel).result(timeout=min(1.0, remaining))
                return
            except grpc.FutureTimeoutError:
                continue


@dataclass(frozen=True)
class ServerProcess:
    """A started model server: its address and the file collecting its stdout and stderr."""

    address: str
    log_path: Path
    process: subprocess.Popen

    def log(self) -> str:
        """Everything the server has logged so far (tests check TF-Serving-style log lines)."""
        return self.log_path.read_text(errors="replace")


def launch_model_server(
    port: int, flags: tuple[str, ...], log: Path, env: dict[str, str] | None = None
) -> subprocess.Popen:
    """Start ``python -m tf_server --port=<port> --host=127.0.0.1 *flags`` (TF_CPP_MIN_LOG_LEVEL=2),
    its output into ``log``; returns at once (the port opens once the models are loaded). ``env``
    adds to (or overrides) this process's environment, e.g. ``TF_ENABLE_ONEDNN_OPTS``."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1", **(env or {}))
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "tf_server", f"--port={port}", "--host=127.0.0.1", *flags],
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


@contextmanager
def model_server_process(
    *flags: str,
    startup_timeout: float = 180.0,
    log_dir: Path | None = None,
    port: int | None = None,
    env: dict[str, str] | None = None,
) -> Iterator[ServerProcess]:
    """Like `running_model_server`, but yields the process and its log too (kept in `log_dir` if
    given, else in a temporary folder removed afterwards); `port` picks the port (default: a free one);
    `env` is added to the server's environment."""
    port = port or free_port()
    address = f"127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="tf_server_log_") as tmp:
        log = Path(log_dir or tmp) / "model_server.log"
        proc = launch_model_server(port, flags, log, env)
        try:
            _wait_until_serving(proc, address, log, startup_timeout)
            yield ServerProcess(address, log, proc)
        finally:
            stop_process(proc, STOP_TIMEOUT_S)


@contextmanager
def running_model_server(*flags: str, startup_timeout: float = 180.0) -> Iterator[str]:
    """Start `sys.executable -m tf_server --port=<free port> --host=127.0.0.1 *flags`
    (TF_CPP_MIN_LOG_LEVEL=2), wait until it serves, yield "127.0.0.1:<port>", SIGTERM it at exit (and
    kill it if it does not stop); on a failed start raise ModelServerStartError with the server's
    output tail."""
    with model_server_process(*flags, startup_timeout=startup_timeout) as server:
        yield server.address
