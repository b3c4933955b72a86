"""TF Serving conformance: what ``tensorflow_model_server`` answers for its own test models, asked of
``python -m tf_server`` over real gRPC with the official protos.

Each test names the upstream test or C++ source (tensorflow/serving) whose behaviour it encodes:
``tensorflow_model_server_test.py`` (the integration test), its ``test_util/
tensorflow_model_server_test_base.py`` (VerifyPredictRequest), and ``servables/tensorflow/``
``predict_util.cc`` / ``predict_util_test.cc``, ``classifier.cc``, ``regressor.cc``,
``multi_inference.cc`` / ``multi_inference_test.cc``, ``util.cc`` and ``get_model_metadata_impl.cc``.
The models are built by tests/support/tf1_models.py the way upstream's testdata were: half_plus_two
as a TF1 graph and as a TF2 ``tf.Module``, and a TensorFlow-1.0-style half_plus_three. One server
serves them all from one models.config (as upstream's testGoodModelConfig does), on TCP and on a UNIX
socket (``--grpc_socket_path``, as upstream's RunServer always passes).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from tests.support.built_models import build_models
from tests.support.model_server import REPO_ROOT, ServerProcess, free_port, model_server_process
from tests.support.saved_model_file import meta_graphs
from tests.support.tf1_models import (
    HALF_PLUS_THREE_SIGNATURES,
    HALF_PLUS_TWO_SIGNATURES,
    HALF_PLUS_TWO_TF2_SIGNATURES,
    OD_MODEL,
    OD_VERSION,
    VERSION,
    VERSION_DIR,
)
from tests.tf_server.grpc_client import ServingClient, rpc_error, serving_client, to_ndarray
from web.serving.protos.tensorflow.core.example import example_pb2
from web.serving.protos.tensorflow.core.framework import tensor_pb2, types_pb2
from web.serving.protos.tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    inference_pb2,
    input_pb2,
    predict_pb2,
    regression_pb2,
)

TF1, TF2, THREE = "half_plus_two_tf1", "half_plus_two_tf2", "half_plus_three_tf1"
HALF_PLUS_TWO = pytest.mark.parametrize("model", [TF1, TF2])
CLASSIFY, REGRESS, PREDICT = (
    "tensorflow/serving/classify",
    "tensorflow/serving/regress",
    "tensorflow/serving/predict",
)
RPC_TIMEOUT_S = 30.0
INVALID, PRECONDITION = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION
# upstream's testdata/bad_model_config.txt, verbatim
BAD_MODEL_CONFIG = "improperly formatted file"


# -- fixtures -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tf1_models() -> Path:
    """Folder with the models of tests/support/tf1_models.py and their models.config."""
    return build_models("tests.support.tf1_models", "test-tf1-models")


@pytest.fixture(scope="module")
def socket_path() -> Iterator[Path]:
    folder = tempfile.mkdtemp(prefix="tfs-", dir="/tmp")  # short: UNIX socket paths stop at 107 bytes
    yield Path(folder) / "tf-serving.sock"
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def server(tf1_models: Path, socket_path: Path) -> Iterator[ServerProcess]:
    flags = (f"--model_config_file={tf1_models / 'models.config'}", f"--grpc_socket_path={socket_path}")
    with model_server_process(*flags) as process:
        yield process


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> Iterator[ServingClient]:
    with serving_client(server.address) as client:
        yield client


# -- request helpers ------------------------------------------------------------------------------


def float_tensor(values: object, shape: list[int] | None) -> tensor_pb2.TensorProto:
    """A DT_FLOAT TensorProto in float_val (how upstream's tests write them); shape None = scalar."""
    proto = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT)
    proto.float_val.extend(np.asarray(values, np.float32).ravel().tolist())
    for size in shape or []:
        proto.tensor_shape.dim.add(size=size)
    return proto


