"""The gRPC surface of `python -m tf_server` over real gRPC: metadata, status, Predict, errors.

One server for the module serves three models from one folder of versions 1 and 2, with the
three version policies, labels, and relative base paths in models.config.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import pytest

from tests.support.model_server import running_model_server
from tests.support.saved_model_file import meta_graphs
from tests.tf_server.grpc_client import (
    ServingClient,
    image_input,
    rpc_error,
    serving_client,
    string_tensor_proto,
    tensor_proto,
    to_ndarray,
)
from web.serving.protos.tensorflow.core.framework import types_pb2
from web.serving.protos.tensorflow_serving.apis import get_model_metadata_pb2, predict_pb2

DETECTION_OUTPUTS = {
    "detection_boxes",
    "detection_scores",
    "detection_classes",
    "num_detections",
    "detection_masks",
}
TINY_OUTPUTS = DETECTION_OUTPUTS | {"image_size", "call_count"}

MODELS_CONFIG = """
# relative base paths: resolved against this file's folder
model_config_list {
  config { name: "tiny" base_path: "models/tiny" model_platform: "tensorflow" }
  config {
    name: "tiny_all"
    base_path: "models/tiny"
    model_platform: "tensorflow"
    model_version_policy { all {} }
    version_labels { key: "stable" value: 1 }
    version_labels { key: "canary" value: 2 }
  }
  config {
    name: "tiny_specific"
    base_path: "./models/../models/tiny"
    model_platform: "tensorflow"
    model_version_policy { specific { versions: 1 } }
  }
}
"""


@pytest.fixture(scope="module")
def served(model_bank: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("serving")
    for version in (1, 2):
        shutil.copytree(model_bank / "tiny" / str(version), root / "models" / "tiny" / str(version))
    (root / "models.config").write_text(MODELS_CONFIG)
    return root


@pytest.fixture(scope="module")
def client(served: Path) -> Iterator[ServingClient]:
    flags = (
        f"--model_config_file={served / 'models.config'}",
        "--allow_version_labels_for_unavailable_models",
    )
    with running_model_server(*flags) as address, serving_client(address) as client:
        yield client


def test_status_of_every_model_follows_its_version_policy(client: ServingClient) -> None:
    assert client.status("tiny") == {2: "AVAILABLE"}
    assert client.status("tiny_all") == {2: "AVAILABLE", 1: "AVAILABLE"}
    assert list(client.status("tiny_all")) == [2, 1]  # newest first, as TF Serving lists them
    assert client.status("tiny_specific") == {1: "AVAILABLE"}
    assert client.status("tiny_all", version=1) == {1: "AVAILABLE"}
    entry = client.status_entries("tiny")[2]
    assert entry.status.error_code == 0 and entry.status.error_message == ""


def test_metadata_is_the_saved_models_signature_def_map(client: ServingClient, served: Path) -> None:
    response = client.metadata("tiny")
    assert response.model_spec.name == "tiny" and response.model_spec.version.value == 2
    packed = response.metadata["signature_def"]
    assert packed.type_url == "type.googleapis.com/tensorflow.serving.SignatureDefMap"
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    assert packed.Unpack(signature_map)

    [meta_graph] = [
        g
        for g in meta_graphs((served / "models" / "tiny" / "2" / "saved_model.pb").read_bytes())
        if list(g.meta_info_def.tags) == ["serve"]
    ]
    assert dict(signature_map.signature_def) == dict(meta_graph.signature_def)
    assert set(signature_map.signature_def) == {"serving_default", "image_mean", "__saved_model_init_op"}
    serving = signature_map.signature_def["serving_default"]
    assert serving.method_name == "tensorflow/serving/predict"
    image = serving.inputs["input_tensor"]
    assert image.dtype == types_pb2.DT_UINT8
    assert [d.size for d in image.tensor_shape.dim] == [1, -1, -1, 3]
    assert set(serving.outputs) == TINY_OUTPUTS


def test_metadata_of_a_specific_version(client: ServingClient) -> None:
    assert client.metadata("tiny_all", version=1).model_spec.version.value == 1


def test_predict_uses_the_latest_version_and_answers_like_tf_serving(client: ServingClient) -> None:
    response = client.predict("tiny", image_input(24, 32))
    assert response.model_spec.name == "tiny"
    assert response.model_spec.version.value == 2
    assert response.model_spec.signature_name == "serving_default"
    assert set(response.outputs) == TINY_OUTPUTS
    outputs = {name: to_ndarray(proto) for name, proto in response.outputs.items()}
    assert outputs["detection_boxes"].shape == (1, 100, 4)
    assert outputs["detection_masks"].shape == (1, 100, 33, 33)
    assert outputs["detection_classes"][0, 0] == 2.0  # the tiny model's class id is its version
    assert outputs["detection_scores"][0, 0] == pytest.approx(0.9)
    assert outputs["image_size"].tolist() == [[24, 32]]
    # TF Serving's default response encoding: typed value fields, not tensor_content
    scores = response.outputs["detection_scores"]
    assert not scores.tensor_content and len(scores.float_val) == 100
    assert list(response.outputs["image_size"].int_val) == [24, 32]


def test_predict_by_version_and_by_label(client: ServingClient) -> None:
    def answered_by(**selector: object) -> tuple[int, float]:
        response = client.predict("tiny_all", image_input(), **selector)
        return response.model_spec.version.value, float(
            to_ndarray(response.outputs["detection_classes"])[0, 0]
        )

    assert answered_by() == (2, 2.0)
    assert answered_by(version=1) == (1, 1.0)
    assert answered_by(version=2) == (2, 2.0)
    assert answered_by(label="stable") == (1, 1.0)
    assert answered_by(label="canary") == (2, 2.0)
    assert client.predict("tiny_specific", image_input()).model_spec.version.value == 1


def test_predict_honours_signature_name_and_typed_field_inputs(client: ServingClient) -> None:
    images = np.arange(2 * 4 * 5 * 3, dtype=np.float32).reshape(2, 4, 5, 3)
    response = client.predict(
        "tiny", {"images": tensor_proto(images, typed_fields=True)}, signature="image_mean"
    )
    assert response.model_spec.signature_name == "image_mean"
    np.testing.assert_allclose(to_ndarray(response.outputs["mean"]), images.mean(axis=(1, 2, 3)), rtol=1e-6)
    typed = {"input_tensor": tensor_proto(np.ones((1, 5, 7, 3), np.uint8), typed_fields=True)}
    assert to_ndarray(client.predict("tiny", typed).outputs["image_size"]).tolist() == [[5, 7]]


def test_output_filter_returns_only_the_named_outputs(client: ServingClient) -> None:
    response = client.predict("tiny", image_input(), output_filter=("detection_scores", "num_detections"))
    assert set(response.outputs) == {"detection_scores", "num_detections"}


def test_shapes_are_the_graphs_business_as_in_tf_serving(client: ServingClient) -> None:
    """TF Serving checks input names, count and dtype, then lets the graph run: a batch of 2 fed to a
    [1,-1,-1,3] input, or a [-1,-1,-1,3] input fed rank 4 of any size, runs when the ops accept it."""
    batch = client.predict("tiny", {"input_tensor": tensor_proto(np.zeros((2, 5, 7, 3), np.uint8))})
    assert to_ndarray(batch.outputs["image_size"]).tolist() == [[5, 7]]
    means = client.predict(
        "tiny", {"images": tensor_proto(np.ones((3, 2, 2, 4), np.float32))}, signature="image_mean"
    )
    assert to_ndarray(means.outputs["mean"]).tolist() == [1.0, 1.0, 1.0]


def test_accepts_messages_of_64_mib(client: ServingClient) -> None:
    height, width = 4096, 5462  # 67,117,056 bytes of pixels > 64 MiB
    assert height * width * 3 > 64 * 1024 * 1024
    image = np.zeros((1, height, width, 3), np.uint8)
    response = client.predict("tiny", {"input_tensor": tensor_proto(image)}, output_filter=("image_size",))
    assert to_ndarray(response.outputs["image_size"]).tolist() == [[height, width]]


def test_concurrent_predicts_all_succeed(client: ServingClient) -> None:
    sizes = [(8 + i, 9 + i) for i in range(16)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda hw: client.predict("tiny", image_input(*hw)), sizes))
    assert [to_ndarray(r.outputs["image_size"]).tolist() for r in results] == [[list(hw)] for hw in sizes]


ERROR_CASES = {
    "unknown model": (
        lambda c: c.predict("nope", image_input()),
        grpc.StatusCode.NOT_FOUND,
        "Servable not found for request: Latest(nope)",
    ),
    "unknown version": (
        lambda c: c.predict("tiny", image_input(), version=7),
        grpc.StatusCode.NOT_FOUND,
        "Servable not found for request: Specific(tiny, 7)",
    ),
    "version outside the policy": (
        lambda c: c.predict("tiny", image_input(), version=1),
        grpc.StatusCode.NOT_FOUND,
        "Specific(tiny, 1)",
    ),
    "unknown label": (
        lambda c: c.predict("tiny_all", image_input(), label="nightly"),
        grpc.StatusCode.INVALID_ARGUMENT,
        "Unrecognized servable version label: nightly",
    ),
    "unknown input name": (
        lambda c: c.predict("tiny", {"images": image_input()["input_tensor"]}),
        grpc.StatusCode.INVALID_ARGUMENT,
        "input_tensor: DT_UINT8 [1,-1,-1,3]",
    ),
    "extra input": (
        lambda c: c.predict("tiny", {**image_input(), "extra": image_input()["input_tensor"]}),
        grpc.StatusCode.INVALID_ARGUMENT,
        "Sent extra: {extra}",
    ),
    "no inputs": (
        lambda c: c.predict("tiny", {}),
        grpc.StatusCode.INVALID_ARGUMENT,
        "Missing but required: {input_tensor}",
    ),
    "wrong dtype": (
        lambda c: c.predict("tiny", {"input_tensor": tensor_proto(np.zeros((1, 4, 4, 3), np.float32))}),
        grpc.StatusCode.INVALID_ARGUMENT,
        "input_tensor: DT_UINT8 [1,-1,-1,3]",
    ),
    "string instead of image": (
        lambda c: c.predict("tiny", {"input_tensor": string_tensor_proto([b"\xff\xd8 not a tensor"])}),
        grpc.StatusCode.INVALID_ARGUMENT,
        "but string is provided",
    ),
    # Sizes are the graph's business (TF Serving's rule), but a picture input at another rank than
    # declared is refused before it can reach a oneDNN kernel that would abort the process.
    "a picture at the wrong rank": (
        lambda c: c.predict(
            "tiny", {"images": tensor_proto(np.zeros((2, 3), np.float32))}, signature="image_mean"
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "input 'images' has shape [2,3] (rank 2), but the signature declares rank 4. Signature 'image_mean' "
        "expects {images: DT_FLOAT [-1,-1,-1,3]}",
    ),
    "unknown signature": (
        lambda c: c.predict("tiny", image_input(), signature="classify"),
        grpc.StatusCode.FAILED_PRECONDITION,
        'Serving signature key "classify" not found.',
    ),
    "unknown output in output_filter": (
        lambda c: c.predict("tiny", image_input(), output_filter=("boxes",)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "output tensor alias not found in signature: boxes",
    ),
    "duplicate output in output_filter": (
        lambda c: c.predict("tiny", image_input(), output_filter=("num_detections", "num_detections")),
        grpc.StatusCode.INVALID_ARGUMENT,
        "duplicate output tensor alias: num_detections",
    ),
    "predict without model_spec": (
        lambda c: c.prediction.Predict(predict_pb2.PredictRequest(), timeout=30),
        grpc.StatusCode.INVALID_ARGUMENT,
        "Missing ModelSpec",
    ),
    "metadata of unknown model": (
        lambda c: c.metadata("nope"),
        grpc.StatusCode.NOT_FOUND,
        "Servable not found for request: Latest(nope)",
    ),
    "metadata of unknown version": (
        lambda c: c.metadata("tiny_all", version=9),
        grpc.StatusCode.NOT_FOUND,
        "Specific(tiny_all, 9)",
    ),
    "metadata without fields": (
        lambda c: c.prediction.GetModelMetadata(
            get_model_metadata_pb2.GetModelMetadataRequest(model_spec={"name": "tiny"}), timeout=30
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "GetModelMetadataRequest must specify at least one metadata_field",
    ),
    "metadata with an unsupported field": (
        lambda c: c.prediction.GetModelMetadata(
            get_model_metadata_pb2.GetModelMetadataRequest(
                model_spec={"name": "tiny"}, metadata_field=["labels"]
            ),
            timeout=30,
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "Metadata field labels is not supported",
    ),
    "status of unknown model": (
        lambda c: c.status("nope"),
        grpc.StatusCode.NOT_FOUND,
        "Could not find any versions of model nope",
    ),
    "status of unknown version": (
        lambda c: c.status("tiny", version=5),
        grpc.StatusCode.NOT_FOUND,
        "Could not find version 5 of model tiny",
    ),
}


@pytest.mark.parametrize("case", sorted(ERROR_CASES))
def test_mistakes_get_tf_servings_status_codes(client: ServingClient, case: str) -> None:
    call, code, text = ERROR_CASES[case]
    error = rpc_error(lambda: call(client))
    assert error.code() == code, error.details()
    assert text in error.details()


def test_the_server_still_serves_after_the_mistakes(client: ServingClient) -> None:
    assert client.predict("tiny", image_input()).model_spec.version.value == 2
