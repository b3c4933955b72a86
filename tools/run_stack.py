"""`make run`: the whole stack on one machine, without Docker or a GPU.

Starts the local TF-Serving-compatible model server (``python -m tf_server``, gRPC on :8500 and
its REST API on :8501, as TF Serving's), the gateway under gunicorn and one job worker
(``python -m web.worker``, on the embedded queue under JOBS_FOLDER unless JOB_QUEUE_URL is set),
exactly as ``docker compose up`` wires them (same ``models.config``, same gRPC address setting),
waits until the gateway's ``/readyz`` says every model is AVAILABLE, prints the URL, and stops all
three on Ctrl-C.

The model server is supervised: if it exits (a native crash no request check foresaw), or stops
answering gRPC calls for ``HANG_CHECKS`` checks in a row (a process stuck after an abort keeps its
port open), it is killed and started again, at most ``MAX_RESTARTS`` times in ``RESTART_WINDOW_S``;
the gateway reconnects by itself. The job worker is restarted the same way when it exits (the chunks
it held are queued again by the job system). Past that, or if the gateway dies, everything stops
with a message and exit code 1.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import deque
from pathlib import Path

import grpc

from tools.processes import stop_process

ROOT = Path(__file__).resolve().parent.parent
MAX_RESTARTS = 5
RESTART_WINDOW_S = 600.0
HANG_CHECK_INTERVAL_S = 10.0
HANG_CHECK_TIMEOUT_S = 5.0
HANG_CHECKS = 3


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    env = os.environ
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default=env.get("HOST", "0.0.0.0"), help="gateway bind address")
    parser.add_argument("--port", type=int, default=int(env.get("PORT", "5000")), help="gateway HTTP port")
    parser.add_argument(
        "--grpc-port",
        type=int,
        default=int(env.get("MODEL_SERVER_PORT", "8500")),
        help="model server gRPC port",
    )
    parser.add_argument(
        "--rest-port",
        type=int,
        default=int(env.get("MODEL_SERVER_REST_PORT", "8501")),
        help="model server REST API port (TF Serving's /v1/models/...; 0: none)",
    )
    parser.add_argument(
        "--model-config",
        default=env.get("MODEL_CONFIG_FILE", "tf_server/models.config"),
        help="TF Serving models.config shared by both processes",
    )
    parser.add_argument(
        "--workers", type=int, default=int(env.get("WEB_CONCURRENCY", "2")), help="gunicorn worker processes"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=int(env.get("GUNICORN_THREADS", "4")),
        help="threads per gunicorn worker",
    )
    parser.add_argument(
        "--ready-timeout", type=float, default=300.0, help="seconds to wait for /readyz before giving up"
    )
    parser.add_argument(
        "--max-restarts",
        type=int,
        default=MAX_RESTARTS,
        help=f"model server restarts allowed in {RESTART_WINDOW_S / 60:.0f} minutes before giving up",
    )
    parser.add_argument(
        "--hang-check-interval",
        type=float,
        default=HANG_CHECK_INTERVAL_S,
        help=f"seconds between checks that the model server answers ({HANG_CHECKS} missed: restart)",
    )
    return parser.parse_args(argv)


def port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def readyz(url: str) -> tuple[int | None, str]:
    """Status code and body of /readyz, or (None, reason) while nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status, response.read().decode(errors="replace")
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode(errors="replace")
    except (urllib.error.URLError, OSError) as err:
        return None, str(err)


def answers_grpc(address: str, timeout: float = HANG_CHECK_TIMEOUT_S) -> bool:
    """Whether the model server's request handlers still answer: an empty ``GetModelStatus`` gets a
    status back (NOT_FOUND or INVALID_ARGUMENT) from a live server; a hung one lets it time out."""
    with grpc.insecure_channel(address) as channel:
        call = channel.unary_unary("/tensorflow.serving.ModelService/GetModelStatus")
        try:
            call(b"", timeout=timeout)
        except grpc.RpcError as error:
            return error.code() not in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNAVAILABLE)
        return True


def exit_text(code: int) -> str:
    """``code 1`` or ``signal SIGABRT`` for a Popen return code."""
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"code {code}"


