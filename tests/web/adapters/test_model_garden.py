"""TF Model Garden exports: pixel boxes of the model's own resized image plus image_info, int
classes, 28x28 masks; through gunicorn and real gRPC on every endpoint."""

from __future__ import annotations

import numpy as np
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
SCALE = 256 / WIDTH  # the test model resizes the long side to 256, then crops at (y=3, x=5)
FIXED = [(10 + 5) / SCALE, (10 + 3) / SCALE, (90 + 5) / SCALE, (50 + 3) / SCALE]  # its row 1, in the upload


def expect(rect: tuple[int, int, int, int]):
    def check(body: dict) -> None:
        assert body["image"] == {"width": WIDTH, "height": HEIGHT}
        assert [d["label"] for d in body["detections"]] == ["circle", "triangle"]
        check_bright_box(body, rect, "circle", tolerance=3.5)
        triangle = by_label(body)["triangle"]
        assert triangle["class_id"] == 3 and triangle["score"] == 0.7
        np.testing.assert_allclose(as_xyxy(triangle["box"]), FIXED, atol=0.05)
        for det in body["detections"]:
            rle = det["mask"]
            decoded = coco_mask.decode({"size": rle["size"], "counts": rle["counts"].encode()}) > 0
            x0, y0, x1, y1 = (int(round(v)) for v in as_xyxy(det["box"]))
            assert (
                decoded[(y0 + y1) // 2, (x0 + x1) // 2] and not decoded[y0 + 1, x0 + 1]
            )  # a disc in its box
            assert not decoded[:, : max(0, x0 - 1)].any() and not decoded[y1 + 1 :].any()

    return check


def test_every_endpoint_undoes_image_info(family_gateway: FamilyGateway) -> None:
    other = (380, 150, 600, 390)
    every_endpoint(
        family_gateway,
        "model_garden",
        scene(WIDTH, HEIGHT, RECT),
        expect(RECT),
        boxes=lambda body: [as_xyxy(d["box"]) for d in body["detections"]],
        second=(scene(WIDTH, HEIGHT, other), expect(other)),
    )


def test_model_detail(family_gateway: FamilyGateway) -> None:
    detail = family_gateway.detail("model_garden")
    assert (detail["family"], detail["kind"]) == ("model_garden", "segmentation")
    assert detail["signature"]["outputs"]["image_info"] == {"dtype": "float32", "shape": [1, 4, 2]}
