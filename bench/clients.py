"""The two clients the benchmark times in-process: direct gRPC (the floor) and the gateway over HTTP.

Both do what a user of each path must do, no more: the direct client sends a `PredictRequest`
built once and turns every output tensor into a numpy array; the gateway client posts a prebuilt
multipart body on a keep-alive connection and parses the JSON (or reads the JPEG bytes). Neither
imports TensorFlow: the direct client uses the gateway's vendored protobuf messages.
"""

from __future__ import annotations

import http.client
import json
import math
import uuid
from dataclasses import dataclass

import grpc
import numpy as np

from web.serving.protos.tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
from web.serving.protos.tensorflow_serving.apis import (
    get_model_metadata_pb2,
    predict_pb2,
    prediction_service_pb2_grpc,
)

# Far above a 4000x3000x3 uint8 tensor (36 MB): the direct floor sends full-size pixels.
MAX_MESSAGE_BYTES = 256 * 1024 * 1024
CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
]
SIGNATURE = "serving_default"
DEADLINE_S = 120.0

_NUMPY_DTYPES: dict[int, tuple[type, str]] = {
    types_pb2.DT_FLOAT: (np.float32, "float_val"),
    types_pb2.DT_DOUBLE: (np.float64, "double_val"),
    types_pb2.DT_INT32: (np.int32, "int_val"),
    types_pb2.DT_UINT8: (np.uint8, "int_val"),
    types_pb2.DT_INT64: (np.int64, "int64_val"),
    types_pb2.DT_BOOL: (np.bool_, "bool_val"),
}


def tensor_to_ndarray(tensor: tensor_pb2.TensorProto) -> np.ndarray:
    """Numpy view of a TensorProto (`tensor_content` or the typed `*_val` field), like tf.make_ndarray."""
    shape = [dim.size for dim in tensor.tensor_shape.dim]
    if tensor.dtype == types_pb2.DT_STRING:
        return np.array(list(tensor.string_val), dtype=object).reshape(shape)
    dtype, field = _NUMPY_DTYPES[tensor.dtype]
    if tensor.tensor_content:
        return np.frombuffer(tensor.tensor_content, dtype=dtype).reshape(shape)
    values = np.asarray(getattr(tensor, field), dtype=dtype)
    count = math.prod(shape)
    if values.size == 1 and count != 1:  # TF's compact form for a tensor filled with one value
        return np.full(shape, values[0], dtype=dtype)
    return values.reshape(shape)


@dataclass(frozen=True)
class InputSpec:
    """The serving signature's only input: its name and dtype (looked up, not hard-coded)."""

    name: str
    dtype: int  # types_pb2.DataType


def single_input(model: str, metadata: get_model_metadata_pb2.GetModelMetadataResponse) -> InputSpec:
    """The serving signature's only input in a GetModelMetadata answer; ValueError when there are more."""
    signatures = get_model_metadata_pb2.SignatureDefMap()
    metadata.metadata["signature_def"].Unpack(signatures)
    inputs = signatures.signature_def[SIGNATURE].inputs
    if len(inputs) != 1:
        raise ValueError(f"{model}: expected one input in {SIGNATURE}, found {sorted(inputs)}")
    (name, info), = inputs.items()
    return InputSpec(name=name, dtype=info.dtype)