def predict(
    client: ServingClient,
    model: str,
    inputs: dict[str, tensor_pb2.TensorProto],
    signature: str = "serving_default",
    output_filter: tuple[str, ...] = (),
) -> predict_pb2.PredictResponse:
    """Predict with upstream's default signature name spelled out (the client's default is "")."""
    return client.predict(
        model, inputs, signature=signature, output_filter=output_filter, timeout=RPC_TIMEOUT_S
    )


def example(**features: float) -> example_pb2.Example:
    message = example_pb2.Example()
    for name, value in features.items():
        message.features.feature[name].float_list.value.append(value)
    return message


def example_input(*xs: float) -> input_pb2.Input:
    """An example_list of tf.Examples with feature "x" (upstream: float_list [2.0])."""
    return input_pb2.Input(example_list=input_pb2.ExampleList(examples=[example(x=x) for x in xs]))


def classify(
    client: ServingClient, model: str, signature: str, model_input: input_pb2.Input
) -> classification_pb2.ClassificationResponse:
    request = classification_pb2.ClassificationRequest(input=model_input)
    request.model_spec.name = model
    request.model_spec.signature_name = signature
    return client.prediction.Classify(request, timeout=RPC_TIMEOUT_S)


def regress(
    client: ServingClient, model: str, signature: str, model_input: input_pb2.Input
) -> regression_pb2.RegressionResponse:
    request = regression_pb2.RegressionRequest(input=model_input)
    request.model_spec.name = model
    request.model_spec.signature_name = signature
    return client.prediction.Regress(request, timeout=RPC_TIMEOUT_S)


def multi_inference(
    client: ServingClient, tasks: list[tuple[str, str, str]], model_input: input_pb2.Input
) -> inference_pb2.MultiInferenceResponse:
    """`tasks`: (model, signature, method) each."""
    request = inference_pb2.MultiInferenceRequest(input=model_input)
    for model, signature, method in tasks:
        task = request.tasks.add(method_name=method)
        task.model_spec.name = model
        task.model_spec.signature_name = signature
    return client.prediction.MultiInference(request, timeout=RPC_TIMEOUT_S)


def failure(call) -> tuple[grpc.StatusCode, str]:
    error = rpc_error(call)
    return error.code(), error.details()


def spec_of(response) -> tuple[str, str, int]:
    spec = response.model_spec
    return spec.name, spec.signature_name, spec.version.value


def shape_of(proto: tensor_pb2.TensorProto) -> list[int]:
    return [dim.size for dim in proto.tensor_shape.dim]


def scores(result: classification_pb2.ClassificationResult) -> list[list[float]]:
    return [[c.score for c in classifications.classes] for classifications in result.classifications]


# -- Predict --------------------------------------------------------------------------------------


@HALF_PLUS_TWO
@pytest.mark.parametrize("specify_output", [True, False])
def test_predict_x_2_gives_y_3(client: ServingClient, model: str, specify_output: bool) -> None:
    """tensorflow_model_server_test_base.VerifyPredictRequest (testPredictSavedModel, testGoodModelConfig):
    x = [2.0] with shape [1] into the [-1, 1] signature; the graph decides y's shape: [1]."""
    output_filter = ("y",) if specify_output else ()
    response = predict(client, model, {"x": float_tensor([2.0], [1])}, output_filter=output_filter)
    assert set(response.outputs) == {"y"}
    y = response.outputs["y"]
    assert y.dtype == types_pb2.DT_FLOAT
    assert list(y.float_val) == [3.0], "TF Serving answers in float_val (Tensor::AsProtoField)"
    assert shape_of(y) == [1], "the graph, not the signature's [-1, 1], decides the shape"
    assert spec_of(response) == (model, "serving_default", VERSION)


def test_predict_half_plus_three(client: ServingClient) -> None:
    """testGoodModelConfig: half_plus_three (a TensorFlow 1.0 export that tf.saved_model.load refuses:
    "Shape must be rank 1 but is rank 0 for ParseExample") answers 4.0 for 2.0."""
    for output_filter in (("y",), ()):
        response = predict(client, THREE, {"x": float_tensor([2.0], [1])}, output_filter=output_filter)
        assert list(response.outputs["y"].float_val) == [4.0]
        assert spec_of(response) == (THREE, "serving_default", VERSION)


