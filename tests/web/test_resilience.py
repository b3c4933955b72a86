"""Fault injection over the real path: the decode budget under concurrent load, a model that is
configured but not loaded, a full or unwritable disk, and the model server killed and restarted
on the same port while requests keep coming."""

from __future__ import annotations

import io
import resource
import signal
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from flask import Flask
from PIL import Image

from tests.support.gunicorn_gateway import running_gateway
from tests.support.model_server import REPO_ROOT, free_port, model_server_process
from tests.web.helpers import encode, result_files, solid

DEMO_CONFIG = REPO_ROOT / "tf_server" / "models.config"


def big_png(side: int) -> bytes:
    """A large but tiny-to-send picture (one colour, 1 bit per pixel): cheap to upload, costly to decode."""
    return encode(Image.new("1", (side, side), 1), "PNG")


def test_the_decode_budget_turns_excess_into_503_with_retry_after(
    demo_model_server: str, tmp_path: Path
) -> None:
    picture = big_png(3000)  # 9 MP each; the budget holds one at a time
    assert len(picture) < 20_000
    settings = {
        "TF_SERVING_ADDRESS": demo_model_server,
        "MODEL_CONFIG_FILE": DEMO_CONFIG,
        "MAX_DECODE_PIXELS_IN_FLIGHT": "9000000",
        "DECODE_WAIT_S": "0.05",
    }
    with running_gateway(tmp_path, workers=1, threads=8, **settings) as url:

        def draw(_: int) -> requests.Response:
            return requests.post(
                f"{url}/api/v1/models/shapes/predict_image",
                files={"image": ("big.png", picture, "image/png")},
                timeout=120,
            )

        with ThreadPoolExecutor(8) as pool:
            responses = list(pool.map(draw, range(8)))
        statuses = Counter(r.status_code for r in responses)
        assert set(statuses) <= {200, 503} and statuses[200] >= 1 and statuses[503] >= 1, statuses
        busy = next(r for r in responses if r.status_code == 503)
        assert busy.headers["Retry-After"] == "1"
        assert "MAX_DECODE_PIXELS_IN_FLIGHT=9000000" in busy.json()["error"]["message"]
        metrics = requests.get(f"{url}/metrics", timeout=10).text
        assert f"gateway_decode_budget_refusals_total {float(statuses[503])}" in metrics
        assert "gateway_decode_pixels_in_flight 0.0" in metrics  # everything given back
        # With time to wait, the same load all goes through, one picture after another.
    with running_gateway(
        tmp_path / "patient", workers=1, threads=8, **{**settings, "DECODE_WAIT_S": "60"}
    ) as url:
        with ThreadPoolExecutor(4) as pool:
            statuses = Counter(
                pool.map(
                    lambda _: (
                        requests.post(
                            f"{url}/api/v1/models/shapes/predict_image",
                            files={"image": ("big.png", picture, "image/png")},
                            timeout=120,
                        ).status_code
                    ),
                    range(4),
                )
            )
        assert statuses == {200: 4}


def test_a_configured_model_that_is_not_loaded_is_503_with_retry_after(
    make_app, demo_model_server: str, tmp_path: Path
) -> None:
    config = tmp_path / "models.config"
    text = DEMO_CONFIG.read_text().rstrip().rstrip("}")
    config.write_text(
        text + '  config { name: "loading" base_path: "/nowhere/loading" model_platform: "x" }\n}\n'
    )
    app = make_app(TF_SERVING_ADDRESS=demo_model_server, MODEL_CONFIG_FILE=config)
    response = app.test_client().post(
        "/api/v1/models/loading/predict", data={"image": (io.BytesIO(solid(32, 32)), "a.jpg")}
    )
    assert response.status_code == 503 and response.headers["Retry-After"] == "5"
    assert "is configured but has no AVAILABLE version" in response.get_json()["error"]["message"]


@pytest.mark.parametrize("endpoint", ["predict", "predict_image", "predict_batch"])
def test_an_unwritable_output_folder_is_507_and_leaves_nothing(
    make_app, demo_model_server: str, tmp_path: Path, endpoint: str
) -> None:
    output = tmp_path / "output"
    output.write_text("a file where the output folder should be")
    app = make_app(TF_SERVING_ADDRESS=demo_model_server, MODEL_CONFIG_FILE=DEMO_CONFIG, OUTPUT_FOLDER=output)
    response = app.test_client().post(
        f"/api/v1/models/shapes_jpeg/{endpoint}?store=true",
        data={"image": (io.BytesIO(solid(64, 48)), "a.jpg")},
        content_type="multipart/form-data",
    )
    assert response.status_code == 507
    message = response.get_json()["error"]["message"]
    assert "the prediction worked but the result could not be stored" in message and "store=true" in message
    assert not (tmp_path / "upload_folder").exists() or list((tmp_path / "upload_folder").iterdir()) == []


