"""Decoding of the OD API and Model Garden outputs, thresholds, mask reframing, probabilities."""

from __future__ import annotations

import numpy as np
import pytest
from pycocotools import mask as coco_mask

from tests.support.signatures import reading
from web.domain import Box
from web.errors import UnsupportedModel
from web.options import PredictOptions
from web.reading.adapters.frames import Frame, plan_frame
from web.reading.adapters.postprocess import activate, reframe_mask, require_probabilities, top_classes
from web.reading.label_maps import LabelMap

LABELS = LabelMap({1: "circle", 2: "square", 3: "triangle"})
OD_API = {
    "detection_boxes": ("float32", (1, -1, 4)),
    "detection_scores": ("float32", (1, -1)),
    "detection_classes": ("float32", (1, -1)),
    "num_detections": ("float32", (1,)),
}
MASKS = {"detection_masks": ("float32", (1, -1, 33, 33))}
MODEL_GARDEN = {**OD_API, "image_info": ("float32", (1, 4, 2))}


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


def decode(signature_outputs, outputs, frame, min_score=0.5, max_detections=10, labels=LABELS, **settings):
    model = reading(signature_outputs, **settings)
    assert model.problem is None, model.problem
    options = PredictOptions(min_score=min_score, max_detections=max_detections)
    return model.adapter.decode(model, outputs, 0, frame, options, labels)


def test_od_api_boxes_are_normalized_whatever_size_the_model_saw() -> None:
    outputs = od_outputs([[0.1, 0.2, 0.5, 0.6]], [0.9], [1.0])
    for sent in ((640, 480), (320, 240), (300, 300)):
        frame = plan_frame(640, 480, mode="stretch", input_size=sent)
        (det,) = decode(OD_API, outputs, frame)
        assert det.box.to_dict() == {"xmin": 128.0, "ymin": 48.0, "xmax": 384.0, "ymax": 240.0}
        assert (det.class_id, det.label, det.mask) == (1, "circle", None)


def test_od_api_boxes_in_a_letterboxed_input_come_back_in_upload_pixels() -> None:
    frame = plan_frame(640, 320, mode="letterbox", input_size=(300, 300))  # content 300x150 at y=75
    outputs = od_outputs([[75 / 300, 0.0, 225 / 300, 0.5]], [0.9], [2.0])
    (det,) = decode(OD_API, outputs, frame)
    np.testing.assert_allclose(list(det.box.to_dict().values()), [0.0, 0.0, 320.0, 320.0], atol=0.01)


def test_num_detections_threshold_order_and_limit() -> None:
    boxes = [[0, 0, 0.1, 0.1]] * 6
    scores = [0.55, 0.9, 0.3, 0.7, 0.99, 0.99]  # the last two are padding past num_detections
    classes = [1, 2, 3, 1, 2, 3]
    frame = Frame.identity(100, 100)
    found = decode(OD_API, od_outputs(boxes, scores, classes, num=4), frame)
    assert [round(d.score, 2) for d in found] == [0.9, 0.7, 0.55]
    assert [d.label for d in found] == ["square", "circle", "circle"]
    top = decode(OD_API, od_outputs(boxes, scores, classes, num=4), frame, min_score=0.0, max_detections=2)
    assert [round(d.score, 2) for d in top] == [0.9, 0.7]


def test_unknown_class_ids_fall_back_to_the_id() -> None:
    (det,) = decode(OD_API, od_outputs([[0, 0, 1, 1]], [0.9], [7.0]), Frame.identity(10, 10))
    assert (det.class_id, det.label) == (7, "class 7")


def test_model_garden_boxes_undo_offset_scale_and_gateway_resize() -> None:
    # The gateway sent a 320x240 copy of a 640x480 upload; the model scaled it by 2 to 640x480,
    # then cropped at offset (y=5, x=7): box pixels are in that cropped, scaled frame.
    true_in_sent = np.array([[24.0, 64.0, 120.0, 192.0]])  # ymin, xmin, ymax, xmax in the 320x240 copy
    model_boxes = true_in_sent * 2.0 - [5.0, 7.0, 5.0, 7.0]
    outputs = od_outputs(model_boxes, [0.9], [1])
    outputs["image_info"] = np.array([[[240, 320], [640, 640], [2.0, 2.0], [5.0, 7.0]]], np.float32)
    frame = plan_frame(640, 480, mode="none", input_size=None, max_side=320)
    (det,) = decode(MODEL_GARDEN, outputs, frame)
    np.testing.assert_allclose(list(det.box.to_dict().values()), [128.0, 48.0, 384.0, 240.0], atol=1e-2)


