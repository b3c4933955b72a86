"""The documented answers are the real ones: every JSON answer of the REST API, successful or not,
is validated against the schema /swagger.json gives for its route and status.

The answers come from the running app over real gRPC (the signature models of
tests/support/signature_models.py: detectors with and without masks, classifiers, a model the
gateway refuses), and from an app whose model server is down. A field the code adds without
documenting it fails here (every model is strict), as does a documented field with the wrong type,
a null where none is documented, or a status a route answers but does not document.
"""

from __future__ import annotations

import io
import re
import shutil
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.web.helpers import solid

API = "/api/v1"


class Documented:
    """/swagger.json, asked for the schema of one answer."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.routes = [
            (re.compile("^" + re.sub(r"\{[^}]+\}", "[^/]+", path) + "$"), path) for path in spec["paths"]
        ]

    def schema(self, method: str, url: str, status: int) -> dict[str, Any]:
        path = url.split("?")[0].removeprefix(self.spec["basePath"])
        matches = [template for pattern, template in self.routes if pattern.match(path)]
        assert len(matches) == 1, f"{url}: no single documented route ({matches})"
        operation = self.spec["paths"][matches[0]][method.lower()]
        response = operation["responses"].get(str(status))
        assert response is not None, f"{method} {matches[0]} answers {status}, which is not documented"
        assert "schema" in response, f"{method} {matches[0]} {status} has no documented schema"
        return {**response["schema"], "definitions": self.spec["definitions"]}

    def check(self, method: str, url: str, answer: Any) -> dict[str, Any] | list:
        assert answer.is_json, f"{method} {url} answered {answer.mimetype}"
        body = answer.get_json()
        schema = self.schema(method, url, answer.status_code)
        jsonschema.Draft4Validator.check_schema(schema)
        errors = sorted(jsonschema.Draft4Validator(schema).iter_errors(body), key=str)
        assert not errors, f"{method} {url} -> {answer.status_code}: " + "; ".join(
            f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors[:5]
        )
        return body


def documented(client: FlaskClient) -> Documented:
    return Documented(client.get("/swagger.json").get_json())


def post(client: FlaskClient, url: str, *images: tuple[bytes, str], label_map: bytes | None = None):
    data: dict[str, Any] = {"image": [(io.BytesIO(data), name) for data, name in images]}
    if label_map is not None:
        data["label_map"] = (io.BytesIO(label_map), "labels.txt")
    return client.post(url, data=data, content_type="multipart/form-data")


def test_the_catalog_answers_match_their_schemas(signature_client: FlaskClient) -> None:
    spec = documented(signature_client)
    listed = spec.check("GET", f"{API}/models", signature_client.get(f"{API}/models"))
    names = [m["name"] for m in listed["models"]]
    assert "two_inputs" in names and "classifier" in names
    problems, families = set(), set()
    for name in names:
        detail = spec.check("GET", f"{API}/models/{name}", signature_client.get(f"{API}/models/{name}"))
        problems.add(detail["problem"] is None)
        families.add(detail["family"])
        spec.check("GET", f"{API}/models/{name}/labels", signature_client.get(f"{API}/models/{name}/labels"))
    assert problems == {True, False}, "both a model the gateway reads and one it refuses were described"
    assert {"tf_od_api", "model_garden", "classifier", None} <= families
    versioned = signature_client.get(f"{API}/models/od_uint8?version=1")
    assert spec.check("GET", f"{API}/models/od_uint8?version=1", versioned)["version"] == 1


def test_the_description_with_export_metadata_matches_its_schema(
    make_app, signature_server: str, signature_models: Path, tmp_path: Path
) -> None:
    """An exporter's metadata.yaml beside a version: the description carries it (and, here, the
    problem it causes: it says YOLO, the signature is the TF OD API's)."""
    copy = tmp_path / "od_uint8"
    shutil.copytree(signature_models / "od_uint8", copy)
    (copy / "1" / "metadata.yaml").write_text("author: Ultralytics\ntask: detect\nnames:\n  0: circle\n")
    config = tmp_path / "models.config"
    config.write_text(
        f'model_config_list {{ config {{ name: "od_uint8" base_path: "{copy}" '
        'model_platform: "tensorflow" } }'
    )
    client = make_app(TF_SERVING_ADDRESS=signature_server, MODEL_CONFIG_FILE=config).test_client()
    detail = documented(client).check("GET", f"{API}/models/od_uint8", client.get(f"{API}/models/od_uint8"))
    assert detail["export_metadata"]["exporter"] == "Ultralytics" and detail["problem"]


