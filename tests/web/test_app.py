"""The app without a model server: errors in one shape, bad input before any gRPC, keys, health, docs.

The model server is down for every test here (nothing listens on the configured port), which is
also how these tests show that bad input gets its 4xx without the model server being involved.
"""

from __future__ import annotations

import io
import re
import socket
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from flask import Flask
from PIL import Image

from tests.web.helpers import encode, result_files, solid
from tests.web.test_images import png_header_only


def post_image(
    client,
    model: str = "shapes",
    image: tuple[bytes, str] | None = None,
    query: str = "",
    label_map: tuple[bytes, str] | None = None,
    endpoint: str = "predict",
    **headers: str,
):
    data = {}
    if image is not None:
        data["image"] = (io.BytesIO(image[0]), image[1])
    if label_map is not None:
        data["label_map"] = (io.BytesIO(label_map[0]), label_map[1])
    return client.post(
        f"/api/v1/models/{model}/{endpoint}{query}",
        data=data,
        content_type="multipart/form-data",
        headers=headers,
    )


def error_of(response) -> tuple[int, str]:
    body = response.get_json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    assert body["error"]["code"] == response.status_code
    return response.status_code, body["error"]["message"]


def test_healthz_never_needs_the_model_server(offline_app: Flask) -> None:
    response = offline_app.test_client().get("/healthz")
    assert response.status_code == 200 and response.get_json() == {"status": "ok"}


def test_readyz_says_which_address_did_not_answer(offline_app: Flask) -> None:
    response = offline_app.test_client().get("/readyz")
    address = offline_app.extensions["gateway"].settings.tf_serving_address
    assert response.status_code == 503
    body = response.get_json()
    assert body["status"] == "not ready" and address in body["reason"]


def test_model_list_with_the_model_server_down_is_503_naming_the_address(offline_app: Flask) -> None:
    status, message = error_of(offline_app.test_client().get("/api/v1/models"))
    assert status == 503
    assert offline_app.extensions["gateway"].settings.tf_serving_address in message


def test_good_image_with_the_model_server_down_is_503(offline_app: Flask) -> None:
    status, message = error_of(post_image(offline_app.test_client(), image=(solid(64, 48), "ok.jpg")))
    assert status == 503 and "unavailable" in message and "TF_SERVING_ADDRESS" in message
    assert result_files(offline_app) == []


