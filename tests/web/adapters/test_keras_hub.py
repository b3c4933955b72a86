"""KerasHub object detectors exported with their decoder: `boxes` yxyx in pixels of a fixed 320x320
input, `confidence`, 0-based `labels`, `num_detections`, -1 padding. The gateway letterboxes with 0
and normalizes with ImageNet mean/std (RetinaNet's image converter); through gunicorn on every
endpoint."""

from __future__ import annotations

import numpy as np

from tests.support import family_models as fam
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
SCALE = fam.KERAS_HUB_SIZE / WIDTH  # letterbox: 640x400 -> 320x200, padded 60 px above and below
PAD_Y = 60


def to_upload(box: tuple[float, float, float, float]) -> list[float]:
    x0, y0, x1, y1 = box
    return [x0 / SCALE, (y0 - PAD_Y) / SCALE, x1 / SCALE, (y1 - PAD_Y) / SCALE]


def expect(rect: tuple[int, int, int, int]):
    def check(body: dict) -> None:
        assert body["image"] == {"width": WIDTH, "height": HEIGHT}
        found = by_label(body)
        # Labels are 0-based: class 0 is the label map's id 1. Slot 3 (-1) is padding.
        assert sorted((d["class_id"], d["label"]) for d in body["detections"]) == [
            (0, "circle"),
            (1, "square"),
            (2, "triangle"),
        ]
        check_bright_box(body, rect, "circle")
        # The box around everything that is not padding is the whole upload: the letterbox is undone.
        np.testing.assert_allclose(as_xyxy(found["square"]["box"]), [0, 0, WIDTH, HEIGHT], atol=2.0)
        np.testing.assert_allclose(
            as_xyxy(found["triangle"]["box"]), to_upload(fam.KERAS_FIXED_ROW[0]), atol=0.01
        )
        assert found["triangle"]["score"] == fam.KERAS_FIXED_ROW[2]

    return check


def test_every_endpoint_letterboxes_and_maps_back(family_gateway: FamilyGateway) -> None:
    other = (420, 40, 620, 380)
    every_endpoint(
        family_gateway,
        "keras_hub",
        scene(WIDTH, HEIGHT, RECT),
        expect(RECT),
        boxes=lambda body: [as_xyxy(by_label(body)["circle"]["box"])],
        second=(scene(WIDTH, HEIGHT, other), expect(other)),
    )


def test_a_tall_picture_is_padded_left_and_right(family_gateway: FamilyGateway) -> None:
    response = family_gateway.predict("keras_hub", scene(300, 600, (50, 100, 250, 300)))
    assert response.status_code == 200, response.text
    body = response.json()
    check_bright_box(body, (50, 100, 250, 300), "circle", tolerance=4.0)
    np.testing.assert_allclose(as_xyxy(by_label(body)["square"]["box"]), [0, 0, 300, 600], atol=3.0)


def test_model_detail(family_gateway: FamilyGateway) -> None:
    detail = family_gateway.detail("keras_hub")
    assert (detail["family"], detail["kind"], detail["class_offset"]) == ("keras_hub", "detection", 1)
    assert detail["input"]["fixed_size"] == {"width": 320, "height": 320}
    assert detail["preprocessing"] == {
        "where": "gateway",
        "resize": "letterbox",
        "pixel_range": "0-1",
        "mean": list(fam.IMAGENET_MEAN),
        "std": list(fam.IMAGENET_STD),
        "channel_order": "RGB",
        "pad_value": 0,
        "sources": {
            "where": "gateway.toml",
            "resize": "family default",
            "channel_order": "family default",
            "pad_value": "family default",
            "pixel_range": "family default",
            "mean": "family default",
            "std": "family default",
        },
    }
    assert detail["settings"]["values"] == {"preprocessing": "gateway"}
