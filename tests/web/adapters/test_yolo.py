"""Ultralytics YOLO SavedModels: raw output with NMS in the gateway (detect and segment) and the
nms=True export. The gateway letterboxes to 320x320 with grey 114 and scales to 0-1; boxes come back
in the upload's pixels. Through gunicorn and real gRPC on every endpoint. The nms=True model has no
label map: its class names come from the metadata.yaml Ultralytics writes into the export."""

from __future__ import annotations

import numpy as np
import pytest
import requests
from pycocotools import mask as coco_mask

from tests.support import family_models as fam
from tests.web.adapters.endpoints import FamilyGateway, as_xyxy, check_bright_box, every_endpoint, scene

WIDTH, HEIGHT = 640, 400
RECT = (100, 60, 300, 260)
SCALE = fam.YOLO_SIZE / WIDTH  # 640x400 -> 320x200, padded 60 px above and below
PAD_Y = 60
MODELS = ("yolo", "yolo_seg", "yolo_nms")


def to_upload(box: tuple[float, float, float, float]) -> list[float]:
    x0, y0, x1, y1 = box
    return list(
        np.clip([x0 / SCALE, (y0 - PAD_Y) / SCALE, x1 / SCALE, (y1 - PAD_Y) / SCALE], 0, [WIDTH, HEIGHT] * 2)
    )


# What survives NMS at IoU 0.7 (class-aware), besides the bright box: the content box (class 2),
# NMS_ROWS 0, 2 (another class over it) and 3; NMS_ROWS 1 overlaps row 0 by IoU 0.82 in class 1.
KEPT_FIXED = [fam.NMS_ROWS[i] for i in (0, 2, 3)]


def decoded_mask(det: dict) -> np.ndarray:
    rle = det["mask"]
    return coco_mask.decode({"size": rle["size"], "counts": rle["counts"].encode()}) > 0


def rect_mask(rect: tuple[int, int, int, int]) -> np.ndarray:
    out = np.zeros((HEIGHT, WIDTH), bool)
    out[rect[1] : rect[3], rect[0] : rect[2]] = True
    return out


def expect(model: str, rect: tuple[int, int, int, int]):
    def check(body: dict) -> None:
        assert body["image"] == {"width": WIDTH, "height": HEIGHT}
        detections = body["detections"]
        assert [d["score"] for d in detections] == sorted((d["score"] for d in detections), reverse=True)
        bright = [d for d in detections if d["class_id"] == 0]
        assert len(bright) == 1 and bright[0]["label"] == "circle"  # class 0 is the label map's id 1
        check_bright_box(body, rect, "circle")
        content = [d for d in detections if d["score"] == 0.95]
        assert len(content) == 1 and (content[0]["class_id"], content[0]["label"]) == (2, "triangle")
        np.testing.assert_allclose(as_xyxy(content[0]["box"]), [0, 0, WIDTH, HEIGHT], atol=2.0)
        fixed = sorted((d for d in detections if d not in bright + content), key=lambda d: -d["score"])
        assert [(d["class_id"], d["score"]) for d in fixed] == [(c, s) for _, c, s in KEPT_FIXED]
        for det, (box, _, _) in zip(fixed, KEPT_FIXED, strict=True):
            np.testing.assert_allclose(as_xyxy(det["box"]), to_upload(box), atol=0.01)
        if model == "yolo_seg":
            mask = decoded_mask(bright[0])
            truth = rect_mask(rect)
            assert (mask & truth).sum() / (mask | truth).sum() > 0.9
        else:
            assert all("mask" not in d for d in detections)

    return check


@pytest.mark.parametrize("model", MODELS)
def test_every_endpoint(family_gateway: FamilyGateway, model: str) -> None:
    other = (380, 30, 600, 330)
    every_endpoint(
        family_gateway,
        model,
        scene(WIDTH, HEIGHT, RECT),
        expect(model, RECT),
        boxes=lambda body: [as_xyxy(d["box"]) for d in body["detections"] if d["class_id"] == 0],
        second=(scene(WIDTH, HEIGHT, other), expect(model, other)),
    )


@pytest.mark.parametrize("model", ("yolo", "yolo_seg"))
def test_iou_threshold_is_a_request_option(family_gateway: FamilyGateway, model: str) -> None:
    image = scene(WIDTH, HEIGHT, RECT)
    default = family_gateway.predict(model, image).json()["detections"]
    loose = family_gateway.predict(model, image, iou_threshold=0.9).json()["detections"]
    assert len(loose) == len(default) + 1  # NMS_ROWS 1 (IoU 0.82 with row 0) now survives
    assert any(d["score"] == 0.8 for d in loose) and not any(d["score"] == 0.8 for d in default)
    bad = family_gateway.predict(model, image, iou_threshold=1.5)
    assert bad.status_code == 400 and "iou_threshold" in bad.json()["error"]["message"]


def test_min_score_filters_before_nms(family_gateway: FamilyGateway) -> None:
    body = family_gateway.predict("yolo", scene(WIDTH, HEIGHT, RECT), min_score=0.88, max_detections=2).json()
    assert [d["score"] for d in body["detections"]] == [0.95, 0.9]


@pytest.mark.parametrize(
    "model,kind,family",
    [
        ("yolo", "detection", "yolo"),
        ("yolo_seg", "segmentation", "yolo"),
        ("yolo_nms", "detection", "yolo_nms"),
    ],
)
def test_model_detail(family_gateway: FamilyGateway, model: str, kind: str, family: str) -> None:
    detail = family_gateway.detail(model)
    assert (detail["family"], detail["kind"], detail["class_offset"]) == (family, kind, 1)
    assert (
        detail["preprocessing"]["resize"] == "letterbox" and detail["preprocessing"]["pixel_range"] == "0-1"
    )
    assert detail["preprocessing"]["pad_value"] == 114 and detail["input"]["name"] == "images"


def test_class_names_come_from_ultralytics_metadata(family_gateway: FamilyGateway) -> None:
    detail = family_gateway.detail("yolo_nms")
    assert detail["label_source"] == "metadata.yaml"
    assert detail["export_metadata"] == {
        "file": detail["export_metadata"]["file"],
        "exporter": "Ultralytics",
        "task": "detect",
        "classes": 3,
    }
    assert detail["export_metadata"]["file"].endswith("yolo_nms/1/metadata.yaml")
    labels = requests.get(f"{family_gateway.url}/api/v1/models/yolo_nms/labels", timeout=60).json()
    assert labels == {"1": "circle", "2": "square", "3": "triangle"}  # class 0 is the label map's id 1


def test_a_pose_model_is_not_taken_for_a_detector(family_gateway: FamilyGateway) -> None:
    detail = family_gateway.detail("yolo_pose")
    assert detail["kind"] == "unknown" and detail["family"] is None
    assert "says this is an Ultralytics 'pose' model, which the gateway does not read" in detail["problem"]
    assert family_gateway.predict("yolo_pose", scene(WIDTH, HEIGHT, RECT)).status_code == 422
