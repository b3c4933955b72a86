"""A real TF1 graph exported the TF1 Object Detection API way (tests/support/tf1_models.py: uint8
`image_tensor` placeholder behind the signature input `inputs`, 1-based float classes, padding rows
past num_detections), loaded by the local model server and read by the gateway under gunicorn: the
boxes land where the model put them in the uploaded picture, named from the COCO-style label map."""

from __future__ import annotations

import io
from collections.abc import Iterator

import numpy as np
import pytest
from PIL import Image

from tests.support.built_models import build_models
from tests.support.gunicorn_gateway import running_gateway
from tests.support.model_server import running_model_server
from tests.support.tf1_models import (
    OD_BOXES,
    OD_CLASSES,
    OD_LABELS,
    OD_MODEL,
    OD_NUM_DETECTIONS,
    OD_SCORES_AFTER_FIRST,
)
from tests.web.adapters.endpoints import FamilyGateway, as_xyxy, every_endpoint, scene

WIDTH, HEIGHT = 640, 400
RECT = (100, 60, 300, 260)
YELLOW = (230, 200, 30)  # the rectangle: red and blue differ, so a BGR input would score differently
MIN_SCORE = 0.05  # row 0 scores the red mean (about 0.2 here): keep it


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FamilyGateway]:
    """The model server serving only the TF1 detector (absolute base path, its label map beside it)
    and the gateway in front of it."""
    models = build_models("tests.support.tf1_models", "test-tf1-models")
    folder = tmp_path_factory.mktemp("od_api_tf1")
    config = folder / "models.config"
    entry = f'name: "{OD_MODEL}" base_path: "{models / OD_MODEL}" model_platform: "tensorflow"'
    config.write_text(f"model_config_list {{ config {{ {entry} }} }}\n")
    with running_model_server(f"--model_config_file={config}") as address:
        settings = {"TF_SERVING_ADDRESS": address, "MODEL_CONFIG_FILE": config}
        with running_gateway(folder / "gateway", workers=1, threads=4, **settings) as url:
            yield FamilyGateway(url)


def red_mean(image: bytes) -> float:
    """What the detector scores row 0 with: the mean of the first channel, 0-1."""
    return float(np.asarray(Image.open(io.BytesIO(image)).convert("RGB"))[..., 0].mean()) / 255.0


def expected_rows(image: bytes, width: int, height: int) -> dict[int, tuple[list[float], float]]:
    """class id -> (box in the upload's pixels, score) of the rows before num_detections."""
    scores = (red_mean(image), *OD_SCORES_AFTER_FIRST)
    rows = {}
    kept = slice(OD_NUM_DETECTIONS)
    for (ymin, xmin, ymax, xmax), class_id, score in zip(
        OD_BOXES[kept], OD_CLASSES[kept], scores[kept], strict=True
    ):
        rows[class_id] = ([xmin * width, ymin * height, xmax * width, ymax * height], score)
    assert len(rows) == OD_NUM_DETECTIONS  # one row per class: the checks go by class id
    return rows


def expect(image: bytes, width: int, height: int):
    rows = expected_rows(image, width, height)

    def check(body: dict) -> None:
        assert body["image"] == {"width": width, "height": height}
        found = {det["class_id"]: det for det in body["detections"]}
        assert sorted(found) == sorted(rows), "the padding rows past num_detections must not appear"
        for class_id, (box, score) in rows.items():
            det = found[class_id]
            assert det["label"] == OD_LABELS[class_id], det  # display_name, not the /m/ name
            np.testing.assert_allclose(as_xyxy(det["box"]), box, atol=0.5)
            assert det["score"] == pytest.approx(score, abs=0.005), det
        assert [d["score"] for d in body["detections"]] == sorted(
            (d["score"] for d in body["detections"]), reverse=True
        )

    return check


def boxes(body: dict) -> list[list[float]]:
    return [as_xyxy(d["box"]) for d in body["detections"]]


def test_every_endpoint_puts_the_boxes_where_the_tf1_graph_did(gateway: FamilyGateway) -> None:
    image = scene(WIDTH, HEIGHT, RECT, bright=YELLOW)
    small = scene(320, 200, (20, 20, 300, 180), bright=YELLOW)  # a second frame of another size
    every_endpoint(
        gateway,
        OD_MODEL,
        image,
        expect(image, WIDTH, HEIGHT),
        boxes=boxes,
        second=(small, expect(small, 320, 200)),
        min_score=MIN_SCORE,
    )


def test_min_score_applies_to_the_rows_the_graph_scored(gateway: FamilyGateway) -> None:
    image = scene(WIDTH, HEIGHT, RECT, bright=YELLOW)
    response = gateway.predict(OD_MODEL, image)  # the default 0.5 drops row 0 (about 0.2)
    assert response.status_code == 200, response.text
    assert [d["label"] for d in response.json()["detections"]] == ["bicycle", "car"]


def test_model_detail_reads_the_tf1_signature(gateway: FamilyGateway) -> None:
    detail = gateway.detail(OD_MODEL)
    assert detail["family"] == "tf_od_api" and detail["kind"] == "detection" and detail["problem"] is None
    assert detail["input"]["name"] == "inputs" and detail["input"]["kind"] == "uint8_image"
    assert detail["class_offset"] == 0
