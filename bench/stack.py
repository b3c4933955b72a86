"""Start and stop what the benchmark measures: the local model server and the gateway under gunicorn.

Both run as subprocesses on free loopback ports with their output in log files (the tails are
shown when a start fails). The gateway runs with production settings: several gunicorn workers
with threads, no `--reload`, no debug. This module also reads the workers' memory from /proc and
times the gateway's cold start.
"""

from __future__ import annotations

import dataclasses
import http.client
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tools.local_model_server import model_server_process
from tools.processes import free_port, log_tail, stop_process

ROOT = Path(__file__).resolve().parent.parent
STOP_TIMEOUT_S = 20.0
# Shared objects that only a process running the TensorFlow runtime maps.
TF_LIBRARY_MARKERS = ("libtensorflow", "_pywrap_tensorflow", "libtfkernel")


def base_env() -> dict[str, str]:
    return dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")


@contextmanager
def model_server(model_config: Path, log_dir: Path, timeout: float = 300.0) -> Iterator[str]:
    """``python -m tf_server`` with warmup on a free port; yields its address once the models serve."""
    with model_server_with_pid(model_config, log_dir, timeout) as (address, _pid):
        yield address


@contextmanager
def model_server_with_pid(model_config: Path, log_dir: Path,
                          timeout: float = 300.0) -> Iterator[tuple[str, int]]:
    """Like `model_server`, yielding (address, pid): the CPU modes move the process's threads."""
    flags = (f"--model_config_file={model_config}", "--enable_model_warmup=true")
    with model_server_process(*flags, startup_timeout=timeout, log_dir=log_dir) as server:
        yield server.address, server.process.pid


@dataclass(frozen=True)
class GatewaySettings:
    """How gunicorn runs the gateway; reported next to the results."""

    workers: int = 2
    threads: int = 8
    keep_alive_s: int = 5
    app: str = "web:create_app()"

    def flags(self) -> list[str]:
        # The Dockerfile's GUNICORN_CMD_ARGS (timeout, worker tmp dir on /dev/shm, access log on
        # stdout), with workers and threads sized for the machine the benchmark runs on.
        return [f"--workers={self.workers}", f"--threads={self.threads}", "--worker-class=gthread",
                f"--keep-alive={self.keep_alive_s}", "--timeout=60", "--graceful-timeout=30",
                "--worker-tmp-dir=/dev/shm", "--access-logfile=-"]

    def describe(self) -> str:
        return (f"gunicorn {self.workers} workers x {self.threads} threads (gthread), keep-alive "
                f"{self.keep_alive_s}s, access log on, Prometheus multiprocess mode (as in the Dockerfile)")


def gateway_env(model_server_address: str, model_config: Path, work_dir: Path) -> dict[str, str]:
    """The gateway's production environment, with its folders (and Prometheus' multiprocess folder,
    which several gunicorn workers need so /metrics adds them up) in the benchmark's temp dir."""
    folders = {name: work_dir / name for name in ("upload_folder", "output", "prometheus")}
    for folder in folders.values():
        folder.mkdir(exist_ok=True)
    env = dict(base_env(), TF_SERVING_ADDRESS=model_server_address, MODEL_CONFIG_FILE=str(model_config),
               UPLOAD_FOLDER=str(folders["upload_folder"]), OUTPUT_FOLDER=str(folders["output"]),
               PROMETHEUS_MULTIPROC_DIR=str(folders["prometheus"]))
    env.pop("API_KEYS", None)  # the benchmark calls the API without a key
    for name in ("GUNICORN_CMD_ARGS", "WEB_CONCURRENCY"):  # the flags above decide, not the caller's shell
        env.pop(name, None)
    return env


def gunicorn_command(port: int, settings: GatewaySettings) -> list[str]:
    return [sys.executable, "-m", "gunicorn", settings.app, f"--bind=127.0.0.1:{port}",
            *settings.flags()]