def test_model_garden_normalized_boxes_are_declared_in_the_settings() -> None:
    outputs = od_outputs([[0.1, 0.2, 0.5, 0.6]], [0.9], [1])
    outputs["image_info"] = np.array([[[240, 320], [640, 640], [2.0, 2.0], [0.0, 0.0]]], np.float32)
    frame = plan_frame(640, 480, mode="none", input_size=None, max_side=320)
    (det,) = decode(MODEL_GARDEN, outputs, frame, box_coordinates="normalized")
    assert det.box.to_dict() == {"xmin": 128.0, "ymin": 48.0, "xmax": 384.0, "ymax": 240.0}


def test_pixel_boxes_are_declared_in_the_settings_not_guessed_from_values() -> None:
    outputs = od_outputs([[24.0, 64.0, 120.0, 192.0]], [0.9], [1])
    frame = plan_frame(640, 480, mode="none", input_size=None, max_side=320)
    (det,) = decode(OD_API, outputs, frame, box_coordinates="pixels")
    assert det.box.to_dict() == {"xmin": 128.0, "ymin": 48.0, "xmax": 384.0, "ymax": 240.0}
    # Without the setting, the same values are read as normalized (and clipped to the image).
    (clipped,) = decode(OD_API, outputs, frame)
    assert clipped.box.to_dict() == {"xmin": 640.0, "ymin": 480.0, "xmax": 640.0, "ymax": 480.0}


def test_boxes_are_clipped_to_the_image() -> None:
    (det,) = decode(OD_API, od_outputs([[-0.2, -0.1, 1.3, 1.1]], [0.9], [1]), Frame.identity(200, 100))
    assert det.box.to_dict() == {"xmin": 0.0, "ymin": 0.0, "xmax": 200.0, "ymax": 100.0}


def test_scores_that_are_not_probabilities_are_refused_with_the_setting_to_use() -> None:
    with pytest.raises(UnsupportedModel, match='score_activation = "softmax"') as caught:
        decode(OD_API, od_outputs([[0, 0, 1, 1]], [3.5], [1]), Frame.identity(10, 10))
    assert caught.value.status == 422 and "models/m/gateway.toml" in caught.value.message
    require_probabilities(np.array([0.0, 1.0000001, 0.5]), "m", "x", "g.toml")  # float rounding is fine


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
    outputs = od_outputs(boxes, np.linspace(0.99, 0.6, n), [1] * n, num=n, masks=[disc(33)] * n)
    found = decode({**OD_API, **MASKS}, outputs, Frame.identity(640, 480), max_detections=100)
    assert len(found) == n
    for det in found:
        rle = det.to_dict()["mask"]
        assert rle["size"] == [480, 640] and isinstance(rle["counts"], str)
        decoded = coco_mask.decode({"size": rle["size"], "counts": rle["counts"].encode()}).astype(bool)
        np.testing.assert_array_equal(decoded, det.mask.full())
        assert iou(decoded, ellipse(480, 640, det.box)) > 0.9


def test_classifier_top_k_best_first_and_label_map_ids_from_1() -> None:
    found = top_classes(
        np.array([0.05, 0.7, 0.25]),
        min_score=0.2,
        top_k=5,
        labels=LabelMap({1: "a", 2: "b", 3: "c"}),
        class_offset=1,
    )
    assert [(c.class_id, c.label, round(c.score, 2)) for c in found] == [(1, "b", 0.7), (2, "c", 0.25)]


def test_classifier_always_reports_its_best_class() -> None:
    probabilities = activate(np.array([2.0, 1.0, -1.0]), "softmax")
    found = top_classes(probabilities, min_score=0.9, top_k=3, labels=LabelMap(), class_offset=1)
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
    found = top_classes(
        np.array([0.3, 0.7]), min_score=0.0, top_k=2, labels=LabelMap(), class_offset=1, names=classes
    )
    assert [(c.class_id, c.label) for c in found] == expected


def test_activations() -> None:
    np.testing.assert_allclose(activate(np.array([0.0, 2.0]), "sigmoid"), [0.5, 1 / (1 + np.exp(-2))])
    np.testing.assert_allclose(activate(np.array([[1.0, 1.0], [0.0, 0.0]]), "softmax").sum(axis=1), [1, 1])
    np.testing.assert_array_equal(activate(np.array([3.0]), "none"), [3.0])
