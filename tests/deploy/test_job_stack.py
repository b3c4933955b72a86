"""The compose stack's job system run for real, without Docker: Debian's redis-server with the `redis`
service's command, `python -m web.worker` with the `worker` service's command and environment (and the
Dockerfile's ENV beneath it, as in the container), and the gateway's side with `web`'s environment.
Only the container paths and host names are mapped onto this machine; everything else is the files'.

It catches what the static checks cannot: a flag Redis refuses, a variable the worker trips over (the
Dockerfile's PROMETHEUS_MULTIPROC_DIR points at a folder only gunicorn creates), a healthcheck that
does not check anything.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import urllib.parse
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.deploy import compose
from tests.deploy.compose import GPU_FILE, REPO_ROOT
from tests.support.model_server import free_port
from tests.web.helpers import solid
from tests.web.jobs.queue_helpers import result_lines, wait_for
from tools.processes import log_tail, stop_process
from web.jobs.queue import JobQueue
from web.settings import Settings

MODEL = "shapes_jpeg"  # one of the demo models compose serves (tf_server/models.config)


def services() -> dict[str, Any]:
    return compose.resolved(GPU_FILE)["services"]


def dockerfile_env() -> dict[str, str]:
    text = re.sub(r"\\\n", " ", (REPO_ROOT / "Dockerfile").read_text())
    env: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("ENV "):
            for item in shlex.split(line[4:]):
                key, _, value = item.partition("=")
                env[key] = value
    return env


@pytest.fixture()
def redis_port(tmp_path: Path) -> Iterator[int]:
    """redis-server started with the compose service's own command line, on a free loopback port."""
    binary = shutil.which("redis-server")
    assert binary, "redis-server is missing: `make test` installs Debian's package"
    command = services()["redis"]["command"]
    assert command[0] == "redis-server"
    port = free_port()
    data = tmp_path / "redis"
    data.mkdir()
    log = tmp_path / "redis.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [binary, *command[1:], "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        yield port
    finally:
        stop_process(proc, 10)
        assert not any(data.iterdir()), f"Redis saved something: {list(data.iterdir())}"


def healthcheck(service: dict[str, Any], replace: dict[str, str]) -> int:
    """A compose healthcheck's command run here (CMD or CMD-SHELL), with `replace` applied to it."""
    kind, *command = service["healthcheck"]["test"]
    timeout = float(service["healthcheck"]["timeout"].rstrip("s"))
    args = ["sh", "-c", command[0]] if kind == "CMD-SHELL" else command
    for old, new in replace.items():
        args = [arg.replace(old, new) for arg in args]
    if args[0] == "python":
        args[0] = sys.executable
    try:
        return subprocess.run(args, capture_output=True, timeout=timeout).returncode
    except subprocess.TimeoutExpired:
        return -1


def on_this_machine(env: dict[str, str], service: dict[str, Any], mapping: dict[str, str]) -> dict[str, str]:
    """A service's environment with container paths and host names mapped onto this machine."""
    mapped = dict(env)
    for var, value in mapping.items():
        assert var in mapped, f"{var} is not set by the service"
        mapped[var] = value
    return mapped


