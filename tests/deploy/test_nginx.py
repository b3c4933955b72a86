"""The stack's nginx config: accepted by `nginx -t`, and in front of the real gateway it keeps slow
clients away from gunicorn's threads (which, facing them directly, they hold)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests

from tests.support.gunicorn_gateway import running_gateway
from tests.support.model_server import REPO_ROOT
from tests.support.nginx import check_config, running_nginx, write_config
from tests.web.helpers import solid

SLOW_CLIENTS = 12
TRICKLE_S = 0.5  # one byte every half second
MAX_HOLD_S = 40.0  # every slow client gives up by then, whatever happens


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