@HALF_PLUS_TWO
@pytest.mark.parametrize(
    ("values", "shape", "expected"),
    [
        (2.0, None, 3.0),  # predict_util_test PredictionSuccess: a scalar in, a scalar out
        ([2.0, 3.0, 4.0], [3], [3.0, 3.5, 4.0]),  # testPredictREST's instances, as one [3] tensor
        ([[2.0], [4.0]], [2, 1], [[3.0], [4.0]]),
    ],
)
def test_predict_shapes_come_from_the_graph(
    client: ServingClient, model: str, values: object, shape: list[int] | None, expected: object
) -> None:
    response = predict(client, model, {"x": float_tensor(values, shape)})
    y = response.outputs["y"]
    assert shape_of(y) == (shape or [])
    np.testing.assert_array_equal(to_ndarray(y), np.asarray(expected, np.float32))


def test_predict_with_an_empty_signature_name_uses_serving_default(client: ServingClient) -> None:
    """predict_util.cc RunPredict: "" means serving_default, and the response names it."""
    response = predict(client, TF1, {"x": float_tensor(2.0, None)}, signature="")
    assert spec_of(response) == (TF1, "serving_default", VERSION)
    assert list(response.outputs["y"].float_val) == [3.0]


@pytest.mark.parametrize(
    ("model", "signature", "output", "shape"),
    [
        (TF1, "regress_x2_to_y3", "outputs", None),  # PredictionWithNamedRegressionSignature
        (TF2, "regress_x2_to_y3", "outputs", [1]),
        (TF2, "classify_x2_to_y3", "scores", [1]),  # PredictionWithNamedClassificationSignature
    ],
)
def test_predict_runs_regress_and_classify_signatures_too(
    client: ServingClient, model: str, signature: str, output: str, shape: list[int] | None
) -> None:
    """predict_util_test: Predict calls work with predict, classify and regress signatures
    (y3 = 0.5 * x2 + 3)."""
    x2 = float_tensor(2.0 if shape is None else [2.0], shape)
    response = predict(client, model, {"inputs": x2}, signature)
    assert set(response.outputs) == {output}
    assert list(response.outputs[output].float_val) == [4.0]
    assert spec_of(response) == (model, signature, VERSION)


@HALF_PLUS_TWO
def test_predict_output_filter_must_name_distinct_outputs(client: ServingClient, model: str) -> None:
    """predict_util_test OutputFiltersDontMatchModelSpecOutputs."""
    x = {"x": float_tensor(2.0, None)}
    code, details = failure(lambda: predict(client, model, x, output_filter=("output_filter",)))
    assert code == INVALID
    assert "output tensor alias not found in signature: output_filter" in details
    code, details = failure(lambda: predict(client, model, x, output_filter=("y", "y")))
    assert code == INVALID
    assert "duplicate output tensor alias: y" in details


@HALF_PLUS_TWO
def test_predict_inputs_must_match_the_signature(client: ServingClient, model: str) -> None:
    """predict_util.cc VerifyRequestInputsSize and saved_model GetInputValues: EmptyInputList,
    InputTensorsDontMatchModelSpecInputs."""
    two = float_tensor(2.0, None)
    code, details = failure(lambda: predict(client, model, {}))
    assert code == INVALID, details
    assert "Missing but required: {x}" in details
    code, details = failure(lambda: predict(client, model, {"unknown_key1": two, "unknown_key2": two}))
    assert code == INVALID
    assert "input size does not match signature: 2!=1" in details
    assert "Sent extra: {unknown_key1,unknown_key2}" in details and "Missing but required: {x}" in details
    code, details = failure(lambda: predict(client, model, {"x": two, "z": two}))
    assert code == INVALID
    assert "Sent extra: {z}" in details
    code, details = failure(lambda: predict(client, model, {"z": two}))  # right count, wrong name
    assert code == INVALID
    assert "Signature input alias: x" in details and "not found in request" in details


