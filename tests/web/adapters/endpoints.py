"""Talking to a running gateway the four ways users do (`/predict`, `/predict_image`,
`/predict_batch`, the HTML form), and the test pictures the family models look at."""

from __future__ import annotations

import io
import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest
import requests
from PIL import Image, ImageOps

from tests.support.forms import browser_session
from web.pipeline.images import UPRIGHT

BACKGROUND = 20
BRIGHT = 220
TIMEOUT_S = 60
RESULT_PATH = re.compile(r"^/results/[0-9]{8}T[0-9]{12}Z-[0-9a-f]{16}$")
# The transpose that turns an upright picture into what a camera stores under each EXIF orientation.
STORED_AS = {
    o: {
        Image.Transpose.ROTATE_90: Image.Transpose.ROTATE_270,
        Image.Transpose.ROTATE_270: Image.Transpose.ROTATE_90,
    }.get(t, t)
    for o, t in UPRIGHT.items()
}


def scene(
    width: int,
    height: int,
    rect: tuple[int, int, int, int],
    fmt: str = "PNG",
    orientation: int = 1,
    background: tuple[int, int, int] = (BACKGROUND,) * 3,
    bright: tuple[int, int, int] = (BRIGHT,) * 3,
) -> bytes:
    """A dark picture with one bright rectangle (xmin, ymin, xmax, ymax), as displayed; with an EXIF
    `orientation`, the pixels are stored turned the way a phone stores them, and the tag says so."""
    picture = Image.new("RGB", (width, height), background)
    picture.paste(bright, rect)
    exif = Image.Exif()
    if orientation != 1:
        picture = picture.transpose(STORED_AS[orientation])
        exif[0x0112] = orientation
    buf = io.BytesIO()
    params = {"quality": 95} if fmt == "JPEG" else {}
    picture.save(buf, format=fmt, exif=exif, **params)
    return buf.getvalue()


def as_xyxy(box: dict) -> list[float]:
    return [box["xmin"], box["ymin"], box["xmax"], box["ymax"]]


def by_label(body: dict) -> dict[str, dict]:
    return {d["label"]: d for d in body["detections"]}


def check_bright_box(body: dict, rect: tuple[int, int, int, int], label: str, tolerance: float = 3.0) -> None:
    """The model found the bright rectangle where it is in the upload, and saw its true grey level."""
    found = by_label(body)
    assert label in found, body
    np.testing.assert_allclose(as_xyxy(found[label]["box"]), rect, atol=tolerance)
    assert found[label]["score"] == pytest.approx(BRIGHT / 255, abs=0.03)


@dataclass(frozen=True)
class FamilyGateway:
    """A gateway running under gunicorn, by URL."""

    url: str

    def post(self, model: str, endpoint: str, images: list[tuple[str, bytes]], **query) -> requests.Response:
        files = [("image", (name, data, "application/octet-stream")) for name, data in images]
        return requests.post(
            f"{self.url}/api/v1/models/{model}/{endpoint}", params=query, files=files, timeout=TIMEOUT_S
        )

    def predict(self, model: str, image: bytes, name: str = "scene.png", **query) -> requests.Response:
        return self.post(model, "predict", [(name, image)], **query)

    def detail(self, model: str) -> dict:
        return requests.get(f"{self.url}/api/v1/models/{model}", timeout=TIMEOUT_S).json()

    def form(self, model: str, image: bytes, name: str = "scene.png", **fields) -> tuple[str, dict]:
        """Submit the upload form like a browser; the result page's HTML and its JSON."""
        session, token = browser_session(self.url)
        data = {
            "model": model,
            "min_score": "0.5",
            "csrf_token": token,
            **{k: str(v) for k, v in fields.items()},
        }
        response = session.post(
            f"{self.url}/",
            data=data,
            files={"image": (name, image)},
            allow_redirects=False,
            timeout=TIMEOUT_S,
        )
        assert response.status_code == 303, response.text[:2000]
        location = response.headers["Location"]
        path = location.split("://", 1)[-1].split("/", 1)[-1]
        assert RESULT_PATH.match("/" + path), location
        page = session.get(f"{self.url}/{path}", timeout=TIMEOUT_S)
        assert page.status_code == 200
        body = session.get(f"{self.url}/{path}.json", timeout=TIMEOUT_S).json()
        return page.text, body


def post_to_app(client, model: str, image: bytes, query: str = ""):
    """/predict through a Flask test client (for apps a test configures itself)."""
    return client.post(
        f"/api/v1/models/{model}/predict{query}",
        data={"image": (io.BytesIO(image), "a.png")},
        content_type="multipart/form-data",
    )


def picture_of(response: requests.Response) -> np.ndarray:
    assert response.status_code == 200, response.text[:2000]
    assert response.headers["Content-Type"] == "image/jpeg"
    return np.asarray(Image.open(io.BytesIO(response.content)).convert("RGB")).astype(int)


def outline_drawn(drawn: np.ndarray, original: np.ndarray, box: list[float]) -> bool:
    """Whether a box outline was drawn along the box's left and right edges (captions aside)."""
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    rows = slice(y0 + (y1 - y0) // 4, y1 - (y1 - y0) // 4)
    edges = [np.abs(drawn[rows, x] - original[rows, x]).max(axis=1) for x in (x0 + 1, x1 - 2)]
    return all(np.mean(edge > 40) > 0.6 for edge in edges)


def every_endpoint(
    gateway: FamilyGateway,
    model: str,
    image: bytes,
    check: Callable[[dict], None],
    *,
    boxes: Callable[[dict], list[list[float]]] | None = None,
    second: tuple[bytes, Callable[[dict], None]] | None = None,
    **query,
) -> dict:
    """Run `check` on the JSON of /predict, each item of /predict_batch and the HTML form's result,
    and check that /predict_image draws the boxes `boxes` picks (or, for classifiers, a caption)."""
    response = gateway.predict(model, image, **query)
    assert response.status_code == 200, response.text
    body = response.json()
    check(body)

    original = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(image))).convert("RGB")).astype(int)
    drawn = picture_of(gateway.post(model, "predict_image", [("scene.png", image)], **query))
    assert drawn.shape == original.shape
    if boxes is not None:
        for box in boxes(body):
            assert outline_drawn(drawn, original, box), box
    else:  # a classifier: its captions in the top-left corner
        assert np.abs(drawn[:30, :60] - original[:30, :60]).max() > 60

    images = [("one.png", image)] + ([("two.png", second[0])] if second else [])
    batch = gateway.post(model, "predict_batch", images, **query)
    assert batch.status_code == 200, batch.text
    items = batch.json()
    assert len(items) == len(images)
    check(items[0])
    if second:
        second[1](items[1])

    fields = {"min_score": query.get("min_score", 0.5)}
    page, stored = gateway.form(model, image, **fields)
    check(stored)
    for det in stored.get("detections", []):
        assert det["label"] in page
    for cls in stored.get("classes") or []:
        assert cls["label"] in page
    return body
