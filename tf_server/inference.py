"""Classify, Regress and MultiInference: the tf.Example signatures of TF1-era estimators.

Same rules, status codes and messages as TF Serving's ``classifier.cc``, ``regressor.cc``,
``multi_inference.cc`` and ``util.cc``: the request's ``Input`` becomes one string tensor of
serialized ``tf.Example``s (with ``example_list_with_context``, the context's bytes come first, so
protobuf merging gives each example the context's features), fed to the signature's single
``inputs`` tensor; ``classes``/``scores`` or ``outputs`` come back as per-example results.
``--enable_signature_method_name_check`` makes the signature's ``method_name`` count, as upstream.
"""

from __future__ import annotations

import grpc
import numpy as np
from tensorflow.core.framework import types_pb2
from tensorflow.core.protobuf import meta_graph_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    inference_pb2,
    input_pb2,
    regression_pb2,
)

from tf_server.errors import ServingError, invalid_argument
from tf_server.predict import run_signature
from tf_server.servable import DEFAULT_SIGNATURE, Servable, Signature
from tf_server.tensors import datatype_of, dtype_name, format_dims

CLASSIFY_METHOD = "tensorflow/serving/classify"
REGRESS_METHOD = "tensorflow/serving/regress"
CLASSIFY_INPUTS, CLASSIFY_CLASSES, CLASSIFY_SCORES = "inputs", "classes", "scores"
REGRESS_INPUTS, REGRESS_OUTPUTS = "inputs", "outputs"


def _debug(signature: meta_graph_pb2.SignatureDef) -> str:
    return str(signature)


def serialized_examples(request_input: input_pb2.Input) -> np.ndarray:
    """The request's examples as a [n] string array, context bytes first (TF Serving's
    ``InputToSerializedExampleTensor``)."""
    kind = request_input.WhichOneof("kind")
    if kind == "example_list":
        serialized = [e.SerializeToString() for e in request_input.example_list.examples]
    elif kind == "example_list_with_context":
        listed = request_input.example_list_with_context
        context = listed.context.SerializeToString()
        serialized = [context + e.SerializeToString() for e in listed.examples]
    else:
        serialized = []
    if not serialized:
        raise invalid_argument("Input is empty.")
    return np.array(serialized, dtype=object)


def _signature_def(servable: Servable, name: str, method: str, kind: str, check_method: bool) -> Signature:
    signature = servable.signatures.get(name or DEFAULT_SIGNATURE)
    if signature is None:
        raise invalid_argument(f"No signature was found with the name: {name or DEFAULT_SIGNATURE}")
    if check_method and signature.method_name != method:
        raise invalid_argument(
            f"Expected {kind} signature method_name to be {method}. Was: {signature.method_name}"
        )
    return signature


def classification_outputs(signature: Signature, check_method: bool) -> list[str]:
    """Output aliases a classify call fetches (``classes`` and/or ``scores``); raises as
    ``PreProcessClassification`` does for signatures of another shape."""
    definition = signature.definition
    if check_method and definition.method_name != CLASSIFY_METHOD:
        raise invalid_argument(
            f"Expected classification signature method_name to be {CLASSIFY_METHOD}. "
            f"Was: {definition.method_name}"
        )
    if len(definition.inputs) != 1:
        raise invalid_argument("Expected one input Tensor.")
    if len(definition.outputs) not in (1, 2):
        raise invalid_argument(f"Expected one or two output Tensors, found {len(definition.outputs)}")
    if CLASSIFY_INPUTS not in definition.inputs:
        raise invalid_argument(f"No classification inputs found in SignatureDef: {_debug(definition)}")
    names = [alias for alias in (CLASSIFY_CLASSES, CLASSIFY_SCORES) if alias in definition.outputs]
    if not names:
        raise invalid_argument(
            f'Expected classification signature outputs to contain at least one of "{CLASSIFY_CLASSES}" '
            f'or "{CLASSIFY_SCORES}". Signature was: {_debug(definition)}'
        )
    return names


def regression_outputs(signature: Signature, check_method: bool) -> list[str]:
    """``["outputs"]``; raises as ``PreProcessRegression`` does."""
    definition = signature.definition
    if check_method and definition.method_name != REGRESS_METHOD:
        raise invalid_argument(
            f"Expected regression signature method_name to be {REGRESS_METHOD}. Was: {definition.method_name}"
        )
    if len(definition.inputs) != 1:
        raise invalid_argument("Expected one input Tensor.")
    if len(definition.outputs) != 1:
        raise invalid_argument("Expected one output Tensor.")
    if REGRESS_INPUTS not in definition.inputs:
        raise invalid_argument(f"No regression inputs found in SignatureDef: {_debug(definition)}")
    if REGRESS_OUTPUTS not in definition.outputs:
        raise invalid_argument(f"No regression outputs found in SignatureDef: {_debug(definition)}")
    return [REGRESS_OUTPUTS]


def fill_classification(
    outputs: dict[str, np.ndarray], count: int, result: classification_pb2.ClassificationResult
) -> None:
    """``PostProcessClassificationResult``: [batch, classes] tensors to per-example classes."""
    classes, scores = outputs.get(CLASSIFY_CLASSES), outputs.get(CLASSIFY_SCORES)
    for label, array, wanted in (
        ("classes", classes, types_pb2.DT_STRING),
        ("scores", scores, types_pb2.DT_FLOAT),
    ):
        if array is None:
            continue
        if array.ndim != 2:
            raise invalid_argument(
                f"Expected Tensor shape: [batch_size num_classes] but got {format_dims(array.shape)}"
            )
        if datatype_of(array) != wanted:
            raise invalid_argument(
                f"Expected {label} Tensor of {dtype_name(wanted)}. Got: {dtype_name(datatype_of(array))}"
            )
        if array.shape[0] != count:
            raise invalid_argument(f"Expected {label} output batch size of {count}. Got: {array.shape[0]}")
    if classes is not None and scores is not None and classes.shape[1] != scores.shape[1]:
        raise invalid_argument(
            "Tensors class and score should match in dim_size(1). "
            f"Got {classes.shape[1]} vs. {scores.shape[1]}"
        )
    num_classes = (classes if classes is not None else scores).shape[1]
    for i in range(count):
        entry = result.classifications.add()
        for c in range(num_classes):
            item = entry.classes.add()
            if classes is not None:
                label = classes[i, c]
                item.label = label.decode("utf-8", "replace") if isinstance(label, bytes) else str(label)
            if scores is not None:
                item.score = float(scores[i, c])


