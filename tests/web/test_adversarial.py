"""The adversarial corpus: every bad upload, label map and option, through all three predict endpoints
and the HTML form. Each answers the right 4xx with a message that says what to fix, never a
traceback, and leaves no file behind. The model server is down in this app: bad input must be
refused before any gRPC."""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass

import numpy as np
import pytest
from flask import Flask
from PIL import Image

from tests.support.forms import flask_csrf_token
from tests.web.helpers import encode, result_files, solid
from tests.web.test_images import jpeg_claiming, png_header_only

GOOD = solid(64, 48)


def _noise(fmt: str, **params) -> bytes:
    rng = np.random.default_rng(3)
    return encode(Image.fromarray((rng.random((120, 160, 3)) * 255).astype(np.uint8)), fmt, **params)


def _half_with_end(data: bytes, end: bytes) -> bytes:
    return data[: len(data) // 2] + end


def _deep_label_map(levels: int) -> bytes:
    return b"item " + b"{ keypoints " * levels + b"}" * levels


def _png_with_lying_chunk() -> bytes:
    data = bytearray(encode(Image.new("RGB", (64, 48), (9, 9, 9)), "PNG"))
    idat = data.find(b"IDAT") - 4
    data[idat : idat + 4] = struct.pack(">I", 10**6)  # IDAT claims a megabyte it does not have
    return bytes(data)


@dataclass(frozen=True)
class Case:
    """One bad request: the upload (or None), a label map, options, and what must come back."""

    id: str
    image: bytes | None = GOOD
    label_map: tuple[bytes, str] | None = None
    options: tuple[tuple[str, str], ...] = ()
    status: int = 400
    fragment: str = ""
    api_only: bool = False  # the form has no such field


CASES = (
    Case("no-image", image=None, fragment="image"),
    Case("empty", image=b"", fragment="is empty"),
    Case("text", image=b"just some text\n", status=415, fragment="not an image we can read"),
    Case("pdf", image=b"%PDF-1.7\n%...", status=415, fragment="JPEG, PNG"),
    Case("html", image=b"<html><script>alert(1)</script></html>", status=415, fragment="not an image"),
    Case("jpeg-magic-only", image=b"\xff\xd8\xff\xe0" + b"\x00" * 40, fragment="truncated or damaged"),
    Case("png-magic-only", image=b"\x89PNG\r\n\x1a\n" + b"\x00" * 30, fragment="truncated or damaged"),
    Case("jpeg-cut", image=GOOD[: len(GOOD) // 2], fragment="truncated"),
    Case(
        "jpeg-half-with-end",
        image=_half_with_end(_noise("JPEG"), b"\xff\xd9"),
        fragment="truncated or corrupt",
    ),
    Case(
        "progressive-half-with-end",
        image=_half_with_end(_noise("JPEG", progressive=True), b"\xff\xd9"),
        fragment="truncated or corrupt",
    ),
    Case("png-half-with-iend", image=_half_with_end(_noise("PNG"), _noise("PNG")[-12:]), fragment="IEND"),
    Case("png-lying-chunk", image=_png_with_lying_chunk(), fragment="IEND"),
    Case("gif-cut", image=_noise("GIF")[:300], fragment="truncated"),
    Case("bmp-cut", image=_noise("BMP")[:3000], fragment="truncated"),
    Case("webp-cut", image=_noise("WEBP")[:200], fragment="truncated"),
    Case("tiff-cut", image=_noise("TIFF")[:2000], fragment="truncated"),
    Case("tiny-jpeg-claiming-36mp", image=jpeg_claiming(6000, 6000), fragment="cannot hold that many"),
    Case("png-claiming-81mp", image=png_header_only(9000, 9000), status=413, fragment="MAX_IMAGE_PIXELS"),
    Case("png-bomb-900mp", image=png_header_only(30000, 30000), status=413, fragment="MAX_IMAGE_PIXELS"),
    Case("jpeg-claiming-zero", image=jpeg_claiming(0, 0), fragment="image"),
    Case("label-map-broken", label_map=(b"item { id: 1 name: 'a' ", "lm.pbtxt"), fragment="line 1, column"),
    Case("label-map-4000-deep", label_map=(_deep_label_map(4000), "deep.pbtxt"), fragment="4000 levels deep"),
    Case("label-map-empty", label_map=(b"   \n", "lm.pbtxt"), fragment="is empty"),
    Case("label-map-binary", label_map=(b"\xff\xfe\x00item", "lm.pbtxt"), fragment="not UTF-8"),
    Case("label-map-blank-line", label_map=(b"a\n\nb\n", "labels.txt"), fragment="line 2 is blank"),
    Case(
        "label-map-negative-id", label_map=(b"item { id: -3 name: 'x' }", "lm.pbtxt"), fragment="negative id"
    ),
    Case("min-score-high", options=(("min_score", "2"),), fragment="min_score"),
    Case("min-score-nan", options=(("min_score", "nan"),), fragment="min_score"),
    Case("max-detections-zero", options=(("max_detections", "0"),), fragment="max_detections"),
    Case("iou-not-a-number", options=(("iou_threshold", "abc"),), fragment="iou_threshold"),
    Case("version-word", options=(("version", "latest"),), fragment="version must be a positive integer"),
    Case("version-and-label", options=(("version", "1"), ("version_label", "a")), fragment="either version"),
    Case("store-maybe", options=(("store", "maybe"),), fragment="store must be true or false", api_only=True),
)
ENDPOINTS = ("predict", "predict_image", "predict_batch", "form")


def _api(client, endpoint: str, case: Case):
    data: dict = {}
    if case.image is not None:
        if endpoint == "predict_batch":  # the bad one second, after a good one
            data["image"] = [(io.BytesIO(GOOD), "good.jpg"), (io.BytesIO(case.image), "bad.bin")]
        else:
            data["image"] = (io.BytesIO(case.image), "bad.bin")
    if case.label_map is not None:
        data["label_map"] = (io.BytesIO(case.label_map[0]), case.label_map[1])
    query = "&".join(f"{k}={v}" for k, v in case.options)
    return client.post(
        f"/api/v1/models/shapes/{endpoint}" + (f"?{query}" if query else ""),
        data=data,
        content_type="multipart/form-data",
    )


def _form(client, case: Case):
    data: dict = {"model": "shapes", "csrf_token": flask_csrf_token(client), **dict(case.options)}
    if case.image is not None:
        data["image"] = (io.BytesIO(case.image), "bad.bin")
    if case.label_map is not None:
        data["label_map"] = (io.BytesIO(case.label_map[0]), case.label_map[1])
    return client.post("/", data=data, content_type="multipart/form-data")


@pytest.mark.parametrize(
    ("case", "endpoint"),
    [(c, e) for c in CASES for e in ENDPOINTS if not (e == "form" and c.api_only)],
    ids=[f"{c.id}-{e}" for c in CASES for e in ENDPOINTS if not (e == "form" and c.api_only)],
)
def test_bad_input_is_refused_clearly_and_leaves_nothing(
    offline_app: Flask, case: Case, endpoint: str
) -> None:
    client = offline_app.test_client()
    response = _form(client, case) if endpoint == "form" else _api(client, endpoint, case)
    text = response.get_data(as_text=True)
    assert response.status_code == case.status, text[-600:]
    assert "Traceback" not in text and 'File "' not in text
    if endpoint == "form":
        assert response.mimetype == "text/html" and '<form class="upload-form"' in text  # to try again
        assert case.fragment.replace("'", "&#39;") in text or case.fragment in text, text[-600:]
    else:
        body = response.get_json()
        assert body["error"]["code"] == case.status and case.fragment in body["error"]["message"], body
        if endpoint == "predict_batch" and case.image not in (None, GOOD):
            assert "image #2" in body["error"]["message"], body  # it says which one
    assert result_files(offline_app) == []


def test_the_corpus_is_large_enough() -> None:
    api_cases = len(CASES) * 3
    form_cases = len([c for c in CASES if not c.api_only])
    assert api_cases + form_cases >= 60


@pytest.mark.parametrize(
    "data,fragment",
    [
        ({f"field{i}": "x" for i in range(250)}, "more than 200 parts"),
        ({"min_score": "0" * 600_000}, "a text field larger than 256 KiB"),
    ],
    ids=["1500-fields", "600kb-field"],
)
@pytest.mark.parametrize("path", ["/api/v1/models/shapes/predict", "/"])
def test_form_limits_name_the_real_limit(offline_app: Flask, data: dict, fragment: str, path: str) -> None:
    client = offline_app.test_client()
    body = {**data, "image": (io.BytesIO(GOOD), "a.jpg")}
    response = client.post(path, data=body, content_type="multipart/form-data")
    assert response.status_code == 413
    text = response.get_data(as_text=True)
    assert fragment in text and "MAX_CONTENT_LENGTH" not in text


def test_a_body_over_max_content_length_says_so(make_app, offline_app: Flask) -> None:
    config = offline_app.extensions["gateway"].settings.model_config_file
    app = make_app(MODEL_CONFIG_FILE=config, MAX_CONTENT_LENGTH=50_000)
    response = app.test_client().post(
        "/api/v1/models/shapes/predict", data=b"\xff" * 60_000, content_type="image/jpeg"
    )
    assert (
        response.status_code == 413
        and "MAX_CONTENT_LENGTH (0.0476837 MiB)" in response.get_json()["error"]["message"]
    )
