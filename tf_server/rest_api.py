"""TF Serving's HTTP/REST API (``--rest_api_port``) over the same ``ServingCore`` as gRPC.

Routes, as ``http_rest_api_handler.cc``/``http_rest_api_util.cc`` match them (case-insensitively):

* ``GET /v1/models/<name>[/versions/<v>|/labels/<l>]``: GetModelStatus, as proto3 JSON
  (``{"model_version_status": [{"version": "1", "state": "AVAILABLE", "status": {...}}]}``);
* ``GET .../metadata``: GetModelMetadata (``model_spec`` + ``metadata.signature_def``);
* ``POST /v1/models/<name>[/versions/<v>|/labels/<l>]:(predict|classify|regress)``.

The body is decoded into the same protobuf request a gRPC client sends (``tf_server.json_tensor``),
the core answers it, and the response is encoded back to JSON. Errors are ``{"error": "<message>"}``
with TF Serving's HTTP status for the status code (INVALID_ARGUMENT and FAILED_PRECONDITION 400,
NOT_FOUND 404, UNIMPLEMENTED 501, DEADLINE_EXCEEDED 504, the rest 500 ...). As upstream: any other
path under ``/v1/`` is 400 ``Malformed request: <METHOD> <path>``; a path outside ``/v1/`` is
libevent's HTML 404; ``OPTIONS`` answers a CORS preflight (200 when the ``Origin`` is http(s)),
and ``--rest_api_enable_cors_support`` adds ``Access-Control-Allow-*`` headers to every answer.
Request bodies sent with ``Content-Encoding: gzip`` are uncompressed, as evhttp does. With
monitoring enabled the Prometheus page is served at its configured path.

The model runs of Predict, Classify and Regress go to a pool of ``--rest_api_num_threads``
threads, and ``--rest_api_timeout_in_ms`` bounds them as TF Serving's session-run deadline does:
past it the client gets 504 ``Timed out waiting for notification`` (a run already started cannot
be interrupted from Python; it finishes unseen). The HTTP server is ``http.server``'s threading
server speaking HTTP/1.1 with keep-alive, as evhttp does, in a daemon thread; ``RestApi`` is also
a WSGI application.

Limits, as module constants: a listen backlog of ``LISTEN_BACKLOG``; at most ``MAX_CONNECTIONS``
connections served at once (more wait in the backlog); a connection idle ``IDLE_CONNECTION_S``
between requests is closed, and a request must be read whole (line, headers, body) within
``REQUEST_READ_S`` of its first byte, else the connection closes unanswered; bodies over
``MAX_BODY_BYTES`` (1 GiB) are answered 413 ``{"error": ...}``, bad chunk framing or a body that
ends before its ``Content-Length`` 400, and the connection is closed. A request that fails
unexpectedly is a 500 with a one-line message (logged once, its traceback at debug level); a
client that goes away is logged at debug level. ``RestServer.stop`` stops accepting, answers 503
to requests that start after it began, waits up to ``STOP_GRACE_S`` for those in flight, then
closes the connections and the pool.
"""

from __future__ import annotations

import io
import logging
import os
import re
import socket
import socketserver
import sys
import threading
import time
import zlib
from collections.abc import Callable, Iterable
from concurrent import futures
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import grpc
from google.protobuf import json_format
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    predict_pb2,
    regression_pb2,
)
from werkzeug.wrappers import Request

from tf_server import json_tensor
from tf_server.errors import ServingError, invalid_argument
from tf_server.monitoring import ServingMetrics
from tf_server.servable import DEFAULT_SIGNATURE, Servable
from tf_server.serving_core import ServingCore

