"""Past one machine: one gateway over two model-server replicas (an ``ipv4:`` target, round robin,
retries of UNAVAILABLE), and two gateways sharing one results folder.

Each replica is a real ``python -m tf_server`` with its REST API and Prometheus page on, so the
test reads from the replicas themselves how many predictions each one served.
"""

from __future__ import annotations

import io
import re
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import numpy as np
import pytest
import requests

from demo.synthetic import encode_jpeg
from tests.support.gunicorn_gateway import running_gateway
from tests.support.model_server import REPO_ROOT, ServerProcess, free_port, model_server_process

MODEL = "digits"  # the cheapest demo model: a 32x32 classifier
CONFIG = REPO_ROOT / "tf_server" / "models.config"
MONITORING = REPO_ROOT / "tf_server" / "monitoring.config"
PREDICT = f"/api/v1/models/{MODEL}/predict"
TIMEOUT_S = 60


def picture(seed: int = 0) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (48, 40, 3), dtype=np.uint8)
    return encode_jpeg(pixels)


class Replica:
    """A model server on fixed ports, so it can be killed and started again at the same address."""

    def __init__(self, folder: Path) -> None:
        self.grpc_port, self.rest_port = free_port(), free_port()
        self.folder = folder
        self._stack: ExitStack | None = None
        self.server: ServerProcess | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def start(self) -> None:
        self._stack = ExitStack()
        flags = (
            f"--model_config_file={CONFIG}",
            f"--rest_api_port={self.rest_port}",
            f"--monitoring_config_file={MONITORING}",
        )
        self.server = self._stack.enter_context(
            model_server_process(*flags, port=self.grpc_port, log_dir=self.folder)
        )

    def kill(self) -> None:
        assert self.server is not None and self._stack is not None
        self.server.process.send_signal(signal.SIGKILL)
        self.server.process.wait(timeout=30)
        self._stack.close()

    def stop(self) -> None:
        if self._stack is not None:
            self._stack.close()

    def predictions(self) -> int:
        """Successful Predict calls this replica counted (TF Serving's request_count metric)."""
        page = requests.get(f"http://127.0.0.1:{self.rest_port}/monitoring/prometheus/metrics", timeout=10)
        pattern = rf':tensorflow:serving:request_count\{{model_name="{MODEL}",status="OK"\}} (\d+)'
        return sum(int(n) for n in re.findall(pattern, page.text))


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Replica]]:
    folder = tmp_path_factory.mktemp("replicas")
    pair = [Replica(folder / "a"), Replica(folder / "b")]
    for replica in pair:
        replica.folder.mkdir()
    try:
        with ThreadPoolExecutor(2) as pool:  # TensorFlow's import is the slow part: both at once
            list(pool.map(lambda r: r.start(), pair))
        yield pair
    finally:
        for replica in pair:
            replica.stop()


@pytest.fixture(scope="module")
def gateway(replicas: list[Replica], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    target = "ipv4:" + ",".join(r.address for r in replicas)
    folder = tmp_path_factory.mktemp("gateway")
    with running_gateway(
        folder, workers=2, threads=4, TF_SERVING_ADDRESS=target, MODEL_CONFIG_FILE=CONFIG
    ) as url:
        yield url


def predict(url: str, seed: int = 0) -> requests.Response:
    return requests.post(f"{url}{PREDICT}", files={"image": ("d.jpg", picture(seed))}, timeout=TIMEOUT_S)


def test_predictions_are_spread_over_both_replicas(gateway: str, replicas: list[Replica]) -> None:
    before = [r.predictions() for r in replicas]
    for i in range(100):
        assert predict(gateway, i).status_code == 200
    served = [r.predictions() - b for r, b in zip(replicas, before, strict=True)]
    assert sum(served) == 100
    assert min(served) >= 35, served  # round robin per worker channel: about half each


def test_a_replica_killed_under_load_fails_no_request_and_serves_again_after_restart(
    gateway: str, replicas: list[Replica]
) -> None:
    victim, survivor = replicas
    failures: list[str] = []
    done = threading.Event()
    sent = [0]
    lock = threading.Lock()

    def client(seed: int) -> None:
        for i in range(200):  # bounded: 4 clients x at most 200 requests
            if done.is_set():
                return
            response = predict(gateway, seed * 1000 + i)
            with lock:
                sent[0] += 1
                if response.status_code != 200:
                    failures.append(f"{response.status_code} {response.text[:200]}")

    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(client, seed) for seed in range(4)]
        time.sleep(1.0)  # the load is running
        victim.kill()
        time.sleep(2.0)  # and keeps running on the survivor alone
        # While one replica is down the gateway stays ready and lists the models.
        assert requests.get(f"{gateway}/readyz", timeout=TIMEOUT_S).status_code == 200
        models = requests.get(f"{gateway}/api/v1/models", timeout=TIMEOUT_S).json()["models"]
        assert {m["name"] for m in models} >= {MODEL}
        done.set()
        for future in futures:
            future.result(timeout=TIMEOUT_S * 4)
    assert sent[0] > 8 and failures == [], failures

    victim.start()  # same port: the gateway's channel reconnects to it
    deadline = time.monotonic() + 60
    while victim.predictions() == 0:
        assert time.monotonic() < deadline, "the restarted replica got no traffic in 60 s"
        assert predict(gateway).status_code == 200
    assert survivor.predictions() > 0

    metrics = requests.get(f"{gateway}/metrics", timeout=TIMEOUT_S).text
    assert re.search(r'gateway_model_server_calls_total\{code="OK",method="Predict"\} \d', metrics)


@pytest.fixture()
def two_gateways(replicas: list[Replica], tmp_path: Path) -> Iterator[tuple[str, str, Path]]:
    """Two gunicorn gateways (as two pods) writing results to the same folders."""
    shared = {
        "UPLOAD_FOLDER": tmp_path / "shared" / "upload_folder",
        "OUTPUT_FOLDER": tmp_path / "shared" / "output",
    }
    for folder in shared.values():
        folder.mkdir(parents=True)
    settings = dict(
        TF_SERVING_ADDRESS=replicas[1].address, MODEL_CONFIG_FILE=CONFIG, RESULTS_MAX_COUNT="6", **shared
    )
    with (
        running_gateway(tmp_path / "one", **settings) as one,
        running_gateway(tmp_path / "two", **settings) as two,
    ):
        yield one, two, shared["OUTPUT_FOLDER"]


def test_results_stored_by_one_gateway_open_on_the_other(two_gateways: tuple[str, str, Path]) -> None:
    one, two, output = two_gateways

    def store(url: str, seed: int) -> str:
        response = requests.post(
            f"{url}{PREDICT}?store=true",
            files={"image": ("d.jpg", io.BytesIO(picture(seed)))},
            timeout=TIMEOUT_S,
        )
        assert response.status_code == 200, response.text
        return response.json()["result_url"]

    first = store(one, 1)
    page = requests.get(f"{two}{first}", timeout=TIMEOUT_S)
    assert page.status_code == 200 and "classes-table" in page.text
    assert requests.get(f"{two}{first}.json", timeout=TIMEOUT_S).json()["model"]["name"] == MODEL

    # Both write at once; retention (6 results) holds across the two, and every result either
    # gateway lists opens on the other.
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda i: store(one if i % 2 else two, 100 + i), range(16)))
    records = sorted(output.glob("*.json"))
    assert len(records) <= 6
    for record in records:
        result = f"/results/{record.stem}"
        assert requests.get(f"{one}{result}.json", timeout=TIMEOUT_S).status_code == 200
        assert requests.get(f"{two}{result}/image", timeout=TIMEOUT_S).status_code == 200
