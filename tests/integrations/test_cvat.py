"""CVAT auto-annotation through the gateway, by each entry point CVAT itself uses.

A real gateway (gunicorn, API keys on) in front of the demo models. The nuclio function
(deploy/cvat/main.py) is called the way nuclio calls it: nuclio-sdk's test Platform runs its
init_context and hands its handler a nuclio Event. The cvat-sdk function (deploy/cvat/sdk_function.py)
is loaded the way cvat-cli's --function-file loads it and its shapes go through cvat-sdk's own
auto-annotation driver (spec checks, label mapping, shape validation). Their masks are compared with
the gateway's own answer pixel for pixel, and with the shapes drawn in the picture.
"""

from __future__ import annotations

import base64
import importlib.util
import io
import json
import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import requests
import yaml
from PIL import Image, ImageDraw
from pycocotools import mask as coco_mask

from demo.synthetic import encode_jpeg, generate_image
from tests.support.gunicorn_gateway import running_gateway
from tests.support.model_server import REPO_ROOT

FUNCTION_DIR = REPO_ROOT / "deploy" / "cvat"
KEY = "cvat-test-key-0123456789"
SEED = 7


@pytest.fixture(scope="module")
def gateway(demo_model_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with running_gateway(
        tmp_path_factory.mktemp("cvat-gateway"),
        TF_SERVING_ADDRESS=demo_model_server,
        MODEL_CONFIG_FILE=REPO_ROOT / "tf_server" / "models.config",
        API_KEYS=KEY,
        SECRET_KEY="a-long-random-session-signing-secret",
    ) as url:
        yield url


@pytest.fixture(scope="module")
def picture() -> tuple[bytes, list]:
    image, shapes = generate_image(np.random.default_rng(SEED))
    return encode_jpeg(image), shapes


def load(name: str, path: Path) -> ModuleType:
    """As cvat-cli's --function-file (and nuclio, for main.py) load a function: from its file."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def gateway_masks(gateway: str, jpeg: bytes, min_score: float) -> list[tuple[str, np.ndarray]]:
    answer = requests.post(
        f"{gateway}/api/v1/models/shapes/predict",
        params={"min_score": min_score},
        data=jpeg,
        headers={"Content-Type": "image/jpeg", "X-API-Key": KEY},
        timeout=60,
    )
    answer.raise_for_status()
    out = []
    for det in answer.json()["detections"]:
        rle = {"size": det["mask"]["size"], "counts": det["mask"]["counts"].encode()}
        out.append((det["label"], coco_mask.decode(rle).astype(bool)))
    return out


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def test_the_shipped_function_yaml_is_what_the_generator_writes_for_the_demo_model(gateway: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "web.integrations.cvat", "function-yaml", "shapes",
         "--gateway", "http://gateway:5000", "--query-url", gateway, "--api-key", KEY],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert done.stdout == (FUNCTION_DIR / "function.yaml").read_text()
    document = yaml.safe_load(done.stdout)
    spec = json.loads(document["metadata"]["annotations"]["spec"])
    assert spec == [
        {"id": 1, "name": "Circle", "type": "mask"},
        {"id": 2, "name": "Square", "type": "mask"},
        {"id": 3, "name": "Triangle", "type": "mask"},
    ]
    assert document["spec"]["handler"] == "main:handler"
    assert {"name": "GATEWAY_MODEL", "value": "shapes"} in document["spec"]["env"]
    assert KEY not in done.stdout  # the key is given at deploy time, never written into the file


def test_the_generator_says_what_is_wrong_with_an_unknown_model(gateway: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "web.integrations.cvat", "function-yaml", "nope", "--gateway", gateway,
         "--api-key", KEY],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2
    assert "404" in done.stderr and "shapes" in done.stderr


@pytest.fixture()
def nuclio_main(gateway: str, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.setenv("GATEWAY_URL", gateway)
    monkeypatch.setenv("GATEWAY_MODEL", "shapes")
    monkeypatch.setenv("GATEWAY_API_KEY", KEY)
    return load("main", FUNCTION_DIR / "main.py")


def call_nuclio(main: ModuleType, body: object) -> tuple[int, object]:
    from nuclio_sdk import Event
    from nuclio_sdk.test import Platform

    platform = Platform()  # runs main.init_context(context) first, as nuclio does
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    event = Event(body=raw, content_type="application/json", method="POST", path="/")
    response = platform.call_handler(main.handler, event)
    return response.status_code, json.loads(response.body)


def test_the_nuclio_function_answers_cvat_masks_with_their_outlines(
    nuclio_main: ModuleType, gateway: str, picture: tuple[bytes, list]
) -> None:
    jpeg, truth = picture
    status, shapes = call_nuclio(nuclio_main, {"image": base64.b64encode(jpeg).decode(), "threshold": 0.5})
    assert status == 200, shapes
    expected = gateway_masks(gateway, jpeg, 0.5)
    assert len(shapes) == len(expected) >= 2
    height, width = truth[0].mask.shape
    for shape, (label, full) in zip(shapes, expected, strict=True):
        assert shape["type"] == "mask" and shape["label"] == label
        assert 0.5 <= float(shape["confidence"]) <= 1
        left, top, right, bottom = shape["mask"][-4:]
        crop = np.array(shape["mask"][:-4], dtype=bool).reshape(bottom - top + 1, right - left + 1)
        rebuilt = np.zeros((height, width), bool)
        rebuilt[top : bottom + 1, left : right + 1] = crop
        assert np.array_equal(rebuilt, full)  # CVAT's cropped bitmap is exactly the gateway's mask
        outline = Image.new("1", (width, height))
        points = shape["points"]
        ImageDraw.Draw(outline).polygon(list(zip(points[::2], points[1::2], strict=True)), fill=1, outline=1)
        assert iou(np.array(outline), full) > 0.85  # the polygon CVAT keeps when converting to polygons
    assert {s["label"].lower() for s in shapes} <= {t.label.lower() for t in truth}
    for t in truth:
        best = max(
            (iou(t.mask, full) for label, full in expected if label.lower() == t.label.lower()), default=0
        )
        assert best > 0.6, f"{t.label} not found"


def test_the_nuclio_function_refuses_bad_events_with_the_reason(nuclio_main: ModuleType) -> None:
    status, body = call_nuclio(nuclio_main, {"image": "not base64!"})
    assert status == 400 and "base64" in body["error"]
    status, body = call_nuclio(nuclio_main, {"threshold": 0.5})
    assert status == 400 and "image" in body["error"]
    status, body = call_nuclio(nuclio_main, {"image": base64.b64encode(b"just some text").decode()})
    assert status == 502 and "415" in body["error"]  # the gateway's own message comes through


def test_the_nuclio_function_says_when_the_key_is_wrong(gateway: str, monkeypatch: pytest.MonkeyPatch,
                                                          picture: tuple[bytes, list]) -> None:  # fmt: skip
    monkeypatch.setenv("GATEWAY_URL", gateway)
    monkeypatch.setenv("GATEWAY_MODEL", "shapes")
    monkeypatch.setenv("GATEWAY_API_KEY", "wrong-key")
    main = load("main", FUNCTION_DIR / "main.py")
    status, body = call_nuclio(main, {"image": base64.b64encode(picture[0]).decode()})
    assert status == 502 and "401" in body["error"] and "key" in body["error"]


def run_sdk_function(function, jpeg: bytes, *, conv_mask_to_poly: bool, dataset_type: str):
    """What cvat_sdk.auto_annotation.annotate_task does for one frame, without a CVAT server: the
    driver's label mapping against a task's labels, the function's detect, the driver's validation."""
    import cvat_sdk.auto_annotation as cvataa
    from cvat_sdk.auto_annotation import driver

    task_labels = [
        cvataa.label_spec(name, 100 + i, type=dataset_type, attributes=[], sublabels=[])
        for i, name in enumerate(("Circle", "Square", "Triangle"))
    ]
    mapper = driver._AnnotationMapper(
        logging.getLogger("cvat-test"), function.spec.labels, task_labels,
        allow_unmatched_labels=False, conv_mask_to_poly=conv_mask_to_poly,
    )  # fmt: skip
    context = driver._DetectionFunctionContextImpl(
        frame_name="frame.jpg", conf_threshold=0.5, conv_mask_to_poly=conv_mask_to_poly
    )
    annotations = function.detect(context, Image.open(io.BytesIO(jpeg)).convert("RGB"))
    tags, shapes = mapper.validate_and_remap(annotations, 3)
    names = {100 + i: name for i, name in enumerate(("Circle", "Square", "Triangle"))}
    return tags, shapes, names


def test_the_cvat_sdk_function_masks_go_through_cvat_sdks_driver(
    gateway: str, picture: tuple[bytes, list]
) -> None:
    from cvat_sdk.masks import decode_mask

    module = load("__cvat_function__", FUNCTION_DIR / "sdk_function.py")
    function = module.create(model="shapes", url=gateway, api_key=KEY)
    assert [(label.id, label.name, label.type) for label in function.spec.labels] == [
        (1, "Circle", "mask"), (2, "Square", "mask"), (3, "Triangle", "mask"),
    ]  # fmt: skip
    jpeg, truth = picture
    tags, shapes, names = run_sdk_function(function, jpeg, conv_mask_to_poly=False, dataset_type="mask")
    expected = gateway_masks(gateway, jpeg, 0.5)
    height, width = truth[0].mask.shape
    assert not tags and len(shapes) == len(expected)
    for shape, (label, full) in zip(shapes, expected, strict=True):
        assert shape.type.value == "mask" and shape.frame == 3 and shape.source == "auto"
        assert names[shape.label_id] == label
        assert np.array_equal(decode_mask(shape.points, image_width=width, image_height=height), full)


def test_the_cvat_sdk_function_answers_polygons_when_cvat_converts_masks(
    gateway: str, picture: tuple[bytes, list]
) -> None:
    module = load("__cvat_function__", FUNCTION_DIR / "sdk_function.py")
    function = module.create(model="shapes", url=gateway, api_key=KEY)
    tags, shapes, names = run_sdk_function(
        function, picture[0], conv_mask_to_poly=True, dataset_type="polygon"
    )
    assert shapes and all(s.type.value == "polygon" and len(s.points) >= 6 for s in shapes)


def test_boxes_without_masks_become_rectangles_and_a_classifier_a_tag() -> None:
    """The demo detectors both answer masks, so the other shapes are checked on the conversion that
    both functions share: a box clamped into the picture, a classifier's best class as a tag."""
    main = load("cvat_main_shapes", FUNCTION_DIR / "main.py")
    prediction = {
        "image": {"width": 100, "height": 50},
        "detections": [
            {"label": "cat", "score": 0.9, "box": {"xmin": -3, "ymin": 2, "xmax": 40, "ymax": 70}}
        ],
    }
    assert main.to_cvat_shapes(prediction) == [
        {"confidence": "0.9000", "label": "cat", "type": "rectangle", "points": [0.0, 2.0, 40.0, 50.0]}
    ]
    classified = {
        "image": {"width": 8, "height": 8},
        "classes": [{"label": "7", "score": 0.8, "class_id": 8}],
    }
    assert main.to_cvat_shapes(classified) == [{"confidence": "0.8000", "label": "7", "type": "tag"}]