log = logging.getLogger("tf_server")

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
IDLE_CONNECTION_S = 300.0  # a keep-alive connection idle this long is closed
REQUEST_READ_S = 60.0  # a request's line, headers and body must arrive this soon after its first byte
MAX_BODY_BYTES = 1 << 30  # larger request bodies are refused with 413 (TF Serving's gRPC limit is 2 GiB)
MAX_CONNECTIONS = 512  # connections served at once; more wait in the listen backlog
LISTEN_BACKLOG = 128
STOP_GRACE_S = 5.0  # how long stop() waits for the requests in flight
MAX_UNCOMPRESSED_BYTES = 100 * 1024 * 1024  # ZLib::kMaxUncompressedBytes

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
_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    409: "Conflict",
    429: "Too Many Requests",
    499: "Client Closed Request",
    500: "Internal Server Error",
    501: "Not Implemented",
    503: "Service Unavailable",
    504: "Gateway Timeout",
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
            answer.body = json_tensor.make_json_from_error(error.message)
        except Exception as error:  # a bug, not a request error: still answer in TF Serving's shape
            _log_unexpected(error, "REST request %s %s failed", http_method, path[:200])
            answer.code = grpc.StatusCode.UNKNOWN
            answer.body = json_tensor.make_json_from_error(_short(error))
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

        request_format = json_tensor.fill_predict_request(body, input_infos, request)
        servable = resolved[0] if resolved else None
        response = self._run(lambda: self._core.predict(request, ENTRYPOINT, servable))
        return json_tensor.make_json_from_tensors(response.outputs, request_format)

    def _classify(self, route: _Route, body: bytes) -> str:
        request = classification_pb2.ClassificationRequest()
        self._fill_spec(route, request.model_spec)
        json_tensor.fill_examples_request(body, request)
        response = self._run(lambda: self._core.classify(request, ENTRYPOINT))
        return json_tensor.make_json_from_classification(response.result)

    def _regress(self, route: _Route, body: bytes) -> str:
        request = regression_pb2.RegressionRequest()
        self._fill_spec(route, request.model_spec)
        json_tensor.fill_examples_request(body, request)
        response = self._run(lambda: self._core.regress(request, ENTRYPOINT))
        return json_tensor.make_json_from_regression(response.result)

    def _status(self, route: _Route) -> str:
        request = get_model_status_pb2.GetModelStatusRequest()
        self._fill_spec(route, request.model_spec)
        return status_json(self._core.status(request, ENTRYPOINT))

    def _metadata(self, route: _Route) -> str:
        request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=[SIGNATURE_DEF])
        self._fill_spec(route, request.model_spec)
        return metadata_json(self._core.metadata(request, ENTRYPOINT))


# ------------------------------------------------------------------------------ HTTP


def _short(error: BaseException) -> str:
    text = f"{type(error).__name__}: {error}"
    return text if len(text) <= 300 else text[:300] + "..."


def _log_unexpected(error: BaseException, message: str, *args: Any) -> None:
    """An error no request should cause: one log line (the traceback only at debug level)."""
    log.error(message + ": %s", *args, _short(error))
    log.debug("The traceback of that error", exc_info=error)


Response = tuple[int, list[tuple[str, str]], bytes]


def _libevent_error(status: int, reason: str) -> Response:
    """``evhttp_send_error``'s page (the connection is closed after it)."""
    page = (
        f"<HTML><HEAD>\n<TITLE>{status} {reason}</TITLE>\n</HEAD><BODY>\n<H1>{reason}</H1>\n</BODY></HTML>\n"
    )
    headers = [("Content-Type", "text/html; charset=ISO-8859-1"), ("Connection", "close")]
    return status, headers, page.encode("latin-1")


def _gunzip(body: bytes) -> bytes:
    """evhttp's automatic request decompression (``Content-Encoding: gzip``, up to 100 MB): a body
    that does not uncompress reads as empty, as upstream."""
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        data = inflater.decompress(body, MAX_UNCOMPRESSED_BYTES)
    except zlib.error:
        return b""
    if inflater.unconsumed_tail or not inflater.eof:
        return b""
    return data


def _request_target(environ: dict[str, Any]) -> str:
    """The path and query as sent (TF Serving matches its patterns on the undecoded text)."""
    raw = environ.get("RAW_URI") or environ.get("REQUEST_URI")
    if raw:
        return raw
    path = quote(environ.get("PATH_INFO", "/").encode("latin-1"), safe="/:@!$&'()*+,;=-._~")
    query = environ.get("QUERY_STRING")
    return path + (f"?{query}" if query else "")


