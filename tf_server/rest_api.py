"""TF Serving's HTTP/REST API (``--rest_api_port``) over the same ``ServingCore`` as gRPC.

Routes, as ``http_rest_api_handler.cc``/``http_rest_api_util.cc`` match them (case-insensitively):

* ``GET /v1/models/<name>[/versions/<v>|/labels/<l>]``: GetModelStatus, as proto3 JSON
  (``{"model_version_status": [{"version": "1", "state": "AVAILABLE", "status": {...}}]}``);
* ``GET .../metadata``: GetModelMetadata (``model_spec`` + ``metadata.signature_def``);
* ``POST /v1/models/<name>[/versions/<v>|/labels/<l>]:(predict|classify|regress)``.

The body is decoded into the same protobuf request a gRPC client sends (``tf_server.rest_json``),
the core answers it, and the response is encoded back to JSON. Errors are ``{"error": "<message>"}``
with TF Serving's HTTP status for the status code (INVALID_ARGUMENT and FAILED_PRECONDITION 400,
NOT_FOUND 404, UNIMPLEMENTED 501, DEADLINE_EXCEEDED 504, the rest 500 ...). As upstream: any other
path under ``/v1/`` is 400 ``Malformed request: <METHOD> <path>``; a path outside ``/v1/`` is
libevent's HTML 404; ``OPTIONS`` answers a CORS preflight (200 when the ``Origin`` is http(s)),
and ``--rest_api_enable_cors_support`` adds ``Access-Control-Allow-*`` headers to every answer.
Request bodies sent with ``Content-Encoding: gzip`` are uncompressed, as evhttp does. With
monitoring enabled the Prometheus page is served at its configured path.

Two layers: ``RestHandler`` is TF Serving's ``HttpRestApiHandler`` (a request under ``/v1/`` to an
``Answer``, no HTTP), and ``RestApi`` is the application the HTTP server serves (metrics page,
CORS, gzip, the model-run pool). The HTTP/1.1 server itself, with its limits (connections, read
deadlines, body size, graceful stop), is ``tf_server.http_server``.

The model runs of Predict, Classify and Regress go to a pool of ``--rest_api_num_threads``
threads, and ``--rest_api_timeout_in_ms`` bounds them as TF Serving's session-run deadline does:
past it the client gets 504 ``Timed out waiting for notification`` (a run already started cannot
be interrupted from Python; it finishes unseen). A request that fails unexpectedly is a 500 with a
one-line message (logged once, its traceback at debug level).
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

import grpc
from google.protobuf import json_format
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    predict_pb2,
    regression_pb2,
)

from tf_server.errors import ServingError, describe_unexpected, invalid_argument, log_unexpected
from tf_server.http_server import (
    MAX_BODY_BYTES,
    MAX_CONNECTIONS,
    REQUEST_READ_S,
    Response,
    RunningServer,
    gunzip,
    libevent_error,
    serve,
)
from tf_server.monitoring import ServingMetrics
from tf_server.rest_json.examples import (
    fill_examples_request,
    make_json_from_classification,
    make_json_from_regression,
)
from tf_server.rest_json.predict import fill_predict_request, make_json_from_tensors
from tf_server.rest_json.writer import encode, make_json_from_error
from tf_server.servable import DEFAULT_SIGNATURE, Servable
from tf_server.serving_core import ServingCore

ENTRYPOINT = "REST"
SIGNATURE_DEF = "signature_def"
TIMEOUT_MESSAGE = "Timed out waiting for notification"  # DirectSession's deadline error
_MAX_INT64 = 2**63 - 1

_API_PATH = re.compile(r"/v1/.*", re.IGNORECASE)  # kHTTPRestApiHandlerPathRegex
_PREDICTION_PATH = re.compile(
    r"/v1/models/([^/:]+)(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?:(classify|regress|predict)",
    re.IGNORECASE | re.ASCII,
)
_STATUS_PATH = re.compile(
    r"/v1/models(?:/([^/:]+))?(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?(?:/(metadata))?",
    re.IGNORECASE | re.ASCII,
)
_CORS_ORIGIN = re.compile(r"https?://")
_ALLOWED_METHODS = frozenset({"GET", "POST", "HEAD", "PUT", "DELETE", "OPTIONS", "PATCH"})  # evhttp's

# ToHTTPStatusCode in http_server.cc.
_HTTP_STATUS = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
    grpc.StatusCode.UNAUTHENTICATED: 401,
}
_JSON = [("Content-Type", "application/json")]
_CORS = [
    ("Access-Control-Allow-Origin", "*"),
    ("Access-Control-Allow-Methods", "POST, GET"),
    ("Access-Control-Allow-Headers", "Content-Type"),
]


def http_status(code: grpc.StatusCode) -> int:
    return _HTTP_STATUS.get(code, 500)


@dataclass
class Answer:
    """What ``HttpRestApiHandler::ProcessRequest`` produces: status, headers, body, and the model
    name and method the metrics are labelled with."""

    code: grpc.StatusCode = grpc.StatusCode.OK
    body: str = ""
    headers: list[tuple[str, str]] = field(default_factory=list)
    model: str = ""
    method: str = ""


@dataclass(frozen=True)
class _Route:
    model: str
    version: int | None
    label: str | None
    method: str  # predict/classify/regress as written in the path, for POST
    subresource: str  # "metadata" as written, for GET


# ------------------------------------------------------------------------------ proto3 JSON


def _proto_json(message: Any, preserve_names: bool) -> str:
    """``MessageToJsonString`` with add_whitespace and always_print_fields_with_no_presence."""
    text = json_format.MessageToJson(
        message,
        preserving_proto_field_name=preserve_names,
        indent=1,
        ensure_ascii=False,
        always_print_fields_with_no_presence=True,
    )
    return text + "\n"


def status_json(response: get_model_status_pb2.GetModelStatusResponse) -> str:
    return _proto_json(response, preserve_names=False)  # the fields' json_name are snake_case


def metadata_json(response: get_model_metadata_pb2.GetModelMetadataResponse) -> str:
    """TF Serving's hand-assembled metadata object (``ToJsonString`` in http_rest_api_util.cc)."""
    signatures = get_model_metadata_pb2.SignatureDefMap()
    if SIGNATURE_DEF not in response.metadata:
        raise ServingError(
            grpc.StatusCode.INTERNAL,
            "Failed to find 'signature_def' key in the GetModelMetadataResponse metadata map.",
        )
    if not response.metadata[SIGNATURE_DEF].Unpack(signatures):
        raise ServingError(grpc.StatusCode.INTERNAL, "Failed to unpack 'Any' object to 'SignatureDefMap'.")
    return (
        "{\n"
        f'"model_spec":{_proto_json(response.model_spec, True)},\n'
        f'"metadata": {{"signature_def": {_proto_json(signatures, True)}}}\n'
        "}\n"
    )