@pytest.fixture()
def silent_address() -> Iterator[str]:
    """A loopback port that accepts TCP connections but never speaks gRPC (a hung model server)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield f"127.0.0.1:{sock.getsockname()[1]}"


def test_deadline_exceeded_is_504(make_app, offline_app: Flask, silent_address: str) -> None:
    config: Path = offline_app.extensions["gateway"].settings.model_config_file
    app = make_app(TF_SERVING_ADDRESS=silent_address, MODEL_CONFIG_FILE=config, GRPC_TIMEOUT_S=0.5)
    status, message = error_of(post_image(app.test_client(), image=(solid(32, 32), "a.jpg")))
    assert status == 504
    assert f"the model server at {silent_address} did not answer" in message and "GRPC_TIMEOUT_S" in message
    ready = app.test_client().get("/readyz")
    assert ready.status_code == 503 and "did not answer" in ready.get_json()["reason"]
    assert result_files(app) == []


def test_stored_labels_need_no_model_server(offline_app: Flask) -> None:
    response = offline_app.test_client().get("/api/v1/models/shapes/labels")
    assert response.status_code == 200
    assert response.get_json() == {"1": "circle", "2": "square", "3": "triangle"}
    assert offline_app.test_client().get("/api/v1/models/other/labels").get_json() == {}


@pytest.mark.parametrize(
    "method,path",
    [
        ("post", "/api/v1/models/nope/predict"),
        ("post", "/api/v1/models/nope/predict_image"),
        ("post", "/api/v1/models/nope/predict_batch"),
        ("get", "/api/v1/models/nope"),
        ("get", "/api/v1/models/nope/labels"),
    ],
)
def test_unknown_model_is_404_listing_the_models(offline_app: Flask, method: str, path: str) -> None:
    client = offline_app.test_client()
    if method == "post":
        response = client.post(path, data={"image": (io.BytesIO(solid(8, 8)), "a.jpg")})
    else:
        response = client.get(path)
    status, message = error_of(response)
    assert status == 404 and "unknown model 'nope'" in message and "shapes, other" in message


BOMB = png_header_only(9000, 9000)
TRUNCATED = solid(320, 240)[:900]


@pytest.mark.parametrize(
    "image,query,label_map,status,fragment",
    [
        (None, "", None, 400, "send the picture as the multipart/form-data field 'image'"),
        ((b"", "empty.jpg"), "", None, 400, "empty.jpg is empty"),
        ((b"just some text\n", "notes.txt"), "", None, 415, "notes.txt is not an image we can read"),
        ((TRUNCATED, "cut.jpg"), "", None, 400, "cut.jpg is truncated or corrupt"),
        ((BOMB, "bomb.png"), "", None, 413, "9000x9000 = 81000000 pixels, more than MAX_IMAGE_PIXELS"),
        ((solid(8, 8), "a.jpg"), "?min_score=2", None, 400, "min_score must be a number between 0 and 1"),
        ((solid(8, 8), "a.jpg"), "?min_score=-1", None, 400, "min_score"),
        ((solid(8, 8), "a.jpg"), "?max_detections=0", None, 400, "max_detections must be an integer from 1"),
        ((solid(8, 8), "a.jpg"), "?version=x", None, 400, "version must be a positive integer"),
        ((solid(8, 8), "a.jpg"), "?version=1&version_label=a", None, 400, "either version or version_label"),
        (
            (solid(8, 8), "a.jpg"),
            "",
            (b"item { id: 1 name: 'a' ", "lm.pbtxt"),
            400,
            "lm.pbtxt: line 1, column",
        ),
        ((solid(8, 8), "a.jpg"), "", (b"a\n\nb\n", "labels.txt"), 400, "line 2 is blank"),
    ],
    ids=[
        "no-image",
        "empty",
        "text",
        "truncated",
        "bomb",
        "score-high",
        "score-low",
        "max-det",
        "version",
        "version-and-label",
        "broken-pbtxt",
        "broken-txt",
    ],
)
@pytest.mark.parametrize("store", ["", "store=true"])
def test_bad_input_is_4xx_with_a_fix_and_leaves_no_file(
    offline_app: Flask, image, query: str, label_map, status: int, fragment: str, store: str
) -> None:
    query = query + ("&" if query else "?") + store if store else query
    response = post_image(offline_app.test_client(), image=image, query=query, label_map=label_map)
    got, message = error_of(response)
    assert (got, fragment in message) == (status, True), message
    assert result_files(offline_app) == []


def test_upload_over_max_content_length_is_413(make_app, offline_app: Flask) -> None:
    app = make_app(
        MODEL_CONFIG_FILE=offline_app.extensions["gateway"].settings.model_config_file,
        MAX_CONTENT_LENGTH=50_000,
    )
    noise = np.random.default_rng(0).integers(0, 255, (300, 300, 3), dtype=np.uint8)
    big = encode(Image.fromarray(noise), "PNG")
    assert len(big) > 50_000
    status, message = error_of(post_image(app.test_client(), image=(big, "big.png")))
    assert status == 413 and "MAX_CONTENT_LENGTH" in message
    assert result_files(app) == []


def test_batch_names_the_bad_part(offline_app: Flask) -> None:
    files = [(io.BytesIO(solid(16, 16)), "one.jpg"), (io.BytesIO(b"plain text"), "two.txt")]
    response = offline_app.test_client().post(
        "/api/v1/models/shapes/predict_batch", data={"image": files}, content_type="multipart/form-data"
    )
    status, message = error_of(response)
    assert status == 415 and "image #2 (two.txt)" in message


def test_predict_image_rejects_an_unknown_format(offline_app: Flask) -> None:
    response = post_image(
        offline_app.test_client(), image=(solid(8, 8), "a.jpg"), query="?format=gif", endpoint="predict_image"
    )
    assert error_of(response) == (400, "format must be jpeg or png, not 'gif'")


@pytest.mark.parametrize(
    "method,path,status",
    [
        ("get", "/api/v1/nothing", 404),
        ("put", "/api/v1/models", 405),
        ("get", "/api/v1/models/shapes/predict", 405),
    ],
)
def test_werkzeug_errors_under_api_are_json(offline_app: Flask, method: str, path: str, status: int) -> None:
    response = getattr(offline_app.test_client(), method)(path)
    assert error_of(response)[0] == status


def test_errors_outside_the_api_are_html_pages(offline_app: Flask) -> None:
    response = offline_app.test_client().get("/no/such/page")
    assert response.status_code == 404 and response.mimetype == "text/html"
    assert "no such page" in response.get_data(as_text=True)


def test_unexpected_errors_are_logged_and_answered_without_details(
    offline_app: Flask, monkeypatch, caplog
) -> None:
    gateway = offline_app.extensions["gateway"]

    def broken() -> None:
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(gateway, "list_models", broken)
    offline_app.config["TESTING"] = False  # answer like production instead of re-raising into the test
    for path in ("/api/v1/models", "/"):
        response = offline_app.test_client().get(path)
        text = response.get_data(as_text=True)
        if path == "/" and response.status_code == 200:
            continue  # the form may degrade gracefully instead
        assert response.status_code == 500
        assert "secret internal detail" not in text and "Traceback" not in text
    assert "secret internal detail" in caplog.text


def test_swagger_documents_every_endpoint(offline_app: Flask) -> None:
    client = offline_app.test_client()
    spec = client.get("/swagger.json").get_json()
    assert spec["basePath"] == "/api/v1"
    paths = spec["paths"]
    for path in (
        "/models",
        "/models/{model}",
        "/models/{model}/labels",
        "/models/{model}/predict",
        "/models/{model}/predict_image",
        "/models/{model}/predict_batch",
    ):
        assert path in paths, path
    predict = paths["/models/{model}/predict"]["post"]
    assert "multipart/form-data" in predict["consumes"]
    assert {p["name"] for p in predict["parameters"]} >= {"image", "label_map", "min_score", "max_detections"}
    assert set(paths["/models/{model}/predict_image"]["post"]["produces"]) == {"image/jpeg", "image/png"}
    docs = client.get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.get_data(as_text=True).lower()


def test_metrics_count_requests_by_route(offline_app: Flask) -> None:
    client = offline_app.test_client()
    client.get("/api/v1/models/shapes/labels")
    text = client.get("/metrics").get_data(as_text=True)
    assert re.search(
        r'gateway_http_requests_total\{method="GET",route="/api/v1/models/<string:model>/labels",'
        r'status="200"\} [1-9]',
        text,
    )
    assert "gateway_stage_duration_seconds" in text