class DirectClient:
    """One long-lived channel to the model server, shared by every thread, as a real client would."""

    def __init__(self, address: str) -> None:
        self.channel = grpc.insecure_channel(address, options=CHANNEL_OPTIONS)
        self.stub = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)

    def close(self) -> None:
        self.channel.close()

    def input_spec(self, model: str) -> InputSpec:
        """The model's input from GetModelMetadata, so the floor works for any one-input detector."""
        request = get_model_metadata_pb2.GetModelMetadataRequest()
        request.model_spec.name = model
        request.metadata_field.append("signature_def")
        return single_input(model, self.stub.GetModelMetadata(request, timeout=DEADLINE_S))

    def build_request(self, model: str, spec: InputSpec, jpeg: bytes,
                      pixels: np.ndarray) -> predict_pb2.PredictRequest:
        """The prebuilt request: encoded bytes for a string input, raw uint8 pixels otherwise."""
        request = predict_pb2.PredictRequest()
        request.model_spec.name = model
        request.model_spec.signature_name = SIGNATURE
        tensor = request.inputs[spec.name]
        if spec.dtype == types_pb2.DT_STRING:
            tensor.dtype = types_pb2.DT_STRING
            tensor.tensor_shape.dim.append(tensor_shape_pb2.TensorShapeProto.Dim(size=1))
            tensor.string_val.append(jpeg)
        elif spec.dtype == types_pb2.DT_UINT8:
            tensor.dtype = types_pb2.DT_UINT8
            for size in (1, *pixels.shape):
                tensor.tensor_shape.dim.append(tensor_shape_pb2.TensorShapeProto.Dim(size=int(size)))
            tensor.tensor_content = np.ascontiguousarray(pixels, dtype=np.uint8).tobytes()
        else:
            raise ValueError(f"{model}: input {spec.name} has dtype {types_pb2.DataType.Name(spec.dtype)}; "
                             "the benchmark knows uint8 pixels and encoded strings")
        return request

    def predict(self, request: predict_pb2.PredictRequest) -> dict[str, np.ndarray]:
        """One Predict call, every output read into numpy (what any user of the answer needs)."""
        response = self.stub.Predict(request, timeout=DEADLINE_S)
        return {key: tensor_to_ndarray(value) for key, value in response.outputs.items()}


class HTTPError(RuntimeError):
    """The gateway answered something other than 200."""


def multipart_body(jpeg: bytes, filename: str = "image.jpg") -> tuple[bytes, str]:
    """A multipart/form-data body with one `image` part, and its Content-Type (built once per workload)."""
    boundary = uuid.uuid4().hex
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"{filename}\"\r\n"
            "Content-Type: image/jpeg\r\n\r\n").encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    return head + jpeg + tail, f"multipart/form-data; boundary={boundary}"


class GatewayClient:
    """One keep-alive HTTP/1.1 connection to the gateway (one per thread: http.client is not thread-safe)."""

    def __init__(self, host: str, port: int, timeout: float = DEADLINE_S) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self.conn: http.client.HTTPConnection | None = None

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def _exchange(self, method: str, path: str, body: bytes | None,
                  headers: dict[str, str]) -> tuple[int, bytes, http.client.HTTPMessage]:
        if self.conn is None:
            self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        self.conn.request(method, path, body=body, headers=headers)
        response = self.conn.getresponse()
        data = response.read()
        if response.will_close:
            self.close()
        return response.status, data, response.headers

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, bytes, http.client.HTTPMessage]:
        """Status, body and headers; reconnects once when the server closed an idle keep-alive connection."""
        headers = headers or {}
        reused = self.conn is not None
        try:
            return self._exchange(method, path, body, headers)
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
            self.close()
            if not reused:
                raise
            return self._exchange(method, path, body, headers)

    def post_json(self, path: str, body: bytes, content_type: str) -> dict:
        """POST a prebuilt multipart body, parse the JSON answer (what a REST user does)."""
        status, data, _ = self.request("POST", path, body, {"Content-Type": content_type})
        if status != 200:
            raise HTTPError(f"POST {path}: HTTP {status}: {data[:300]!r}")
        return json.loads(data)

    def post_bytes(self, path: str, body: bytes, content_type: str) -> tuple[bytes, dict[str, float] | None]:
        """POST a prebuilt multipart body and read the whole picture back (not decoded), with the
        per-stage timings of a `Server-Timing` header when the gateway sends one."""
        status, data, headers = self.request("POST", path, body, {"Content-Type": content_type})
        if status != 200:
            raise HTTPError(f"POST {path}: HTTP {status}: {data[:300]!r}")
        return data, parse_server_timing(headers.get("Server-Timing"))


def parse_server_timing(header: str | None) -> dict[str, float] | None:
    """`decode;dur=1.2, predict;dur=8.4` -> {"decode": 1.2, "predict": 8.4} (W3C Server-Timing)."""
    if not header:
        return None
    timings = {}
    for metric in header.split(","):
        name, *params = (part.strip() for part in metric.split(";"))
        for param in params:
            key, _, value = param.partition("=")
            if key.strip() == "dur" and name:
                try:
                    timings[name] = float(value.strip().strip('"'))
                except ValueError:
                    pass
    return timings or None