# ------------------------------------------------------------------------------ the handler


class RestHandler:
    """``HttpRestApiHandler``: one request under ``/v1/`` to an Answer (no HTTP here)."""

    def __init__(self, core: ServingCore, run: Callable[[Callable[[], Any]], Any] | None = None) -> None:
        self._core = core
        # Runs the core call of Predict/Classify/Regress (where the HTTP layer puts its pool and
        # deadline, as TF Serving's deadline is on the session run).
        self._run = run or (lambda work: work())

    def process(self, http_method: str, path: str, body: bytes) -> Answer:
        answer = Answer(headers=list(_JSON))
        try:
            route = self._parse(http_method, path, answer)
        except ServingError as error:  # TF_RETURN_IF_ERROR(ParseModelInfo): no JSON body
            answer.code = error.code
            return answer
        try:
            answer.body = self._dispatch(http_method, path, route, body)
        except ServingError as error:
            answer.code = error.code
            answer.body = make_json_from_error(error.message)
        except Exception as error:  # a bug, not a request error: still answer in TF Serving's shape
            log_unexpected(error, "REST request %s %s failed", http_method, path[:200])
            answer.code = grpc.StatusCode.UNKNOWN
            answer.body = make_json_from_error(describe_unexpected(error))
        return answer

    @staticmethod
    def _parse(http_method: str, path: str, answer: Answer) -> _Route | None:
        """``ParseModelInfo``: None when the path does not match the method's pattern."""
        match = None
        if http_method == "POST":
            match = _PREDICTION_PATH.fullmatch(path)
        elif http_method == "GET":
            match = _STATUS_PATH.fullmatch(path)
        if match is None:
            return None
        name, version_text, label, last = match.groups()
        model = unquote(name) if name else ""
        answer.model = model
        version = None
        if version_text:
            version = int(version_text)
            if version > _MAX_INT64:
                raise invalid_argument(f"Failed to convert version: {version_text} to numeric.")
        if http_method == "POST":
            answer.method = last
        return _Route(
            model=model,
            version=version,
            label=unquote(label) if label else None,
            method=last if http_method == "POST" else "",
            subresource=(last or "") if http_method == "GET" else "",
        )

    def _dispatch(self, http_method: str, path: str, route: _Route | None, body: bytes) -> str:
        if route is not None and http_method == "POST":
            if route.method == "classify":
                return self._classify(route, body)
            if route.method == "regress":
                return self._regress(route, body)
            if route.method == "predict":
                return self._predict(route, body)
        elif route is not None and http_method == "GET":
            if not route.model:
                raise invalid_argument("Missing model name in request.")
            if route.subresource == "metadata":
                return self._metadata(route)
            return self._status(route)
        raise invalid_argument(f"Malformed request: {http_method} {path}")

    @staticmethod
    def _fill_spec(route: _Route, spec: Any) -> None:
        spec.name = route.model
        if route.version is not None:
            spec.version.value = route.version
        if route.label is not None:
            spec.version_label = route.label

    @staticmethod
    def _input_infos(servable: Servable, signature_name: str) -> Any:
        """``GetInfoMap``: the signature's inputs, from the servable the request names."""
        name = signature_name or DEFAULT_SIGNATURE
        signature = servable.signatures.get(name)
        if signature is not None:
            return signature.inputs
        # Listed but not runnable here (composite tensors): TF Serving finds it in the MetaGraphDef.
        listed = get_model_metadata_pb2.SignatureDefMap()
        servable.signature_metadata.Unpack(listed)
        if name in listed.signature_def:
            return listed.signature_def[name].inputs
        raise invalid_argument(f'Serving signature name: "{name}" not found in signature def')

    def _predict(self, route: _Route, body: bytes) -> str:
        request = predict_pb2.PredictRequest()
        self._fill_spec(route, request.model_spec)
        resolved: list[Servable] = []  # resolved once: the JSON is decoded for the version that runs

        def input_infos(signature: str) -> Any:
            if not resolved:
                resolved.append(self._core.resolve(request))
            return self._input_infos(resolved[0], signature)

        request_format = fill_predict_request(body, input_infos, request)
        servable = resolved[0] if resolved else None
        response = self._run(lambda: self._core.predict(request, ENTRYPOINT, servable))
        return make_json_from_tensors(response.outputs, request_format)

    def _classify(self, route: _Route, body: bytes) -> str:
        request = classification_pb2.ClassificationRequest()
        self._fill_spec(route, request.model_spec)
        fill_examples_request(body, request)
        response = self._run(lambda: self._core.classify(request, ENTRYPOINT))
        return make_json_from_classification(response.result)

    def _regress(self, route: _Route, body: bytes) -> str:
        request = regression_pb2.RegressionRequest()
        self._fill_spec(route, request.model_spec)
        fill_examples_request(body, request)
        response = self._run(lambda: self._core.regress(request, ENTRYPOINT))
        return make_json_from_regression(response.result)

    def _status(self, route: _Route) -> str:
        request = get_model_status_pb2.GetModelStatusRequest()
        self._fill_spec(route, request.model_spec)
        return status_json(self._core.status(request, ENTRYPOINT))

    def _metadata(self, route: _Route) -> str:
        request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=[SIGNATURE_DEF])
        self._fill_spec(route, request.model_spec)
        return metadata_json(self._core.metadata(request, ENTRYPOINT))


