"""TF Object Detection API exports (TF1 `inputs` uint8 and encoded strings with masks, TF2 float
input), through gunicorn and real gRPC: every endpoint, boxes where the picture has them."""

from __future__ import annotations

import numpy as np
import pytest
from pycocotools import mask as coco_mask

from tests.web.adapters.endpoints import (
    FamilyGateway,
    as_xyxy,
    by_label,
    check_bright_box,
    every_endpoint,
    scene,
)

WIDTH, HEIGHT = 640, 400
RECT = (100, 60, 300, 260)
OTHER_RECT = (400, 120, 560, 380)
FIXED = [0.5 * WIDTH, 0.5 * HEIGHT, 1.0 * WIDTH, 0.75 * HEIGHT]  # row 1: normalized [0.5, 0.5, 0.75, 1.0]


def ellipse(box: list[float]) -> np.ndarray:
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH] + 0.5
    x0, y0, x1, y1 = box
    return ((xx - (x0 + x1) / 2) / ((x1 - x0) / 2)) ** 2 + ((yy - (y0 + y1) / 2) / ((y1 - y0) / 2)) ** 2 <= 1


def expect(rect: tuple[int, int, int, int], masks: bool = False):
    def check(body: dict) -> None:
        assert body["image"] == {"width": WIDTH, "height": HEIGHT}
        # num_detections = 2: the two padding rows (score 0.99, "triangle") never appear.
        assert [d["label"] for d in body["detections"]] == ["circle", "square"]
        check_bright_box(body, rect, "circle")
        square = by_label(body)["square"]
        assert (square["class_id"], square["score"]) == (2, 0.6)
        np.testing.assert_allclose(as_xyxy(square["box"]), FIXED, atol=0.01)
        for det in body["detections"]:
            assert ("mask" in det) is masks
            if masks:
                rle = det["mask"]
                assert rle["size"] == [HEIGHT, WIDTH]
                decoded = coco_mask.decode({"size": rle["size"], "counts": rle["counts"].encode()}) > 0
                inside = ellipse(as_xyxy(det["box"]))
                assert (decoded & inside).sum() / (decoded | inside).sum() > 0.85

    return check


def boxes(body: dict) -> list[list[float]]:
    return [as_xyxy(d["box"]) for d in body["detections"]]


@pytest.mark.parametrize(
    "model,masks",
    [("od_tf1", False), ("od_tf1_encoded", True), ("od_float", False)],
)
def test_every_endpoint_finds_the_rectangle(family_gateway: FamilyGateway, model: str, masks: bool) -> None:
    image = scene(WIDTH, HEIGHT, RECT)
    second = (scene(WIDTH, HEIGHT, OTHER_RECT), expect(OTHER_RECT, masks))
    every_endpoint(family_gateway, model, image, expect(RECT, masks), boxes=boxes, second=second)


def test_tf1_batch_of_different_sizes_keeps_each_frame(family_gateway: FamilyGateway) -> None:
    small = scene(320, 200, (50, 30, 150, 130))
    big = scene(WIDTH, HEIGHT, RECT)
    response = family_gateway.post("od_tf1", "predict_batch", [("s.png", small), ("b.png", big)])
    assert response.status_code == 200, response.text
    first, second = response.json()
    assert first["image"] == {"width": 320, "height": 200}
    check_bright_box(first, (50, 30, 150, 130), "circle")
    check_bright_box(second, RECT, "circle")


@pytest.mark.parametrize(
    "model,input_name,kind,input_kind",
    [
        ("od_tf1", "inputs", "detection", "uint8_image"),
        ("od_tf1_encoded", "inputs", "segmentation", "encoded_image_string"),
        ("od_float", "input_tensor", "detection", "float_image"),
    ],
)
def test_model_detail_names_the_family(
    family_gateway: FamilyGateway, model: str, input_name: str, kind: str, input_kind: str
) -> None:
    detail = family_gateway.detail(model)
    assert detail["family"] == "tf_od_api" and detail["kind"] == kind and detail["problem"] is None
    assert detail["input"]["name"] == input_name and detail["input"]["kind"] == input_kind
    assert detail["class_offset"] == 0 and detail["candidates"] == ["tf_od_api"]
    if input_kind == "float_image":
        assert detail["preprocessing"]["pixel_range"] == "0-255"
