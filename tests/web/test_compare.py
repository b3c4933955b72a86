"""One picture, two models, on the upload page: both drawn side by side, the boxes only one found marked.

The pairing itself is checked on detections made up here; the page over real gRPC with the demo models,
where a label map given to the first model (it names squares "box") makes every square one model's
alone, so the page's counts can be held against the two models' own answers from the API.
"""

from __future__ import annotations

import base64
import io
import re

import numpy as np
import pytest
from flask import Flask
from flask.testing import FlaskClient
from PIL import Image

from demo.digits import generate_digit
from demo.synthetic import encode_jpeg, generate_image
from tests.support.forms import flask_csrf_token
from tests.support.model_server import REPO_ROOT
from web.domain import Box, Detection
from web.pipeline.compare import pair_detections

DEMO_CONFIG = REPO_ROOT / "tf_server" / "models.config"
PICTURE = re.compile(r'<img src="data:image/jpeg;base64,([A-Za-z0-9+/=]+)"')


def det(label: str, score: float, x: float, y: float, size: float = 10.0) -> Detection:
    return Detection(class_id=0, label=label, score=score, box=Box(x, y, x + size, y + size))


def test_pairs_need_the_same_label_and_enough_overlap_best_scores_first() -> None:
    first = [det("cat", 0.9, 0, 0), det("dog", 0.8, 50, 50), det("cat", 0.7, 100, 100), det("Cat", 0.6, 1, 1)]
    second = [
        det("CAT", 0.5, 1, 0),  # IoU 0.82 with first[0] and 0.68 with first[3]: goes to the higher score
        det("cat", 0.9, 50, 50),  # the right place, another label
        det("cat", 0.4, 106, 106),  # IoU 0.09: not the same object
        det("cat", 0.3, 0, 1),  # left for first[3]
    ]
    pairing = pair_detections(first, second)
    assert pairing.pairs == [(0, 0), (3, 3)]
    assert pairing.only_first == [1, 2] and pairing.only_second == [1, 2]
    assert pair_detections([], second).only_second == [0, 1, 2, 3]


@pytest.fixture()
def demo_client(make_app, demo_model_server: str) -> FlaskClient:
    app: Flask = make_app(TF_SERVING_ADDRESS=demo_model_server, MODEL_CONFIG_FILE=DEMO_CONFIG)
    return app.test_client()


def photo(seed: int) -> bytes:
    pixels, _ = generate_image(np.random.default_rng(seed), 480, 360, min_shapes=3, max_shapes=5)
    return encode_jpeg(pixels)


def submit(client: FlaskClient, data: bytes, **fields: object):
    form = {"model": "shapes", "min_score": "0.5", "image": (io.BytesIO(data), "shapes.jpg"), **fields}
    form["csrf_token"] = flask_csrf_token(client)
    return client.post("/", data=form, content_type="multipart/form-data")


def answers(client: FlaskClient, model: str, data: bytes, **files) -> list[dict]:
    payload = {"image": (io.BytesIO(data), "shapes.jpg"), "min_score": "0.5", **files}
    answer = client.post(f"/api/v1/models/{model}/predict", data=payload, content_type="multipart/form-data")
    assert answer.status_code == 200, answer.get_json()
    return answer.get_json()["detections"]


def test_two_models_side_by_side_with_what_only_one_found(demo_client: FlaskClient) -> None:
    page = demo_client.get("/").get_data(as_text=True)
    assert '<select id="compare_with" name="compare_with"' in page and 'value="shapes_jpeg"' in page

    seeds_with_squares = 0
    for seed in range(6):
        data = photo(seed)
        labels = (b"Circle\nbox\nTriangle\n", "renamed.txt")
        first = answers(demo_client, "shapes", data, label_map=(io.BytesIO(labels[0]), labels[1]))
        second = answers(demo_client, "shapes_jpeg", data)
        squares_first = sum(d["label"] == "box" for d in first)
        squares_second = sum(d["label"] == "Square" for d in second)
        seeds_with_squares += squares_first > 0

        response = submit(
            demo_client, data, compare_with="shapes_jpeg:1", label_map=(io.BytesIO(labels[0]), labels[1])
        )
        assert response.status_code == 200, response.get_data(as_text=True)[:2000]
        html = response.get_data(as_text=True)
        assert "shapes:v1" in html and "shapes_jpeg:v1" in html
        pictures = PICTURE.findall(html)
        assert len(pictures) == 2
        for encoded in pictures:
            with Image.open(io.BytesIO(base64.b64decode(encoded))) as drawn:
                assert drawn.format == "JPEG" and drawn.size == (480, 360)
        sides = html.split('data-compare-side="1"')
        only_first, only_second = sides[0].count("data-only"), sides[1].count("data-only")
        # The renamed squares cannot pair; the other shapes are the same network's on the same pixels.
        assert only_first >= squares_first and only_second >= squares_second
        assert only_first - squares_first <= 1 and only_second - squares_second <= 1
        assert sides[0].count("<tr") - 1 == len(first) and sides[1].count("<tr") - 1 == len(second)
        summary = re.search(r"(\d+) box(?:es)? found by both", html)
        assert summary and int(summary.group(1)) == len(first) - only_first == len(second) - only_second
    assert seeds_with_squares >= 3  # the check above had squares to find on most pictures


@pytest.mark.parametrize(
    "value, status, words",
    [("no_such_model", 404, "no_such_model"), ("shapes_jpeg:0", 400, "version"), (":2", 400, "compare_with")],
)
def test_a_bad_second_model_comes_back_on_the_form(
    demo_client: FlaskClient, value: str, status: int, words: str
) -> None:
    response = submit(demo_client, photo(1), compare_with=value)
    html = response.get_data(as_text=True)
    assert response.status_code == status and words in html, html[:1500]
    assert 'id="upload-form"' in html and "Traceback" not in html


def test_two_classifiers_show_their_classes(demo_client: FlaskClient) -> None:
    picture = generate_digit(np.random.default_rng(3), 4, height=96)
    response = submit(
        demo_client, encode_jpeg(picture.image), model="digits", min_score="0", compare_with="digits"
    )
    html = response.get_data(as_text=True)
    assert response.status_code == 200, html[:1500]
    assert html.count("data-compare-classes") == 2 and "found by both" not in html
