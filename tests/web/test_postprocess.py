"""Post-processing: both box conventions, num_detections, thresholds, mask reframing, classifiers."""

from __future__ import annotations

import numpy as np
import pytest
from pycocotools import mask as coco_mask

from web.domain import Box
from web.label_maps import LabelMap
from web.postprocess import (
    Geometry,
    boxes_to_image,
    classifications_from_outputs,
    detections_from_outputs,
    reframe_mask,
)

LABELS = LabelMap({1: "circle", 2: "square", 3: "triangle"})


def ellipse(height: int, width: int, box: Box) -> np.ndarray:
    """The ideal filled ellipse inscribed in `box` on a height x width canvas."""
    yy, xx = np.mgrid[0:height, 0:width] + 0.5
    cx, cy = (box.xmin + box.xmax) / 2, (box.ymin + box.ymax) / 2
    rx, ry = box.width / 2, box.height / 2
    return ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1.0


def disc(size: int) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size]
    c = (size - 1) / 2
    return np.where((xx - c) ** 2 + (yy - c) ** 2 <= (size / 2) ** 2, 0.9, 0.1).astype(np.float32)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.logical_and(a, b).sum() / np.logical_or(a, b).sum())


def od_outputs(boxes, scores, classes, num=None, masks=None) -> dict[str, np.ndarray]:
    out = {
        "detection_boxes": np.asarray([boxes], np.float32),
        "detection_scores": np.asarray([scores], np.float32),
        "detection_classes": np.asarray([classes], np.float32),
    }
    if num is not None:
        out["num_detections"] = np.asarray([num], np.float32)
    if masks is not None:
        out["detection_masks"] = np.asarray([masks], np.float32)
    return out


def test_od_api_boxes_are_normalized_whatever_size_the_model_saw() -> None:
    outputs = od_outputs([[0.1, 0.2, 0.5, 0.6]], [0.9], [1.0])
    for sent in ((640, 480), (320, 240), (300, 300)):
        (det,) = detections_from_outputs(
            outputs, 0, Geometry(640, 480, *sent), min_score=0.5, max_detections=10, label_map=LABELS
        )
        assert det.box.to_dict() == {"xmin": 128.0, "ymin": 48.0, "xmax": 384.0, "ymax": 240.0}
        assert (det.class_id, det.label, det.mask) == (1, "circle", None)


def test_num_detections_threshold_order_and_limit() -> None:
    boxes = [[0, 0, 0.1, 0.1]] * 6
    scores = [0.55, 0.9, 0.3, 0.7, 0.99, 0.99]  # the last two are padding past num_detections
    classes = [1, 2, 3, 1, 2, 3]
    found = detections_from_outputs(
        od_outputs(boxes, scores, classes, num=4),
        0,
        Geometry(100, 100, 100, 100),
        min_score=0.5,
        max_detections=10,
        label_map=LABELS,
    )
    assert [round(d.score, 2) for d in found] == [0.9, 0.7, 0.55]
    assert [d.label for d in found] == ["square", "circle", "circle"]
    top = detections_from_outputs(
        od_outputs(boxes, scores, classes, num=4),
        0,
        Geometry(100, 100, 100, 100),
        min_score=0.0,
        max_detections=2,
        label_map=LABELS,
    )
    assert [round(d.score, 2) for d in top] == [0.9, 0.7]


def test_unknown_class_ids_fall_back_to_the_id() -> None:
    (det,) = detections_from_outputs(
        od_outputs([[0, 0, 1, 1]], [0.9], [7.0]),
        0,
        Geometry(10, 10, 10, 10),
        min_score=0.5,
        max_detections=5,
        label_map=LABELS,
    )
    assert (det.class_id, det.label) == (7, "class 7")


def test_model_garden_boxes_undo_offset_scale_and_gateway_resize() -> None:
    # The gateway sent a 320x240 copy of a 640x480 upload; the model scaled it by 2 to 640x480,
    # then cropped at offset (y=5, x=7): box pixels are in that cropped, scaled frame.
    true_in_sent = np.array([[24.0, 64.0, 120.0, 192.0]])  # ymin, xmin, ymax, xmax in the 320x240 copy
    model_boxes = true_in_sent * 2.0 - [5.0, 7.0, 5.0, 7.0]
    info = np.array([[[240, 320], [640, 640], [2.0, 2.0], [5.0, 7.0]]], np.float32)
    pixels = boxes_to_image(model_boxes, Geometry(640, 480, 320, 240), info)
    np.testing.assert_allclose(pixels, [[48.0, 128.0, 240.0, 384.0]], atol=1e-4)


