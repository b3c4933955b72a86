"""The REST API's HTTP/1.1 server: ``http.server``'s threading server made to behave as TF Serving's
evhttp front end does, with no knowledge of TF Serving's routes or JSON (``tf_server.rest_api``).

It speaks HTTP/1.1 with keep-alive, reads every body whole (``Content-Length`` or chunked), gives
every answer a length, and hands each request to an ``Application``: ``respond`` for a request
read whole, ``refusal`` for the answers the server gives itself (413, 503), ``close`` on stop.

Limits, as module constants: a listen backlog of ``LISTEN_BACKLOG``; at most ``MAX_CONNECTIONS``
connections served at once (more wait in the backlog); a connection idle ``IDLE_CONNECTION_S``
between requests is closed, and a request must be read whole (line, headers, body) within
``REQUEST_READ_S`` of its first byte, else the connection closes unanswered; bodies over
``MAX_BODY_BYTES`` (1 GiB) are refused with 413, bad chunk framing or a body that ends before its
``Content-Length`` is a plain-text 400, and the connection is closed. An application that fails
unexpectedly gives libevent's 500 page (logged once, its traceback at debug level); a client that
goes away is logged at debug level. ``RunningServer.stop`` stops accepting, answers 503 to requests
that start after it began, waits up to ``STOP_GRACE_S`` for those in flight, then closes the
connections and the application.
"""

from __future__ import annotations

import io
import logging
import re
import socket
import socketserver
import sys
import threading
import time
import zlib
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol

from tf_server.errors import log_unexpected

log = logging.getLogger("tf_server")

IDLE_CONNECTION_S = 300.0  # a keep-alive connection idle this long is closed
REQUEST_READ_S = 60.0  # a request's line, headers and body must arrive this soon after its first byte
MAX_BODY_BYTES = 1 << 30  # larger request bodies are refused with 413 (TF Serving's gRPC limit is 2 GiB)
MAX_CONNECTIONS = 512  # connections served at once; more wait in the listen backlog
LISTEN_BACKLOG = 128
STOP_GRACE_S = 5.0  # how long stop() waits for the requests in flight
MAX_UNCOMPRESSED_BYTES = 100 * 1024 * 1024  # ZLib::kMaxUncompressedBytes

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

Response = tuple[int, list[tuple[str, str]], bytes]  # status, headers, body


class Application(Protocol):
    """What the server serves (``tf_server.rest_api.RestApi``)."""

    def respond(
        self, http_method: str, target: str, origin: str, body: bytes, content_encoding: str = ""
    ) -> Response:
        """One request read whole (``target``: path and query as sent) to its answer."""
        ...

    def refusal(self, status: int, message: str) -> Response:
        """The answer to a request the server refuses itself (413 body too large, 503 stopping)."""
        ...

    def close(self) -> None:
        """Called once stop() has let the requests in flight finish."""
        ...


def libevent_error(status: int, reason: str) -> Response:
    """``evhttp_send_error``'s page (the connection is closed after it)."""
    page = (
        f"<HTML><HEAD>\n<TITLE>{status} {reason}</TITLE>\n</HEAD><BODY>\n<H1>{reason}</H1>\n</BODY></HTML>\n"
    )
    headers = [("Content-Type", "text/html; charset=ISO-8859-1"), ("Connection", "close")]
    return status, headers, page.encode("latin-1")


def gunzip(body: bytes) -> bytes:
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
            status, headers, payload = self.server.app.refusal(503, "The server is shutting down")
            self._reply(status, [*headers, ("Connection", "close")], payload)
            return
        try:
            body = self._read_body()
        except _BodyTooLarge as error:  # the rest of the body is not read: the connection closes
            status, headers, payload = self.server.app.refusal(413, str(error))
            headers = [*headers, ("Connection", "close")]
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
                log_unexpected(error, "REST request %s %s failed", self.command, self.path[:200])
                status, headers, payload = libevent_error(500, "Internal Server Error")
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
    app: Application

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
            log_unexpected(error, "REST connection from %s failed", client_address)

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
class RunningServer:
    """A running server; ``stop()`` stops accepting, lets the requests in flight finish (up to
    ``STOP_GRACE_S``), then closes the connections and the application (its request pool)."""

    server: _HttpServer
    app: Application
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


def serve(
    app: Application,
    host: str,
    port: int,
    *,
    max_connections: int = MAX_CONNECTIONS,
    max_body_bytes: int = MAX_BODY_BYTES,
    request_read_s: float = REQUEST_READ_S,
    thread_name: str = "rest-api",
) -> RunningServer:
    """Serve ``app`` on ``host:port`` (0: any free port) in a daemon thread; raises OSError when
    the port cannot be bound."""
    server_class = _HttpServer6 if ":" in host else _HttpServer
    server = server_class(
        (host, port),
        _Handler,
        max_connections=max_connections,
        max_body_bytes=max_body_bytes,
        request_read_s=request_read_s,
    )
    server.app = app
    thread = threading.Thread(target=server.serve_forever, name=thread_name, daemon=True)
    thread.start()
    return RunningServer(server, app, thread)
