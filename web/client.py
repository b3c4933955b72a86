"""Command-line client for the gateway's REST API, for people who prefer a terminal.

    python -m web.client IMAGE... --model shapes [--url http://localhost:5000] [--out DIR] [--json]

Each image is sent to ``POST /api/v1/models/<model>/predict`` once; the answer is printed as a
one-line summary (or, with ``--json``, as one JSON object per line). With ``--out DIR`` the same
request asks for the picture with boxes and masks drawn as well (``picture=jpeg``), saved as
``DIR/<stem>_detections.jpg``: one inference per image. Images go as the request body itself
(``Content-Type: image/jpeg``, the file name in ``Content-Disposition``), the cheapest upload for
the gateway to read; only with ``--label-map`` is a multipart body sent. A progress bar goes to
stderr when several images are sent and stderr is a terminal.

    python -m web.client job MODEL archive.zip --out DIR [--url ...] [--min-score ...] [--timeout S]

runs a job instead (``POST /api/v1/jobs``): the zip is streamed from disk (its multipart body is
written around the file in 1 MiB pieces, never read whole), the job's progress is polled about once
a second and drawn on stderr, and its result files are downloaded into DIR. Ctrl-C while waiting
cancels the job on the server.

    python -m web.client video MODEL clip.mp4 --out DIR [--fps N] [--track]

runs a video job the same way: the annotated video, frames.jsonl and summary.json land in DIR.

Why stdlib only: the client ships inside the gateway package and is useful on any machine with
Python 3.11, so it must not need ``requests`` (not in requirements/web.txt) or anything else to be
installed; multipart bodies are encoded by hand. The options it sends are checked against the
server's own declaration of them (``web.options``, standard library only too), so the client and
the server accept exactly the same values.

Exit status: 0 when every image was processed, 1 when some failed (a missing file, a rejected
image, a model-server error) -- the others are still processed -- and 2 when nothing can work
(the gateway cannot be reached, wrong API key, unknown model) or the arguments are wrong. For
``job``: 0 when the job succeeded and its files are in DIR, 1 when it failed, was cancelled, outlived
``--timeout`` or its files could not be downloaded, 2 when the upload was refused (the server's
message says why) or the arguments are wrong, 130 after Ctrl-C.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import contextlib
import dataclasses
import http.client
import json
import mimetypes
import os
import shutil
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from web.options import (
    FPS,
    IOU_THRESHOLD,
    MAX_DETECTIONS,
    MIN_SCORE,
    OPERATING_SCORE,
    TRACK,
    VERSION,
    VERSION_LABEL,
    Option,
)

DEFAULT_URL = "http://localhost:5000"
DEFAULT_TIMEOUT_S = 60.0
# Errors that would repeat identically for every remaining image: stop instead of repeating them.
FATAL_STATUSES = frozenset({401, 403, 404})


class GatewayUnreachable(Exception):
    """No HTTP answer at all (connection refused, DNS failure, timeout)."""


class FatalApiError(Exception):
    """An API error that every further request would hit as well."""


class ApiError(Exception):
    """The gateway answered with an error status; ``message`` is its JSON ``error.message``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Options:
    """What to ask the gateway for every image."""

    url: str
    model: str
    min_score: float | None = None
    max_detections: int | None = None
    iou_threshold: float | None = None
    version: int | None = None
    version_label: str | None = None
    api_key: str | None = None
    label_map: Path | None = None
    image_format: str = "jpeg"
    timeout_s: float = DEFAULT_TIMEOUT_S


def encode_multipart(files: Sequence[tuple[str, str, bytes]]) -> tuple[bytes, str]:
    """Encode ``(field, filename, content)`` parts as ``multipart/form-data``: (body, content type)."""
    boundary = f"----web-client-{uuid.uuid4().hex}"
    chunks: list[bytes] = []
    for field, filename, content in files:
        # Quotes and line breaks would end the header early; the server never trusts the name anyway.
        safe_name = filename.replace("\\", "_").replace('"', "_").replace("\r", "_").replace("\n", "_")
        content_type = mimetypes.guess_type(filename)[0] or "application/octet-stream"
        chunks.append(
            (
                f"--{boundary}\r\n"
                f'Content-Disposition: form-data; name="{field}"; filename="{safe_name}"\r\n'
                f"Content-Type: {content_type}\r\n\r\n"
            ).encode()
        )
        chunks.append(content)
        chunks.append(b"\r\n")
    chunks.append(f"--{boundary}--\r\n".encode())
    return b"".join(chunks), f"multipart/form-data; boundary={boundary}"


def _error_message(status: int, body: bytes) -> str:
    try:
        return str(json.loads(body)["error"]["message"])
    except (ValueError, KeyError, TypeError):
        text = body.decode("utf-8", errors="replace").strip()
        return text[:300] or f"HTTP {status} without a body"