def test_pixel_boxes_without_image_info_are_scaled_from_the_sent_copy() -> None:
    pixels = boxes_to_image(np.array([[24.0, 64.0, 120.0, 192.0]]), Geometry(640, 480, 320, 240))
    np.testing.assert_allclose(pixels, [[48.0, 128.0, 240.0, 384.0]])


def test_boxes_are_clipped_to_the_image() -> None:
    pixels = boxes_to_image(np.array([[-0.2, -0.1, 1.3, 1.1]]), Geometry(200, 100, 200, 100))
    np.testing.assert_allclose(pixels, [[0.0, 0.0, 100.0, 200.0]])


@pytest.mark.parametrize("size", [33, 28])
def test_box_relative_masks_are_reframed_into_the_image(size: int) -> None:
    box = Box(xmin=130.4, ymin=50.2, xmax=390.7, ymax=241.9)
    mask = reframe_mask(disc(size), box, (480, 640))
    full = mask.full()
    assert full.shape == (480, 640) and full.dtype == bool
    assert iou(full, ellipse(480, 640, box)) > 0.95
    assert not full[:50].any() and not full[:, 392:].any()  # nothing outside the box


def test_masks_at_the_border_are_clipped() -> None:
    box = Box(xmin=600.0, ymin=440.0, xmax=640.0, ymax=480.0)
    mask = reframe_mask(np.ones((33, 33), np.float32), box, (480, 640))
    assert mask.full()[440:, 600:].all() and mask.area() == 40 * 40


def test_masks_of_every_instance_come_back_as_rle() -> None:
    rng = np.random.default_rng(3)
    n = 20
    ymin, xmin = rng.uniform(0, 0.5, n), rng.uniform(0, 0.5, n)
    boxes = np.stack([ymin, xmin, ymin + 0.4, xmin + 0.4], axis=1)
    found = detections_from_outputs(
        od_outputs(boxes, np.linspace(0.99, 0.6, n), [1] * n, num=n, masks=[disc(33)] * n),
        0,
        Geometry(640, 480, 640, 480),
        min_score=0.5,
        max_detections=100,
        label_map=LABELS,
    )
    assert len(found) == n
    for det in found:
        rle = det.to_dict()["mask"]
        assert rle["size"] == [480, 640] and isinstance(rle["counts"], str)
        decoded = coco_mask.decode({"size": rle["size"], "counts": rle["counts"].encode()}).astype(bool)
        np.testing.assert_array_equal(decoded, det.mask.full())
        assert iou(decoded, ellipse(480, 640, det.box)) > 0.9


def test_classifier_probabilities_top_k_best_first() -> None:
    found = classifications_from_outputs(
        np.array([0.05, 0.7, 0.25]),
        None,
        min_score=0.2,
        top_k=5,
        label_map=LabelMap({1: "a", 2: "b", 3: "c"}, from_lines=True),
    )
    assert [(c.class_id, c.label, round(c.score, 2)) for c in found] == [(1, "b", 0.7), (2, "c", 0.25)]


def test_classifier_always_reports_its_best_class_and_turns_logits_into_probabilities() -> None:
    found = classifications_from_outputs(
        np.array([2.0, 1.0, -1.0]), None, min_score=0.9, top_k=3, label_map=LabelMap()
    )
    assert len(found) == 1 and found[0].class_id == 0 and found[0].label == "class 0"
    assert found[0].score == pytest.approx(np.exp(2) / (np.exp(2) + np.exp(1) + np.exp(-1)))


@pytest.mark.parametrize(
    "classes,expected",
    [
        (np.array([b"cat", b"dog"], dtype=object), [(1, "dog"), (0, "cat")]),
        (np.array([b"17", b"18"], dtype=object), [(18, "class 18"), (17, "class 17")]),
        (np.array([5, 9], dtype=np.int64), [(9, "class 9"), (5, "class 5")]),
    ],
)
def test_classifier_classes_output_names_the_scores(classes: np.ndarray, expected: list) -> None:
    found = classifications_from_outputs(
        np.array([0.3, 0.7]), classes, min_score=0.0, top_k=2, label_map=LabelMap()
    )
    assert [(c.class_id, c.label) for c in found] == expected