def test_readiness_details_say_when_results_cannot_be_stored(
    make_app, demo_model_server: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Predictions still work, so readiness holds; the details and a start-up warning say why the
    form and store=true will answer 507 (a shared volume the gateway's uid cannot write, say)."""
    output = tmp_path / "output"
    output.write_text("a file where the output folder should be")
    with caplog.at_level("WARNING"):
        app = make_app(
            TF_SERVING_ADDRESS=demo_model_server, MODEL_CONFIG_FILE=DEMO_CONFIG, OUTPUT_FOLDER=output
        )
    assert any(
        "results cannot be stored" in r.getMessage() and str(output) in r.getMessage() for r in caplog.records
    )
    ready = app.test_client().get("/readyz")
    assert ready.status_code == 200 and ready.get_json()["storage"].startswith(f"cannot create {output}")
    fine = make_app(
        TF_SERVING_ADDRESS=demo_model_server, MODEL_CONFIG_FILE=DEMO_CONFIG, OUTPUT_FOLDER=tmp_path / "out2"
    )
    assert fine.test_client().get("/readyz").get_json()["storage"] == "writable"


def _small_disk() -> None:
    """In the gateway process: files may not grow past 64 KiB (a full disk, as far as writes go)."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG) instead
    resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))


def test_a_full_disk_is_507_on_the_api_and_the_form(demo_model_server: str, tmp_path: Path) -> None:
    photo = encode(Image.effect_noise((400, 300), 60).convert("RGB"), "JPEG", quality=95)
    assert len(photo) > 64 * 1024
    settings = {"TF_SERVING_ADDRESS": demo_model_server, "MODEL_CONFIG_FILE": DEMO_CONFIG}
    with running_gateway(tmp_path, preexec_fn=_small_disk, **settings) as url:
        api = requests.post(
            f"{url}/api/v1/models/shapes_jpeg/predict?store=true",
            files={"image": ("p.jpg", photo)},
            timeout=60,
        )
        assert api.status_code == 507, api.text
        assert "could not be stored" in api.json()["error"]["message"]
        plain = requests.post(
            f"{url}/api/v1/models/shapes_jpeg/predict", files={"image": ("p.jpg", photo)}, timeout=60
        )
        assert plain.status_code == 200  # predictions that store nothing still work
        session = requests.Session()
        page = session.get(f"{url}/", timeout=60).text
        token = page.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
        form = session.post(
            f"{url}/",
            data={"model": "shapes_jpeg", "csrf_token": token},
            files={"image": ("p.jpg", photo)},
            timeout=60,
        )
        assert form.status_code == 507 and "could not be stored" in form.text
    stored = [
        p for folder in ("upload_folder", "output") for p in (tmp_path / folder).glob("*") if p.is_file()
    ]
    assert stored == [], stored  # no half-written files


def test_the_model_server_restarting_under_load_fails_requests_cleanly_and_recovers(
    make_app, tmp_path: Path
) -> None:
    """SIGKILL the model server while 4 clients send predictions, start it again on the same port:
    every answer meanwhile is 200 or 503 (never anything else), and answers are 200 again soon
    after the port reopens (bounded reconnect back-off)."""
    port = free_port()
    flags = (f"--model_config_file={DEMO_CONFIG}",)
    app: Flask = make_app(
        TF_SERVING_ADDRESS=f"127.0.0.1:{port}", MODEL_CONFIG_FILE=DEMO_CONFIG, GRPC_TIMEOUT_S=5
    )
    image = solid(160, 120)
    statuses: Counter = Counter()
    stop = threading.Event()

    def client_loop() -> None:
        client = app.test_client()
        deadline = time.monotonic() + 240  # bounded whatever happens
        while not stop.is_set() and time.monotonic() < deadline:
            response = client.post(
                "/api/v1/models/shapes_jpeg/predict", data={"image": (io.BytesIO(image), "a.jpg")}
            )
            statuses[response.status_code] += 1
            time.sleep(0.02)

    threads = [threading.Thread(target=client_loop, daemon=True) for _ in range(4)]
    with model_server_process(*flags, port=port, log_dir=tmp_path) as first:
        for thread in threads:
            thread.start()
        time.sleep(2)
        first.process.send_signal(signal.SIGKILL)
        first.process.wait(timeout=10)
        time.sleep(2)  # requests keep coming while it is down
    down = Counter(statuses)
    assert down[503] >= 1, down
    (tmp_path / "again").mkdir()
    with model_server_process(*flags, port=port, log_dir=tmp_path / "again"):
        reopened = time.monotonic()
        recovered = None
        probe = app.test_client()
        while time.monotonic() - reopened < 30:
            answer = probe.post(
                "/api/v1/models/shapes_jpeg/predict", data={"image": (io.BytesIO(image), "a.jpg")}
            )
            if answer.status_code == 200:
                recovered = time.monotonic() - reopened
                break
            time.sleep(0.05)
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
    assert recovered is not None, "no prediction succeeded within 30 s of the model server's port reopening"
    print(f"recovered {recovered:.2f} s after the model server reopened its port")
    assert set(statuses) <= {200, 503}, statuses
    assert statuses[200] > down[200], "requests succeeded again after the restart"
    assert result_files(app) == []


def test_try_take_holds_pixels_only_when_there_is_room_now() -> None:
    """What /predict_image uses to decode the picture to draw on during the gRPC call: never waits."""
    import time

    from web.pipeline.decode_budget import DecodeBudget

    budget = DecodeBudget(10_000_000, wait_s=5.0)
    assert budget.try_take(6_000_000) == 6_000_000
    started = time.monotonic()
    assert budget.try_take(6_000_000) == 0 and time.monotonic() - started < 0.5  # no room: no wait
    assert budget.in_flight == 6_000_000
    budget.give_back(6_000_000)
    assert budget.try_take(40_000_000) == 10_000_000  # one picture bigger than the budget runs alone
    budget.give_back(10_000_000)
    assert budget.in_flight == 0
