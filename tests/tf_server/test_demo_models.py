"""The demo models behind `python -m tf_server --model_config_file tf_server/models.config`.

Over real gRPC, with a client written only against the official protos: every configured model
reports AVAILABLE; the detectors' predictions on freshly generated pictures find the shapes that
were drawn (box IoU >= 0.5 with the ground truth); the digit classifier names drawn digits.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from demo.digits import training_arrays
from demo.synthetic import CLASSES, encode_jpeg, generate_image
from tests.conftest import DEMO_MODEL_CONFIG
from tests.tf_server.grpc_client import (
    ServingClient,
    serving_client,
    string_tensor_proto,
    tensor_proto,
    to_ndarray,
)
from tf_server.model_config import read_config_file
from web.serving.protos.tensorflow.core.framework import types_pb2

MIN_SCORE = 0.5
MIN_IOU = 0.5
# Pictures whose shapes the demo models find. Their accuracy over many pictures (classes included)
# is measured by demo's evaluation and tests/demo; here the point is the serving path.
PICTURES = ((7, 4), (2024, 3))  # (seed, number of shapes)
DETECTORS = ("shapes", "shapes_jpeg")


@pytest.fixture(scope="module")
def client(demo_model_server: str) -> Iterator[ServingClient]:
    with serving_client(demo_model_server) as client:
        yield client


def configured_models() -> list[str]:
    return [model.name for model in read_config_file(DEMO_MODEL_CONFIG)]


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two xmin, ymin, xmax, ymax boxes."""
    width = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = width * height
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


@pytest.mark.parametrize("model", configured_models())
def test_every_configured_model_is_available(client: ServingClient, model: str) -> None:
    statuses = client.status(model)
    assert statuses and set(statuses.values()) == {"AVAILABLE"}
    assert "serving_default" in client.signature_defs(model).signature_def


def test_the_demo_models_are_configured() -> None:
    assert configured_models() == [*DETECTORS, "digits"]


@pytest.mark.parametrize("model", DETECTORS)
def test_detectors_have_the_od_api_signature(client: ServingClient, model: str) -> None:
    signature = client.signature_defs(model).signature_def["serving_default"]
    assert list(signature.inputs) == ["input_tensor"]
    image_input = signature.inputs["input_tensor"]
    assert image_input.dtype in (types_pb2.DT_UINT8, types_pb2.DT_STRING)
    assert {"detection_boxes", "detection_scores", "detection_classes", "num_detections"} <= set(
        signature.outputs
    )


@pytest.mark.parametrize("model", DETECTORS)
@pytest.mark.parametrize(("seed", "count"), PICTURES)
def test_prediction_finds_the_drawn_shapes(client: ServingClient, model: str, seed: int, count: int) -> None:
    rng = np.random.default_rng(seed)
    image, shapes = generate_image(rng, width=640, height=480, min_shapes=count, max_shapes=count)
    dtype = client.signature_defs(model).signature_def["serving_default"].inputs["input_tensor"].dtype
    if dtype == types_pb2.DT_STRING:
        inputs = {"input_tensor": string_tensor_proto([encode_jpeg(image)])}
    else:
        inputs = {"input_tensor": tensor_proto(image[None])}
    response = client.predict(model, inputs)
    assert response.model_spec.name == model and response.model_spec.signature_name == "serving_default"

    outputs = {name: to_ndarray(proto) for name, proto in response.outputs.items()}
    count = int(outputs["num_detections"][0])
    keep = outputs["detection_scores"][0, :count] >= MIN_SCORE
    height, width = image.shape[:2]
    boxes = outputs["detection_boxes"][0, :count][keep] * [height, width, height, width]
    boxes = boxes[:, [1, 0, 3, 2]]  # ymin, xmin, ymax, xmax -> xmin, ymin, xmax, ymax
    classes = outputs["detection_classes"][0, :count][keep]
    assert set(classes.tolist()) <= {float(i) for i in range(1, len(CLASSES) + 1)}  # 1-based ids of CLASSES
    for shape in shapes:
        overlaps = [iou(np.array(shape.box), box) for box in boxes]
        best = int(np.argmax(overlaps)) if overlaps else -1
        assert best >= 0 and overlaps[best] >= MIN_IOU, f"{shape.label} at {shape.box} not found: {overlaps}"
        assert classes[best] == shape.class_id, f"{shape.label} at {shape.box} taken for {classes[best]}"
    if "detection_masks" in outputs:
        assert outputs["detection_masks"].shape[:2] == (1, outputs["detection_scores"].shape[1])


def test_the_digit_classifier_is_a_keras_export_that_reads_digits(client: ServingClient) -> None:
    signature = client.signature_defs("digits").signature_def["serving_default"]
    assert list(signature.inputs) == ["keras_tensor"] and list(signature.outputs) == ["output_0"]
    images, digits = training_arrays(np.random.default_rng(5), 20, 32)
    response = client.predict("digits", {"keras_tensor": tensor_proto(images.astype(np.float32) / 255.0)})
    probabilities = to_ndarray(response.outputs["output_0"])
    assert probabilities.shape == (20, 10)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-4)
    assert (probabilities.argmax(axis=1) == digits).mean() >= 0.9