# ------------------------------------------------------------------------------ the application


class RestApi:
    """The REST API as ``tf_server.http_server``'s application: serves the metrics page, the
    ``/v1/`` API, and libevent's 404 for everything else."""

    def __init__(
        self,
        core: ServingCore,
        *,
        num_threads: int = 0,
        timeout_ms: int = 30_000,
        cors: bool = False,
        metrics: ServingMetrics | None = None,
    ) -> None:
        self._handler = RestHandler(core, self._run_model)
        if metrics is not None:  # a model_name label only for configured models (see monitoring)
            metrics.bind_models(lambda name: name in core.manager.model_names())
        self._cors = cors
        self._metrics = metrics
        self._timeout_s = timeout_ms / 1000 if timeout_ms > 0 else None
        workers = num_threads if num_threads > 0 else 4 * (os.cpu_count() or 1)
        self._pool = futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="rest")

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)  # after RunningServer.stop's grace period

    def refusal(self, status: int, message: str) -> Response:
        """The HTTP server's own refusals (413, 503), in TF Serving's ``{"error": ...}`` shape."""
        return status, list(_JSON), encode(make_json_from_error(message))

    def _run_model(self, work: Callable[[], Any]) -> Any:
        """A Predict/Classify/Regress core call, on the pool of ``--rest_api_num_threads``; past
        ``--rest_api_timeout_in_ms`` (time waiting for a thread included) the answer is
        DEADLINE_EXCEEDED. A call still queued is dropped; a running one finishes unseen."""
        try:
            future = self._pool.submit(work)
        except RuntimeError:  # the pool is closed: the server is stopping
            raise ServingError(grpc.StatusCode.UNAVAILABLE, "The server is shutting down") from None
        try:
            return future.result(timeout=self._timeout_s)
        except futures.TimeoutError:
            future.cancel()
            raise ServingError(grpc.StatusCode.DEADLINE_EXCEEDED, TIMEOUT_MESSAGE) from None

    def respond(
        self, http_method: str, target: str, origin: str, body: bytes, content_encoding: str = ""
    ) -> Response:
        """One HTTP request (``target``: path and query as sent) to status, headers and body."""
        http_method = http_method.upper()
        if http_method not in _ALLOWED_METHODS:
            return libevent_error(501, "Not Implemented")
        if target.startswith(("http://", "https://")):  # absolute form
            parts = urlsplit(target)
            target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        path_only = target.split("?", 1)[0].split("#", 1)[0]
        if self._metrics is not None and path_only == self._metrics.path:
            return self._prometheus(target)
        if not _API_PATH.fullmatch(target):
            return libevent_error(404, "Not Found")
        started = time.perf_counter()
        if "gzip" in content_encoding:
            body = gunzip(body)
        if http_method == "OPTIONS":
            answer = Answer()
            if not _CORS_ORIGIN.search(origin):
                answer.code = grpc.StatusCode.FAILED_PRECONDITION  # no body, as upstream
        else:
            answer = self._handler.process(http_method, target, body)
        if self._cors:
            answer.headers.extend(_CORS)
        if self._metrics is not None:
            self._metrics.record_rest(answer.model, answer.method, answer.code, time.perf_counter() - started)
        return http_status(answer.code), answer.headers, encode(answer.body)

    def _prometheus(self, target: str) -> Response:
        """``ProcessPrometheusRequest``: the page, or 400 when a query follows the path."""
        assert self._metrics is not None
        headers = [("Content-Type", "text/plain")]
        if target != self._metrics.path:
            message = f"Unexpected path: {target}. Should be {self._metrics.path}"
            return 400, headers, message.encode("utf-8", "replace")
        return 200, headers, self._metrics.page().encode()


def start_rest_server(
    core: ServingCore,
    host: str,
    port: int,
    *,
    num_threads: int = 0,
    timeout_ms: int = 30_000,
    cors: bool = False,
    metrics: ServingMetrics | None = None,
    max_connections: int = MAX_CONNECTIONS,
    max_body_bytes: int = MAX_BODY_BYTES,
    request_read_s: float = REQUEST_READ_S,
) -> RunningServer:
    """Serve the REST API on ``host:port`` (0: any free port) in a daemon thread; raises OSError
    when the port cannot be bound."""
    app = RestApi(core, num_threads=num_threads, timeout_ms=timeout_ms, cors=cors, metrics=metrics)
    try:
        return serve(
            app,
            host,
            port,
            max_connections=max_connections,
            max_body_bytes=max_body_bytes,
            request_read_s=request_read_s,
        )
    except BaseException:
        app.close()
        raise
