"""The stack's nginx config: accepted by `nginx -t`, and in front of the real gateway it keeps slow
clients away from gunicorn's threads (which, facing them directly, they hold). Job uploads are the
one exception: on POST /api/v1/jobs (and /jobs) a body far above the normal cap streams through to
the gateway, at most four at once.

The template is filled with the proxy service's environment from docker-compose.yaml (what the
official image's entrypoint does), so a template variable compose does not set fails here."""

from __future__ import annotations

import io
import json
import os
import re
import socket
import subprocess
import threading
import time
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests

from tests.deploy import compose
from tests.deploy.compose import GPU_FILE
from tests.support.gunicorn_gateway import running_gateway
from tests.support.model_server import REPO_ROOT, free_port
from tests.support.nginx import MAIN_CONF, TEMPLATE, check_config, executable, render
from tests.web.helpers import solid
from tools.processes import log_tail, stop_process

SLOW_CLIENTS = 12
TRICKLE_S = 0.5  # one byte every half second
MAX_HOLD_S = 40.0  # every slow client gives up by then, whatever happens
MIB = 1024 * 1024
ABOVE_THE_NORMAL_CAP = 18 * MIB  # CLIENT_MAX_BODY_SIZE is 17m
JOB_UPLOADS_AT_ONCE = 4  # the template's limit_conn


def proxy_environment(upstream: str, **overrides: str) -> dict[str, str]:
    """The variables docker-compose.yaml gives the proxy service, the upstream pointed at our gateway."""
    env = compose.environment(compose.resolved(GPU_FILE)["services"]["proxy"])
    return {**env, "GATEWAY_UPSTREAM": upstream, **overrides}


def write_config(root: Path, upstream: str, port: int, **overrides: str) -> Path:
    """A main config including the template rendered as the image renders it, on 127.0.0.1:`port`."""
    (root / "conf.d").mkdir(parents=True, exist_ok=True)
    variables = proxy_environment(upstream, **overrides)
    conf = render(TEMPLATE.read_text(), variables)
    left = re.findall(r"\$\{\w+\}", conf)
    assert not left, f"compose's proxy service does not set {left}"
    conf = re.sub(r"^(\s*)listen \d+;", rf"\1listen 127.0.0.1:{port};", conf, flags=re.MULTILINE)
    (root / "conf.d" / "gateway.conf").write_text(conf)
    main = root / "nginx.conf"
    user = "user root;\n" if os.geteuid() == 0 else ""
    main.write_text(MAIN_CONF.format(root=root, user=user))
    return main


