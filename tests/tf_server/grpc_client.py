"""A minimal TF Serving client for the tests, written only against the vendored official protos.

Nothing here knows it is talking to the local server: the same calls work against
``tensorflow_model_server``. Tensors are decoded from whichever form the server used
(``tensor_content`` or the typed ``*_val`` fields), as a client of real TF Serving must.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import grpc
import numpy as np

from web.serving.protos.tensorflow.core.framework import tensor_pb2, types_pb2
from web.serving.protos.tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

MAX_MESSAGE_BYTES = 256 * 1024 * 1024
DEADLINE_S = 60.0

NUMPY_DTYPES = {
    types_pb2.DT_FLOAT: np.float32,
    types_pb2.DT_DOUBLE: np.float64,
    types_pb2.DT_INT32: np.int32,
    types_pb2.DT_UINT8: np.uint8,
    types_pb2.DT_INT64: np.int64,
    types_pb2.DT_BOOL: np.bool_,
    types_pb2.DT_STRING: object,
}
VALUE_FIELDS = {
    types_pb2.DT_FLOAT: "float_val",
    types_pb2.DT_DOUBLE: "double_val",
    types_pb2.DT_INT32: "int_val",
    types_pb2.DT_UINT8: "int_val",
    types_pb2.DT_INT64: "int64_val",
    types_pb2.DT_BOOL: "bool_val",
    types_pb2.DT_STRING: "string_val",
}
DATA_TYPES = {
    np.dtype(np.float32): types_pb2.DT_FLOAT,
    np.dtype(np.uint8): types_pb2.DT_UINT8,
    np.dtype(np.int32): types_pb2.DT_INT32,
    np.dtype(np.int64): types_pb2.DT_INT64,
}


def tensor_proto(array: np.ndarray, typed_fields: bool = False) -> tensor_pb2.TensorProto:
    """A TensorProto for a numeric array, in ``tensor_content`` or (``typed_fields``) the *_val fields."""
    proto = tensor_pb2.TensorProto(dtype=DATA_TYPES[array.dtype])
    for size in array.shape:
        proto.tensor_shape.dim.add(size=size)
    if typed_fields:
        getattr(proto, VALUE_FIELDS[proto.dtype]).extend(array.ravel().tolist())
    else:
        proto.tensor_content = np.ascontiguousarray(array).tobytes()
    return proto


def string_tensor_proto(values: list[bytes]) -> tensor_pb2.TensorProto:
    proto = tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING)
    proto.tensor_shape.dim.add(size=len(values))
    proto.string_val.extend(values)
    return proto


def to_ndarray(proto: tensor_pb2.TensorProto) -> np.ndarray:
    shape = [dim.size for dim in proto.tensor_shape.dim]
    dtype = NUMPY_DTYPES[proto.dtype]
    if proto.tensor_content:
        return np.frombuffer(proto.tensor_content, dtype=dtype).reshape(shape)
    values = np.array(list(getattr(proto, VALUE_FIELDS[proto.dtype])), dtype=dtype)
    count = int(np.prod(shape)) if shape else 1
    if values.size == 1 and count != 1:
        values = np.full(count, values[0], dtype=dtype)  # TF's "one value fills the tensor" rule
    return values.reshape(shape)


@dataclass
class ServingClient:
    """Stubs of both services on one channel."""

    channel: grpc.Channel

    def __post_init__(self) -> None:
        self.prediction = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)
        self.models = model_service_pb2_grpc.ModelServiceStub(self.channel)

    def predict(
        self,
        model: str,
        inputs: dict[str, tensor_pb2.TensorProto],
        version: int | None = None,
        label: str | None = None,
        signature: str = "",
        output_filter: tuple[str, ...] = (),
        timeout: float = DEADLINE_S,
    ) -> predict_pb2.PredictResponse:
        request = predict_pb2.PredictRequest(output_filter=list(output_filter))
        request.model_spec.name = model
        request.model_spec.signature_name = signature
        if version is not None:
            request.model_spec.version.value = version
        if label is not None:
            request.model_spec.version_label = label
        for name, proto in inputs.items():
            request.inputs[name].CopyFrom(proto)
        return self.prediction.Predict(request, timeout=timeout)

    def metadata(
        self, model: str, version: int | None = None
    ) -> get_model_metadata_pb2.GetModelMetadataResponse:
        request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
        request.model_spec.name = model
        if version is not None:
            request.model_spec.version.value = version
        return self.prediction.GetModelMetadata(request, timeout=DEADLINE_S)

    def signature_defs(
        self, model: str, version: int | None = None
    ) -> get_model_metadata_pb2.SignatureDefMap:
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        assert self.metadata(model, version).metadata["signature_def"].Unpack(signature_map)
        return signature_map

    def status(self, model: str, version: int | None = None) -> dict[int, str]:
        """{version: state name} from GetModelStatus."""
        return {
            v: get_model_status_pb2.ModelVersionStatus.State.Name(s.state)
            for v, s in self.status_entries(model, version).items()
        }

    def status_entries(self, model: str, version: int | None = None) -> dict[int, object]:
        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = model
        if version is not None:
            request.model_spec.version.value = version
        response = self.models.GetModelStatus(request, timeout=DEADLINE_S)
        return {entry.version: entry for entry in response.model_version_status}


@contextmanager
def serving_client(address: str) -> Iterator[ServingClient]:
    options = [
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ]
    with grpc.insecure_channel(address, options=options) as channel:
        yield ServingClient(channel)


def image_input(height: int = 24, width: int = 32) -> dict[str, tensor_pb2.TensorProto]:
    """``input_tensor`` for the tiny test model: a uint8 [1, H, W, 3] image."""
    return {"input_tensor": tensor_proto(np.zeros((1, height, width, 3), np.uint8))}


def rpc_error(call: Callable[[], object]) -> grpc.RpcError:
    """The error a call fails with (the test fails if it succeeds)."""
    try:
        call()
    except grpc.RpcError as error:
        return error
    raise AssertionError("expected the call to fail")


def wait_for(condition: Callable[[], bool], timeout: float = 90.0, interval: float = 0.25) -> None:
    """Poll ``condition`` until true; fail after ``timeout`` seconds (bounded, no timing assertions)."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except grpc.RpcError as error:
            last_error = error
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s (last error: {last_error})")
