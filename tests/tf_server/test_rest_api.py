"""The HTTP/REST API and the Prometheus page of `python -m tf_server`, over real HTTP.

What TF Serving's ``tensorflow_model_server_test.py`` asserts for REST (testPredictREST,
testPredictColumnarREST, testClassifyREST, testRegressREST, testGetStatusREST,
testGetModelMetadataREST, testPrometheusEndpoint), plus its JSON layouts, error bodies and status
codes, CORS, and the metrics counted for both entry points. One server (the demo models and TF
Serving's TF1 half_plus_two, CORS and monitoring on) serves most tests; a second one (CORS and
monitoring off, a 1 ms REST deadline) the rest. REST answers are compared with the same requests
over gRPC.
"""

from __future__ import annotations

import base64
import gzip
import http.client
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import requests

from demo.digits import training_arrays
from demo.synthetic import encode_jpeg, generate_image
from tests.support.model_server import REPO_ROOT, ServerProcess, free_port, model_server_process
from tests.tf_server.grpc_client import serving_client, string_tensor_proto, tensor_proto, to_ndarray
from tf_server.monitoring import _label_text

MONITORING_CONFIG = REPO_ROOT / "tf_server" / "monitoring.config"
METRICS_PATH = "/monitoring/prometheus/metrics"
DETECTION_OUTPUTS = {"detection_boxes", "detection_scores", "detection_classes", "num_detections"}
HTTP_TIMEOUT_S = 60
TF1_MODEL = "half_plus_two_tf1"


@dataclass(frozen=True)
class RestServer:
    url: str
    grpc_address: str
    process: ServerProcess

    def get(self, path: str, **kwargs: object) -> requests.Response:
        return requests.get(self.url + path, timeout=HTTP_TIMEOUT_S, **kwargs)  # type: ignore[arg-type]

    def post(self, path: str, body: object = None, **kwargs: object) -> requests.Response:
        data = body if isinstance(body, (str, bytes)) else json.dumps(body)
        return requests.post(self.url + path, data=data, timeout=HTTP_TIMEOUT_S, **kwargs)  # type: ignore[arg-type]


def _models_config(path: Path, models: dict[str, Path], labels: dict[str, dict[str, int]]) -> Path:
    lines = ["model_config_list {"]
    for name, base in models.items():
        label_text = "".join(
            f' version_labels {{ key: "{key}" value: {value} }}'
            for key, value in labels.get(name, {}).items()
        )
        lines.append(
            f'  config {{ name: "{name}" base_path: "{base}" model_platform: "tensorflow"{label_text} }}'
        )
    path.write_text("\n".join([*lines, "}", ""]))
    return path


@contextmanager
def _rest_server(config: Path, log_dir: Path, *flags: str) -> Iterator[RestServer]:
    rest_port = free_port()
    with model_server_process(
        f"--model_config_file={config}", f"--rest_api_port={rest_port}", *flags, log_dir=log_dir
    ) as process:
        url = f"http://127.0.0.1:{rest_port}"
        deadline = time.monotonic() + 30  # the REST port opens right after the gRPC one
        while True:
            try:
                requests.get(url + "/v1/models/digits", timeout=5)
                break
            except requests.ConnectionError:
                if time.monotonic() > deadline:
                    raise AssertionError(f"REST port did not open:\n{process.log()[-3000:]}") from None
                time.sleep(0.1)
        yield RestServer(url, process.address, process)


@pytest.fixture(scope="module")
def tf1_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """TF Serving's half_plus_two test model as a TF1 graph (with classify/regress signatures)."""
    out = tmp_path_factory.mktemp("tf1_models")
    subprocess.run(
        [sys.executable, "-m", "tests.support.tf1_models", str(out)],
        cwd=REPO_ROOT,
        check=True,
        capture_output=True,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
        timeout=300,
    )
    return out


@pytest.fixture(scope="module")
def server(tf1_models: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RestServer]:
    root = tmp_path_factory.mktemp("rest")
    models = {name: REPO_ROOT / "tf_server" / "models" / name for name in ("shapes", "shapes_jpeg", "digits")}
    models[TF1_MODEL] = tf1_models / TF1_MODEL
    config = _models_config(root / "models.config", models, {"digits": {"stable": 1}})
    flags = (
        f"--monitoring_config_file={MONITORING_CONFIG}",
        "--rest_api_enable_cors_support",
        "--allow_version_labels_for_unavailable_models",  # the label is in the initial config
    )
    with _rest_server(config, root, *flags) as running:
        yield running