@HALF_PLUS_TWO
def test_predict_input_dtype_must_be_the_signatures(client: ServingClient, model: str) -> None:
    """predict_util_test InputTensorsHaveWrongType and PredictionInvalidTensor: the session refuses
    the feed ("Expects arg[0] to be float but string is provided")."""
    text = tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING, string_val=[b"any_value"])
    text.tensor_shape.dim.add(size=1)
    code, details = failure(lambda: predict(client, model, {"x": text}, output_filter=("y",)))
    assert code == INVALID
    assert "to be float but string is provided" in details
    flag = tensor_pb2.TensorProto(dtype=types_pb2.DT_BOOL, bool_val=[True])
    code, details = failure(lambda: predict(client, model, {"x": flag}))
    assert code == INVALID
    assert "to be float but bool is provided" in details


def test_predict_unknown_signature_is_a_failed_precondition(client: ServingClient) -> None:
    """predict_util.cc RunPredict: FAILED_PRECONDITION, 'Serving signature key "..." not found.'"""
    code, details = failure(lambda: predict(client, TF1, {"x": float_tensor(2.0, None)}, "nope"))
    assert code == PRECONDITION
    assert 'Serving signature key "nope" not found.' in details


def test_predict_unknown_model_says_servable(client: ServingClient) -> None:
    """tensorflow_model_server_test_base.WaitForServerReady: a missing model's error mentions 'Servable'."""
    code, details = failure(lambda: predict(client, "intentionally_missing_model", {}))
    assert code == grpc.StatusCode.NOT_FOUND
    assert "Servable" in details


# -- Classify and Regress ---------------------------------------------------------------------------


@HALF_PLUS_TWO
def test_classify(client: ServingClient, model: str) -> None:
    """tensorflow_model_server_test testClassify / testClassifyTf2: one class, score 3.0, no label.
    (The TF2 signature's method_name is tensorflow/serving/predict: TF Serving does not check it
    unless --enable_signature_method_name_check; classifier.cc checks the input/output keys.)"""
    response = classify(client, model, "classify_x_to_y", example_input(2.0))
    assert scores(response.result) == [[3.0]]
    assert response.result.classifications[0].classes[0].label == ""
    assert spec_of(response) == (model, "classify_x_to_y", VERSION)


@HALF_PLUS_TWO
def test_classify_a_batch_and_examples_with_context(client: ServingClient, model: str) -> None:
    """util.cc InputToSerializedExampleTensor: one row per example; with context, each example is the
    context's bytes followed by the example's (the example's features win)."""
    batch = classify(client, model, "classify_x_to_y", example_input(2.0, 4.0))
    assert scores(batch.result) == [[3.0], [4.0]]
    with_context = input_pb2.Input(
        example_list_with_context=input_pb2.ExampleListWithContext(
            examples=[example(), example(x=4.0)], context=example(x=2.0)
        )
    )
    assert scores(classify(client, model, "classify_x_to_y", with_context).result) == [[3.0], [4.0]]


def test_classify_half_plus_three(client: ServingClient) -> None:
    response = classify(client, THREE, CLASSIFY, example_input(2.0))
    assert scores(response.result) == [[4.0]]
    assert spec_of(response) == (THREE, CLASSIFY, VERSION)


@HALF_PLUS_TWO
def test_classify_errors(client: ServingClient, model: str) -> None:
    """classifier.cc GetClassificationSignatureDef / PreProcessClassification, util.cc."""
    code, details = failure(lambda: classify(client, model, "nope", example_input(2.0)))
    assert code == INVALID
    assert "No signature was found with the name: nope" in details
    code, details = failure(lambda: classify(client, model, "classify_x_to_y", input_pb2.Input()))
    assert code == INVALID
    assert "Input is empty" in details
    # "" means serving_default: a predict signature without an "inputs" input
    code, _ = failure(lambda: classify(client, model, "", example_input(2.0)))
    assert code == INVALID


