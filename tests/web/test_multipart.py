"""The multipart parser the gateway uses (python-multipart) reads every body as Werkzeug's parser does.

Each body is parsed twice, by `web.http.multipart.GatewayRequest` and by Werkzeug's own `Request`, and
the forms and files must come out the same: bodies as browsers, curl, requests and the command-line
client encode them, and the odd ones (empty parts, bare LF line ends, a missing closing boundary)
that go to Werkzeug's parser.
"""

from __future__ import annotations

import io

import pytest
import urllib3
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.formparser import FormDataParser
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request

from web.client import encode_multipart
from web.http.multipart import GatewayRequest

BOUNDARY = "----formboundary7MA4YWxkTrZu0gW"
JPEG_LIKE = b"\xff\xd8\xff\xe0" + bytes(range(256)) * 300 + b"\r\n--not-the-boundary\r\n" + b"\xff\xd9"


def _environ(body: bytes, content_type: str) -> dict:
    return EnvironBuilder(method="POST", input_stream=io.BytesIO(body), content_type=content_type,
                          content_length=len(body)).get_environ()


def _parsed(request_class: type[Request], body: bytes, content_type: str, **limits) -> tuple[list, list]:
    request = request_class(_environ(body, content_type))
    for name, value in limits.items():
        setattr(request, name, value)
    form = sorted(request.form.items(multi=True))
    files = sorted(
        (name, f.filename, f.mimetype, f.read()) for name, f in request.files.items(multi=True)
    )
    return form, files


def _same(body: bytes, content_type: str) -> tuple[list, list]:
    ours = _parsed(GatewayRequest, body, content_type)
    assert ours == _parsed(Request, body, content_type)
    return ours


def _browser_body(parts: list[tuple[str, str | None, str | None, bytes]], line: bytes = b"\r\n") -> bytes:
    """What a browser sends: (name, filename or None, content type or None, content) per part."""
    out = []
    for name, filename, content_type, content in parts:
        disposition = f'form-data; name="{name}"'
        if filename is not None:
            disposition += f'; filename="{filename}"'
        out.append(b"--" + BOUNDARY.encode() + line)
        out.append(b"Content-Disposition: " + disposition.encode() + line)
        if content_type:
            out.append(b"Content-Type: " + content_type.encode() + line)
        out.append(line + content + line)
    out.append(b"--" + BOUNDARY.encode() + b"--" + line)
    return b"".join(out)


def test_a_browser_upload_with_fields_reads_as_with_werkzeug() -> None:
    body = _browser_body([
        ("model", None, None, b"shapes"),
        ("min_score", None, None, b"0.3"),
        ("image", "photo \u00e9t\u00e9.jpg", "image/jpeg", JPEG_LIKE),
        ("label_map", "label_map.pbtxt", "text/plain", b'item { id: 1 name: "circle" }\n'),
    ])
    form, files = _same(body, f"multipart/form-data; boundary={BOUNDARY}")
    assert form == [("min_score", "0.3"), ("model", "shapes")]
    assert files[0][1] == "photo \u00e9t\u00e9.jpg"
    assert [(name, content) for name, _, _, content in files] == [
        ("image", JPEG_LIKE), ("label_map", b'item { id: 1 name: "circle" }\n')]