def fill_regression(
    outputs: dict[str, np.ndarray], count: int, result: regression_pb2.RegressionResult
) -> None:
    """``PostProcessRegressionResult``: a [batch] or [batch, 1] float tensor to per-example values."""
    values = outputs[REGRESS_OUTPUTS]
    if not (values.ndim == 1 or (values.ndim == 2 and values.shape[1] == 1)):
        raise invalid_argument(
            "Expected output Tensor shape to be either [batch_size] or [batch_size, 1] but got "
            f"{format_dims(values.shape)}"
        )
    if values.shape[0] != count:
        raise invalid_argument(
            f"Input batch size did not match output batch size: {count} vs. {values.shape[0]}"
        )
    if datatype_of(values) != types_pb2.DT_FLOAT:
        raise invalid_argument(f"Expected output Tensor of DT_FLOAT.  Got: {dtype_name(datatype_of(values))}")
    for value in values.reshape(-1):
        result.regressions.add(value=float(value))


def _run_examples(
    signature: Signature, examples: np.ndarray, output_aliases: list[str]
) -> dict[str, np.ndarray]:
    return run_signature(signature, {CLASSIFY_INPUTS: examples}, output_aliases)


def _fill_spec(spec, servable: Servable, name: str, signature_name: str) -> None:  # noqa: ANN001
    spec.name = name or servable.name
    spec.signature_name = signature_name or DEFAULT_SIGNATURE
    spec.version.value = servable.version


def _run_example_signature(servable: Servable, request, response, method: str, kind: str,  # noqa: ANN001
                           outputs_of, fill, check_method: bool):  # noqa: ANN001, ANN202
    """Classify and Regress alike: find the signature, check its shape, run it on the request's
    examples and fill ``response.result``; the model spec echoes the request (TF Serving's
    ``MakeModelSpec``)."""
    spec = request.model_spec
    signature = _signature_def(servable, spec.signature_name, method, kind, check_method)
    aliases = outputs_of(signature, check_method)
    examples = serialized_examples(request.input)
    fill(_run_examples(signature, examples, aliases), len(examples), response.result)
    _fill_spec(response.model_spec, servable, spec.name, spec.signature_name)
    return response


def run_classify(
    servable: Servable, request: classification_pb2.ClassificationRequest, check_method: bool = False
) -> classification_pb2.ClassificationResponse:
    return _run_example_signature(
        servable, request, classification_pb2.ClassificationResponse(), CLASSIFY_METHOD, "classification",
        classification_outputs, fill_classification, check_method,
    )  # fmt: skip


def run_regress(
    servable: Servable, request: regression_pb2.RegressionRequest, check_method: bool = False
) -> regression_pb2.RegressionResponse:
    return _run_example_signature(
        servable, request, regression_pb2.RegressionResponse(), REGRESS_METHOD, "regression",
        regression_outputs, fill_regression, check_method,
    )  # fmt: skip


def run_multi_inference(
    servable: Servable, request: inference_pb2.MultiInferenceRequest, check_method: bool = False
) -> inference_pb2.MultiInferenceResponse:
    """Several classify/regress signatures of one model over the same examples, each signature
    run once (TF Serving's ``TensorFlowMultiInferenceRunner::Infer``)."""
    model_name = ""
    seen: set[str] = set()
    plan: list[tuple[inference_pb2.InferenceTask, Signature, list[str]]] = []
    for task in request.tasks:
        if not task.model_spec.name:
            raise invalid_argument("Found ModelSpec with an empty model name.")
        if model_name and task.model_spec.name != model_name:
            raise invalid_argument(
                "All ModelSpecs in a MultiInferenceRequest must access the same model name."
            )
        model_name = task.model_spec.name
        signature_name = task.model_spec.signature_name or DEFAULT_SIGNATURE
        if signature_name in seen:
            raise invalid_argument(f"Duplicate evaluation of signature: {signature_name}")
        seen.add(signature_name)
        signature = servable.signatures.get(signature_name)
        if signature is None:
            raise invalid_argument(f"Requested signature not found in model graph: {signature_name}")
        if task.method_name == CLASSIFY_METHOD:
            aliases = classification_outputs(signature, check_method)
        elif task.method_name == REGRESS_METHOD:
            aliases = regression_outputs(signature, check_method)
        else:
            raise ServingError(
                grpc.StatusCode.UNIMPLEMENTED, f"Unsupported signature method_name: {task.method_name}"
            )
        plan.append((task, signature, aliases))
    examples = serialized_examples(request.input)
    response = inference_pb2.MultiInferenceResponse()
    for task, signature, aliases in plan:
        outputs = _run_examples(signature, examples, aliases)
        result = response.results.add()
        if task.method_name == CLASSIFY_METHOD:
            fill_classification(outputs, len(examples), result.classification_result)
        else:
            fill_regression(outputs, len(examples), result.regression_result)
        _fill_spec(result.model_spec, servable, task.model_spec.name, task.model_spec.signature_name)
    return response