@pytest.fixture(scope="module")
def plain_server(tf1_models: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RestServer]:
    """No CORS support, no monitoring, a 1 ms deadline for model runs."""
    root = tmp_path_factory.mktemp("rest_plain")
    models = {"digits": REPO_ROOT / "tf_server" / "models" / "digits", TF1_MODEL: tf1_models / TF1_MODEL}
    config = _models_config(root / "models.config", models, {})
    with _rest_server(config, root, "--rest_api_timeout_in_ms=1", "--rest_api_num_threads=2") as running:
        yield running


def _digits(count: int, seed: int = 5) -> tuple[np.ndarray, np.ndarray]:
    images, digits = training_arrays(np.random.default_rng(seed), count, 32)
    return images.astype(np.float32) / 255.0, digits


def _error(response: requests.Response, status: int) -> str:
    """TF Serving's error answer: the status, JSON, and only ``{"error": message}``."""
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"] == "application/json"
    body = response.json()
    assert list(body) == ["error"]
    return body["error"]


def _metric(page: str, name: str, **labels: str) -> float:
    label_text = ",".join(f'{key}="{value}"' for key, value in labels.items())
    match = re.search(rf"^{re.escape(name)}\{{{re.escape(label_text)}\}} (\S+)$", page, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


# ------------------------------------------------------------------------------ status, metadata


def test_the_rest_port_is_announced_as_tf_serving_does(server: RestServer) -> None:
    port = server.url.rsplit(":", 1)[1]
    assert f"Exporting HTTP/REST API at:localhost:{port} ..." in server.process.log()


def test_model_status_in_all_three_forms(server: RestServer) -> None:
    expected = {
        "model_version_status": [
            {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
        ]
    }
    for path in ("/v1/models/digits", "/v1/models/digits/versions/1", "/v1/models/digits/labels/stable"):
        response = server.get(path)
        assert response.status_code == 200 and response.headers["Content-Type"] == "application/json"
        assert response.json() == expected, path
    # testGetStatusREST's model and its TF Serving version folder 00000123
    assert server.get(f"/v1/models/{TF1_MODEL}").json()["model_version_status"][0]["version"] == "123"
    assert (
        _error(server.get("/v1/models/digits/versions/7"), 404) == "Could not find version 7 of model digits"
    )
    assert _error(server.get("/v1/models/nope"), 404) == "Could not find any versions of model nope"
    assert _error(server.get("/v1/models"), 400) == "Missing model name in request."


def test_model_metadata(server: RestServer) -> None:
    for path in ("/v1/models/digits/metadata", "/v1/models/digits/versions/1/metadata"):
        body = server.get(path).json()
        assert body["model_spec"] == {"name": "digits", "signature_name": "", "version": "1"}
        signatures = body["metadata"]["signature_def"]["signature_def"]
        assert {"serving_default", "serve"} <= set(signatures)
        tensor = signatures["serving_default"]["inputs"]["keras_tensor"]
        assert tensor["dtype"] == "DT_FLOAT"
        assert [dim["size"] for dim in tensor["tensor_shape"]["dim"]] == ["-1", "32", "32", "3"]
        assert signatures["serving_default"]["method_name"] == "tensorflow/serving/predict"
    assert server.get("/v1/models/digits/labels/stable/metadata").json()["model_spec"]["version"] == "1"
    # as testGetModelMetadataREST reads it (proto field names, every signature of the MetaGraphDef)
    tf1 = server.get(f"/v1/models/{TF1_MODEL}/metadata").json()
    regress = tf1["metadata"]["signature_def"]["signature_def"]["regress_x_to_y"]
    assert regress["method_name"] == "tensorflow/serving/regress"
    assert regress["inputs"]["inputs"]["dtype"] == "DT_STRING"
    assert (
        _error(server.get("/v1/models/nope/metadata"), 404) == "Servable not found for request: Latest(nope)"
    )
    message = _error(server.get("/v1/models/digits/labels/canary/metadata"), 400)
    assert message == "Unrecognized servable version label: canary"


# ------------------------------------------------------------------------------ predict


def test_predict_row_and_columnar_formats_match_grpc(server: RestServer) -> None:
    images, digits = _digits(12)
    row = server.post("/v1/models/digits:predict", {"instances": images.tolist()})
    assert row.status_code == 200, row.text
    # TF Serving's layout: rapidjson's pretty writer, one line per instance
    assert row.text.startswith('{\n    "predictions": [[') and row.text.endswith("]\n    ]\n}")
    predictions = np.array(row.json()["predictions"])
    assert predictions.shape == (12, 10)
    np.testing.assert_allclose(predictions.sum(axis=1), 1.0, atol=1e-4)
    assert (predictions.argmax(axis=1) == digits).mean() >= 0.9

    columnar = server.post("/v1/models/digits:predict", {"inputs": {"keras_tensor": images.tolist()}})
    assert list(columnar.json()) == ["outputs"]  # a single output is not wrapped in its name
    assert columnar.json()["outputs"] == row.json()["predictions"]
    bare = server.post("/v1/models/digits:predict", {"inputs": images.tolist()})
    assert bare.json() == columnar.json()

    with serving_client(server.grpc_address) as client:
        response = client.predict("digits", {"keras_tensor": tensor_proto(images)})
    np.testing.assert_allclose(predictions, to_ndarray(response.outputs["output_0"]), rtol=1e-6, atol=1e-7)


def test_predict_the_testPredictREST_way(server: RestServer) -> None:
    """TF Serving's own cases, on its half_plus_two (y = 0.5 x + 2)."""
    row = server.post(f"/v1/models/{TF1_MODEL}:predict", {"instances": [2.0, 3.0, 4.0]})
    assert row.json() == {"predictions": [3.0, 3.5, 4.0]}
    assert row.text == '{\n    "predictions": [3.0, 3.5, 4.0\n    ]\n}'
    columnar = server.post(f"/v1/models/{TF1_MODEL}:predict", {"inputs": [2.0, 3.0, 4.0]})
    assert columnar.json() == {"outputs": [3.0, 3.5, 4.0]}


def test_predict_a_detector_with_a_uint8_image(server: RestServer) -> None:
    image, _ = generate_image(np.random.default_rng(7), width=320, height=240, min_shapes=2, max_shapes=2)
    row = server.post("/v1/models/shapes:predict", {"instances": [image.tolist()]})
    assert row.status_code == 200, row.text[:500]
    (prediction,) = row.json()["predictions"]  # several outputs: one object per instance
    assert DETECTION_OUTPUTS <= set(prediction)
    columnar = server.post("/v1/models/shapes:predict", {"inputs": {"input_tensor": image[None].tolist()}})
    outputs = columnar.json()["outputs"]
    assert set(outputs) == set(prediction)
    assert outputs["detection_boxes"] == [prediction["detection_boxes"]]

    with serving_client(server.grpc_address) as client:
        response = client.predict("shapes", {"input_tensor": tensor_proto(image[None])})
    for name in DETECTION_OUTPUTS:
        expected = to_ndarray(response.outputs[name])[0]
        np.testing.assert_allclose(np.array(prediction[name]), expected, rtol=1e-5, atol=1e-6)
    assert prediction["num_detections"] >= 1


def test_b64_strings_carry_a_jpeg(server: RestServer) -> None:
    image, _ = generate_image(np.random.default_rng(2024), width=320, height=240, min_shapes=3, max_shapes=3)
    jpeg = encode_jpeg(image)
    encoded = base64.b64encode(jpeg).decode("ascii")
    row = server.post("/v1/models/shapes_jpeg:predict", {"instances": [{"b64": encoded}]})
    assert row.status_code == 200, row.text[:500]
    columnar = server.post("/v1/models/shapes_jpeg:predict", {"inputs": [{"b64": encoded}]})
    (prediction,) = row.json()["predictions"]
    assert {name: [value] for name, value in prediction.items()} == columnar.json()["outputs"]

    with serving_client(server.grpc_address) as client:
        response = client.predict("shapes_jpeg", {"input_tensor": string_tensor_proto([jpeg])})
    np.testing.assert_allclose(
        np.array(prediction["detection_scores"]),
        to_ndarray(response.outputs["detection_scores"])[0],
        atol=1e-6,
    )
    # a plain JSON string is UTF-8 text, not the picture
    message = _error(server.post("/v1/models/shapes_jpeg:predict", {"instances": ["not a jpeg"]}), 400)
    assert message
    assert "base64" in _error(
        server.post("/v1/models/shapes_jpeg:predict", {"instances": [{"b64": "!"}]}), 400
    )


def test_signature_name_versions_and_labels(server: RestServer) -> None:
    images, _ = _digits(2)
    default = server.post("/v1/models/digits:predict", {"instances": images.tolist()}).json()
    for path in ("/v1/models/digits/versions/1:predict", "/v1/models/digits/labels/stable:predict"):
        response = server.post(path, {"signature_name": "serve", "instances": images.tolist()})
        assert response.status_code == 200, response.text
        np.testing.assert_allclose(response.json()["predictions"], default["predictions"], rtol=1e-6)
    message = _error(
        server.post("/v1/models/digits:predict", {"signature_name": "nope", "instances": [1]}), 400
    )
    assert message == 'Serving signature name: "nope" not found in signature def'
    message = _error(server.post("/v1/models/digits/versions/9:predict", {"instances": [1]}), 404)
    assert message == "Servable not found for request: Specific(digits, 9)"


# ------------------------------------------------------------------------------ classify, regress


def test_classify_and_regress_the_upstream_way(server: RestServer) -> None:
    classify = {"signature_name": "classify_x_to_y", "examples": [{"x": 2.0}]}
    assert server.post(f"/v1/models/{TF1_MODEL}:classify", classify).json() == {"results": [[["", 3.0]]]}
    regress = {"signature_name": "regress_x_to_y", "examples": [{"x": 2.0}]}
    response = server.post(f"/v1/models/{TF1_MODEL}:regress", regress)
    assert response.json() == {"results": [3.0]}
    assert response.text == '{\n    "results": [3.0]\n}'


def test_regress_with_context_and_several_examples(server: RestServer) -> None:
    # Each example is merged over the context: the first has its own x, the second takes the context's.
    body = {"signature_name": "regress_x_to_y", "context": {"x": 10.0}, "examples": [{"x": 2.0}, {"x2": 1.0}]}
    response = server.post(f"/v1/models/{TF1_MODEL}/versions/123:regress", body)
    assert response.json() == {"results": [3.0, 7.0]}
    body = {"signature_name": "regress_x_to_y2", "examples": [{"x": 2.0}, {"x": 4}]}  # y2 = 0.5 x + 3
    assert _error(server.post(f"/v1/models/{TF1_MODEL}:regress", body), 400)  # 4 is an int64 feature
    body["examples"] = [{"x": 2.0}, {"x": 4.0}]
    assert server.post(f"/v1/models/{TF1_MODEL}:regress", body).json() == {"results": [4.0, 5.0]}


def test_classify_and_regress_errors(server: RestServer) -> None:
    path = f"/v1/models/{TF1_MODEL}:regress"
    message = _error(server.post(path, {"signature_name": "regress_x_to_y"}), 400)
    assert message.endswith("When method is classify, key 'examples' is expected and was not found")
    assert _error(server.post(path, {"examples": []}), 400).endswith("'examples' value is an empty array")
    message = _error(server.post(path, {"examples": [{"x": [1, 2.5]}]}), 400)
    assert message == "Unexpected element type in feature: x expecting type: int64"
    message = _error(server.post("/v1/models/nope:classify", {"examples": [{"x": 1.0}]}), 404)
    assert message == "Servable not found for request: Latest(nope)"


# ------------------------------------------------------------------------------ errors


def test_request_errors_are_tf_servings(server: RestServer) -> None:
    images, _ = _digits(1)
    message = _error(server.post("/v1/models/nope:predict", {"instances": [1.0]}), 404)
    assert message == "Servable not found for request: Latest(nope)"
    message = _error(server.post("/v1/models/digits:predict", '{"instances": [1.0,'), 400)
    assert message.startswith("JSON Parse error: Invalid value. at offset: ")
    assert (
        _error(server.post("/v1/models/digits:predict", ""), 400) == "JSON Parse error: The document is empty"
    )
    message = _error(server.post("/v1/models/digits:predict", {"inputs": {"image": images.tolist()}}), 400)
    assert message == "Missing named input: keras_tensor in 'inputs' object."
    message = _error(
        server.post("/v1/models/digits:predict", {"instances": [{"image": images[0].tolist()}]}), 400
    )
    assert message == (
        "Failed to process element: 0 key: image of 'instances' list. Error: INVALID_ARGUMENT: "
        "JSON object: does not have named input: image"
    )
    message = _error(server.post("/v1/models/digits:predict", {"instances": ["a"]}), 400)
    assert message == (
        "Failed to process element: 0 of 'instances' list. Error: INVALID_ARGUMENT: "
        'JSON Value: "a" Type: String is not of expected type: float'
    )
    assert (
        _error(server.post("/v1/models/digits:predict", {"x": 1}), 400)
        == "Missing 'inputs' or 'instances' key"
    )
    # a shape the graph refuses: TensorFlow's own message, INVALID_ARGUMENT
    assert _error(server.post("/v1/models/digits:predict", {"instances": [[1.0, 2.0]]}), 400)
    # paths and methods
    message = _error(server.post("/v1/models/digits:explain", {}), 400)
    assert message == "Malformed request: POST /v1/models/digits:explain"
    assert _error(requests.put(server.url + "/v1/models/digits", timeout=30), 400).startswith(
        "Malformed request"
    )
    not_found = server.get("/v2/models/digits")
    assert not_found.status_code == 404 and "<TITLE>404 Not Found</TITLE>" in not_found.text


def test_gzip_request_bodies_are_uncompressed(server: RestServer) -> None:
    body = gzip.compress(json.dumps({"instances": [2.0, 4.0]}).encode())
    response = server.post(f"/v1/models/{TF1_MODEL}:predict", body, headers={"Content-Encoding": "gzip"})
    assert response.json() == {"predictions": [3.0, 4.0]}


def test_connections_are_kept_alive(server: RestServer) -> None:
    connection = http.client.HTTPConnection(server.url.removeprefix("http://"), timeout=HTTP_TIMEOUT_S)
    try:
        for _ in range(3):
            connection.request("POST", f"/v1/models/{TF1_MODEL}:predict", body='{"instances": [2.0]}')
            response = connection.getresponse()
            assert response.status == 200 and json.loads(response.read()) == {"predictions": [3.0]}
            assert response.getheader("Connection") != "close"
    finally:
        connection.close()


# ------------------------------------------------------------------------------ CORS


def test_cors_support(server: RestServer) -> None:
    preflight = requests.options(
        server.url + "/v1/models/digits:predict", headers={"Origin": "https://app.example"}, timeout=30
    )
    assert preflight.status_code == 200 and preflight.content == b""
    for response in (preflight, server.get("/v1/models/digits"), server.get("/v1/models/nope")):
        assert response.headers["Access-Control-Allow-Origin"] == "*"
        assert response.headers["Access-Control-Allow-Methods"] == "POST, GET"
        assert response.headers["Access-Control-Allow-Headers"] == "Content-Type"
    no_origin = requests.options(server.url + "/v1/models/digits:predict", timeout=30)
    assert no_origin.status_code == 400


def test_without_cors_support_no_headers(plain_server: RestServer) -> None:
    response = plain_server.get("/v1/models/digits")
    assert response.status_code == 200
    assert "Access-Control-Allow-Origin" not in response.headers
    # TF Serving answers the preflight itself either way, only without the headers
    preflight = requests.options(
        plain_server.url + "/v1/models/digits:predict", headers={"Origin": "http://app.example"}, timeout=30
    )
    assert preflight.status_code == 200 and "Access-Control-Allow-Origin" not in preflight.headers


# ------------------------------------------------------------------------------ metrics


def test_prometheus_page_counts_rest_and_grpc_requests(server: RestServer) -> None:
    before = server.get(METRICS_PATH)
    assert before.status_code == 200 and before.headers["Content-Type"] == "text/plain"
    assert "# TYPE :tensorflow:serving:request_count counter" in before.text  # testPrometheusEndpoint
    assert "# TYPE :tensorflow:serving:request_latency histogram" in before.text

    images, _ = _digits(1)
    for _ in range(3):
        assert server.post("/v1/models/digits:predict", {"instances": images.tolist()}).status_code == 200
    assert server.post("/v1/models/digits:predict", {"instances": ["x"]}).status_code == 400
    with serving_client(server.grpc_address) as client:
        for _ in range(2):
            client.predict("digits", {"keras_tensor": tensor_proto(images)})
        client.status("digits")  # TF Serving does not count GetModelStatus over gRPC
    after = server.get(METRICS_PATH).text

    def grown(name: str, **labels: str) -> float:
        return _metric(after, name, **labels) - _metric(before.text, name, **labels)

    count = ":tensorflow:serving:request_count"
    latency = ":tensorflow:serving:request_latency_count"
    assert grown(count, model_name="digits", status="OK") == 5
    assert grown(count, model_name="digits", status="INVALID_ARGUMENT") == 1
    assert grown(latency, model_name="digits", API="predict", entrypoint="REST") == 3
    assert grown(latency, model_name="digits", API="Predict", entrypoint="GRPC") == 2
    buckets = re.findall(
        r'^:tensorflow:serving:request_latency_bucket\{model_name="digits",API="Predict",'
        r'entrypoint="GRPC",le="([^"]+)"\} (\d+)$',
        after,
        re.MULTILINE,
    )
    grpc_count = _metric(after, latency, model_name="digits", API="Predict", entrypoint="GRPC")
    assert [limit for limit, _ in buckets[:4]] == ["10", "18", "32.4", "58.32"]
    assert len(buckets) == 34 and buckets[-1] == ("+Inf", str(int(grpc_count)))

    query = server.get(METRICS_PATH + "?x=1")
    assert query.status_code == 400 and query.text.startswith("Unexpected path: ")


def test_without_monitoring_there_is_no_metrics_page(plain_server: RestServer) -> None:
    assert plain_server.get(METRICS_PATH).status_code == 404


def test_a_bad_monitoring_config_stops_the_server(tmp_path: Path) -> None:
    bad = tmp_path / "monitoring.config"
    bad.write_text("prometheus_config { enabled: true }\n")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "tf_server",
            f"--port={free_port()}",
            f"--rest_api_port={free_port()}",
            f"--monitoring_config_file={bad}",
            f"--model_config_file={REPO_ROOT / 'tf_server' / 'models.config'}",
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
        timeout=120,
    )
    assert result.returncode == 255
    assert f"Failed to start server. Error: INVALID_ARGUMENT: Invalid protobuf file: '{bad}'" in result.stderr


# ------------------------------------------------------------------------------ deadline


def test_the_rest_deadline_bounds_model_runs(plain_server: RestServer) -> None:
    images, _ = _digits(256, seed=9)
    response = plain_server.post("/v1/models/digits:predict", {"instances": images.tolist()})
    assert _error(response, 504) == "Timed out waiting for notification"
    # status and metadata are not model runs; the server keeps answering
    assert plain_server.get("/v1/models/digits").status_code == 200
    assert plain_server.get("/v1/models/digits/metadata").status_code == 200


# ------------------------------------------------------------------------------ hardening


def _raw_exchange(
    server: RestServer, data: bytes, *, close_write: bool = False, timeout: float = 30
) -> bytes:
    """Send raw bytes on a fresh connection; everything the server answers before it closes (or
    the first answer, when it keeps the connection open)."""
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=timeout) as connection:
        connection.sendall(data)
        if close_write:
            connection.shutdown(socket.SHUT_WR)
        received = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                piece = connection.recv(65536)
            except (ConnectionResetError, TimeoutError):
                break
            if not piece:
                break
            received += piece
            head, _, rest = received.partition(b"\r\n\r\n")
            length = re.search(rb"(?im)^content-length: *(\d+)", head)
            if length and len(rest) >= int(length.group(1)):
                break
        return received