def test_well_formed_bodies_never_reach_werkzeugs_parser(monkeypatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("Werkzeug's multipart parser was used")

    monkeypatch.setattr(FormDataParser, "_parse_multipart", refuse)
    body = _browser_body([("min_score", None, None, b"0.3"), ("image", "a.jpg", "image/jpeg", JPEG_LIKE)])
    form, files = _parsed(GatewayRequest, body, f"multipart/form-data; boundary={BOUNDARY}")
    assert form == [("min_score", "0.3")] and files[0][3] == JPEG_LIKE


def test_bodies_from_requests_and_the_command_line_client_read_as_with_werkzeug() -> None:
    body, content_type = urllib3.encode_multipart_formdata(
        {"image": ("a.jpg", JPEG_LIKE, "image/jpeg"), "store": "true", "note": "caf\u00e9 \u2615"})
    form, files = _same(body, content_type)
    assert ("note", "caf\u00e9 \u2615") in form and files[0][3] == JPEG_LIKE
    body, content_type = encode_multipart([("image", "b.jpg", JPEG_LIKE), ("image", "c.jpg", b"\xff\xd8x")])
    _, files = _same(body, content_type)
    assert [f[1] for f in files] == ["b.jpg", "c.jpg"]


def test_rfc_2231_file_names_and_field_charsets_read_as_with_werkzeug() -> None:
    body = (
        f"--{BOUNDARY}\r\n"
        "Content-Disposition: form-data; name=\"image\"; filename*=UTF-8''%E5%86%99%E7%9C%9F.jpg\r\n"
        "Content-Type: image/jpeg\r\n\r\n"
    ).encode() + JPEG_LIKE + (
        f"\r\n--{BOUNDARY}\r\n"
        'Content-Disposition: form-data; name="caption"\r\n'
        "Content-Type: text/plain; charset=iso-8859-1\r\n\r\n"
    ).encode() + "\u00e9t\u00e9".encode("latin-1") + f"\r\n--{BOUNDARY}--\r\n".encode()
    form, files = _same(body, f"multipart/form-data; boundary={BOUNDARY}")
    assert files[0][1] == "\u5199\u771f.jpg" and form == [("caption", "\u00e9t\u00e9")]


@pytest.mark.parametrize(
    "body",
    [
        # Werkzeug's test client: an empty part with no line break before the next boundary
        EnvironBuilder(method="POST", data={"model": "", "image": (io.BytesIO(b""), "e.jpg")})
        .get_environ()["wsgi.input"].read(),
        # a browser's empty file input and empty field (with the line break)
        _browser_body([("image", "", "application/octet-stream", b""), ("model", None, None, b"")]),
        # bare LF line ends
        _browser_body([("image", "a.jpg", "image/jpeg", JPEG_LIKE)], line=b"\n"),
        # no closing boundary, a body cut short, no parts at all
        _browser_body([("image", "a.jpg", "image/jpeg", JPEG_LIKE)])[:-40],
        _browser_body([("image", "a.jpg", "image/jpeg", JPEG_LIKE)])[:300],
        b"not multipart at all",
        b"",
    ],
    ids=["werkzeug-empty-parts", "browser-empty-parts", "lf-line-ends", "no-closing-boundary", "cut-short",
         "garbage", "empty"],
)
def test_odd_bodies_read_exactly_as_werkzeug_reads_them(body: bytes) -> None:
    boundary = BOUNDARY
    if body.startswith(b"\r\n--") or body.startswith(b"--"):
        boundary = body.split(b"\n", 2)[1 if body.startswith(b"\r\n") else 0].strip()[2:].decode()
    _same(body, f"multipart/form-data; boundary={boundary}")


def test_the_form_limits_still_answer_413() -> None:
    many = _browser_body([(f"f{i}", None, None, b"x") for i in range(30)])
    with pytest.raises(RequestEntityTooLarge):
        _parsed(GatewayRequest, many, f"multipart/form-data; boundary={BOUNDARY}", max_form_parts=20)
    big_field = _browser_body([("caption", None, None, b"x" * 5000)])
    with pytest.raises(RequestEntityTooLarge):
        _parsed(GatewayRequest, big_field, f"multipart/form-data; boundary={BOUNDARY}",
                max_form_memory_size=1000)
    # a file part is not a form field: its size is MAX_CONTENT_LENGTH's business
    form, files = _parsed(GatewayRequest, _browser_body([("image", "a.jpg", "image/jpeg", JPEG_LIKE)]),
                          f"multipart/form-data; boundary={BOUNDARY}", max_form_memory_size=1000)
    assert files[0][3] == JPEG_LIKE