def test_the_compose_redis_and_worker_run_a_job(
    demo_model_server: str, redis_port: int, tmp_path: Path
) -> None:
    config = services()
    web, worker, redis = config["web"], config["worker"], config["redis"]
    redis_cli = shutil.which("redis-cli")
    assert redis_cli, "redis-cli comes with Debian's redis-server (`make test` installs it)"
    # The compose healthcheck itself, pointed at this server.
    wait_for(lambda: healthcheck(redis, {"redis-cli": f"redis-cli -p {redis_port}"}) == 0, 20, "redis ping")

    queue_url = compose.environment(worker)["JOB_QUEUE_URL"]
    parts = urllib.parse.urlsplit(queue_url)
    local_queue = parts._replace(netloc=f"127.0.0.1:{redis_port}").geturl()
    jobs_folder = tmp_path / "jobs"
    metrics_folder = tmp_path / "tmp"  # the image's /tmp: exists, writable
    metrics_folder.mkdir()
    models_dir = compose.host_path(worker, compose.environment(worker)["MODELS_DIR"])
    mapping = {
        "TF_SERVING_ADDRESS": demo_model_server,
        # models.docker.config's base paths are the containers' /tf_server/...; models.config names
        # the same folders from here (test_compose checks that the two agree).
        "MODEL_CONFIG_FILE": str(REPO_ROOT / "tf_server" / "models.config"),
        "MODELS_DIR": str(models_dir),
        "JOBS_FOLDER": str(jobs_folder),
        "JOB_QUEUE_URL": local_queue,
    }
    worker_env = on_this_machine(compose.environment(worker), worker, mapping)
    assert worker_env["PROMETHEUS_MULTIPROC_DIR"] == "/tmp"
    worker_env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_folder)
    environ = {
        "PATH": os.environ["PATH"],
        "PYTHONPATH": str(REPO_ROOT),
        **dockerfile_env(),
        **worker_env,
    }
    command = list(worker["command"])
    assert command[0] == "python"
    log = tmp_path / "worker.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, *command[1:]], cwd=REPO_ROOT, env=environ, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        # The gateway's side, with web's settings: create the job and queue its chunks in Redis.
        web_env = on_this_machine(compose.environment(web), web, mapping)
        queue = JobQueue(Settings.load(environ=web_env).jobs)
        assert queue.settings.queue_url == local_queue and queue.settings.jobs_folder == jobs_folder
        upload = queue.store.incoming()
        pictures = {f"set/{i:02d}.jpg": solid(160, 120, (40 * i % 255, 90, 200)) for i in range(6)}
        with zipfile.ZipFile(upload, "w") as archive:
            for name, data in pictures.items():
                archive.writestr(name, data)
        job = queue.create(model=MODEL, archive=upload, options={"min_score": 0.0}, chunk_size=2)
        queue.submit(job)

        def ended() -> bool:
            assert proc.poll() is None, f"the worker exited:\n{log_tail(log)}"
            return queue.store.get(job.id).terminal

        wait_for(ended, 120, "the job to end")
        done = queue.store.get(job.id)
        assert done.status == "succeeded", f"{done.error}\n{log_tail(log)}"
        lines = result_lines(queue, job.id)
        assert sorted(line["file"] for line in lines) == sorted(pictures)
        assert all(line["model"]["name"] == MODEL for line in lines)
        # The worker's healthcheck (Kubernetes: its liveness probe), aimed at this worker's process.
        alive = {"/proc/1/stat": f"/proc/{proc.pid}/stat"}
        assert healthcheck(worker, alive) == 0
        os.kill(proc.pid, signal.SIGSTOP)
        try:
            assert healthcheck(worker, alive) != 0, "the healthcheck passed for a stopped worker"
        finally:
            os.kill(proc.pid, signal.SIGCONT)
        assert healthcheck(worker, alive) == 0
        # Nothing persisted, as the redis service's command says.
        saved = subprocess.run(
            [redis_cli, "-p", str(redis_port), "CONFIG", "GET", "save"], capture_output=True, text=True
        )
        assert saved.stdout.split("\n")[1] == ""
    finally:
        stop_process(proc, 30)
    assert "Traceback" not in log.read_text(errors="replace"), log_tail(log)


def test_the_kubernetes_worker_readiness_probe_asks_the_queue(redis_port: int) -> None:
    """The worker Deployment's readiness command, run here: ready while its Redis answers, not ready
    when nothing listens at JOB_QUEUE_URL."""
    from tests.deploy.test_k8s import plain_env, worker

    _, c = worker()
    command = c["readinessProbe"]["exec"]["command"]
    timeout = c["readinessProbe"]["timeoutSeconds"]
    assert command[0] == "python"
    url = urllib.parse.urlsplit(plain_env(c)["JOB_QUEUE_URL"])

    def probe(port: int) -> int:
        env = {"PATH": os.environ["PATH"], "JOB_QUEUE_URL": url._replace(netloc=f"127.0.0.1:{port}").geturl()}
        run = subprocess.run([sys.executable, *command[1:]], env=env, capture_output=True, timeout=timeout)
        return run.returncode

    wait_for(lambda: probe(redis_port) == 0, 20, "the readiness probe to pass")
    assert probe(free_port()) != 0
