"""Phone photos stored sideways (EXIF orientation): the model sees the upright picture, sizes, boxes
and masks are in the displayed frame, and the drawn picture is upright, for tensor inputs,
encoded-string inputs (re-encoded upright) and letterboxed inputs alike."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from tests.web.adapters.endpoints import (
    FamilyGateway,
    as_xyxy,
    by_label,
    check_bright_box,
    outline_drawn,
    scene,
)
from web.pipeline.images import inspect_image, to_model_bytes

WIDTH, HEIGHT = 480, 640  # displayed: a portrait photo
RECT = (60, 100, 260, 300)


@pytest.mark.parametrize("orientation", [3, 6, 8, 2, 5, 7])
@pytest.mark.parametrize("model", ["od_tf1", "od_tf1_encoded", "yolo"])
def test_rotated_photos_are_detected_upright(
    family_gateway: FamilyGateway, model: str, orientation: int
) -> None:
    photo = scene(WIDTH, HEIGHT, RECT, fmt="JPEG", orientation=orientation)
    stored = Image.open(io.BytesIO(photo))
    assert stored.size != (WIDTH, HEIGHT) or orientation in (2, 3, 4)  # the file holds the pixels turned
    response = family_gateway.predict(model, photo, name="phone.jpg")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["image"] == {"width": WIDTH, "height": HEIGHT}
    check_bright_box(body, RECT, "circle", tolerance=4.0)


@pytest.mark.parametrize("model", ["od_tf1", "od_tf1_encoded"])
def test_the_drawn_picture_and_the_result_page_are_upright(family_gateway: FamilyGateway, model: str) -> None:
    photo = scene(WIDTH, HEIGHT, RECT, fmt="JPEG", orientation=6)
    drawn_response = family_gateway.post(model, "predict_image", [("phone.jpg", photo)])
    drawn = np.asarray(Image.open(io.BytesIO(drawn_response.content)).convert("RGB")).astype(int)
    assert drawn.shape == (HEIGHT, WIDTH, 3)
    upright = np.asarray(Image.open(io.BytesIO(scene(WIDTH, HEIGHT, RECT))).convert("RGB")).astype(int)
    assert outline_drawn(drawn, upright, list(RECT))
    assert np.abs(drawn[HEIGHT - 60 :, WIDTH - 60 :] - upright[HEIGHT - 60 :, WIDTH - 60 :]).max() < 20
    page, stored = family_gateway.form(model, photo, name="phone.jpg")
    assert stored["image"] == {"width": WIDTH, "height": HEIGHT}
    np.testing.assert_allclose(as_xyxy(by_label(stored)["circle"]["box"]), RECT, atol=4.0)
    assert f'width="{WIDTH}" height="{HEIGHT}"' in page


def test_encoded_models_get_upright_bytes_only_when_needed() -> None:
    upright = scene(WIDTH, HEIGHT, RECT, fmt="JPEG")
    info = inspect_image(upright, max_pixels=10**8)
    assert (info.width, info.height, info.orientation) == (WIDTH, HEIGHT, 1)
    assert to_model_bytes(upright, info) is upright
    sideways = scene(WIDTH, HEIGHT, RECT, fmt="JPEG", orientation=6)
    info = inspect_image(sideways, max_pixels=10**8)
    assert (info.width, info.height, info.orientation) == (WIDTH, HEIGHT, 6)
    assert info.stored_size == (HEIGHT, WIDTH)
    sent = Image.open(io.BytesIO(to_model_bytes(sideways, info)))
    assert sent.format == "JPEG" and sent.size == (WIDTH, HEIGHT)
    pixels = np.asarray(sent.convert("L")).astype(int)
    assert pixels[200, 160] > 180 and pixels[500, 400] < 60  # inside the rectangle, and far from it