@HALF_PLUS_TWO
@pytest.mark.parametrize(("signature", "expected"), [("regress_x_to_y", 3.0), ("regress_x_to_y2", 4.0)])
def test_regress(client: ServingClient, model: str, signature: str, expected: float) -> None:
    """tensorflow_model_server_test testRegress / testRegressTf2 (y = 0.5x + 2) and
    multi_inference_test's regress_x_to_y2 (y2 = 0.5x + 3)."""
    response = regress(client, model, signature, example_input(2.0))
    assert [r.value for r in response.result.regressions] == [expected]
    assert spec_of(response) == (model, signature, VERSION)


def test_regress_half_plus_three(client: ServingClient) -> None:
    """half_plus_three's regression signature, keyed "tensorflow/serving/regress" as TF 1.0 keyed it."""
    response = regress(client, THREE, REGRESS, example_input(2.0, 4.0))
    assert [r.value for r in response.result.regressions] == [4.0, 5.0]
    assert spec_of(response) == (THREE, REGRESS, VERSION)


@HALF_PLUS_TWO
def test_regress_errors(client: ServingClient, model: str) -> None:
    """regressor.cc GetRegressionSignatureDef / PreProcessRegression, and the session's feed check."""
    code, details = failure(lambda: regress(client, model, "nope", example_input(2.0)))
    assert code == INVALID
    assert "No signature was found with the name: nope" in details
    code, _ = failure(lambda: regress(client, model, "classify_x_to_y", example_input(2.0)))
    assert code == INVALID  # its output is "scores", not "outputs"
    code, details = failure(lambda: regress(client, model, "regress_x_to_y", input_pb2.Input()))
    assert code == INVALID
    assert "Input is empty" in details
    # regress_x2_to_y3 takes a float tensor: serialized examples cannot feed it
    code, details = failure(lambda: regress(client, model, "regress_x2_to_y3", example_input(2.0)))
    assert code == INVALID
    assert "to be float but string is provided" in details


# -- MultiInference --------------------------------------------------------------------------------


@HALF_PLUS_TWO
def test_multi_inference_regress_and_classify(client: ServingClient, model: str) -> None:
    """tensorflow_model_server_test testMultiInference / testMultiInferenceTf2, multi_inference_test
    RegressAndClassifySignaturesTest: one input, both results in task order, each with its model spec."""
    tasks = [(model, "regress_x_to_y", REGRESS), (model, "classify_x_to_y", CLASSIFY)]
    response = multi_inference(client, tasks, example_input(2.0))
    assert len(response.results) == 2
    assert [r.value for r in response.results[0].regression_result.regressions] == [3.0]
    assert scores(response.results[1].classification_result) == [[3.0]]
    assert [spec_of(r) for r in response.results] == [
        (model, "regress_x_to_y", VERSION),
        (model, "classify_x_to_y", VERSION),
    ]


@HALF_PLUS_TWO
def test_multi_inference_two_regressions(client: ServingClient, model: str) -> None:
    """multi_inference_test MultipleValidRegressSignaturesTest: 3.0 and 4.0, per example."""
    tasks = [(model, "regress_x_to_y", REGRESS), (model, "regress_x_to_y2", REGRESS)]
    response = multi_inference(client, tasks, example_input(2.0, 4.0))
    values = [[r.value for r in result.regression_result.regressions] for result in response.results]
    assert values == [[3.0, 4.0], [4.0, 5.0]]


