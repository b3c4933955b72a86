"""gateway.toml: every key validated with its name in the message, applied over the family's
defaults, re-read when it changes, and refused where it cannot apply."""

from __future__ import annotations

import pytest

from tests.support.signatures import reading
from tests.web.adapters.endpoints import post_to_app, scene
from web.reading.model_settings import ModelSettingsError, parse_model_settings

IMAGE = scene(640, 400, (100, 60, 300, 260))
OD_API = {
    "detection_boxes": ("float32", (1, -1, 4)),
    "detection_scores": ("float32", (1, -1)),
    "detection_classes": ("float32", (1, -1)),
}


def test_every_key_parses() -> None:
    settings = parse_model_settings(
        """
        family = "yolo"
        resize = "letterbox"
        pixel_range = "-1-1"
        mean = [0.5, 0.5, 0.5]
        std = 0.5
        channel_order = "bgr"
        pad_value = 0
        box_coordinates = "normalized"
        box_format = "center_xywh"
        class_offset = 0
        score_activation = "sigmoid"
        iou_threshold = 0.45
        class_agnostic_nms = true
        top_k = 3
        """
    )
    assert settings.family == "yolo" and settings.channel_order == "BGR" and settings.std == (0.5,)
    assert settings.mean == (0.5, 0.5, 0.5) and settings.class_agnostic_nms is True and settings.top_k == 3
    assert set(settings.given()) == {
        "family",
        "resize",
        "pixel_range",
        "mean",
        "std",
        "channel_order",
        "pad_value",
        "box_coordinates",
        "box_format",
        "class_offset",
        "score_activation",
        "iou_threshold",
        "class_agnostic_nms",
        "top_k",
    }


@pytest.mark.parametrize(
    "text,message",
    [
        ('famliy = "yolo"', "unknown key 'famliy'; the keys are family, preprocessing, resize"),
        (
            'family = "detectron"',
            "'family' must be one of tf_od_api, model_garden, keras_hub, yolo, yolo_nms",
        ),
        ('resize = "squash"', "'resize' must be one of stretch, letterbox, crop, none, not 'squash'"),
        ("pixel_range = 255", "'pixel_range' must be a string"),
        ("mean = [1, 2]", "'mean' must be a number or a list of 1 or 3 numbers"),
        ("std = [0.2, 0, 0.2]", "'std' must be positive"),
        ("pad_value = 300", "'pad_value' must be an integer from 0 to 255"),
        ("iou_threshold = 0", "'iou_threshold' must be a number in (0, 1]"),
        ("class_agnostic_nms = 1", "'class_agnostic_nms' must be true or false"),
        ("top_k = 2.5", "'top_k' must be an integer from 1 to 1000"),
        (
            'family = "yolo"\nresize = \npad_value = 1',
            "is not valid TOML: Invalid value (at line 2, column 10)",
        ),
    ],
)
def test_mistakes_name_the_key(text: str, message: str) -> None:
    with pytest.raises(ModelSettingsError) as caught:
        parse_model_settings(text, "models/m/gateway.toml")
    assert str(caught.value).startswith("models/m/gateway.toml")
    assert message in str(caught.value)


def test_pixel_settings_that_cannot_apply_are_refused() -> None:
    uint8 = reading(OD_API, mean=(0.5,))
    assert "sets mean, but input 'input_tensor' is uint8" in uint8.problem
    encoded = reading(OD_API, {"input_tensor": ("string", (-1,))}, resize="letterbox")
    assert "sets resize, but input 'input_tensor' takes encoded images" in encoded.problem
    grey = reading(OD_API, {"x": ("float32", (1, 28, 28, 1))}, mean=(0.1, 0.2, 0.3), pixel_range="0-1")
    assert "'mean' has 3 values; input 'x' has 1 channel" in grey.problem
    ok = reading(OD_API, {"x": ("float32", (1, 28, 28, 1))}, mean=(0.1,), pixel_range="0-1")
    assert ok.problem is None and ok.preprocessing.mean == (0.1,) and ok.image_input.channels == 1


# -- against the running family models, with gateway.toml files the tests write ------------------


def post(client, model: str, query: str = ""):
    return post_to_app(client, model, IMAGE, query)


def test_settings_override_the_family_defaults_and_are_reread(settings_app) -> None:
    client, write = settings_app
    assert post(client, "yolo").status_code == 200
    # Raw 0-255 pixels into a model that wants 0-1: its scores leave [0, 1] and the gateway says so
    # instead of answering.
    write("yolo", 'pixel_range = "0-255"\n')
    wrong = post(client, "yolo")
    assert wrong.status_code == 422 and "not probabilities" in wrong.get_json()["error"]["message"]
    write("yolo", "pad_value = 114\n")
    assert post(client, "yolo").status_code == 200


def test_class_agnostic_nms(settings_app) -> None:
    client, write = settings_app
    aware = post(client, "yolo").get_json()["detections"]
    write("yolo", "class_agnostic_nms = true\n")
    agnostic = post(client, "yolo").get_json()["detections"]
    # NMS_ROWS 2 (class 2, IoU 0.92 with row 0 of class 1) survives only class-aware NMS.
    assert any(d["score"] == 0.85 for d in aware) and not any(d["score"] == 0.85 for d in agnostic)
    write("yolo", "iou_threshold = 0.95\n")
    assert len(post(client, "yolo").get_json()["detections"]) == len(aware) + 1


def test_declared_logits_become_probabilities(settings_app) -> None:
    client, write = settings_app
    write("classifier_logits", 'score_activation = "softmax"\ntop_k = 2\n')
    body = post(client, "classifier_logits", "?min_score=0").get_json()
    assert len(body["classes"]) == 2 and sum(c["score"] for c in body["classes"]) <= 1.0


def test_a_broken_settings_file_is_the_models_problem(settings_app) -> None:
    client, write = settings_app
    write("yolo", 'resize = "fit"\n')
    response = post(client, "yolo")
    assert response.status_code == 422
    assert (
        "gateway.toml: 'resize' must be one of stretch, letterbox, crop, none, not 'fit'"
        in (response.get_json()["error"]["message"])
    )
    detail = client.get("/api/v1/models/yolo").get_json()
    assert detail["kind"] == "unknown" and "'resize' must be one of" in detail["problem"]
