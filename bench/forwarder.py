"""The floor for the gateway's own cost: a minimal WSGI forwarder (no Flask) over the same channel.

``gunicorn bench.forwarder:app`` with the gateway's gunicorn flags (bench.stack.GatewaySettings)
serves ``POST /api/v1/models/<model>/predict``. Per request it reads the body (a raw
``image/jpeg`` body, or the first part of a multipart upload, found with two ``bytes.find``),
builds a PredictRequest (the JPEG bytes as ``string_val`` [1] for a DT_STRING input; for uint8
pixel inputs the picture decoded by simplejpeg into a [1, H, W, 3] ``tensor_content``), calls
Predict through the gateway's own ``web.serving.client.ServingClient`` (same channel options,
one per worker, created on the first request after fork) and answers a small JSON: the output
names and shapes. The model's input name and dtype come from GetModelMetadata once per model.

Nothing else: no options, no validation beyond what it needs, no post-processing, no metrics of
its own. What it costs per request is what any Python WSGI app under this gunicorn and this gRPC
channel pays; the gateway's cost above it is what its features and framework add. It never
imports TensorFlow or uses Flask (importing `web.serving.client` imports the `web` package, whose
``__init__`` imports Flask: loaded, never called; /healthz says which are loaded).
"""

from __future__ import annotations

import http
import json
import os
import sys
import threading
from collections.abc import Callable, Iterable

import simplejpeg

from bench.clients import SIGNATURE, single_input
from web.errors import GatewayError
from web.serving.client import ServingClient
from web.serving.protos.tensorflow.core.framework import tensor_shape_pb2, types_pb2
from web.serving.protos.tensorflow_serving.apis import predict_pb2

PREFIX = "/api/v1/models/"
SUFFIX = "/predict"
DEFAULT_TIMEOUT_S = 30.0

_lock = threading.Lock()
_client: ServingClient | None = None
_client_pid: int | None = None
_inputs: dict[str, tuple[str, int]] = {}


class BadUpload(ValueError):
    """The body holds no picture the forwarder can find."""


def client() -> ServingClient:
    """This worker's client, created on first use (after gunicorn's fork)."""
    global _client, _client_pid
    pid = os.getpid()
    if _client is None or _client_pid != pid:
        with _lock:
            if _client is None or _client_pid != pid:
                address = os.environ.get("TF_SERVING_ADDRESS", "localhost:8500")
                timeout = float(os.environ.get("GRPC_TIMEOUT_S") or DEFAULT_TIMEOUT_S)
                _client, _client_pid = ServingClient(address, timeout), pid
                _inputs.clear()
    return _client


def input_spec(model: str) -> tuple[str, int]:
    """(input name, dtype) of the model's serving signature, looked up once."""
    spec = _inputs.get(model)
    if spec is None:
        try:
            found = single_input(model, client().get_model_metadata(model))
        except ValueError as exc:
            raise BadUpload(str(exc)) from None
        spec = _inputs[model] = (found.name, found.dtype)
    return spec


def picture(body: bytes, content_type: str) -> bytes:
    """The uploaded file: the whole body for image/*, else the first multipart part's content."""
    if content_type.startswith("image/"):
        return body
    if content_type.startswith("multipart/form-data"):
        _, _, boundary = content_type.partition("boundary=")
        delimiter = b"--" + boundary.strip().strip('"').encode("latin-1")
        first = body.find(delimiter)
        start = body.find(b"\r\n\r\n", first) + 4 if first >= 0 else -1
        end = body.find(b"\r\n" + delimiter, start) if start >= 4 else -1
        if end > start:
            return body[start:end]
    raise BadUpload("send the picture as an image/* body or as a multipart/form-data part")


def build_request(model: str, data: bytes) -> predict_pb2.PredictRequest:
    name, dtype = input_spec(model)
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.model_spec.signature_name = SIGNATURE
    tensor = request.inputs[name]
    tensor.dtype = dtype
    dims = tensor.tensor_shape.dim
    if dtype == types_pb2.DT_STRING:
        dims.append(tensor_shape_pb2.TensorShapeProto.Dim(size=1))
        tensor.string_val.append(data)
    elif dtype == types_pb2.DT_UINT8:
        try:
            pixels = simplejpeg.decode_jpeg(data, colorspace="RGB")
        except ValueError as exc:
            raise BadUpload(f"not a JPEG: {exc}") from None
        for size in (1, *pixels.shape):
            dims.append(tensor_shape_pb2.TensorShapeProto.Dim(size=int(size)))
        tensor.tensor_content = pixels.tobytes()
    else:
        raise BadUpload(f"{model}: input dtype {types_pb2.DataType.Name(dtype)} is not supported here")
    return request


def _answer(start_response: Callable, status: int, payload: dict) -> Iterable[bytes]:
    body = json.dumps(payload).encode()
    start_response(f"{status} {http.HTTPStatus(status).phrase}",
                   [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


def app(environ: dict, start_response: Callable) -> Iterable[bytes]:
    method, path = environ["REQUEST_METHOD"], environ.get("PATH_INFO", "")
    if method == "GET" and path in ("/healthz", "/readyz"):
        return _answer(start_response, 200, {"status": "ok", "flask_loaded": "flask" in sys.modules,
                                              "tensorflow_loaded": "tensorflow" in sys.modules})
    if not (method == "POST" and path.startswith(PREFIX) and path.endswith(SUFFIX)):
        return _answer(start_response, 404, {"error": f"no route {method} {path}"})
    model = path[len(PREFIX):-len(SUFFIX)]
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length > 0 else b""
        request = build_request(model, picture(body, environ.get("CONTENT_TYPE", "")))
        response = client().predict(request)
    except BadUpload as exc:
        return _answer(start_response, 400, {"error": str(exc)})
    except GatewayError as exc:
        return _answer(start_response, exc.status, {"error": exc.message})
    outputs = {key: [d.size for d in value.tensor_shape.dim] for key, value in response.outputs.items()}
    return _answer(start_response, 200, {"model": model, "outputs": outputs})