class RestApi:
    """The REST API as an application: ``respond`` for this module's HTTP server, and a WSGI
    callable for any other server. Serves the metrics page, the ``/v1/`` API, and libevent's 404
    for everything else."""

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
        self._pool.shutdown(wait=False, cancel_futures=True)  # after RestServer.stop's grace period

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
            return _libevent_error(501, "Not Implemented")
        if target.startswith(("http://", "https://")):  # absolute form
            parts = urlsplit(target)
            target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        path_only = target.split("?", 1)[0].split("#", 1)[0]
        if self._metrics is not None and path_only == self._metrics.path:
            return self._prometheus(target)
        if not _API_PATH.fullmatch(target):
            return _libevent_error(404, "Not Found")
        started = time.perf_counter()
        if "gzip" in content_encoding:
            body = _gunzip(body)
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
        return http_status(answer.code), answer.headers, json_tensor.encode(answer.body)

    def _prometheus(self, target: str) -> Response:
        """``ProcessPrometheusRequest``: the page, or 400 when a query follows the path."""
        assert self._metrics is not None
        headers = [("Content-Type", "text/plain")]
        if target != self._metrics.path:
            message = f"Unexpected path: {target}. Should be {self._metrics.path}"
            return 400, headers, message.encode("utf-8", "replace")
        return 200, headers, self._metrics.page().encode()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        """WSGI."""
        status, headers, body = self.respond(
            environ.get("REQUEST_METHOD", "GET"),
            _request_target(environ),
            environ.get("HTTP_ORIGIN", ""),
            Request(environ).get_data(),
            environ.get("HTTP_CONTENT_ENCODING", ""),
        )
        headers = [*headers, ("Content-Length", str(len(body)))]
        start_response(f"{status} {_REASONS.get(status, 'Unknown')}", headers)
        return [body] if environ.get("REQUEST_METHOD") != "HEAD" else []


class _BadBody(ValueError):
    """A request body that cannot be read (bad Content-Length or chunk framing, cut short)."""


class _BodyTooLarge(ValueError):
    """A request body over ``MAX_BODY_BYTES``."""


_CHUNK_SIZE = re.compile(rb"[0-9A-Fa-f]{1,16}")
_READ_PIECE = 1 << 20  # bodies are read a MiB at a time: memory follows what arrives, not what is announced


class _DeadlineReader(socket.SocketIO):
    """A connection's reads, each given at most what is left of the request's ``deadline`` (the
    idle timeout between requests, when None)."""

    def __init__(self, sock: socket.socket, idle_s: float) -> None:
        super().__init__(sock, "rb")
        self._connection = sock
        self.idle_s = idle_s
        self.deadline: float | None = None

    def readinto(self, buffer: Any) -> int | None:
        if self.deadline is None:
            self._connection.settimeout(self.idle_s)
        else:
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("the request was not read in time")
            self._connection.settimeout(left)
        return super().readinto(buffer)


