"""Building a `PredictRequest` and reading its answer: the protobuf side of a prediction.

The pipeline hands over plain values (the model's name, signature, version, which outputs to send
back, and one input per picture: encoded bytes or a numpy array) and gets numpy arrays back, so
no module above `web.serving` sees a protobuf type. Conversion problems raise
`TensorConversionError`; the caller decides whose fault they are.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from web.serving.protos.tensorflow_serving.apis import predict_pb2
from web.serving.tensors import TensorConversionError, ndarray_to_proto, proto_to_ndarray, strings_to_proto

__all__ = ["PredictAnswer", "TensorConversionError", "predict_request", "read_answer"]


def predict_request(
    model: str,
    signature: str,
    version: int | None,
    outputs: Sequence[str],
    input_key: str,
    values: Sequence[bytes] | Sequence[np.ndarray],
    *,
    encoded: bool,
    batched: bool,
) -> predict_pb2.PredictRequest:
    """One Predict call for `values` (one per picture) in input `input_key`: a string tensor of the
    encoded pictures, or their arrays; `batched` when the input has a batch dimension (arrays are then
    stacked, or given a leading axis of 1). `version` None or 0 asks for the latest."""
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.model_spec.signature_name = signature
    if version:
        request.model_spec.version.value = version
    request.output_filter.extend(outputs)
    tensor = request.inputs[input_key]  # filled in place: a 640x480 input is 0.9 MB to copy
    if encoded:
        strings_to_proto(list(values), (len(values),) if batched else (), out=tensor)
    elif not batched:
        ndarray_to_proto(values[0], out=tensor)
    elif len(values) == 1:
        ndarray_to_proto(values[0][np.newaxis], out=tensor)
    else:
        ndarray_to_proto(np.stack(values), out=tensor)
    return request


@dataclass(frozen=True)
class PredictAnswer:
    """What the model server answered: the version that ran (0 when it did not say) and the outputs."""

    version: int
    outputs: dict[str, np.ndarray]


def read_answer(response: predict_pb2.PredictResponse) -> PredictAnswer:
    """The response's outputs as numpy arrays (raises TensorConversionError for an unreadable one)."""
    outputs = {key: proto_to_ndarray(proto) for key, proto in response.outputs.items()}
    return PredictAnswer(int(response.model_spec.version.value), outputs)
