"""Which family reads which signature, by names, dtypes and shapes only, for the signatures real
exports have (the shapes below are those of the official exporters' outputs)."""

from __future__ import annotations

import pytest

from tests.support.signatures import reading

F = "float32"
OD_TF2_OUTPUTS = {
    "detection_boxes": (F, (1, 100, 4)),
    "detection_scores": (F, (1, 100)),
    "detection_classes": (F, (1, 100)),
    "num_detections": (F, (1,)),
    "raw_detection_boxes": (F, (1, 12804, 4)),
    "raw_detection_scores": (F, (1, 12804, 91)),
    "detection_multiclass_scores": (F, (1, 100, 91)),
    "detection_anchor_indices": (F, (1, 100)),
}
MASK_RCNN_TF1 = {**OD_TF2_OUTPUTS, "detection_masks": (F, (-1, 100, 15, 15))}
MODEL_GARDEN = {
    "detection_boxes": (F, (1, 100, 4)),
    "detection_scores": (F, (1, 100)),
    "detection_classes": ("int32", (1, 100)),
    "num_detections": ("int32", (1,)),
    "detection_masks": (F, (1, 100, 28, 28)),
    "image_info": (F, (1, 4, 2)),
}
KERAS_HUB = {
    "boxes": (F, (-1, 100, 4)),
    "confidence": (F, (-1, 100)),
    "labels": ("int32", (-1, 100)),
    "num_detections": ("int32", (-1,)),
}
YOLO_INPUT = {"images": (F, (1, 640, 640, 3))}
CASES = [
    # (what, outputs, inputs, family, kind)
    (
        "OD API TF2 image_tensor",
        OD_TF2_OUTPUTS,
        {"input_tensor": ("uint8", (1, -1, -1, 3))},
        "tf_od_api",
        "detection",
    ),
    ("OD API TF2 encoded", OD_TF2_OUTPUTS, {"input_tensor": ("string", (-1,))}, "tf_od_api", "detection"),
    ("OD API TF2 float", OD_TF2_OUTPUTS, {"input_tensor": (F, (1, -1, -1, 3))}, "tf_od_api", "detection"),
    (
        "OD API TF1 Mask R-CNN",
        MASK_RCNN_TF1,
        {"inputs": ("uint8", (-1, -1, -1, 3))},
        "tf_od_api",
        "segmentation",
    ),
    (
        "Model Garden Mask R-CNN",
        MODEL_GARDEN,
        {"inputs": ("uint8", (1, -1, -1, 3))},
        "model_garden",
        "segmentation",
    ),
    (
        "Model Garden image_bytes",
        MODEL_GARDEN,
        {"image_bytes": ("string", (1,))},
        "model_garden",
        "segmentation",
    ),
    ("KerasHub RetinaNet", KERAS_HUB, {"images": (F, (-1, -1, -1, 3))}, "keras_hub", "detection"),
    ("YOLO detect", {"output_0": (F, (1, 84, 8400))}, YOLO_INPUT, "yolo", "detection"),
    ("YOLO detect, 1 class", {"output_0": (F, (1, 5, 8400))}, YOLO_INPUT, "yolo", "detection"),
    (
        "YOLO segment",
        {"output_0": (F, (1, 116, 8400)), "output_1": (F, (1, 160, 160, 32))},
        YOLO_INPUT,
        "yolo",
        "segmentation",
    ),
    (
        "YOLO segment NCHW",
        {"output_0": (F, (1, 116, 8400)), "output_1": (F, (1, 32, 160, 160))},
        YOLO_INPUT,
        "yolo",
        "segmentation",
    ),
    ("YOLO nms=True", {"output_0": (F, (1, 300, 6))}, YOLO_INPUT, "yolo_nms", "detection"),
    (
        "YOLO segment nms=True",
        {"output_0": (F, (1, 300, 38)), "output_1": (F, (1, 160, 160, 32))},
        YOLO_INPUT,
        "yolo_nms",
        "segmentation",
    ),
    (
        "YOLO -cls",
        {"output_0": (F, (1, 1000))},
        {"images": (F, (1, 224, 224, 3))},
        "classifier",
        "classification",
    ),
    (
        "Keras 3 export",
        {"output_0": (F, (-1, 1000))},
        {"keras_tensor": (F, (-1, 224, 224, 3))},
        "classifier",
        "classification",
    ),
    (
        "Keras 2 save",
        {"predictions": (F, (-1, 1000))},
        {"input_1": (F, (-1, 224, 224, 3))},
        "classifier",
        "classification",
    ),
    (
        "Keras dense head",
        {"dense_2": (F, (-1, 10))},
        {"flatten_input": (F, (-1, 28, 28, 1))},
        "classifier",
        "classification",
    ),
    (
        "Model Garden classifier",
        {"logits": (F, (1, 1001)), "probs": (F, (1, 1001))},
        {"inputs": ("uint8", (1, 224, 224, 3))},
        "classifier",
        "classification",
    ),
]


