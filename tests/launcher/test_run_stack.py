"""`make run`'s launcher: both processes start, /readyz turns 200, the URL is printed, Ctrl-C stops both."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

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
               OUTPUT_FOLDER=str(tmp_path / "out"))
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
        children = _children(proc.pid)
        assert len(children) == 2  # the model server and gunicorn's master

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