class _Handler(BaseHTTPRequestHandler):
    """HTTP/1.1 with keep-alive (as evhttp): every body is read whole, every answer has a length.

    A connection waits up to ``IDLE_CONNECTION_S`` for a request; once its first byte arrives, the
    request line, headers and body must arrive within ``REQUEST_READ_S`` (as evhttp's read timeout
    bounds a request), or the connection is closed unanswered."""

    protocol_version = "HTTP/1.1"
    server_version = "tf_server"
    disable_nagle_algorithm = True  # headers and body go out in two writes
    timeout = IDLE_CONNECTION_S
    server: _HttpServer
    _admitted = True

    def setup(self) -> None:
        super().setup()
        self.rfile.close()  # replaced by one whose reads keep the request's deadline
        self.connection._io_refs += 1  # type: ignore[attr-defined]  # as socket.makefile counts its files
        self._reader = _DeadlineReader(self.connection, IDLE_CONNECTION_S)
        self.rfile = io.BufferedReader(self._reader)
        self.server.track(self.connection, add=True)

    def finish(self) -> None:
        self.server.track(self.connection, add=False)
        super().finish()

    def handle_one_request(self) -> None:
        self._reader.deadline = None
        try:
            started = bool(self.rfile.peek(1))  # waits (idle timeout) for the next request
        except OSError:  # idle past the timeout, reset, or shut down by stop()
            started = False
        if not started:
            self.close_connection = True
            return
        self._reader.deadline = time.monotonic() + self.server.request_read_s
        self._admitted = self.server.begin_request()
        try:
            super().handle_one_request()
        finally:
            self.server.end_request(self._admitted)

    def _read_exactly(self, size: int, pieces: list[bytes]) -> None:
        while size > 0:
            piece = self.rfile.read(min(size, _READ_PIECE))
            if not piece:
                raise _BadBody("the request body ended before its announced length")
            pieces.append(piece)
            size -= len(piece)

    def _read_body(self) -> bytes:
        limit = self.server.max_body_bytes
        pieces: list[bytes] = []
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            total = 0
            while True:
                line = self.rfile.readline(65537)
                size_text = line.split(b";", 1)[0].strip()
                if not line.endswith(b"\n") or not _CHUNK_SIZE.fullmatch(size_text):
                    raise _BadBody(f"bad chunk size line {line[:40]!r}")
                size = int(size_text, 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(pieces)
                total += size
                if total > limit:
                    raise _BodyTooLarge(f"Request body too large: more than {limit} bytes")
                self._read_exactly(size, pieces)
                if self.rfile.readline(65537) not in (b"\r\n", b"\n"):
                    raise _BadBody("a chunk does not end where its size says")
        length = self.headers.get("Content-Length")
        if not length:
            return b""
        try:
            size = int(length)
        except ValueError:
            raise _BadBody(f"bad Content-Length {length[:40]!r}") from None
        if size < 0:
            raise _BadBody(f"bad Content-Length {length[:40]!r}")
        if size > limit:
            raise _BodyTooLarge(f"Request body too large: {size} bytes, more than {limit}")
        self._read_exactly(size, pieces)
        return b"".join(pieces)

    def _serve(self) -> None:
        if not self._admitted:  # arrived after stop() began
            error = json_tensor.make_json_from_error("The server is shutting down")
            self._reply(503, [*_JSON, ("Connection", "close")], json_tensor.encode(error))
            return
        try:
            body = self._read_body()
        except _BodyTooLarge as error:  # the rest of the body is not read: the connection closes
            payload = json_tensor.encode(json_tensor.make_json_from_error(str(error)))
            status, headers = 413, [*_JSON, ("Connection", "close")]
        except _BadBody as error:
            status, headers, payload = 400, [("Connection", "close")], str(error).encode()
        else:
            self._reader.deadline = None
            self.connection.settimeout(self.timeout)  # the answer is written under the idle timeout
            try:
                status, headers, payload = self.server.app.respond(
                    self.command,
                    self.path,
                    self.headers.get("Origin", ""),
                    body,
                    self.headers.get("Content-Encoding", ""),
                )
            except Exception as error:
                _log_unexpected(error, "REST request %s %s failed", self.command, self.path[:200])
                status, headers, payload = _libevent_error(500, "Internal Server Error")
        self._reply(status, headers, payload)

    def _reply(self, status: int, headers: list[tuple[str, str]], payload: bytes) -> None:
        self.send_response(status, _REASONS.get(status, "Unknown"))
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    do_GET = do_POST = do_HEAD = do_PUT = do_DELETE = do_OPTIONS = do_PATCH = _serve  # noqa: N815

    def version_string(self) -> str:
        return self.server_version

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's signature
        pass  # no access log: TF Serving logs REST requests only at VLOG(1)

    def log_error(self, format: str, *args: Any) -> None:  # noqa: A002
        log.debug("REST connection: " + format, *args)


class _HttpServer(ThreadingHTTPServer):
    """``http.server``'s threading server with a listen backlog of ``LISTEN_BACKLOG``, at most
    ``MAX_CONNECTIONS`` connections served at once (more wait in the backlog until one closes),
    and a graceful stop (``begin_stop``, ``wait_idle``, ``close_connections``)."""

    daemon_threads = True
    request_queue_size = LISTEN_BACKLOG
    app: RestApi

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[BaseHTTPRequestHandler],
        *,
        max_connections: int = MAX_CONNECTIONS,
        max_body_bytes: int = MAX_BODY_BYTES,
        request_read_s: float = REQUEST_READ_S,
    ) -> None:
        self.max_body_bytes = max_body_bytes
        self.request_read_s = request_read_s
        self.stopping = False
        self._slots = threading.BoundedSemaphore(max_connections)
        self._state = threading.Condition()
        self._in_flight = 0
        self._connections: set[socket.socket] = set()
        super().__init__(address, handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind also resolves socket.getfqdn(host), which can hang for seconds
        # where DNS is unreachable (containers); the name is only used for CGI.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), int(self.server_address[1])

    def process_request(self, request: Any, client_address: Any) -> None:
        while not self._slots.acquire(timeout=0.1):  # all connection threads busy: the backlog waits
            if self.stopping:
                self.shutdown_request(request)
                return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that goes away is no error (debug); anything else is one log line."""
        error = sys.exc_info()[1]
        if isinstance(error, OSError):  # BrokenPipeError, ConnectionResetError, timeouts ...
            log.debug("REST connection from %s ended: %r", client_address, error)
        elif error is not None:
            _log_unexpected(error, "REST connection from %s failed", client_address)

    def track(self, connection: socket.socket, add: bool) -> None:
        with self._state:
            if add:
                self._connections.add(connection)
            else:
                self._connections.discard(connection)

    def begin_request(self) -> bool:
        """A request started on a connection: False when stop() has begun (it is answered 503)."""
        with self._state:
            if self.stopping:
                return False
            self._in_flight += 1
            return True

    def end_request(self, admitted: bool) -> None:
        if admitted:
            with self._state:
                self._in_flight -= 1
                self._state.notify_all()

    def begin_stop(self) -> None:
        with self._state:
            self.stopping = True

    def wait_idle(self, timeout: float) -> bool:
        with self._state:
            return self._state.wait_for(lambda: self._in_flight == 0, timeout)

    def close_connections(self) -> None:
        """Wakes the threads of idle keep-alive connections (their reads end; they close)."""
        with self._state:
            connections = list(self._connections)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class _HttpServer6(_HttpServer):
    address_family = socket.AF_INET6


@dataclass
class RestServer:
    """A running REST server; ``stop()`` stops accepting, lets the requests in flight finish (up to
    ``STOP_GRACE_S``), then closes the connections and the request pool."""

    server: _HttpServer
    app: RestApi
    thread: threading.Thread

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        self.server.begin_stop()  # requests starting from now on are answered 503
        self.server.shutdown()  # no more connections accepted
        self.server.server_close()
        if not self.server.wait_idle(grace_s):
            log.warning("REST requests still running after %.0f s; stopping anyway", grace_s)
        self.server.close_connections()
        self.app.close()
        self.thread.join(timeout=5.0)


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
) -> RestServer:
    """Serve the REST API on ``host:port`` (0: any free port) in a daemon thread; raises OSError
    when the port cannot be bound."""
    app = RestApi(core, num_threads=num_threads, timeout_ms=timeout_ms, cors=cors, metrics=metrics)
    server_class = _HttpServer6 if ":" in host else _HttpServer
    try:
        server = server_class(
            (host, port),
            _Handler,
            max_connections=max_connections,
            max_body_bytes=max_body_bytes,
            request_read_s=request_read_s,
        )
    except BaseException:
        app.close()
        raise
    server.app = app
    thread = threading.Thread(target=server.serve_forever, name="rest-api", daemon=True)
    thread.start()
    return RestServer(server, app, thread)
