"""The prediction JSON (docs/architecture.md), produced by the domain types."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pycocotools import mask as coco_mask

from web.domain import Box, Classification, Detection, Mask, Prediction


def test_detection_prediction_json() -> None:
    patch = np.zeros((4, 6), dtype=bool)
    patch[1:3, 2:5] = True
    mask = Mask((10, 20), top=3, left=5, patch=patch)
    prediction = Prediction(
        "shapes",
        2,
        20,
        10,
        [
            Detection(1, "circle", 0.97123, Box(1.234, 2.0, 8.0, 9.5), mask),
            Detection(2, "square", 0.5, Box(0.0, 0.0, 4.0, 4.0)),
        ],
        timings_ms={"decode": 1.234, "predict": 2.0, "postprocess": 0.5, "total": 3.734},
    )
    body = json.loads(json.dumps(prediction.to_dict()))
    assert list(body) == ["model", "image", "detections", "timings_ms"]
    assert body["model"] == {"name": "shapes", "version": 2}
    assert body["image"] == {"width": 20, "height": 10}
    first, second = body["detections"]
    assert first["label"] == "circle" and first["class_id"] == 1 and first["score"] == 0.9712
    assert first["box"] == {"xmin": 1.23, "ymin": 2.0, "xmax": 8.0, "ymax": 9.5}
    assert "mask" not in second
    decoded = coco_mask.decode({"size": first["mask"]["size"], "counts": first["mask"]["counts"].encode()})
    expected = np.zeros((10, 20), dtype=np.uint8)
    expected[4:6, 7:10] = 1
    np.testing.assert_array_equal(decoded, expected)
    np.testing.assert_array_equal(np.asarray(mask), expected.astype(bool))
    assert mask.shape == (10, 20) and mask.area() == 6
    assert body["timings_ms"] == {"decode": 1.23, "predict": 2.0, "postprocess": 0.5, "total": 3.73}


def test_classification_answers_classes_instead_of_detections() -> None:
    prediction = Prediction("flowers", 1, 64, 64, classes=[Classification(3, "rose", 0.8)])
    body = prediction.to_dict()
    assert "detections" not in body
    assert body["classes"] == [{"label": "rose", "class_id": 3, "score": 0.8}]


@pytest.mark.parametrize(
    "top,left,patch_shape",
    [(0, 0, (10, 20)), (3, 5, (4, 6)), (0, 17, (10, 3)), (9, 0, (1, 20)), (2, 2, (0, 0)), (4, 19, (6, 1))],
)
@pytest.mark.parametrize("fill", ["random", "full", "empty"])
def test_patch_rle_equals_pycocotools_on_the_full_mask(top: int, left: int, patch_shape, fill: str) -> None:
    rng = np.random.default_rng(top * 100 + left)
    if fill == "random":
        patch = rng.random(patch_shape) > 0.5
    else:
        patch = np.full(patch_shape, fill == "full")
    mask = Mask((10, 20), top=top, left=left, patch=patch)
    expected = coco_mask.encode(np.asfortranarray(mask.full().astype(np.uint8)))
    assert mask.rle() == {"size": [10, 20], "counts": expected["counts"].decode("ascii")}
    assert mask.rle() is mask.rle()  # encoded once