@pytest.mark.parametrize("what,outputs,inputs,family,kind", CASES, ids=[c[0] for c in CASES])
def test_real_export_signatures_find_their_family(what, outputs, inputs, family, kind) -> None:
    model = reading(outputs, inputs)
    if family in ("keras_hub", "classifier") and "float" in next(iter(inputs.values()))[0]:
        # Recognized, but whether the export converts pixels itself is for gateway.toml to say.
        assert model.candidates == (family,) and 'preprocessing = "in_model"' in model.problem
        model = reading(outputs, inputs, preprocessing="in_model")
    assert model.problem is None, model.problem
    assert (model.family, model.kind, model.candidates) == (family, kind, (family,))


def test_model_garden_classifier_reads_probs_not_logits() -> None:
    model = reading({"logits": (F, (1, 10)), "probs": (F, (1, 10))}, {"inputs": ("uint8", (1, 224, 224, 3))})
    assert model.layout.details["scores"] == "probs" and model.output_filter() == ["probs"]


@pytest.mark.parametrize(
    "outputs,reason",
    [
        # KerasHub's `confidence` is [batch, N] float: once taken for a classifier's scores.
        ({"confidence": (F, (1, 100)), "boxes": (F, (1, 100, 4))}, "no labels output"),
        ({"embedding": (F, (1, 128))}, "output 'embedding' is not named like a classifier's scores"),
        ({"heatmaps": (F, (1, 64, 48, 17))}, "no model family recognizes"),
        ({"output_0": (F, (1, 84, 8400)), "extra": (F, (1, 3))}, "no model family recognizes"),
    ],
)
def test_nothing_is_guessed(outputs, reason) -> None:
    model = reading(outputs, YOLO_INPUT)
    assert model.kind == "unknown" and model.adapter is None
    assert "no model family recognizes" in model.problem
    assert reason in model.problem or reason == "no model family recognizes"


def test_two_claims_are_a_problem_not_a_choice() -> None:
    model = reading({**OD_TF2_OUTPUTS, **KERAS_HUB}, {"images": (F, (1, 320, 320, 3))})
    assert model.candidates == ("tf_od_api", "keras_hub") and model.adapter is None
    settled = reading({**OD_TF2_OUTPUTS, **KERAS_HUB}, {"images": (F, (1, 320, 320, 3))}, family="tf_od_api")
    assert settled.family == "tf_od_api" and settled.problem is None


def test_families_that_need_a_tensor_refuse_encoded_inputs() -> None:
    model = reading({"output_0": (F, (1, 84, 8400))}, {"image_bytes": ("string", (-1,))})
    assert model.adapter is None and "no model family recognizes" in model.problem
    assert (
        "yolo: yolo exports take an image tensor, not encoded image strings ('image_bytes')" in model.problem
    )
    forced = reading({"output_0": (F, (1, 84, 8400))}, {"image_bytes": ("string", (-1,))}, family="yolo")
    assert "yolo exports take an image tensor, not encoded image strings ('image_bytes')" in forced.problem


def test_input_problems_come_first() -> None:
    model = reading(OD_TF2_OUTPUTS, {"image": ("uint8", (1, -1, -1, 3)), "threshold": (F, (1,))})
    assert (
        model.problem
        == "the gateway feeds exactly one image input; this signature requires inputs: image, threshold"
    )


def test_told_it_is_a_classifier_the_gateway_reads_past_other_outputs() -> None:
    outputs = {"class_scores_v2": (F, (1, 10)), "features": (F, (1, 7, 7, 512))}
    inputs = {"x": (F, (1, 224, 224, 3))}
    assert reading(outputs, inputs).adapter is None  # not claimed on its own
    told = reading(outputs, inputs, family="classifier", preprocessing="in_model")
    assert told.family == "classifier" and told.output_filter() == ["class_scores_v2"]