class Client:
    """Talks to one gateway; every request goes through :meth:`_post`."""

    def __init__(self, options: Options) -> None:
        self.options = options
        self._label_map = options.label_map.read_bytes() if options.label_map else None

    def _endpoint(self, picture: str | None = None) -> str:
        model = urllib.parse.quote(self.options.model, safe="")
        query = {
            "min_score": self.options.min_score,
            "max_detections": self.options.max_detections,
            "iou_threshold": self.options.iou_threshold,
            "version": self.options.version,
            "version_label": self.options.version_label,
            "picture": picture,
        }
        params = urllib.parse.urlencode({k: v for k, v in query.items() if v is not None})
        base = self.options.url.rstrip("/")
        return f"{base}/api/v1/models/{model}/predict" + (f"?{params}" if params else "")

    def _body(self, image_name: str, image: bytes) -> tuple[bytes, dict[str, str]]:
        """The image as the body itself (with its name), or multipart when a label map goes along or
        the file name does not say it is an image."""
        image_type = mimetypes.guess_type(image_name)[0] or ""
        if self._label_map is None and image_type.startswith("image/"):
            return image, {"Content-Type": image_type, "Content-Disposition": content_disposition(image_name)}
        files = [("image", image_name, image)]
        if self._label_map is not None and self.options.label_map is not None:
            files.append(("label_map", self.options.label_map.name, self._label_map))
        body, content_type = encode_multipart(files)
        return body, {"Content-Type": content_type}

    def _post(self, image_name: str, image: bytes, picture: str | None = None) -> tuple[bytes, str]:
        body, headers = self._body(image_name, image)
        headers["Accept"] = "application/json"
        if self.options.api_key:
            headers["Authorization"] = f"Bearer {self.options.api_key}"
        request = urllib.request.Request(self._endpoint(picture), data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.options.timeout_s) as response:
                return response.read(), response.headers.get("Content-Type", "")
        except urllib.error.HTTPError as exc:
            try:
                message = _error_message(exc.code, exc.read())
            finally:
                exc.close()
            if exc.code in FATAL_STATUSES:
                raise FatalApiError(f"HTTP {exc.code}: {message}") from None
            raise ApiError(exc.code, message) from None
        except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
            reason = getattr(exc, "reason", exc)
            raise GatewayUnreachable(
                f"cannot reach the gateway at {self.options.url}: {reason}. "
                "Is it running? Pass its address with --url."
            ) from None

    def predict(
        self, image_name: str, image: bytes, *, picture: bool = False
    ) -> tuple[dict[str, Any], bytes | None]:
        """The prediction JSON for one image (see README.md, "REST API"), and with `picture` the drawn
        picture (``options.image_format``) from the same request."""
        fmt = ("png" if self.options.image_format == "png" else "jpeg") if picture else None
        body, _ = self._post(image_name, image, fmt)
        try:
            result = json.loads(body)
        except ValueError:
            raise ApiError(200, "the gateway answered with something that is not JSON") from None
        if not isinstance(result, dict):
            raise ApiError(200, "the gateway answered with JSON that is not an object")
        drawn = result.pop("picture", None)
        if not picture:
            return result, None
        try:
            return result, base64.b64decode(drawn["base64"], validate=True)
        except (TypeError, KeyError, binascii.Error):
            raise ApiError(
                200, "the gateway answered without the drawn picture (is it older than this client?)"
            ) from None


def content_disposition(filename: str) -> str:
    """``inline; filename="..."`` for a raw upload, with RFC 6266's ``filename*`` for non-ASCII names."""
    safe = "".join(c if c.isascii() and c.isprintable() and c not in '"\\' else "_" for c in filename)
    if safe == filename:
        return f'inline; filename="{safe}"'
    return f"inline; filename=\"{safe}\"; filename*=UTF-8''{urllib.parse.quote(filename, safe='')}"


def summarize(name: str, result: dict[str, Any], limit: int = 10) -> str:
    """One line per image: ``img.jpg: 3 detections: circle 0.97, square 0.88, ...``."""

    def items(entries: list[dict[str, Any]]) -> str:
        shown = ", ".join(
            f"{e.get('label', e.get('class_id'))} {float(e.get('score', 0.0)):.2f}" for e in entries[:limit]
        )
        return shown + (f", ... ({len(entries) - limit} more)" if len(entries) > limit else "")

    if "classes" in result and "detections" not in result:
        classes = result.get("classes") or []
        return f"{name}: top classes: {items(classes)}" if classes else f"{name}: no classes"
    detections = result.get("detections") or []
    if not detections:
        return f"{name}: no detections"
    noun = "detection" if len(detections) == 1 else "detections"
    return f"{name}: {len(detections)} {noun}: {items(detections)}"


class Progress:
    """A one-line text progress bar on a terminal; does nothing when ``enabled`` is false."""

    def __init__(self, total: int, stream: TextIO, enabled: bool) -> None:
        self.total = total
        self.stream = stream
        self.enabled = enabled
        self._shown = False

    def show(self, done: int, current: str = "") -> None:
        if not self.enabled:
            return
        columns = shutil.get_terminal_size((80, 20)).columns
        width = max(10, min(40, columns - 40))
        filled = width * done // self.total if self.total else width
        text = f"[{'#' * filled}{'.' * (width - filled)}] {done}/{self.total} {current}"
        self.stream.write("\r\033[K" + text[: columns - 1])
        self.stream.flush()
        self._shown = True

    def clear(self) -> None:
        """Erase the bar so a result line can be printed cleanly; the next ``show`` redraws it."""
        if self.enabled and self._shown:
            self.stream.write("\r\033[K")
            self.stream.flush()
            self._shown = False


def output_path(out_dir: Path, source: Path, image_format: str, taken: set[Path]) -> Path:
    """``DIR/<stem>_detections.<ext>``, numbered when two inputs share a stem in one run."""
    ext = "png" if image_format == "png" else "jpg"
    candidate = out_dir / f"{source.stem}_detections.{ext}"
    counter = 2
    while candidate in taken:
        candidate = out_dir / f"{source.stem}_detections-{counter}.{ext}"
        counter += 1
    taken.add(candidate)
    return candidate


def run(
    images: Sequence[str],
    options: Options,
    out_dir: Path | None = None,
    as_json: bool = False,
    progress: bool | None = None,
    stdout: TextIO = sys.stdout,
    stderr: TextIO = sys.stderr,
) -> int:
    """Process every image; returns the exit status (0 all done, 1 some failed, 2 nothing can work)."""
    client = Client(options)
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
    if progress is None:
        progress = len(images) > 1 and stderr.isatty()
    bar = Progress(len(images), stderr, progress)
    taken: set[Path] = set()
    failures = 0

    def report(line: str, stream: TextIO) -> None:
        bar.clear()
        print(line, file=stream, flush=True)

    def report_error(name: str, message: str, code: int | None = None) -> None:
        if as_json:
            report(json.dumps({"file": name, "error": {"code": code, "message": message}}), stdout)
        else:
            report(f"{name}: error: {message}", stderr)

    for index, name in enumerate(images):
        bar.show(index, Path(name).name)
        path = Path(name)
        try:
            data = path.read_bytes()
        except OSError as exc:
            failures += 1
            report_error(name, f"cannot read the file: {exc.strerror or exc}")
            continue
        try:
            result, drawn = client.predict(path.name, data, picture=out_dir is not None)
            saved = None
            if out_dir is not None and drawn is not None:
                saved = output_path(out_dir, path, options.image_format, taken)
                saved.write_bytes(drawn)
        except ApiError as exc:
            failures += 1
            report_error(name, exc.message, exc.status)
            continue
        except (GatewayUnreachable, FatalApiError) as exc:
            bar.clear()
            print(f"error: {exc}", file=stderr, flush=True)
            return 2
        except OSError as exc:
            failures += 1
            report_error(name, f"cannot write the result: {exc.strerror or exc}")
            continue
        if as_json:
            record = {"file": name, **result}
            if saved is not None:
                record["saved"] = str(saved)
            report(json.dumps(record), stdout)
        else:
            line = summarize(name, result)
            report(line + (f" -> {saved}" if saved is not None else ""), stdout)
    bar.show(len(images))
    bar.clear()
    if failures:
        print(f"{failures} of {len(images)} image(s) failed", file=stderr, flush=True)
        return 1
    return 0


