"""Image classifiers: a Keras 3 export (`keras_tensor` -> `output_0` softmax) that wants ImageNet
mean/std (declared in the gateway.toml beside it), an Ultralytics -cls model that wants a centre crop
and 0-1 pixels (which its metadata.yaml implies, with its class names), and a model answering raw
logits (a uint8 input: the model converts pixels itself). Through gunicorn on every endpoint. KerasHub's
own ImageClassifier: test_keras_hub_models.py."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from tests.support import family_models as fam
from tests.web.adapters.endpoints import FamilyGateway, every_endpoint


def solid(width: int, height: int, colour: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(buf, "PNG")
    return buf.getvalue()


def expected_probabilities(colour: tuple[int, int, int]) -> np.ndarray:
    """What the test classifiers answer for a picture of one colour (softmax of 8 x the mean RGB)."""
    logits = np.asarray(colour, dtype=np.float64) / 255.0 * 8.0
    return np.exp(logits) / np.exp(logits).sum()


def expect(colour: tuple[int, int, int], top: int = 3):
    probabilities = expected_probabilities(colour)
    order = np.argsort(-probabilities)[:top]

    def check(body: dict) -> None:
        assert "detections" not in body
        classes = body["classes"]
        assert [c["class_id"] for c in classes] == list(order)
        assert [c["label"] for c in classes] == [fam.CLASSIFIER_LABELS[i] for i in order]
        np.testing.assert_allclose([c["score"] for c in classes], probabilities[order], atol=2e-3)

    return check


@pytest.mark.parametrize("colour", [(230, 20, 20), (20, 200, 60), (30, 40, 220)])
def test_keras_export_with_imagenet_normalization(family_gateway: FamilyGateway, colour) -> None:
    every_endpoint(
        family_gateway,
        "classifier_keras",
        solid(200, 150, colour),
        expect(colour),
        second=(solid(90, 120, (200, 200, 20)), expect((200, 200, 20))),
        min_score=0,
    )


def test_the_best_class_is_always_answered_and_the_rest_from_min_score(family_gateway: FamilyGateway) -> None:
    body = family_gateway.predict("classifier_keras", solid(64, 64, (230, 20, 20))).json()
    assert [c["label"] for c in body["classes"]] == ["red"]  # the others are far below 0.5
    top2 = family_gateway.predict(
        "classifier_keras", solid(64, 64, (230, 20, 60)), min_score=0, max_detections=2
    )
    assert [c["label"] for c in top2.json()["classes"]] == ["red", "blue"]


def test_centre_crop_sees_only_the_middle(family_gateway: FamilyGateway) -> None:
    # Red on the left and right thirds, blue in the middle: a stretch would answer red.
    picture = Image.new("RGB", (192, 64), (230, 20, 20))
    picture.paste((20, 20, 230), (64, 0, 128, 64))
    buf = io.BytesIO()
    picture.save(buf, "PNG")
    every_endpoint(family_gateway, "classifier_yolo", buf.getvalue(), expect((20, 20, 230)), min_score=0)


def test_logits_without_a_declared_activation_are_refused(family_gateway: FamilyGateway) -> None:
    response = family_gateway.predict("classifier_logits", solid(64, 64, (230, 20, 20)))
    assert response.status_code == 422
    message = response.json()["error"]["message"]
    assert "not probabilities" in message and 'score_activation = "softmax"' in message
    assert "classifier_logits/gateway.toml" in message


def test_model_detail(family_gateway: FamilyGateway) -> None:
    detail = family_gateway.detail("classifier_yolo")
    assert (detail["family"], detail["kind"], detail["class_offset"]) == ("classifier", "classification", 1)
    assert detail["settings"]["found"] is False and detail["settings"]["values"] == {}
    assert detail["export_metadata"]["task"] == "classify" and detail["label_source"] == "metadata.yaml"
    assert (detail["preprocessing"]["resize"], detail["preprocessing"]["pixel_range"]) == ("crop", "0-1")
    assert detail["preprocessing"]["sources"]["pixel_range"] == "export metadata"
    keras = family_gateway.detail("classifier_keras")
    assert keras["preprocessing"]["mean"] == list(fam.IMAGENET_MEAN)
    assert keras["preprocessing"]["sources"]["mean"] == "gateway.toml"
    assert keras["input"] == {
        "name": "keras_tensor",
        "kind": "float_image",
        "channels": 3,
        "fixed_size": {"width": 64, "height": 64},
    }
