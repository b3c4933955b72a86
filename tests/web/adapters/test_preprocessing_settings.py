"""What every combination of `preprocessing`, `pixel_range`, `mean` and `std` in gateway.toml means, and
where each preprocessing value comes from (family default, export metadata, gateway.toml). Readings
built from hand-written signatures: no server."""

from __future__ import annotations

import pytest

from tests.support.signatures import reading, signature
from web.reading.adapters import read_model
from web.reading.export_metadata import ExportMetadata
from web.reading.model_settings import ModelSettings, parse_model_settings

F = "float32"
KERAS_HUB = {
    "boxes": (F, (1, 100, 4)),
    "confidence": (F, (1, 100)),
    "labels": ("int32", (1, 100)),
    "num_detections": ("int32", (1,)),
}
KERAS_HUB_INPUT = {"images": (F, (1, 512, 512, 3))}
CLASSIFIER = {"output_0": (F, (-1, 10))}
CLASSIFIER_INPUT = {"keras_tensor": (F, (-1, 224, 224, 3))}
OD_API = {
    "detection_boxes": (F, (1, 100, 4)),
    "detection_scores": (F, (1, 100)),
    "detection_classes": (F, (1, 100)),
}
YOLO = {"output_0": (F, (1, 84, 8400))}
YOLO_INPUT = {"images": (F, (1, 640, 640, 3))}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def pixels(model) -> tuple:
    p = model.preprocessing
    return p.where, p.pixel_range, p.mean, p.std


def sources(model) -> dict[str, str]:
    return model.preprocessing.to_dict()["sources"]


@pytest.mark.parametrize(
    "outputs,inputs,family",
    [(KERAS_HUB, KERAS_HUB_INPUT, "keras_hub"), (CLASSIFIER, CLASSIFIER_INPUT, "classifier")],
)
def test_unsettled_conversion_is_refused_with_both_settings(outputs, inputs, family) -> None:
    model = reading(outputs, inputs)
    assert model.adapter is None and model.kind == "unknown" and model.candidates == (family,)
    assert model.problem.startswith(f"models/m/gateway.toml: a {family} signature cannot tell")
    assert '\n\npreprocessing = "in_model"\n\n' in model.problem
    gateway = 'preprocessing = "gateway"' if family == "keras_hub" else 'pixel_range = "0-1"\nmean = ['
    assert gateway in model.problem
    # Naming the family in gateway.toml does not settle it either.
    assert "signature cannot tell" in reading(outputs, inputs, family=family).problem


def test_keras_hub_in_model_sends_raw_pixels_and_gateway_converts_like_retinanet() -> None:
    in_model = reading(KERAS_HUB, KERAS_HUB_INPUT, preprocessing="in_model")
    assert pixels(in_model) == ("in_model", "0-255", None, None)
    assert (in_model.preprocessing.resize, in_model.preprocessing.pad_value) == ("letterbox", 0)
    assert sources(in_model) == {
        "where": "gateway.toml",
        "resize": "family default",
        "channel_order": "family default",
        "pad_value": "family default",
        "pixel_range": "gateway.toml",
        "mean": "gateway.toml",
        "std": "gateway.toml",
    }
    gateway = reading(KERAS_HUB, KERAS_HUB_INPUT, preprocessing="gateway")
    assert pixels(gateway) == ("gateway", "0-1", IMAGENET_MEAN, IMAGENET_STD)
    assert sources(gateway)["where"] == "gateway.toml" and sources(gateway)["mean"] == "family default"