@contextmanager
def running_nginx(root: Path, upstream: str, **overrides: str) -> Iterator[str]:
    """Yield the base URL of nginx proxying to `upstream` (host:port) with the stack's config."""
    port = free_port()
    main = write_config(root, upstream, port, **overrides)
    proc = subprocess.Popen(
        [executable(), "-c", str(main), "-p", str(root), "-g", "daemon off;"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            assert proc.poll() is None, f"nginx exited:\n{log_tail(root / 'error.log')}"
            try:
                requests.get(f"{url}/healthz", timeout=2)
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline, f"nginx did not start:\n{log_tail(root / 'error.log')}"
                time.sleep(0.1)
        yield url
    finally:
        stop_process(proc, 10)


def test_the_config_passes_nginx_t(tmp_path: Path) -> None:
    main = write_config(tmp_path, "127.0.0.1:5000", 8080)
    result = check_config(main)
    assert result.returncode == 0, result.stderr
    assert "syntax is ok" in result.stderr and "test is successful" in result.stderr


@contextmanager
def slow_clients(host: str, port: int, count: int = SLOW_CLIENTS) -> Iterator[list[socket.socket]]:
    """`count` connections that send a request a byte at a time: half trickle headers, half a body."""
    stop = threading.Event()
    sockets: list[socket.socket] = []

    def trickle(index: int) -> None:
        sock = socket.create_connection((host, port), timeout=5)
        sockets.append(sock)
        if index % 2:
            head = b"POST /api/v1/models/shapes/predict HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n"
            head += b"Content-Type: image/jpeg\r\n\r\n"
            sock.sendall(head)
            chunk = b"\xff"
        else:
            chunk = b"X"
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        deadline = time.monotonic() + MAX_HOLD_S
        while not stop.is_set() and time.monotonic() < deadline:
            try:
                sock.sendall(chunk)
            except OSError:
                return  # the server (nginx) gave up on us
            stop.wait(TRICKLE_S)

    threads = [threading.Thread(target=trickle, args=(i,), daemon=True) for i in range(count)]
    for thread in threads:
        thread.start()
    time.sleep(1.0)  # let every one of them get a thread (or an nginx connection)
    try:
        yield sockets
    finally:
        stop.set()
        for sock in sockets:
            sock.close()
        for thread in threads:
            thread.join(timeout=5)


def _healthy(url: str, timeout: float) -> bool:
    try:
        return requests.get(f"{url}/healthz", timeout=timeout).status_code == 200
    except requests.RequestException:
        return False


@pytest.fixture(scope="module")
def gunicorn_url(demo_model_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("gateway_behind_nginx")
    settings = {
        "TF_SERVING_ADDRESS": demo_model_server,
        "MODEL_CONFIG_FILE": REPO_ROOT / "tf_server" / "models.config",
        "TRUSTED_PROXIES": "1",
        "JOBS_FOLDER": folder / "jobs",
    }
    with running_gateway(folder, workers=1, threads=4, **settings) as url:
        yield url


def test_slow_clients_hold_gunicorn_directly(gunicorn_url: str) -> None:
    """The control: without nginx, a dozen trickling clients take every thread."""
    host, port = gunicorn_url.removeprefix("http://").split(":")
    assert _healthy(gunicorn_url, 5)
    with slow_clients(host, int(port)):
        assert not _healthy(gunicorn_url, 3), "gunicorn answered while its threads were held"
    assert _healthy(gunicorn_url, 10)  # and it recovers once they are gone


def test_behind_nginx_slow_clients_do_not_block_anyone(gunicorn_url: str, tmp_path: Path) -> None:
    upstream = gunicorn_url.removeprefix("http://")
    with running_nginx(tmp_path, upstream) as url:
        host, port = url.removeprefix("http://").split(":")
        with slow_clients(host, int(port)):
            start = time.monotonic()
            assert _healthy(url, 3)
            response = requests.post(
                f"{url}/api/v1/models/shapes_jpeg/predict",
                files={"image": ("p.jpg", solid(320, 240), "image/jpeg")},
                timeout=30,
            )
            assert response.status_code == 200, response.text
            assert time.monotonic() - start < 10
        # The proxy passed the client's scheme and host on; the gateway (TRUSTED_PROXIES=1) used them.
        page = requests.get(f"{url}/readyz", timeout=10)
        assert page.status_code == 200
        too_big = requests.post(
            f"{url}/api/v1/models/shapes/predict",
            data=b"\xff" * (18 * 1024 * 1024),
            timeout=30,
            headers={"Content-Type": "image/jpeg"},
        )
        assert too_big.status_code == 413


# --- job uploads -----------------------------------------------------------------------------------


def padded_archive(size: int) -> bytes:
    """A real job archive of about `size` bytes: one picture and a stored (incompressible) filler."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("pictures/one.jpg", solid(320, 240))
        archive.writestr("filler.bin", os.urandom(size), compress_type=zipfile.ZIP_STORED)
    return buffer.getvalue()


def test_behind_nginx_a_job_archive_above_the_normal_cap_reaches_the_gateway(
    gunicorn_url: str, tmp_path: Path
) -> None:
    body = padded_archive(ABOVE_THE_NORMAL_CAP)
    assert len(body) > ABOVE_THE_NORMAL_CAP
    with running_nginx(tmp_path, gunicorn_url.removeprefix("http://")) as url:
        response = requests.post(
            f"{url}/api/v1/jobs",
            data={"model": "shapes_jpeg"},
            files={"archive": ("set.zip", body, "application/zip")},
            timeout=60,
        )
        assert response.status_code == 202, response.text
        job = response.json()
        assert job["status"] in ("queued", "running") and job["model"]["name"] == "shapes_jpeg"
        assert requests.get(f"{url}/api/v1/jobs/{job['id']}", timeout=10).json()["id"] == job["id"]
        # The same body anywhere else meets the normal cap, at nginx, before gunicorn sees a byte.
        for path in ("/api/v1/models/shapes_jpeg/predict", f"/api/v1/jobs/{job['id']}/cancel", "/jobs/x"):
            refused = requests.post(
                f"{url}{path}",
                data=body,
                headers={"Content-Type": "application/zip"},
                timeout=60,
            )
            assert refused.status_code == 413, path
            assert "nginx" in refused.text, f"{path}: refused by the gateway, not by nginx"


class StubUpstream:
    """A bare HTTP/1.1 server standing in for gunicorn: counts the body bytes each request has
    delivered so far, and answers 200 once the whole body (Content-Length) has arrived."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.received: dict[str, int] = {}
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server.getsockname()[1]}"

    def _accept(self) -> None:
        self.server.settimeout(0.2)
        while not self.stop.is_set():
            try:
                conn, _ = self.server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(60)
        data = b""
        with conn:
            try:
                while True:  # keepalive: one request after another
                    while b"\r\n\r\n" not in data:
                        chunk = conn.recv(65536)
                        if not chunk:
                            return
                        data += chunk
                    head, _, data = data.partition(b"\r\n\r\n")
                    lines = head.decode("latin-1").split("\r\n")
                    name = lines[0].split(" ")[1]
                    fields = (line.partition(":") for line in lines[1:])
                    headers = {key.strip().lower(): value.strip() for key, _, value in fields}
                    length = int(headers.get("content-length", "0"))
                    got = len(data)
                    with self.lock:
                        self.received[name] = got
                    while got < length:
                        chunk = conn.recv(1 << 20)
                        if not chunk:
                            return
                        got += len(chunk)
                        with self.lock:
                            self.received[name] = got
                    data = data[length:] if len(data) > length else b""
                    answer = json.dumps({"received": got}).encode()
                    conn.sendall(
                        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                        + f"Content-Length: {len(answer)}\r\n\r\n".encode()
                        + answer
                    )
            except OSError:
                return

    def seen(self, path: str) -> int:
        with self.lock:
            return self.received.get(path, -1)

    def close(self) -> None:
        self.stop.set()
        self.server.close()
        self.thread.join(timeout=5)


@pytest.fixture()
def stub_upstream() -> Iterator[StubUpstream]:
    stub = StubUpstream()
    yield stub
    stub.close()


def start_upload(url: str, path: str, length: int, first: int) -> socket.socket:
    """A POST of `length` bytes to `path` of which only the first `first` are sent (for now)."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    head = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/zip\r\nContent-Length: {length}\r\n"
    sock.sendall(head.encode() + b"\r\n" + b"\0" * first)
    return sock


def wait_until(condition, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def test_job_uploads_stream_to_the_gateway_while_other_bodies_are_read_whole_first(
    stub_upstream: StubUpstream, tmp_path: Path
) -> None:
    with running_nginx(tmp_path, stub_upstream.address) as url:
        job = start_upload(url, "/api/v1/jobs", 8 * MIB, 2 * MIB)
        photo = start_upload(url, "/api/v1/models/m/predict", 8 * MIB, 2 * MIB)
        try:
            # The job upload's first bytes are at the gateway while the client is still sending.
            assert wait_until(lambda: stub_upstream.seen("/api/v1/jobs") >= MIB, 10)
            # The photo waits in nginx until it is whole: gunicorn has not seen its request yet.
            assert stub_upstream.seen("/api/v1/models/m/predict") == -1
            for sock in (job, photo):
                sock.sendall(b"\0" * (6 * MIB))
            for sock, path in ((job, "/api/v1/jobs"), (photo, "/api/v1/models/m/predict")):
                answer = b""
                while b"}" not in answer:
                    chunk = sock.recv(4096)
                    assert chunk, f"{path}: nginx closed the connection"
                    answer += chunk
                assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
                assert json.loads(answer.partition(b"\r\n\r\n")[2]) == {"received": 8 * MIB}
        finally:
            job.close()
            photo.close()


def test_at_most_four_job_uploads_stream_at_once_and_listing_jobs_is_never_refused(
    stub_upstream: StubUpstream, tmp_path: Path
) -> None:
    with running_nginx(tmp_path, stub_upstream.address) as url:
        uploads = [start_upload(url, "/api/v1/jobs", 4 * MIB, 1024) for _ in range(JOB_UPLOADS_AT_ONCE)]
        try:
            assert wait_until(lambda: stub_upstream.seen("/api/v1/jobs") >= 0, 10)
            time.sleep(0.5)  # every one of them has reached the gateway
            busy = requests.post(f"{url}/api/v1/jobs", data=b"\0" * 1024, timeout=10)
            assert busy.status_code == 429, busy.text
            assert busy.json()["error"]["code"] == 429 and "try again" in busy.json()["error"]["message"]
            assert busy.headers["Retry-After"]
            # GETs are not uploads: the job list and page stay open while the uploads run.
            assert requests.get(f"{url}/api/v1/jobs", timeout=10).status_code == 200
            assert requests.get(f"{url}/jobs", timeout=10).status_code == 200
        finally:
            for sock in uploads:
                sock.close()
        # Once they are gone, the next upload goes through.
        assert wait_until(
            lambda: requests.post(f"{url}/api/v1/jobs", data=b"\0" * 1024, timeout=10).status_code == 200, 10
        )


def test_the_job_route_has_its_own_cap(stub_upstream: StubUpstream, tmp_path: Path) -> None:
    """JOB_CLIENT_MAX_BODY_SIZE is the limit there (a small one here, to send a body above it)."""
    with running_nginx(tmp_path, stub_upstream.address, JOB_CLIENT_MAX_BODY_SIZE="20m") as url:
        fits = requests.post(f"{url}/api/v1/jobs", data=b"\0" * ABOVE_THE_NORMAL_CAP, timeout=60)
        assert fits.status_code == 200 and fits.json() == {"received": ABOVE_THE_NORMAL_CAP}
        too_big = requests.post(f"{url}/api/v1/jobs", data=b"\0" * (21 * MIB), timeout=60)
        assert too_big.status_code == 413
