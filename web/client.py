"""Command-line client for the gateway's REST API, for people who prefer a terminal.

    python -m web.client IMAGE... --model shapes [--url http://localhost:5000] [--out DIR] [--json]

Each image is sent to ``POST /api/v1/models/<model>/predict`` once; the answer is printed as a
one-line summary (or, with ``--json``, as one JSON object per line). With ``--out DIR`` the same
request asks for the picture with boxes and masks drawn as well (``picture=jpeg``), saved as
``DIR/<stem>_detections.jpg``: one inference per image. Images go as the request body itself
(``Content-Type: image/jpeg``, the file name in ``Content-Disposition``), the cheapest upload for
the gateway to read; only with ``--label-map`` is a multipart body sent. A progress bar goes to
stderr when several images are sent and stderr is a terminal.

Why stdlib only: the client ships inside the gateway package and is useful on any machine with
Python 3.11, so it must not need ``requests`` (not in requirements/web.txt) or anything else to be
installed; multipart bodies are encoded by hand. The options it sends are checked against the
server's own declaration of them (``web.options``, standard library only too), so the client and
the server accept exactly the same values.

Exit status: 0 when every image was processed, 1 when some failed (a missing file, a rejected
image, a model-server error) -- the others are still processed -- and 2 when nothing can work
(the gateway cannot be reached, wrong API key, unknown model) or the arguments are wrong.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import mimetypes
import os
import shutil
import sys
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from web.options import IOU_THRESHOLD, MAX_DETECTIONS, MIN_SCORE, VERSION, VERSION_LABEL, Option

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
        request = urllib.request.Request(
            self._endpoint(picture), data=body, headers=headers, method="POST"
        )
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


# The request options the client sends, as the server declares them (name, type, bounds, help).
CHECKED_OPTIONS: tuple[Option, ...] = (MIN_SCORE, MAX_DETECTIONS, IOU_THRESHOLD, VERSION, VERSION_LABEL)


def _flag(option: Option) -> str:
    return "--" + option.name.replace("_", "-")


def _help(option: Option) -> str:
    bounds = "" if option.type is str else f"; {option.expected()}"
    default = "" if option.default is None else f" (gateway default: {option.default})"
    return f"{option.help}{bounds}{default}"


def option_problem(args: argparse.Namespace) -> str | None:
    """What is wrong with the request options given on the command line, as the server would say."""
    for option in CHECKED_OPTIONS:
        value = getattr(args, option.name)
        if value is not None and option.problem(value):
            return f"{_flag(option)} must be {option.expected()}, got {value!r}"
    return None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m web.client",
        description="Send images to the detection gateway and print or save what the model finds.",
    )
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files (JPEG, PNG, ...)")
    parser.add_argument("--model", required=True, help="model name, as listed by GET /api/v1/models")
    parser.add_argument(
        "--url",
        default=os.environ.get("GATEWAY_URL", DEFAULT_URL),
        help=f"gateway base URL (default: $GATEWAY_URL or {DEFAULT_URL})",
    )
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
    parser.add_argument(
        "--api-key",
        default=os.environ.get("GATEWAY_API_KEY"),
        help="API key when the gateway requires one (default: $GATEWAY_API_KEY)",
    )
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="seconds per request")
    parser.add_argument("--no-progress", action="store_true", help="never draw the progress bar")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point for ``python -m web.client``."""
    parser = build_parser()
    args = parser.parse_args(argv)
    scheme = urllib.parse.urlsplit(args.url).scheme
    if scheme not in ("http", "https"):
        parser.error(f"--url must start with http:// or https://, got {args.url!r}")
    problem = option_problem(args)
    if problem:
        parser.error(problem)
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