@HALF_PLUS_TWO
def test_multi_inference_errors(client: ServingClient, model: str) -> None:
    """multi_inference_test: MissingInputTest, UndefinedSignatureTest,
    InconsistentModelSpecsInRequestTest, EvaluateDuplicateSignaturesTest, UsupportedSignatureTypeTest."""
    two = example_input(2.0)
    regress_task = (model, "regress_x_to_y", REGRESS)
    cases = [
        ([regress_task], input_pb2.Input(), INVALID, "Input is empty"),
        ([(model, "ThisSignatureDoesNotExist", REGRESS)], two, INVALID, "signature not found"),
        (
            [regress_task, ("ModelDoesNotExist", "regress_x_to_y", REGRESS)],
            two,
            INVALID,
            "must access the same model name",
        ),
        ([regress_task, regress_task], two, INVALID, "Duplicate evaluation of signature: regress_x_to_y"),
        ([(model, "serving_default", PREDICT)], two, grpc.StatusCode.UNIMPLEMENTED, "Unsupported signature"),
    ]
    for tasks, model_input, expected_code, message in cases:
        code, details = failure(lambda: multi_inference(client, tasks, model_input))  # noqa: B023
        assert (code, message in details) == (expected_code, True), (tasks, details)


# -- GetModelMetadata and GetModelStatus -------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "signatures"),
    [
        (TF1, HALF_PLUS_TWO_SIGNATURES),
        (THREE, HALF_PLUS_THREE_SIGNATURES),
        (TF2, HALF_PLUS_TWO_TF2_SIGNATURES),
    ],
)
def test_metadata_is_the_meta_graphs_signature_def_map(
    client: ServingClient, tf1_models: Path, model: str, signatures: dict[str, str]
) -> None:
    """tensorflow_model_server_test testGetModelMetadata and get_model_metadata_impl.cc
    SavedModelGetSignatureDef: the MetaGraphDef's signature_def map as it is (a TF2 model's
    __saved_model_init_op included, its methods all predict), under the served name and version."""
    response = client.metadata(model)
    assert response.model_spec.name == model and response.model_spec.version.value == VERSION
    assert list(response.metadata) == ["signature_def"]
    served = client.signature_defs(model).signature_def
    graphs = meta_graphs((tf1_models / model / VERSION_DIR / "saved_model.pb").read_bytes())
    on_disk = next(dict(g.signature_def) for g in graphs if list(g.meta_info_def.tags) == ["serve"])
    assert dict(served) == on_disk
    if model == TF2:
        assert set(served) == set(signatures) | {"__saved_model_init_op"}
        assert {served[key].method_name for key in signatures} == {PREDICT}
    else:
        assert {key: sig.method_name for key, sig in served.items()} == signatures
    x = served["serving_default"].inputs["x"]
    assert x.dtype == types_pb2.DT_FLOAT
    if model == TF1:  # half_plus_two_model_metadata.json
        x2 = served["regress_x2_to_y3"].inputs["inputs"]
        assert (x.name, shape_of(x), x2.name) == ("x:0", [-1, 1], "x2:0")
    if model == THREE:  # TF 1.0's scalar-looking serialized input
        examples = served[REGRESS].inputs["inputs"]
        shape = examples.tensor_shape
        assert (examples.name, shape_of(examples), shape.unknown_rank) == ("tf_example:0", [], False)


def test_metadata_request_must_ask_for_signature_def(client: ServingClient) -> None:
    """get_model_metadata_impl.cc ValidateGetModelMetadataRequest."""
    request = get_model_metadata_pb2.GetModelMetadataRequest()
    request.model_spec.name = TF1
    code, details = failure(lambda: client.prediction.GetModelMetadata(request, timeout=RPC_TIMEOUT_S))
    assert code == INVALID
    assert "GetModelMetadataRequest must specify at least one metadata_field" in details
    request.metadata_field.append("foo")
    code, details = failure(lambda: client.prediction.GetModelMetadata(request, timeout=RPC_TIMEOUT_S))
    assert code == INVALID
    assert "Metadata field foo is not supported" in details


@pytest.mark.parametrize(
    ("model", "version"), [(TF1, VERSION), (THREE, VERSION), (TF2, VERSION), (OD_MODEL, OD_VERSION)]
)
def test_model_status(client: ServingClient, model: str, version: int) -> None:
    """tensorflow_model_server_test testGetModelStatus (and testGetStatusREST's body): one version,
    AVAILABLE, error_code OK (0) and no message; 00000123 is version 123."""
    entries = client.status_entries(model)
    assert list(entries) == [version]
    assert client.status(model) == {version: "AVAILABLE"}
    assert (entries[version].status.error_code, entries[version].status.error_message) == (0, "")