def http_get(port: int, path: str, timeout: float = 2.0) -> tuple[int | None, bytes]:
    """(status, body) of a GET on loopback, or (None, b"") while nothing listens."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    except OSError:
        return None, b""
    finally:
        conn.close()


@dataclass(frozen=True)
class Gateway:
    port: int
    process: subprocess.Popen
    log: Path


@contextmanager
def gateway(env: dict[str, str], settings: GatewaySettings, log_dir: Path,
            timeout: float = 300.0, name: str = "gateway") -> Iterator[Gateway]:
    """Run the gateway (or another app: `settings.app`) under gunicorn; yield once /readyz answers
    200 (the gateway: every model is AVAILABLE). Its output goes to `<log_dir>/<name>.log`."""
    port = free_port()
    log = log_dir / f"{name}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(gunicorn_command(port, settings), cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + timeout
        body = b""
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with code {proc.returncode}:\n{log_tail(log)}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} /readyz not 200 after {timeout:.0f}s: {body[:300]!r}\n"
                                   f"{log_tail(log)}")
            status, body = http_get(port, "/readyz")
            if status == 200:
                break
            time.sleep(0.2)
        yield Gateway(port=port, process=proc, log=log)
    finally:
        stop_process(proc, STOP_TIMEOUT_S)


# ---------------------------------------------------------------------------------------------
# /proc readings


def children_by_parent() -> dict[int, list[int]]:
    """Every process's direct children, from the parent pid in /proc/<pid>/stat."""
    by_parent: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # the command name may hold spaces and parentheses: fields resume after the last ')'
        parent = int(stat[stat.rindex(")") + 2:].split()[1])
        by_parent.setdefault(parent, []).append(int(entry.name))
    return by_parent


def children(pid: int) -> list[int]:
    """Direct children of `pid` (gunicorn's workers are the master's children)."""
    return sorted(children_by_parent().get(pid, []))


def memory_mb(pid: int) -> dict[str, float]:
    """VmRSS (now) and VmHWM (peak) in MB (10^6 bytes) from /proc/<pid>/status."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0]) * 1024 / 1e6
    return {"rss_mb": round(values.get("VmRSS", 0.0), 1), "peak_rss_mb": round(values.get("VmHWM", 0.0), 1)}


def tensorflow_loaded(pid: int) -> bool:
    """Whether the process has the TensorFlow runtime's shared libraries mapped."""
    maps = Path(f"/proc/{pid}/maps").read_text()
    return any(marker in maps for marker in TF_LIBRARY_MARKERS)


def worker_report(master_pid: int) -> list[dict]:
    """Memory and TensorFlow presence of every gunicorn worker of `master_pid`."""
    report = []
    for pid in children(master_pid):
        try:
            report.append({"pid": pid, **memory_mb(pid), "tensorflow_loaded": tensorflow_loaded(pid)})
        except OSError:
            continue
    return report


# ---------------------------------------------------------------------------------------------
# Cold start


def measure_startup(env: dict[str, str], log_dir: Path, base: GatewaySettings, repeats: int = 3,
                    poll_s: float = 0.01, timeout: float = 30.0) -> dict:
    """Seconds from `Popen(gunicorn ...)` to the first 200 from /healthz, one worker, `repeats` times."""
    settings = dataclasses.replace(base, workers=1)
    seconds: list[float] = []
    tf_seen = False
    idle_rss: list[float] = []  # a fresh worker after its imports, before any prediction
    failures: list[str] = []
    for attempt in range(repeats):
        port = free_port()
        log = log_dir / f"startup_{attempt}.log"
        run_env = dict(env)
        if "PROMETHEUS_MULTIPROC_DIR" in env:  # a clean one per start, as a real deployment has
            run_env["PROMETHEUS_MULTIPROC_DIR"] = str(log_dir / f"prometheus_startup_{attempt}")
            Path(run_env["PROMETHEUS_MULTIPROC_DIR"]).mkdir()
        with log.open("wb") as out:
            started = time.perf_counter()
            proc = subprocess.Popen(gunicorn_command(port, settings), cwd=ROOT, env=run_env,
                                    stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
        try:
            while True:
                elapsed = time.perf_counter() - started
                if proc.poll() is not None or elapsed > timeout:
                    failures.append(f"no /healthz after {elapsed:.1f}s (exit {proc.poll()}): "
                                    f"{log_tail(log, 500)}")
                    break
                status, _ = http_get(port, "/healthz", timeout=1.0)
                if status == 200:
                    seconds.append(time.perf_counter() - started)
                    workers = worker_report(proc.pid)
                    tf_seen |= any(w["tensorflow_loaded"] for w in workers)
                    idle_rss.extend(w["rss_mb"] for w in workers)
                    break
                time.sleep(poll_s)
        finally:
            stop_process(proc, STOP_TIMEOUT_S)
    return {
        "command": " ".join(gunicorn_command(0, settings)[1:]).replace("127.0.0.1:0", "127.0.0.1:PORT"),
        "seconds": [round(s, 3) for s in seconds],
        "median_s": round(statistics.median(seconds), 3) if seconds else None,
        "tensorflow_loaded": tf_seen,
        "fresh_worker_rss_mb": round(statistics.median(idle_rss), 1) if idle_rss else None,
        "failures": failures,
    }
