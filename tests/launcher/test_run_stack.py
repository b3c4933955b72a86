"""`make run`'s launcher: model server, gateway and job worker start, /readyz turns 200, a job
runs, Ctrl-C stops all three."""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import zipfile

import requests
from PIL import Image

from tests.support.model_server import REPO_ROOT
from tools.processes import free_port


def _children(pid: int) -> list[int]:
    path = f"/proc/{pid}/task/{pid}/children"
    with open(path) as handle:
        return [int(p) for p in handle.read().split()]


def test_run_stack_serves_until_interrupted_then_stops_both_processes(tmp_path) -> None:
    port, grpc_port, rest_port = free_port(), free_port(), free_port()
    log = tmp_path / "run.log"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", UPLOAD_FOLDER=str(tmp_path / "up"),
               OUTPUT_FOLDER=str(tmp_path / "out"), JOB_QUEUE_POLL_S="0.2")
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tools.run_stack", "--host=127.0.0.1", f"--port={port}",
             f"--grpc-port={grpc_port}", f"--rest-port={rest_port}", "--workers=1", "--threads=2"],
            cwd=REPO_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while "ready in" not in log.read_text(errors="replace"):
            assert proc.poll() is None, log.read_text(errors="replace")
            assert time.monotonic() < deadline, "not ready in 180 s:\n" + log.read_text(errors="replace")
            time.sleep(0.5)
        assert f"open http://localhost:{port}/" in log.read_text()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=10) as response:
            ready = json.load(response)
        assert response.status == 200 and set(ready["models"]) == {"shapes", "shapes_jpeg", "digits"}
        # The model server's REST API, as TF Serving's: status, and a :predict in the row format.
        rest = f"http://127.0.0.1:{rest_port}/v1/models"
        with urllib.request.urlopen(f"{rest}/shapes", timeout=10) as response:
            status = json.load(response)
        assert status["model_version_status"][0]["state"] == "AVAILABLE"
        body = json.dumps({"instances": [[[[0.5, 0.5, 0.5]] * 32] * 32]}).encode()
        request = urllib.request.Request(f"{rest}/digits:predict", data=body, method="POST")
        with urllib.request.urlopen(request, timeout=30) as response:
            scores = json.load(response)["predictions"][0]
        assert len(scores) == 10 and abs(sum(scores) - 1.0) < 1e-3  # the classifier's softmax
        # make run's job worker: a zip of two pictures becomes a job that succeeds
        archive = io.BytesIO()
        with zipfile.ZipFile(archive, "w") as zf:
            for i in range(2):
                picture = io.BytesIO()
                Image.new("RGB", (96, 64), (40 * i, 90, 160)).save(picture, "JPEG")
                zf.writestr(f"p{i}.jpg", picture.getvalue())
        job = requests.post(f"http://127.0.0.1:{port}/api/v1/jobs", data={"model": "shapes"},
                            files={"archive": ("p.zip", archive.getvalue())}, timeout=30)
        assert job.status_code == 202, job.text
        deadline = time.monotonic() + 120
        while (state := requests.get(f"http://127.0.0.1:{port}{job.headers['Location']}", timeout=10).json())[
            "status"] in ("queued", "running"):
            assert time.monotonic() < deadline, state
            time.sleep(0.5)
        assert state["status"] == "succeeded" and state["progress"] == {"done": 2, "total": 2}, state
        children = _children(proc.pid)
        assert len(children) == 3  # the model server, gunicorn's master and the job worker

        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0
        for child in children:  # both were stopped and reaped, not left running as orphans
            assert not os.path.exists(f"/proc/{child}"), f"process {child} outlived `make run`"
    finally:
        if proc.poll() is None:  # a failed assertion above: take the launcher's children down too
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_run_stack_refuses_a_busy_port_with_a_clear_message() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "tools.run_stack", f"--port={port}", f"--grpc-port={free_port()}",
             f"--rest-port={free_port()}"],
            cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert f"port {port} for the gateway is already in use" in result.stderr and "PORT=" in result.stderr


def _model_server_pid(launcher: int) -> int:
    """The launcher's `python -m tf_server` child."""
    for child in _children(launcher):
        with open(f"/proc/{child}/cmdline", "rb") as handle:
            if b"tf_server" in handle.read().split(b"\0"):
                return child
    raise AssertionError("no model server among the launcher's children")


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as response:
            return response.status == 200
    except OSError:
        return False


def _wait(condition, what: str, log, timeout: float = 120.0) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what} in {timeout:.0f} s:\n" + log.read_text(errors="replace")
        time.sleep(0.5)


def test_a_crashed_or_hung_model_server_is_restarted_then_the_launcher_gives_up(tmp_path) -> None:
    """SIGKILL (a native crash) and SIGSTOP (an aborted process that hangs with its port open) are both
    noticed and the model server restarted, the gateway ready again each time; past --max-restarts the
    launcher stops everything with a message and exit code 1."""
    port, grpc_port = free_port(), free_port()
    log = tmp_path / "run.log"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", UPLOAD_FOLDER=str(tmp_path / "up"),
               OUTPUT_FOLDER=str(tmp_path / "out"), JOB_QUEUE_POLL_S="0.2")
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tools.run_stack", "--host=127.0.0.1", f"--port={port}",
             f"--grpc-port={grpc_port}", "--rest-port=0", "--workers=1", "--threads=2",
             "--max-restarts=2", "--hang-check-interval=1"],
            cwd=REPO_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait(lambda: "ready in" in log.read_text(errors="replace"), "not ready", log, 180)
        first = _model_server_pid(proc.pid)
        os.kill(first, signal.SIGKILL)
        _wait(lambda: "exited with signal SIGKILL; restarting it (restart 1 of 2" in log.read_text(),
              "no restart after SIGKILL", log)
        second = _model_server_pid(proc.pid)
        assert second != first
        _wait(lambda: _ready(port), "the gateway not ready again after the restart", log)
        _wait(lambda: "the model server answers again" in log.read_text(), "no answer after the restart", log)

        os.kill(second, signal.SIGSTOP)  # alive, port open, answers nothing
        _wait(lambda: "stopped answering" in log.read_text(), "the hang not noticed", log)
        _wait(lambda: "restart 2 of 2" in log.read_text(), "no restart after the hang", log)
        assert not os.path.exists(f"/proc/{second}") or "Z" in open(f"/proc/{second}/stat").read().split()[2]
        _wait(lambda: _ready(port), "the gateway not ready again after the second restart", log)

        children = _children(proc.pid)
        os.kill(_model_server_pid(proc.pid), signal.SIGKILL)
        assert proc.wait(timeout=60) == 1
        stopped = "the model server exited with signal SIGKILL, after 2 restarts in 10 minutes; stopping"
        assert f"error: {stopped}" in log.read_text()
        assert len(children) == 3
        for child in children:  # gunicorn and the worker stopped too, nothing left running
            assert not os.path.exists(f"/proc/{child}"), f"process {child} outlived the launcher"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