def test_pixel_range_alone_means_no_mean_and_std() -> None:
    # What a user writes to say "the model takes raw pixels": never the family's 0-1 ImageNet values.
    raw = reading(KERAS_HUB, KERAS_HUB_INPUT, pixel_range="0-255")
    assert pixels(raw) == ("gateway", "0-255", None, None)
    assert sources(raw)["where"] == sources(raw)["mean"] == sources(raw)["std"] == "gateway.toml"
    d_fine = reading(KERAS_HUB, KERAS_HUB_INPUT, preprocessing="gateway", pixel_range="0-1", resize="crop")
    assert pixels(d_fine) == ("gateway", "0-1", None, None) and d_fine.preprocessing.resize == "crop"
    # The same holds for families whose signature does tell (YOLO's default is 0-1 without mean/std).
    yolo = reading(YOLO, YOLO_INPUT, pixel_range="-1-1", std=(0.5,))
    assert pixels(yolo) == ("gateway", "-1-1", None, (0.5,))
    assert reading(YOLO, YOLO_INPUT).preprocessing.to_dict()["sources"]["pixel_range"] == "family default"
    assert pixels(reading(YOLO, YOLO_INPUT)) == ("gateway", "0-1", None, None)
    # The TF OD API's float_image_tensor takes 0-255 and normalizes inside the model.
    od_float = reading(OD_API, {"input_tensor": (F, (1, -1, -1, 3))})
    assert pixels(od_float) == ("in_model", "0-255", None, None)
    assert sources(od_float)["where"] == "family default"


@pytest.mark.parametrize("keys", [{"mean": (0.5,)}, {"std": (0.5,)}, {"mean": (0.5,), "std": (0.2,)}])
def test_mean_or_std_without_pixel_range_is_refused(keys) -> None:
    for outputs, inputs in ((KERAS_HUB, KERAS_HUB_INPUT), (YOLO, YOLO_INPUT)):
        model = reading(outputs, inputs, **keys)
        assert model.adapter is None
        assert f"sets {' and '.join(keys)} without pixel_range" in model.problem
        assert 'pixel_range = "0-1"' in model.problem


def test_contradictions_are_refused_naming_the_keys() -> None:
    both = reading(KERAS_HUB, KERAS_HUB_INPUT, preprocessing="in_model", pixel_range="0-1", mean=(0.5,))
    assert 'sets preprocessing = "in_model"' in both.problem and "and also pixel_range, mean" in both.problem
    # Classifiers have no default conversion to fall back on.
    vague = reading(CLASSIFIER, CLASSIFIER_INPUT, preprocessing="gateway")
    assert "have no default conversion" in vague.problem and 'pixel_range = "0-1"' in vague.problem
    uint8 = reading(CLASSIFIER, {"inputs": ("uint8", (1, 224, 224, 3))}, preprocessing="gateway")
    assert "takes uint8 pixels, which the model converts itself" in uint8.problem
    ok = reading(CLASSIFIER, {"inputs": ("uint8", (1, 224, 224, 3))}, preprocessing="in_model")
    assert ok.problem is None and pixels(ok) == ("in_model", "0-255", None, None)


def test_classifier_with_its_conversion_written_out() -> None:
    model = reading(CLASSIFIER, CLASSIFIER_INPUT, pixel_range="0-1", mean=IMAGENET_MEAN, std=IMAGENET_STD)
    assert pixels(model) == ("gateway", "0-1", IMAGENET_MEAN, IMAGENET_STD)
    assert {sources(model)[k] for k in ("pixel_range", "mean", "std")} == {"gateway.toml"}


def test_export_metadata_is_a_source() -> None:
    metadata = ExportMetadata("models/m/1/metadata.yaml", "Ultralytics", "classify", {0: "cat"})
    sig = signature({"output_0": (F, (1, 3))}, {"images": (F, (1, 224, 224, 3))})
    model = read_model(sig, ModelSettings(), "models/m/gateway.toml", metadata)
    assert model.problem is None and pixels(model) == ("gateway", "0-1", None, None)
    assert model.preprocessing.resize == "crop"
    assert sources(model)["pixel_range"] == sources(model)["resize"] == "export metadata"
    assert sources(model)["mean"] == "export metadata" and sources(model)["channel_order"] == "family default"
    told = read_model(sig, ModelSettings(resize="stretch", source="x"), "models/m/gateway.toml", metadata)
    assert sources(told)["resize"] == "gateway.toml" and told.preprocessing.resize == "stretch"


def test_the_preprocessing_key_is_checked() -> None:
    assert parse_model_settings('preprocessing = "in_model"\n').preprocessing == "in_model"
    with pytest.raises(ValueError, match="'preprocessing' must be one of gateway, in_model, not 'model'"):
        parse_model_settings('preprocessing = "model"\n')