# -- the UNIX socket and a bad config ------------------------------------------------------------------


def test_predict_and_classify_over_the_unix_socket(server: ServerProcess, socket_path: Path) -> None:
    """tensorflow_model_server_test testPredictUDS: --grpc_socket_path serves the same API on
    unix:PATH (the TCP port keeps serving too)."""
    assert socket_path.is_socket()
    with serving_client(f"unix:{socket_path}") as over_socket:
        response = predict(over_socket, TF1, {"x": float_tensor([2.0], [1])})
        assert list(response.outputs["y"].float_val) == [3.0]
        assert spec_of(response) == (TF1, "serving_default", VERSION)
        assert scores(classify(over_socket, TF2, "classify_x_to_y", example_input(2.0)).result) == [[3.0]]
        assert over_socket.status(THREE) == {VERSION: "AVAILABLE"}


def test_bad_model_config_is_refused_in_tf_servings_words(tmp_path: Path) -> None:
    """tensorflow_model_server_test testBadModelConfig: the server does not start and says
    "Error parsing text-format tensorflow.serving.ModelServerConfig" (protobuf's TextFormat error,
    then "line:column: message"); util/proto_util.h ParseProtoTextFile then fails the start with
    "Invalid protobuf file: '<path>'"."""
    config = tmp_path / "bad_model_config.txt"
    config.write_text(BAD_MODEL_CONFIG)
    result = subprocess.run(
        [sys.executable, "-m", "tf_server", f"--port={free_port()}", f"--model_config_file={config}"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    parse_error = r"Error parsing text-format tensorflow\.serving\.ModelServerConfig: 1:\d+: "
    assert re.search(parse_error, output), output
    assert 'has no field named "improperly"' in output, output
    assert f"Invalid protobuf file: '{config}'" in output, output


def test_the_method_name_check_refuses_predict_signatures_for_classify(tf1_models: Path) -> None:
    """--enable_signature_method_name_check (classifier.cc / regressor.cc): with it, the TF2 model's
    signatures (all saved with method tensorflow/serving/predict) are refused for Classify and
    Regress; the TF1 graph's classify signature still classifies."""
    flags = (f"--model_config_file={tf1_models / 'models.config'}", "--enable_signature_method_name_check")
    with model_server_process(*flags) as strict, serving_client(strict.address) as client:
        code, message = failure(lambda: classify(client, TF2, "classify_x_to_y", example_input(2.0)))
        assert code == INVALID and message.startswith(
            f"Expected classification signature method_name to be {CLASSIFY}. Was: {PREDICT}"
        )
        code, message = failure(lambda: regress(client, TF2, "regress_x_to_y", example_input(2.0)))
        assert code == INVALID and f"method_name to be {REGRESS}. Was: {PREDICT}" in message
        assert scores(classify(client, TF1, "classify_x_to_y", example_input(2.0)).result) == [[3.0]]


def test_integer_values_out_of_range_wrap_as_tensorflow_casts_them(client: ServingClient) -> None:
    """Tensor::FromProto casts int_val to the tensor's dtype in C++: 300 sent for a uint8 pixel is
    44 (300 mod 256), not an error. The TF1 detector scores row 0 with the red channel's mean / 255."""
    pixels = tensor_pb2.TensorProto(dtype=types_pb2.DT_UINT8)
    for size in (1, 1, 1, 3):
        pixels.tensor_shape.dim.add(size=size)
    pixels.int_val.extend([300, 0, 0])
    response = predict(client, OD_MODEL, {"inputs": pixels}, output_filter=("detection_scores",))
    assert to_ndarray(response.outputs["detection_scores"])[0, 0] == pytest.approx(44 / 255, abs=1e-6)
