"""bench.forwarder: finding the picture in the body and the PredictRequest it sends (no model server)."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from bench import forwarder
from bench.clients import multipart_body
from web.serving.protos.tensorflow.core.framework import types_pb2


@pytest.fixture()
def jpeg() -> bytes:
    pixels = np.zeros((48, 64, 3), dtype=np.uint8)
    pixels[10:30, 20:50] = (200, 30, 90)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def test_raw_body_is_the_picture(jpeg: bytes) -> None:
    assert forwarder.picture(jpeg, "image/jpeg") == jpeg


def test_multipart_part_content_is_the_picture(jpeg: bytes) -> None:
    body, content_type = multipart_body(jpeg, filename="x.jpg")
    assert forwarder.picture(body, content_type) == jpeg
    quoted = content_type.replace("boundary=", 'boundary="') + '"'
    assert forwarder.picture(body, quoted) == jpeg


@pytest.mark.parametrize(("body", "content_type"), [
    (b"a=1", "application/x-www-form-urlencoded"),
    (b"--zz\r\nno blank line and no end", "multipart/form-data; boundary=zz"),
    (b"", "multipart/form-data; boundary=zz"),
])
def test_no_picture_is_a_bad_upload(body: bytes, content_type: str) -> None:
    with pytest.raises(forwarder.BadUpload):
        forwarder.picture(body, content_type)


def test_string_input_gets_the_bytes(jpeg: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(forwarder._inputs, "shapes_jpeg", ("encoded_image", types_pb2.DT_STRING))
    request = forwarder.build_request("shapes_jpeg", jpeg)
    tensor = request.inputs["encoded_image"]
    assert [d.size for d in tensor.tensor_shape.dim] == [1]
    assert list(tensor.string_val) == [jpeg]
    assert request.model_spec.name == "shapes_jpeg" and request.model_spec.signature_name == "serving_default"


def test_uint8_input_gets_decoded_pixels(jpeg: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(forwarder._inputs, "shapes", ("input_tensor", types_pb2.DT_UINT8))
    tensor = forwarder.build_request("shapes", jpeg).inputs["input_tensor"]
    assert tensor.dtype == types_pb2.DT_UINT8
    assert [d.size for d in tensor.tensor_shape.dim] == [1, 48, 64, 3]
    pixels = np.frombuffer(tensor.tensor_content, dtype=np.uint8).reshape(48, 64, 3)
    expected = np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB"))
    assert np.abs(pixels.astype(int) - expected.astype(int)).max() <= 2  # libjpeg-turbo either way
    with pytest.raises(forwarder.BadUpload):
        forwarder.build_request("shapes", b"not a jpeg")


def test_routes_without_a_model_server() -> None:
    answers = []

    def start_response(status: str, headers: list) -> None:
        answers.append((status, dict(headers)))

    body = b"".join(forwarder.app({"REQUEST_METHOD": "GET", "PATH_INFO": "/healthz"}, start_response))
    assert answers[-1][0] == "200 OK" and json.loads(body)["status"] == "ok"
    body = b"".join(forwarder.app({"REQUEST_METHOD": "GET", "PATH_INFO": "/nope"}, start_response))
    assert answers[-1][0] == "404 Not Found"
    assert answers[-1][1]["Content-Length"] == str(len(body))


def test_imports_no_tensorflow() -> None:
    code = "import sys, bench.forwarder; print('tensorflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "False"