# -- jobs: a zip of pictures in, every result file out ------------------------------------------------

UPLOAD_PIECE_BYTES = 1 << 20  # the archive goes out (and results come in) this much at a time
JOB_POLL_S = 1.0
DEFAULT_JOB_TIMEOUT_S = 24 * 3600.0
UPLOAD_ANSWER_TIMEOUT_S = 600.0  # the gateway reads the whole archive's directory before it answers
CANCEL_TIMEOUT_S = 10.0
UNREACHABLE_GIVE_UP_S = 600.0  # a gateway restarting keeps its jobs: polls retry this long before giving up
DOWNLOAD_TRIES = 3
PLAIN_PROGRESS_EVERY_S = 10.0  # without a terminal, a progress line at most this often (and at each change)
JOB_ENDED = frozenset({"succeeded", "failed", "cancelled"})
SKIPPED_SHOWN = 20


class JobEnded(Exception):
    """The job did not give results: it failed, was cancelled, or outlived ``--timeout``."""


def _form_field(boundary: str, name: str, value: str) -> bytes:
    return (f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n').encode()


def _job_path(job_id: str, *rest: str) -> str:
    return "/".join(("/api/v1/jobs", urllib.parse.quote(job_id, safe=""), *rest))


class JobClient:
    """The jobs API of one gateway: the streamed upload, polls, cancel and streamed downloads.

    The upload uses http.client directly so that the multipart body is sent as head, file pieces and
    tail with a Content-Length computed beforehand: urllib would need the body as one bytes object."""

    def __init__(self, url: str, api_key: str | None = None, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.url = url.rstrip("/")
        self.api_key = api_key
        self.timeout_s = timeout_s

    def _headers(self, **extra: str) -> dict[str, str]:
        headers = {"Accept": "application/json", **extra}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        return headers

    def _unreachable(self, reason: object) -> GatewayUnreachable:
        return GatewayUnreachable(
            f"cannot reach the gateway at {self.url}: {reason}. Is it running? Pass its address with --url."
        )

    def resolve(self, link: str) -> str:
        """A result link as an absolute URL: a path is under ``--url``; another host is refused, so the
        API key never goes anywhere else."""
        parts = urllib.parse.urlsplit(link)
        if not parts.scheme:
            return self.url + ("" if link.startswith("/") else "/") + link
        own = urllib.parse.urlsplit(self.url)
        if (parts.scheme, parts.netloc) != (own.scheme, own.netloc):
            raise ApiError(200, f"the gateway linked a result on another host ({parts.netloc}): not followed")
        return link

    def _open(self, method: str, url: str, timeout_s: float | None = None) -> Any:
        data = b"" if method == "POST" else None
        request = urllib.request.Request(url, data=data, headers=self._headers(), method=method)
        try:
            return urllib.request.urlopen(request, timeout=timeout_s or self.timeout_s)
        except urllib.error.HTTPError as exc:
            try:
                message = _error_message(exc.code, exc.read())
            finally:
                exc.close()
            raise ApiError(exc.code, message) from None
        except (urllib.error.URLError, TimeoutError, ConnectionError, http.client.HTTPException) as exc:
            raise self._unreachable(getattr(exc, "reason", exc)) from None

    def _json(self, method: str, path: str, timeout_s: float | None = None) -> dict[str, Any]:
        try:
            with self._open(method, self.url + path, timeout_s) as response:
                body = response.read()
        except (TimeoutError, ConnectionError, http.client.HTTPException) as exc:
            raise self._unreachable(exc) from None
        return _job_json(body)

    def job(self, job_id: str) -> dict[str, Any]:
        return self._json("GET", _job_path(job_id))

    def cancel(self, job_id: str) -> dict[str, Any]:
        return self._json("POST", _job_path(job_id, "cancel"), CANCEL_TIMEOUT_S)

    def submit(
        self,
        model: str,
        archive: Path,
        fields: dict[str, str],
        on_sent: Callable[[int, int], None] | None = None,
        file_field: str = "archive",
    ) -> dict[str, Any]:
        """``POST /api/v1/jobs`` with `archive` (a zip, or with file_field="video" a video) streamed
        from disk; the job JSON of the 202 answer."""
        boundary = f"----web-client-{uuid.uuid4().hex}"
        values = {"model": model, **fields}
        head = b"".join(_form_field(boundary, name, value) for name, value in values.items())
        safe_name = "".join(
            c if c.isascii() and c.isprintable() and c not in '"\\' else "_" for c in archive.name
        )
        content_type = "application/zip" if file_field == "archive" else (
            mimetypes.guess_type(archive.name)[0] or "application/octet-stream"
        )
        head += (
            f"--{boundary}\r\n"
            f'Content-Disposition: form-data; name="{file_field}"; filename="{safe_name}"\r\n'
            f"Content-Type: {content_type}\r\n\r\n"
        ).encode()
        tail = f"\r\n--{boundary}--\r\n".encode()
        size = archive.stat().st_size
        target = urllib.parse.urlsplit(self.url)
        https = target.scheme == "https"
        connection_type = http.client.HTTPSConnection if https else http.client.HTTPConnection
        connection = connection_type(target.hostname or "localhost", target.port, timeout=self.timeout_s)
        try:
            with archive.open("rb") as file:
                connection.putrequest("POST", target.path.rstrip("/") + "/api/v1/jobs")
                headers = self._headers(
                    **{
                        "Content-Type": f"multipart/form-data; boundary={boundary}",
                        "Content-Length": str(len(head) + size + len(tail)),
                    }
                )
                for name, value in headers.items():
                    connection.putheader(name, value)
                connection.endheaders()
                refused: OSError | None = None
                try:
                    connection.send(head)
                    sent = 0
                    while piece := file.read(UPLOAD_PIECE_BYTES):
                        connection.send(piece)
                        sent += len(piece)
                        if on_sent is not None:
                            on_sent(sent, size)
                    if sent != size:
                        raise ApiError(0, f"{archive} changed size while it was being sent: send it again")
                    connection.send(tail)
                except (BrokenPipeError, ConnectionResetError) as exc:
                    refused = exc  # the gateway answered before reading everything: read why, below
            if connection.sock is not None:
                connection.sock.settimeout(max(self.timeout_s, UPLOAD_ANSWER_TIMEOUT_S))
            try:
                response = connection.getresponse()
                status, body = response.status, response.read()
            except (OSError, http.client.HTTPException) as exc:
                if refused is not None:
                    raise self._unreachable(
                        f"the connection was closed during the upload ({refused}); is the archive over "
                        "the gateway's MAX_JOB_UPLOAD_BYTES?"
                    ) from None
                raise self._unreachable(exc) from None
        except (OSError, http.client.HTTPException) as exc:
            if isinstance(exc, FileNotFoundError | PermissionError | IsADirectoryError):
                raise ApiError(0, f"cannot read {archive}: {exc.strerror or exc}") from None
            raise self._unreachable(exc) from None
        finally:
            connection.close()
        if status >= 400:
            raise ApiError(status, _error_message(status, body))
        return _job_json(body)

    def download(self, link: str, target: Path) -> int:
        """One result file into `target`, streamed to a temporary file beside it and renamed: `target`
        is whole or absent. The number of bytes written."""
        url = self.resolve(link)
        temp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.part")
        size = 0
        try:
            with self._open("GET", url) as response, temp.open("xb") as out:
                while piece := response.read(UPLOAD_PIECE_BYTES):
                    out.write(piece)
                    size += len(piece)
            os.replace(temp, target)
        except (TimeoutError, ConnectionError, http.client.HTTPException) as exc:
            raise self._unreachable(f"the download of {target.name} broke off: {exc}") from None
        finally:
            with contextlib.suppress(OSError):
                temp.unlink(missing_ok=True)
        return size


def _job_json(body: bytes) -> dict[str, Any]:
    try:
        job = json.loads(body)
    except ValueError:
        raise ApiError(200, "the gateway answered with something that is not JSON") from None
    if not isinstance(job, dict) or not isinstance(job.get("id"), str):
        raise ApiError(200, "the gateway answered with JSON that is not a job (is it older than this?)")
    return job


def _unit(job: dict[str, Any]) -> str:
    """What a job's progress counts: a video job's analysed frames, the others' pictures."""
    return "frames" if job.get("kind") == "video" else "pictures"


def _progress_of(job: dict[str, Any]) -> tuple[int, int]:
    progress = job.get("progress") or {}
    return int(progress.get("done") or 0), int(progress.get("total") or 0)


def _megabytes(size: int) -> str:
    return f"{size / 1e6:.1f} MB"


class JobProgress:
    """The upload's and the job's progress on stderr: one redrawn line on a terminal, plain lines
    otherwise (at each status change, at most every PLAIN_PROGRESS_EVERY_S as pictures get done, and
    the last one), so a log of a long job stays short."""

    def __init__(self, stream: TextIO, terminal: bool, clock: Callable[[], float] = time.monotonic) -> None:
        self.stream = stream
        self.terminal = terminal
        self.clock = clock
        self._running_since: tuple[float, int] | None = None
        self._last_plain: tuple[str, int] | None = None
        self._last_plain_at = -PLAIN_PROGRESS_EVERY_S
        self._upload_shown = False
        self._drawn = False

    def _draw(self, text: str) -> None:
        columns = shutil.get_terminal_size((80, 20)).columns
        self.stream.write("\r\033[K" + text[: columns - 1])
        self.stream.flush()
        self._drawn = True

    def _print(self, text: str) -> None:
        self.clear()
        print(text, file=self.stream, flush=True)

    def clear(self) -> None:
        if self._drawn:
            self.stream.write("\r\033[K")
            self.stream.flush()
            self._drawn = False

    def note(self, text: str) -> None:
        """A line of its own (a retry, a warning); the bar is redrawn by the next ``show``."""
        self._print(text)

    def upload(self, sent: int, size: int) -> None:
        percent = 100 * sent // size if size else 100
        text = f"uploading: {_megabytes(sent)} of {_megabytes(size)} ({percent}%)"
        if self.terminal:
            self._draw(text)
        elif sent == size or not self._upload_shown:
            self._upload_shown = sent != size
            self._print(text)

    def rate(self, job: dict[str, Any]) -> float | None:
        """Pictures per second since the job was first seen running."""
        done, _ = _progress_of(job)
        now = self.clock()
        if job.get("status") == "running" and self._running_since is None:
            self._running_since = (now, done)
        if self._running_since is None:
            return None
        since, first = self._running_since
        return (done - first) / (now - since) if now > since and done > first else None

    def line(self, job: dict[str, Any], width: int = 30) -> str:
        done, total = _progress_of(job)
        complete = job.get("status") == "succeeded"
        filled = width * done // total if total else (width if complete else 0)
        percent = 100 * done // total if total else (100 if complete else 0)
        rate = self.rate(job)
        speed = f", {rate:.1f} {_unit(job)}/s" if rate is not None else ""
        bar = f"[{'#' * filled}{'.' * (width - filled)}]"
        return f"{bar} {done}/{total} {percent}% {job.get('status')}{speed}"

    def show(self, job: dict[str, Any]) -> None:
        text = self.line(job)
        if self.terminal:
            self._draw(text)
            return
        status, (done, _) = str(job.get("status")), _progress_of(job)
        now = self.clock()
        last = self._last_plain
        changed = last is None or last[0] != status
        due = (last is None or last[1] != done) and now - self._last_plain_at >= PLAIN_PROGRESS_EVERY_S
        if changed or due:
            self._last_plain, self._last_plain_at = (status, done), now
            self._print(text)


def wait_for_job(
    client: JobClient,
    job: dict[str, Any],
    timeout_s: float,
    display: JobProgress,
    poll_s: float = JOB_POLL_S,
) -> dict[str, Any]:
    """Poll the job about every `poll_s` until it ends; the ended job's JSON.

    A gateway that does not answer (or answers 5xx) is retried for UNREACHABLE_GIVE_UP_S: a restart
    keeps every job. JobEnded after `timeout_s` (the job goes on on the server)."""
    deadline = time.monotonic() + timeout_s
    job_id = job["id"]
    failing_since: float | None = None
    display.show(job)
    while job.get("status") not in JOB_ENDED:
        now = time.monotonic()
        if now >= deadline:
            raise JobEnded(
                f"gave up waiting after {timeout_s:g} s (--timeout): job {job_id} is still "
                f"{job.get('status')} on the gateway, at {client.url}{_job_path(job_id)}"
            )
        time.sleep(min(poll_s, deadline - now))
        try:
            job = client.job(job_id)
        except (GatewayUnreachable, ApiError) as exc:
            if isinstance(exc, ApiError) and exc.status < 500:
                raise
            now = time.monotonic()
            if failing_since is None:
                failing_since = now
                display.note(f"warning: {exc} Retrying for up to {UNREACHABLE_GIVE_UP_S:g} s.")
            elif now - failing_since > UNREACHABLE_GIVE_UP_S:
                raise
            continue
        if failing_since is not None:
            failing_since = None
            display.note("the gateway answers again")
        display.show(job)
    return job


def result_target(out_dir: Path, name: object) -> Path | None:
    """Where a result file goes: ``DIR/<name>``, or None for a name that is not a plain file name
    (the names come from the server; nothing is written outside DIR)."""
    if not isinstance(name, str) or name in ("", ".", "..") or name.startswith("."):
        return None
    if "/" in name or "\\" in name or "\0" in name or Path(name).name != name:
        return None
    return out_dir / name


def download_results(
    client: JobClient, job: dict[str, Any], out_dir: Path, display: JobProgress
) -> tuple[list[tuple[Path, int]], list[str]]:
    """Every file of the job's `results` into `out_dir`: (path, size) written, and one message per
    file that could not be (each tried DOWNLOAD_TRIES times when the gateway did not answer)."""
    written: list[tuple[Path, int]] = []
    problems: list[str] = []
    results = job.get("results") or {}
    for name, link in results.items():
        target = result_target(out_dir, name)
        if target is None or not isinstance(link, str):
            problems.append(f"{name!r}: not a plain file name, not written")
            continue
        for attempt in range(1, DOWNLOAD_TRIES + 1):
            try:
                written.append((target, client.download(link, target)))
                break
            except (GatewayUnreachable, ApiError) as exc:
                transient = isinstance(exc, GatewayUnreachable) or exc.status >= 500
                if not transient or attempt == DOWNLOAD_TRIES:
                    problems.append(f"{name}: {exc}")
                    break
                display.note(f"warning: {name}: {exc}; retrying")
                time.sleep(attempt)
            except OSError as exc:
                problems.append(f"{name}: cannot write {target}: {exc.strerror or exc}")
                break
    return written, problems


@dataclass(frozen=True)
class JobRequest:
    """What ``python -m web.client job`` was asked to do."""

    url: str
    model: str
    archive: Path
    out_dir: Path | None  # None: a folder named after the job id, made in the current directory
    fields: dict[str, str]
    api_key: str | None = None
    timeout_s: float = DEFAULT_JOB_TIMEOUT_S
    request_timeout_s: float = DEFAULT_TIMEOUT_S
    file_field: str = "archive"  # "video" for a video job


def _follow_job(
    request: JobRequest,
    client: JobClient,
    display: JobProgress,
    stdout: TextIO,
    stderr: TextIO,
    poll_s: float,
) -> dict[str, Any] | int:
    """Upload the archive and wait for the job to end: the succeeded job's JSON, or the exit status
    when there is nothing to download (2 refused, 1 failed or given up, 130 Ctrl-C). Shared by
    ``job`` and ``evaluate``, which differ only in what they do with the results."""

    def fail(message: str, code: int) -> int:
        display.clear()
        print(message, file=stderr, flush=True)
        return code

    try:
        job = client.submit(
            request.model,
            request.archive,
            request.fields,
            on_sent=display.upload,
            file_field=request.file_field,
        )
    except (ApiError, GatewayUnreachable) as exc:
        local = isinstance(exc, ApiError) and not exc.status  # found here, not said by the gateway
        return fail(f"error: {exc.message}" if local else f"error: {exc}", 2)
    except KeyboardInterrupt:
        return fail("interrupted during the upload: no job was started", 130)
    display.clear()
    job_id = job["id"]
    unit = _unit(job)
    print(f"job {job_id} {job.get('status')}: {_progress_of(job)[1]} {unit}", file=stdout, flush=True)
    try:
        job = wait_for_job(client, job, request.timeout_s, display, poll_s)
    except KeyboardInterrupt:
        display.clear()
        try:
            client.cancel(job_id)
        except (ApiError, GatewayUnreachable) as exc:
            return fail(f"interrupted: job {job_id} could not be cancelled: {exc}", 130)
        return fail(f"interrupted: job {job_id} cancelled", 130)
    except JobEnded as exc:
        return fail(f"error: {exc}", 1)
    except ApiError as exc:
        return fail(f"error: job {job_id}: {exc}", 2 if exc.status < 500 else 1)
    except GatewayUnreachable as exc:
        return fail(f"error: job {job_id}: {exc}", 1)
    display.clear()
    done, total = _progress_of(job)
    skipped = job.get("skipped") or []
    status = job.get("status")
    if status != "succeeded":
        reason = job.get("error") or "no reason given"
        return fail(f"error: job {job_id} {status} after {done} of {total} {unit}: {reason}", 1)
    print(f"job {job_id} succeeded: {done} of {total} {unit} done, {len(skipped)} skipped", file=stdout)
    for item in skipped[:SKIPPED_SHOWN]:
        print(f"  skipped {item.get('file')}: {item.get('reason')}", file=stdout)
    if len(skipped) > SKIPPED_SHOWN:
        more = len(skipped) - SKIPPED_SHOWN
        print(f"  ... and {more} more skipped (the job's JSON lists them all)", file=stdout)
    return job


def _save_results(
    client: JobClient,
    job: dict[str, Any],
    request: JobRequest,
    display: JobProgress,
    stdout: TextIO,
    stderr: TextIO,
) -> tuple[int, Path | None]:
    """Download every result file and say what was written: (0, the folder), or 1 when some file
    could not be, 130 after Ctrl-C (the results stay on the gateway either way)."""
    out_dir = request.out_dir
    if out_dir is None:  # named after the job, which is known only now
        out_dir = result_target(Path.cwd(), job["id"]) or Path.cwd() / "job"
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            display.clear()
            print(f"error: cannot create {out_dir}: {exc.strerror or exc}; pass --out DIR", file=stderr)
            return 1, None
    try:
        written, problems = download_results(client, job, out_dir, display)
    except KeyboardInterrupt:
        display.clear()
        print(
            "interrupted during the downloads: the job's results stay on the gateway", file=stderr, flush=True
        )
        return 130, out_dir
    display.clear()
    for path, size in written:
        print(f"wrote {path} ({_megabytes(size)})", file=stdout)
    print(f"{len(written)} file(s) written to {out_dir}", file=stdout, flush=True)
    if problems:
        for problem in problems:
            print(f"error: {problem}", file=stderr)
        print(f"{len(problems)} result file(s) could not be downloaded", file=stderr, flush=True)
        return 1, out_dir
    return 0, out_dir


def run_job(
    request: JobRequest,
    progress: bool | None = None,
    stdout: TextIO = sys.stdout,
    stderr: TextIO = sys.stderr,
    poll_s: float = JOB_POLL_S,
) -> int:
    """Upload, wait, download; the exit status (0 done, 1 the job gave no results, 2 refused, 130 Ctrl-C)."""
    return _run_and_download(request, progress, stdout, stderr, poll_s)[0]


def _run_and_download(
    request: JobRequest, progress: bool | None, stdout: TextIO, stderr: TextIO, poll_s: float
) -> tuple[int, Path | None]:
    """What `job` and `evaluate` both do: upload, follow, download; the exit status and the folder
    the results went to (None when nothing was downloaded)."""
    client = JobClient(request.url, request.api_key, request.request_timeout_s)
    display = JobProgress(stderr, stderr.isatty() if progress is None else progress)
    job = _follow_job(request, client, display, stdout, stderr, poll_s)
    if isinstance(job, int):
        return job, None
    return _save_results(client, job, request, display, stdout, stderr)


BOX_METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100")
CLASSES_SHOWN = 30  # per-class rows printed; report.json and report.html hold them all


def _cell(value: object) -> str:
    """A metric as the report shows it: 3 decimals, '-' where COCOeval has no value (-1 or None)."""
    if not isinstance(value, int | float) or value < 0:
        return "-"
    return f"{value:.3f}"


def _table(rows: Sequence[Sequence[str]]) -> list[str]:
    """Plain-text columns: the first left-aligned, the rest right-aligned."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(
            cell.ljust(w) if i == 0 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    ]


def format_report(report: dict[str, Any]) -> list[str]:
    """report.json as the terminal tables `evaluate` prints: the metrics (one column per model and
    the change when comparing) and the per-class table."""
    models = report.get("models") or []
    comparison = report.get("comparison")
    labels = [str(m.get("label", m.get("name"))) for m in models]
    head = ["metric", *labels, *(["change"] if comparison else [])]
    rows: list[list[str]] = [head]
    if report.get("kind") == "detection":
        for iou in (report.get("protocol") or {}).get("iou_types") or ["bbox"]:
            for name in BOX_METRICS:
                change = ((comparison or {}).get("deltas") or {}).get(iou, {}).get(name)
                rows.append(
                    [
                        f"{'box' if iou == 'bbox' else 'mask'} {name}",
                        *(_cell((m["metrics"].get(iou) or {}).get(name)) for m in models),
                        *([_signed(change)] if comparison else []),
                    ]
                )
        rows.append(
            [
                "TP / FP / FN",
                *(
                    "{true_positives} / {false_positives} / {false_negatives}".format(**m["counts"])
                    for m in models
                ),
                *([""] if comparison else []),
            ]
        )
        class_head = [
            "class",
            "GT",
            *(f"AP50 {label}" for label in labels),
            *(f"AP {label}" for label in labels),
        ]
        keys = ("AP50", "AP")
    else:
        for name in ("top1", "top5"):
            change = ((comparison or {}).get("deltas") or {}).get(name)
            rows.append(
                [
                    name,
                    *(_cell(m["metrics"].get(name)) for m in models),
                    *([_signed(change)] if comparison else []),
                ]
            )
        class_head = [
            "class",
            "pictures",
            *(f"recall {label}" for label in labels),
            *(f"precision {label}" for label in labels),
        ]
        keys = ("recall", "precision")
    lines = _table(rows)
    first = models[0]["per_class"] if models else []
    by_model = [{row["name"]: row for row in m["per_class"]} for m in models]
    class_rows = [class_head]
    for row in first[:CLASSES_SHOWN]:
        count = row.get("ground_truth", row.get("support", 0))
        class_rows.append(
            [
                str(row["name"]),
                str(count),
                *(_cell(table.get(row["name"], {}).get(key)) for key in keys for table in by_model),
            ]
        )
    lines += ["", *_table(class_rows)]
    if len(first) > CLASSES_SHOWN:
        lines.append(
            f"... and {len(first) - CLASSES_SHOWN} more classes (report.json and report.html list them all)"
        )
    for model in models:
        unmatched = (model.get("matching") or {}).get("unmatched_categories") or []
        if unmatched:
            names = ", ".join(str(c.get("name")) for c in unmatched[:10])
            lines.append(f"{model.get('label')}: not scored, no label meets these categories: {names}")
    return lines


def _signed(value: object) -> str:
    if not isinstance(value, int | float):
        return "-"
    return "+0.000" if abs(value) < 0.0005 else f"{value:+.3f}"


def run_evaluate(
    request: JobRequest,
    progress: bool | None = None,
    stdout: TextIO = sys.stdout,
    stderr: TextIO = sys.stderr,
    poll_s: float = JOB_POLL_S,
) -> int:
    """Upload the dataset as an evaluate job, wait, download the report, print its tables; the exit
    status as for `job` (0 done, 1 the job gave no report, 2 refused, 130 Ctrl-C)."""
    code, folder = _run_and_download(request, progress, stdout, stderr, poll_s)
    report_path = None if folder is None else folder / "report.json"
    if report_path is None or not report_path.is_file():
        return code or 1
    try:
        report = json.loads(report_path.read_text(encoding="utf-8"))
        lines = format_report(report)
    except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
        print(f"error: {report_path} cannot be read as an evaluation report: {exc}", file=stderr)
        return 1
    print("", file=stdout)
    for line in lines:
        print(line, file=stdout)
    html = folder / "report.html"
    if html.is_file():
        print(f"\nthe report with plots and pictures: {html}", file=stdout)
    stdout.flush()
    return code


# The request options the client sends, as the server declares them (name, type, bounds, help).
CHECKED_OPTIONS: tuple[Option, ...] = (MIN_SCORE, MAX_DETECTIONS, IOU_THRESHOLD, VERSION, VERSION_LABEL)
EVALUATE_OPTIONS: tuple[Option, ...] = (*CHECKED_OPTIONS, OPERATING_SCORE)
VIDEO_JOB_OPTIONS: tuple[Option, ...] = (*CHECKED_OPTIONS, FPS)
# What an evaluate job takes when the option is not sent (the jobs API's own default for evaluate jobs).
EVALUATE_DEFAULTS = {MIN_SCORE.name: 0.0}


def _flag(option: Option) -> str:
    return "--" + option.name.replace("_", "-")


def _help(option: Option, default: object = None) -> str:
    bounds = "" if option.type is str else f"; {option.expected()}"
    default = option.default if default is None else default
    shown = "" if default is None else f" (gateway default: {default})"
    return f"{option.help}{bounds}{shown}"


def option_problem(args: argparse.Namespace, options: Sequence[Option] = CHECKED_OPTIONS) -> str | None:
    """What is wrong with the request options given on the command line, as the server would say."""
    for option in options:
        value = getattr(args, option.name)
        if value is not None and option.problem(value):
            return f"{_flag(option)} must be {option.expected()}, got {value!r}"
    return None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m web.client",
        description="Send images to the detection gateway and print or save what the model finds.",
        epilog="For a zip of many pictures: python -m web.client job MODEL ARCHIVE.zip --out DIR "
        "(runs a job on the gateway; see python -m web.client job --help).",
    )
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files (JPEG, PNG, ...)")
    parser.add_argument("--model", required=True, help="model name, as listed by GET /api/v1/models")
    _add_connection_arguments(parser)
    parser.add_argument("--out", type=Path, metavar="DIR", help="save the drawn pictures into DIR")
    parser.add_argument("--json", action="store_true", help="print one JSON object per image and line")
    for option in CHECKED_OPTIONS:
        parser.add_argument(_flag(option), type=option.type, help=_help(option))
    parser.add_argument(
        "--label-map", type=Path, help="label map (.pbtxt or labels.txt) sent with each image"
    )
    parser.add_argument(
        "--format", dest="image_format", choices=("jpeg", "png"), default="jpeg", help="format for --out"
    )
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="seconds per request")
    parser.add_argument("--no-progress", action="store_true", help="never draw the progress bar")
    return parser


def _add_connection_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--url",
        default=os.environ.get("GATEWAY_URL", DEFAULT_URL),
        help=f"gateway base URL (default: $GATEWAY_URL or {DEFAULT_URL})",
    )
    parser.add_argument(
        "--api-key",
        default=os.environ.get("GATEWAY_API_KEY"),
        help="API key when the gateway requires one (default: $GATEWAY_API_KEY)",
    )


def build_job_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m web.client job",
        description="Run a job on the gateway: upload a zip of pictures, follow its progress, and "
        "download every result file (predictions.jsonl, coco.json, yolo.zip, ...) into DIR. "
        "Ctrl-C while waiting cancels the job.",
    )
    parser.add_argument("model", metavar="MODEL", help="model name, as listed by GET /api/v1/models")
    parser.add_argument("archive", type=Path, metavar="ARCHIVE", help="a .zip of pictures, any folder depth")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="folder for the result files")
    _add_job_arguments(parser, CHECKED_OPTIONS)
    return parser


def build_evaluate_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m web.client evaluate",
        description="Evaluate a model on a labelled dataset: upload the zip (COCO instances json and "
        "its pictures, or one folder per class for a classifier) as an evaluate job, follow its "
        "progress, print COCO's metrics (or top-1/top-5) and the per-class table, and download "
        "report.json, report.html, coco_results*.json and the plots into DIR. Ctrl-C while waiting "
        "cancels the job.",
    )
    parser.add_argument("model", metavar="MODEL", help="model name, as listed by GET /api/v1/models")
    parser.add_argument(
        "archive", type=Path, metavar="DATASET", help="a .zip: COCO json + pictures, or class folders"
    )
    parser.add_argument(
        "--compare-with",
        metavar="MODEL[:VERSION]",
        help="a second model predicted on the same pictures; the tables get its column and the deltas",
    )
    parser.add_argument(
        "--out", type=Path, metavar="DIR", help="folder for the report files (default: ./<job id>)"
    )
    _add_job_arguments(parser, EVALUATE_OPTIONS, EVALUATE_DEFAULTS)
    return parser


def build_video_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m web.client video",
        description="Annotate a video on the gateway: upload it (MP4, MOV, WebM, MKV or AVI) as a video "
        "job, follow its progress, and download frames.jsonl (the detections of every analysed frame), "
        "the annotated video (boxes, masks, labels and, with --track, ids and trails drawn; sound kept) "
        "and summary.json into DIR. Ctrl-C while waiting cancels the job.",
    )
    parser.add_argument("model", metavar="MODEL", help="model name, as listed by GET /api/v1/models")
    parser.add_argument("archive", type=Path, metavar="VIDEO", help="the video file")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="folder for the result files")
    parser.add_argument("--track", action="store_true", help=TRACK.help)
    _add_job_arguments(parser, VIDEO_JOB_OPTIONS)
    return parser


def _add_job_arguments(
    parser: argparse.ArgumentParser, options: Sequence[Option], defaults: dict[str, object] | None = None
) -> None:
    """The arguments `job`, `evaluate` and `video` share: connection, request options, timeouts, progress."""
    _add_connection_arguments(parser)
    for option in options:
        parser.add_argument(
            _flag(option), type=option.type, help=_help(option, (defaults or {}).get(option.name))
        )
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_JOB_TIMEOUT_S,
        help=f"seconds to wait for the job to end (default {DEFAULT_JOB_TIMEOUT_S:g}); it goes on after",
    )
    parser.add_argument(
        "--request-timeout", type=float, default=DEFAULT_TIMEOUT_S, help="seconds per HTTP request"
    )
    parser.add_argument("--no-progress", action="store_true", help="never draw the progress bar")


def _check_common(
    parser: argparse.ArgumentParser, args: argparse.Namespace, options: Sequence[Option] = CHECKED_OPTIONS
) -> None:
    scheme = urllib.parse.urlsplit(args.url).scheme
    if scheme not in ("http", "https"):
        parser.error(f"--url must start with http:// or https://, got {args.url!r}")
    problem = option_problem(args, options)
    if problem:
        parser.error(problem)


def compare_problem(text: str) -> str | None:
    """What is wrong with ``--compare-with`` ("name" or "name:version"), before anything is uploaded."""
    name, _, version = text.partition(":")
    if not name.strip():
        return f"--compare-with must be a model name or name:version, got {text!r}"
    version = version.strip().lstrip("vV")
    if not version:
        return None
    try:
        number = int(version)
    except ValueError:
        number = 0
    if VERSION.problem(number):
        return f"--compare-with: the version after ':' must be {VERSION.expected()}, got {text!r}"
    return None


def _job_request(
    parser: argparse.ArgumentParser,
    args: argparse.Namespace,
    options: Sequence[Option],
    extra: dict[str, str] | None = None,
) -> JobRequest:
    """The checked arguments of `job` or `evaluate` as a JobRequest; usage errors exit 2 here."""
    _check_common(parser, args, options)
    for name in ("timeout", "request_timeout"):
        if not getattr(args, name) > 0:
            parser.error(f"--{name.replace('_', '-')} must be a positive number of seconds")
    try:
        with args.archive.open("rb"):
            pass
    except OSError as exc:
        parser.error(f"{args.archive}: cannot read the file: {exc.strerror or exc}")
    if not args.archive.is_file():
        parser.error(f"{args.archive}: not a file")
    if args.out is not None:
        try:
            args.out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            parser.error(f"--out {args.out}: cannot create the folder: {exc.strerror or exc}")
    fields = {
        option.name: str(getattr(args, option.name))
        for option in options
        if getattr(args, option.name) is not None
    }
    return JobRequest(
        url=args.url,
        model=args.model,
        archive=args.archive,
        out_dir=args.out,
        fields={**(extra or {}), **fields},
        api_key=args.api_key,
        timeout_s=args.timeout,
        request_timeout_s=args.request_timeout,
    )


def video_main(argv: Sequence[str]) -> int:
    """``python -m web.client video MODEL clip.mp4 --out DIR [--fps N] [--track]``."""
    parser = build_video_parser()
    args = parser.parse_args(argv)
    extra = {"kind": "video", **({"track": "true"} if args.track else {})}
    request = dataclasses.replace(_job_request(parser, args, VIDEO_JOB_OPTIONS, extra), file_field="video")
    try:
        return run_job(request, progress=False if args.no_progress else None)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def job_main(argv: Sequence[str]) -> int:
    """``python -m web.client job MODEL ARCHIVE --out DIR``."""
    parser = build_job_parser()
    args = parser.parse_args(argv)
    request = _job_request(parser, args, CHECKED_OPTIONS)
    try:
        return run_job(request, progress=False if args.no_progress else None)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def evaluate_main(argv: Sequence[str]) -> int:
    """``python -m web.client evaluate MODEL DATASET.zip [--compare-with M] [--out DIR]``."""
    parser = build_evaluate_parser()
    args = parser.parse_args(argv)
    extra = {"kind": "evaluate"}
    if args.compare_with is not None:
        problem = compare_problem(args.compare_with)
        if problem:
            parser.error(problem)
        extra["compare_with"] = args.compare_with.strip()
    request = _job_request(parser, args, EVALUATE_OPTIONS, extra)
    try:
        return run_evaluate(request, progress=False if args.no_progress else None)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point for ``python -m web.client`` (and ``python -m web.client job|evaluate ...``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["job"]:  # a picture file named "job" is still sent as ./job
        return job_main(argv[1:])
    if argv[:1] == ["evaluate"]:  # likewise ./evaluate
        return evaluate_main(argv[1:])
    if argv[:1] == ["video"]:  # likewise ./video
        return video_main(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    _check_common(parser, args)
    if args.label_map is not None and not args.label_map.is_file():
        parser.error(f"--label-map {args.label_map}: no such file")
    options = Options(
        url=args.url,
        model=args.model,
        min_score=args.min_score,
        max_detections=args.max_detections,
        iou_threshold=args.iou_threshold,
        version=args.version,
        version_label=args.version_label,
        api_key=args.api_key,
        label_map=args.label_map,
        image_format=args.image_format,
        timeout_s=args.timeout,
    )
    progress = False if args.no_progress else None
    try:
        return run(args.images, options, out_dir=args.out, as_json=args.json, progress=progress)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