def test_numbers_too_big_for_a_double_are_refused(server: RestServer) -> None:
    huge = "1" + "0" * 400
    expected = "JSON Parse error: Number too big to be stored in double. at offset: "
    for body in (f'{{"instances":[[{huge}]]}}', '{"instances":[[1e400]]}', '{"instances":[-1e400]}'):
        message = _error(server.post("/v1/models/digits:predict", body), 400)
        assert message.startswith(expected), message
    assert _error(server.post("/v1/models/digits:predict", '{"instances":[[1e400]]}'), 400) == expected + "15"
    for method in ("classify", "regress"):
        body = f'{{"examples":[{{"x": {huge}}}]}}'
        assert _error(server.post(f"/v1/models/{TF1_MODEL}:{method}", body), 400).startswith(expected)
    # 5000 digits: past Python's int() limit too; a number inside a string is only a string
    assert _error(server.post("/v1/models/digits:predict", f'{{"instances":[{"9" * 5000}]}}'), 400)
    body = f'{{"instances": [2.0], "signature_name": "serving_default", "x": "{huge}e999"}}'
    assert server.post(f"/v1/models/{TF1_MODEL}:predict", body).json() == {"predictions": [3.0]}
    assert "Traceback" not in server.process.log()


def test_request_body_limits(server: RestServer) -> None:
    path = f"/v1/models/{TF1_MODEL}:predict"
    answer = _raw_exchange(
        server, f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 999999999999999\r\n\r\n{{".encode()
    )
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413 "), answer[:200]
    assert json.loads(body)["error"].startswith("Request body too large")
    chunked = f"POST {path} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    for size in (b"-5", b"+5", b"0x5", b"zz"):
        answer = _raw_exchange(server, chunked.encode() + size + b"\r\nhello\r\n0\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 400 "), (size, answer[:200])
    # a body cut short by the client is not answered as if it were whole
    whole = b'{"instances": [2.0]}'
    head = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(whole) + 40}\r\n\r\n".encode()
    answer = _raw_exchange(server, head + whole, close_write=True)
    assert answer == b"" or answer.startswith(b"HTTP/1.1 400 "), answer[:200]
    assert b"predictions" not in answer
    # and chunked bodies still work
    body = chunked.encode() + b"%x\r\n" % len(whole) + whole + b"\r\n0\r\n\r\n"
    answer = _raw_exchange(server, body)
    assert answer.startswith(b"HTTP/1.1 200 ") and answer.endswith(b'{\n    "predictions": [3.0\n    ]\n}')
    assert "Traceback" not in server.process.log()


def test_metrics_labels_are_escaped_and_unknown_models_share_one_series(server: RestServer) -> None:
    count = ":tensorflow:serving:request_count"
    before = server.get(METRICS_PATH).text
    injected = server.get("/v1/models/x%22%7D%201%0Aevil_metric%7Ba%3D%22b")
    assert injected.status_code == 404
    for index in range(5):
        assert server.post(f"/v1/models/made-up-{index}:predict", {"instances": [1.0]}).status_code == 404
    assert server.get("/v1/models/digits").status_code == 200
    after = server.get(METRICS_PATH).text
    assert not re.search(r"^evil_metric", after, re.MULTILINE)
    assert "made-up" not in after and "evil" not in after
    grown = _metric(after, count, model_name="", status="NOT_FOUND") - _metric(
        before, count, model_name="", status="NOT_FOUND"
    )
    assert grown == 6
    for line in after.splitlines():  # every line is a comment or one well-formed sample
        assert line.startswith("# TYPE ") or re.fullmatch(
            r'[:\w]+(\{(\w+="(?:[^"\\\n]|\\.)*",?)*\})? \S+', line
        )
    # the escaping itself (a configured model name may hold any of these characters)
    assert _label_text(("model_name",), ('a\\b"c\nd',)) == 'model_name="a\\\\b\\"c\\nd"'


# In-process servers: a stub core, so that timing (read deadlines, a request in flight while the
# server stops) can be arranged without models.


class _StubCore:
    """Answers GetModelStatus; the model "slow" takes ``delay`` seconds."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.manager = SimpleNamespace(model_names=lambda: ["slow", "fast"])

    def status(self, request: object, entrypoint: str) -> object:
        from tensorflow_serving.apis import get_model_status_pb2

        if request.model_spec.name == "slow":  # type: ignore[attr-defined]
            time.sleep(self.delay)
        return get_model_status_pb2.GetModelStatusResponse()


@contextmanager
def _stub_server(delay: float = 0.0, **limits: float) -> Iterator[object]:
    from tf_server.rest_api import start_rest_server

    running = start_rest_server(_StubCore(delay), "127.0.0.1", 0, **limits)  # type: ignore[arg-type]
    try:
        yield running
    finally:
        running.stop(grace_s=2.0)


def test_a_request_must_arrive_within_the_read_deadline() -> None:
    with _stub_server(request_read_s=1.0) as running:
        with socket.create_connection(("127.0.0.1", running.port), timeout=10) as connection:  # type: ignore[attr-defined]
            connection.sendall(b"GET /v1/models/fast HTTP/1.1\r\n")
            started = time.monotonic()
            closed = False
            for _ in range(40):  # one header byte every 0.1 s: never a whole request
                try:
                    connection.sendall(b"X")
                    time.sleep(0.1)
                except OSError:
                    closed = True
                    break
                connection.setblocking(False)
                try:
                    closed = connection.recv(1024) == b""
                except BlockingIOError:
                    pass
                except OSError:
                    closed = True
                connection.setblocking(True)
                if closed:
                    break
            assert closed and time.monotonic() - started < 3.5
        # a request sent whole is answered as before, on a kept-alive connection
        client = http.client.HTTPConnection("127.0.0.1", running.port, timeout=10)  # type: ignore[attr-defined]
        try:
            for _ in range(2):
                client.request("GET", "/v1/models/fast")
                assert client.getresponse().read() == b'{\n "model_version_status": []\n}\n'
        finally:
            client.close()


def test_stop_lets_requests_in_flight_finish_and_refuses_new_ones() -> None:
    with _stub_server(delay=1.0) as running:
        port = running.port  # type: ignore[attr-defined]
        kept_alive = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        kept_alive.request("GET", "/v1/models/fast")
        assert kept_alive.getresponse().read()
        results: dict[str, object] = {}

        def slow_request() -> None:
            slow = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            try:
                slow.request("GET", "/v1/models/slow")
                response = slow.getresponse()
                results["slow"] = (response.status, response.read())
            finally:
                slow.close()

        in_flight = threading.Thread(target=slow_request)
        in_flight.start()
        time.sleep(0.3)
        stopping = threading.Thread(target=running.stop)  # type: ignore[attr-defined]
        started = time.monotonic()
        stopping.start()
        time.sleep(0.2)
        try:
            kept_alive.request("GET", "/v1/models/fast")
            late = kept_alive.getresponse()
            status, body = late.status, late.read()
            assert status == 503 and json.loads(body) == {"error": "The server is shutting down"}
        except (http.client.RemoteDisconnected, ConnectionError):
            pass  # a closed connection is the other clean answer
        finally:
            kept_alive.close()
        in_flight.join(timeout=10)
        stopping.join(timeout=10)
        assert not stopping.is_alive() and time.monotonic() - started < 5
        assert results["slow"] == (200, b'{\n "model_version_status": []\n}\n')


def test_rest_predict_decodes_and_runs_the_same_servable() -> None:
    from tensorflow.core.protobuf import meta_graph_pb2
    from tensorflow_serving.apis import predict_pb2

    from tf_server.rest_api import RestHandler

    definition = meta_graph_pb2.SignatureDef()
    definition.inputs["x"].dtype = 1  # DT_FLOAT
    servable = SimpleNamespace(signatures={"serving_default": SimpleNamespace(inputs=definition.inputs)})
    calls: dict[str, list[object]] = {"resolve": [], "predict": []}

    class Core:
        def resolve(self, request: object) -> object:
            calls["resolve"].append(request)
            return servable

        def predict(self, request: object, entrypoint: str, resolved: object = None) -> object:
            calls["predict"].append(resolved)
            response = predict_pb2.PredictResponse()
            response.outputs["y"].CopyFrom(tensor_proto(np.array([1.0], dtype=np.float32)))
            return response

    answer = RestHandler(Core()).process("POST", "/v1/models/m:predict", b'{"instances": [1.0]}')  # type: ignore[arg-type]
    assert answer.body and json.loads(answer.body) == {"predictions": [1.0]}
    assert len(calls["resolve"]) == 1 and calls["predict"] == [servable]