def test_prediction_answers_match_their_schemas(signature_client: FlaskClient) -> None:
    spec = documented(signature_client)
    image = (solid(320, 240, (90, 90, 90)), "grey.jpg")
    masked = f"{API}/models/od_jpeg/predict?min_score=0&store=true&picture=png"
    body = spec.check("POST", masked, post(signature_client, masked, image))
    assert body["detections"][0]["mask"]["counts"] and body["result_url"]
    assert body["picture"]["format"] == "png"
    assert set(body["timings_ms"]) >= {"decode", "predict", "postprocess", "render", "total"}
    plain = f"{API}/models/mg_bytes/predict?max_detections=1000"
    assert "mask" not in spec.check("POST", plain, post(signature_client, plain, image))["detections"][0]
    classes = f"{API}/models/classifier/predict?min_score=0"
    assert spec.check("POST", classes, post(signature_client, classes, image))["classes"]
    labelled = f"{API}/models/classifier_named/predict"
    spec.check("POST", labelled, post(signature_client, labelled, image, label_map=b"a\nb\nc\n"))
    batch = f"{API}/models/od_uint8/predict_batch?store=1"
    answers = spec.check("POST", batch, post(signature_client, batch, image, image, image))
    assert len(answers) == 3 and all(a["result_url"] for a in answers)


@pytest.mark.parametrize(
    "url,images,status",
    [
        (f"{API}/models/nope", None, 404),
        (f"{API}/models/od_uint8?version=7", None, 404),
        (f"{API}/models/od_uint8?version=first", None, 400),
        (f"{API}/models/nope/labels", None, 404),
        (f"{API}/models/nope/predict", [(b"x", "x.jpg")], 404),
        (f"{API}/models/od_uint8/predict?min_score=2", [(b"x", "x.jpg")], 400),
        (f"{API}/models/od_uint8/predict?picture=gif", [(b"x", "x.jpg")], 400),
        (f"{API}/models/od_uint8/predict", [(b"not a picture", "x.jpg")], 415),
        (f"{API}/models/od_uint8/predict", [], 400),
        (f"{API}/models/two_inputs/predict", "solid", 422),
        (f"{API}/models/od_uint8/predict_image?format=tiff", "solid", 400),
        (f"{API}/models/od_uint8/predict_batch?max_detections=0", "solid", 400),
    ],
)
def test_error_answers_match_their_schema(
    signature_client: FlaskClient, url: str, images: Any, status: int
) -> None:
    if images == "solid":
        images = [(solid(64, 48), "a.jpg")]
    if images is None:
        answer = signature_client.get(url)
    else:
        answer = post(signature_client, url, *images)
    assert answer.status_code == status, answer.get_json()
    body = documented(signature_client).check("GET" if images is None else "POST", url, answer)
    assert body["error"]["code"] == status


def test_answers_while_the_model_server_is_down_match_their_schema(offline_app: Flask) -> None:
    client = offline_app.test_client()
    spec = documented(client)
    for url in (f"{API}/models", f"{API}/models/shapes"):
        answer = client.get(url)
        assert answer.status_code == 503
        spec.check("GET", url, answer)
    labels = spec.check("GET", f"{API}/models/shapes/labels", client.get(f"{API}/models/shapes/labels"))
    assert labels == {"1": "circle", "2": "square", "3": "triangle"}
    url = f"{API}/models/shapes/predict"
    answer = post(client, url, (solid(64, 48), "a.jpg"))
    assert answer.status_code == 503
    spec.check("POST", url, answer)