class Supervisor:
    """Restarts the model server when it exits or hangs, within a restart budget."""

    def __init__(
        self,
        command: list[str],
        env: dict[str, str],
        address: str | None,
        max_restarts: int = MAX_RESTARTS,
        interval: float = HANG_CHECK_INTERVAL_S,
        name: str = "model server",
    ) -> None:
        """`address`: the gRPC address to check for hangs (None: only exits are noticed)."""
        self.command, self.env, self.address, self.name = command, env, address, name
        self.max_restarts, self.interval = max_restarts, interval
        self.restarts: deque[float] = deque()
        self.proc = self._start()

    def _start(self) -> subprocess.Popen:
        self.started = time.monotonic()
        self.next_check = self.started + self.interval
        self.missed = 0
        self.serving = False  # a server still loading its models has no port open yet: not a hang
        return subprocess.Popen(self.command, cwd=ROOT, env=self.env)

    def check(self) -> str | None:
        """Restart the server if it died or hangs; the reason to stop everything, or None."""
        problem = None
        if self.proc.poll() is not None:
            problem = f"the {self.name} exited with {exit_text(self.proc.returncode)}"
        elif self.address is not None and time.monotonic() >= self.next_check:
            self.next_check = time.monotonic() + self.interval
            answers = answers_grpc(self.address)
            if answers and not self.serving and self.restarts:
                print(f"the model server answers again on {self.address}", flush=True)
            self.serving = self.serving or answers
            self.missed = 0 if answers or not self.serving else self.missed + 1
            if self.missed >= HANG_CHECKS:
                problem = f"the {self.name} stopped answering on {self.address} for {HANG_CHECKS} checks"
        if problem is None:
            return None
        now = time.monotonic()
        while self.restarts and now - self.restarts[0] > RESTART_WINDOW_S:
            self.restarts.popleft()
        if len(self.restarts) >= self.max_restarts:
            window = f"{RESTART_WINDOW_S / 60:.0f} minutes"
            return f"{problem}, after {self.max_restarts} restarts in {window}; stopping"
        self.restarts.append(now)
        print(
            f"warning: {problem}; restarting it (restart {len(self.restarts)} of {self.max_restarts} "
            f"allowed in {RESTART_WINDOW_S / 60:.0f} minutes)",
            file=sys.stderr,
            flush=True,
        )
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)
        self.proc = self._start()
        return None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    config = (ROOT / args.model_config).resolve()
    if not config.is_file():
        print(f"error: model config {config} not found (set MODEL_CONFIG_FILE)", file=sys.stderr)
        return 2
    for port, what, var in (
        (args.port, "gateway", "PORT"),
        (args.grpc_port, "model server", "MODEL_SERVER_PORT"),
        (args.rest_port, "model server's REST API", "MODEL_SERVER_REST_PORT"),
    ):
        if port and port_in_use(port):
            print(
                f"error: port {port} for the {what} is already in use; free it or set {var}=<port>",
                file=sys.stderr,
            )
            return 2

    env = dict(
        os.environ, TF_CPP_MIN_LOG_LEVEL=os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"), PYTHONUNBUFFERED="1"
    )
    env["TF_SERVING_ADDRESS"] = f"127.0.0.1:{args.grpc_port}"
    env["MODEL_CONFIG_FILE"] = str(config)
    model_server = [
        sys.executable,
        "-m",
        "tf_server",
        f"--port={args.grpc_port}",
        "--host=127.0.0.1",  # only the gateway on this machine talks to it
        f"--model_config_file={config}",
        "--model_config_file_poll_wait_seconds=30",
        "--file_system_poll_wait_seconds=2",
        "--enable_model_warmup=true",
        f"--rest_api_port={args.rest_port}",
        f"--monitoring_config_file={ROOT / 'tf_server' / 'monitoring.config'}",
    ]
    gateway = [
        sys.executable,
        "-m",
        "gunicorn",
        "web:create_app()",
        f"--bind={args.host}:{args.port}",
        f"--workers={args.workers}",
        f"--threads={args.threads}",
        "--access-logfile=-",
    ]

    rest = f", REST API on 127.0.0.1:{args.rest_port}" if args.rest_port else ""
    where = f":{args.grpc_port}{rest}"
    print(f"starting the model server on {where} with {config.relative_to(ROOT)} ...", flush=True)
    model = Supervisor(
        model_server, env, env["TF_SERVING_ADDRESS"], args.max_restarts, args.hang_check_interval
    )
    print("starting a job worker (python -m web.worker) ...", flush=True)
    worker = Supervisor(
        [sys.executable, "-m", "web.worker"], env, None, args.max_restarts, name="job worker"
    )
    print(
        f"starting the gateway on {args.host}:{args.port} "
        f"({args.workers} workers x {args.threads} threads) ...",
        flush=True,
    )
    gateway_proc = subprocess.Popen(gateway, cwd=ROOT, env=env)

    interrupted = False

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal interrupted
        interrupted = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    url = f"http://localhost:{args.port}"
    started = time.monotonic()
    ready = False
    last_note = 0.0
    try:
        while not interrupted:
            if gateway_proc.poll() is not None:
                code = exit_text(gateway_proc.returncode)
                print(f"error: the gateway exited with {code}; stopping", file=sys.stderr)
                return 1
            stop = model.check() or worker.check()
            if stop:
                print(f"error: {stop}", file=sys.stderr)
                return 1
            if not ready:
                status, body = readyz(f"{url}/readyz")
                elapsed = time.monotonic() - started
                if status == 200:
                    ready = True
                    print(
                        f"\nready in {elapsed:.0f}s: open {url}/ (REST API docs at {url}/docs); "
                        "Ctrl-C stops everything",
                        flush=True,
                    )
                elif elapsed > args.ready_timeout:
                    print(
                        f"error: not ready after {args.ready_timeout:.0f}s: {body.strip()[:300]}",
                        file=sys.stderr,
                    )
                    return 1
                elif elapsed - last_note >= 10:
                    last_note = elapsed
                    print(
                        f"waiting for the models to load ({elapsed:.0f}s): {body.strip()[:200]}", flush=True
                    )
            time.sleep(0.5)
        print("\nstopping ...", flush=True)
        return 0
    finally:
        for proc in (gateway_proc, worker.proc, model.proc):  # the model server last: the others use it
            stop_process(proc, timeout=15.0)


if __name__ == "__main__":
    sys.exit(main())
