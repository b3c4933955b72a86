"""``Predict`` on one servable: TF Serving's request checks, the call, the response.

The order of checks and the status codes follow TF Serving's ``predict_util.cc``: an unknown
signature is FAILED_PRECONDITION; a wrong number of inputs, an unknown input name, a wrong dtype,
or a bad ``output_filter`` is INVALID_ARGUMENT, and every such message names the inputs the
signature expects. Shapes are the graph's business, as in TF Serving: what its ops accept runs,
what they refuse comes back with TensorFlow's own status and message; the exceptions, requests
that would reach a kernel instead of the graph's checks (impossible sizes, pictures at the wrong
rank), are in ``input_checks``. Warmup replays go through
the same function, as in TF Serving.
"""

from __future__ import annotations

import grpc
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2

from tf_server.errors import ServingError, failed_precondition, invalid_argument
from tf_server.input_checks import check_request_tensor, kernel_error_code
from tf_server.servable import DEFAULT_SIGNATURE, Servable, Signature
from tf_server.tensors import (
    check_dtype,
    datatype_of,
    describe_inputs,
    dtype_name,
    encode_as_proto_field,
    format_dims,
    to_ndarray,
)

# TensorFlow's error codes use gRPC's numbers.
_GRPC_CODES = {code.value[0]: code for code in grpc.StatusCode}


def _join(names: object) -> str:
    return ",".join(sorted(names))  # type: ignore[arg-type]


def _signature(servable: Servable, name: str) -> Signature:
    signature = servable.signatures.get(name)
    if signature is None:
        raise failed_precondition(
            f'Serving signature key "{name}" not found. Signatures of {servable.name} version '
            f"{servable.version}: {{{_join(servable.signatures)}}}"
        )
    return signature


def _feeds(signature: Signature, request: predict_pb2.PredictRequest) -> dict[str, object]:
    expected = signature.inputs
    sent = request.inputs
    defaults = signature.definition.defaults
    if len(sent) > len(expected) or (len(sent) < len(expected) and not defaults):
        extra = set(sent) - set(expected)
        missing = set(expected) - set(sent)
        raise invalid_argument(
            f"input size does not match signature: {len(sent)}!={len(expected)} len({{{_join(sent)}}}) != "
            f"len({{{_join(expected)}}}). Sent extra: {{{_join(extra)}}}. Missing but required: "
            f"{{{_join(missing)}}}. Signature '{signature.name}' expects inputs {describe_inputs(expected)}"
        )
    # TensorFlow's saved_model::GetInputValues (TF Serving 2.14+): walk the signature's inputs.
    feeds: dict[str, object] = {}
    used: list[str] = []
    for position, alias in enumerate(signature.input_order):
        proto = sent.get(alias)
        if proto is None:
            proto = defaults.get(alias)
            if proto is None:
                raise invalid_argument(
                    f"Signature input alias: {alias}(feed name: {expected[alias].name}) not found in request "
                    f"and no default value provided. Inputs expected to be in the request {{{_join(sent)}}}, "
                    f"or default input alias set: {_join(defaults)}. Signature '{signature.name}' expects "
                    f"inputs {describe_inputs(expected)}"
                )
        else:
            used.append(alias)
        check_dtype(alias, position, proto, expected[alias], signature.name, expected)
        check_request_tensor(alias, proto, expected[alias], signature.name, expected)
        feeds[alias] = to_ndarray(alias, proto)
    if sent and len(used) != len(sent):
        raise invalid_argument(
            f"Inputs contains invalid name. Used request inputs: {_join(used)}, request input: {_join(sent)}"
        )
    return feeds


def _output_names(signature: Signature, request: predict_pb2.PredictRequest) -> list[str]:
    if not request.output_filter:
        return list(signature.outputs)
    names: list[str] = []
    for alias in request.output_filter:
        if alias not in signature.outputs:
            raise invalid_argument(
                f"output tensor alias not found in signature: {alias} Outputs expected to be in the set "
                f"{{{_join(signature.outputs)}}}."
            )
        if alias in names:
            raise invalid_argument(f"duplicate output tensor alias: {alias}")
        names.append(alias)
    return names


def run_signature(signature: Signature, feeds: dict[str, object], output_names: list[str]) -> dict:
    """Run the graph; TensorFlow's errors become the gRPC status TF Serving would send."""
    try:
        return signature.run(feeds, output_names)
    except tf.errors.OpError as error:
        code = _GRPC_CODES.get(error.error_code, grpc.StatusCode.UNKNOWN)
        raise ServingError(kernel_error_code(code, error.message), error.message) from None


def run_predict(servable: Servable, request: predict_pb2.PredictRequest) -> predict_pb2.PredictResponse:
    """Run the requested signature of ``servable``; raise ServingError for bad requests."""
    signature_name = request.model_spec.signature_name or DEFAULT_SIGNATURE
    signature = _signature(servable, signature_name)
    feeds = _feeds(signature, request)
    output_names = _output_names(signature, request)
    try:
        outputs = run_signature(signature, feeds, output_names)
    except ServingError as error:
        if error.code != grpc.StatusCode.INVALID_ARGUMENT:
            raise
        # TensorFlow names the node that refused, not the input: say what was sent and expected.
        sent = ", ".join(
            f"{alias}: {dtype_name(datatype_of(value))} {format_dims(value.shape)}"  # type: ignore[attr-defined]
            for alias, value in sorted(feeds.items())
        )
        raise ServingError(
            error.code,
            f"{error.message}\nInputs sent: {{{sent}}}. Signature '{signature_name}' expects inputs "
            f"{describe_inputs(signature.inputs)}",
        ) from None
    response = predict_pb2.PredictResponse()
    spec = response.model_spec
    spec.name = request.model_spec.name or servable.name
    spec.version.value = servable.version
    spec.signature_name = signature_name
    for alias in output_names:
        response.outputs[alias].MergeFromString(encode_as_proto_field(outputs[alias]))
    return response
