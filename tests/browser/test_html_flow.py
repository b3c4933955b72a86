"""The HTML flow in a real browser: upload through the form, see the drawn picture and the table.

Headless Debian Chromium (Playwright) against the real gateway over HTTP, which calls the real
local model server over gRPC. The uploaded picture is generated on the spot, so the labels the
table should show are known from how it was drawn.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest

from demo.digits import generate_digit
from demo.synthetic import Shape, encode_jpeg, generate_image
from tests.browser.conftest import SCREENSHOT_DIR, BrowserPage, RunningGateway
from tests.support.model_server import REPO_ROOT
from web.reading.label_maps import load_label_map

MODEL = "shapes"
RESULT_URL = re.compile(r"/results/[0-9]{8}T[0-9]{12}Z-[0-9a-f]{16}$")
WIDTH, HEIGHT = 640, 480
IMAGE_LOADED = (
    "() => { const i = document.querySelector('#result-image'); return i?.complete && i.naturalWidth; }"
)
THUMBNAILS_LOADED = (
    "() => [...document.querySelectorAll('#results-list img')].every(i => i.complete && i.naturalWidth)"
)


def _iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


@pytest.fixture()
def upload(tmp_path: Path) -> tuple[Path, list[Shape]]:
    """A generated photo with a few well separated shapes, saved as a JPEG file to upload."""
    # A picture with all three classes; the demo model's accuracy over many pictures is measured by
    # `python -m demo evaluate`, this test is about the page.
    rng = np.random.default_rng(7)
    image, shapes = generate_image(rng, WIDTH, HEIGHT, min_shapes=3, max_shapes=4)
    path = tmp_path / "shapes <photo>.jpg"
    path.write_bytes(encode_jpeg(image))
    return path, shapes


def _only_loopback(urls: list[str]) -> list[str]:
    """Requests that went anywhere but the local gateway (pages must work offline)."""
    return [u for u in urls if urlsplit(u).scheme not in ("blob", "data")
            and urlsplit(u).hostname not in ("127.0.0.1", "localhost")]


def test_upload_shows_drawn_picture_and_detections(gateway: RunningGateway, browser_page: BrowserPage,
                                                   upload: tuple[Path, list[Shape]]) -> None:
    page = browser_page.page
    image_path, shapes = upload

    page.goto(f"{gateway.url}/")
    assert page.locator("h1").inner_text().strip() != ""
    page.select_option("#model", MODEL)
    page.set_input_files("#image", str(image_path))
    # The preview appears before anything is sent.
    page.wait_for_selector("#image-preview-img[src^='blob:']", state="visible")
    # The slider shows its value; move it with the keyboard like a person would.
    slider = page.locator("#min_score")
    slider.focus()
    for _ in range(10):
        page.keyboard.press("ArrowLeft")
    assert page.locator("#min_score_value").inner_text() == f"{float(slider.input_value()):.2f}"
    assert float(slider.input_value()) == pytest.approx(0.4)

    page.click("#submit-button")
    page.wait_for_url(RESULT_URL)
    result_id = urlsplit(page.url).path.rsplit("/", 1)[1]

    # The drawn picture loaded, at the size of the upload.
    page.wait_for_function(IMAGE_LOADED)
    natural = page.eval_on_selector("#result-image", "i => [i.naturalWidth, i.naturalHeight]")
    assert natural == [WIDTH, HEIGHT]
    assert page.get_attribute("#result-image", "alt")

    # The table lists the detections; they match the shapes that were drawn.
    rows = page.locator("#detections-table tbody tr")
    assert rows.count() >= 1
    labels = [rows.nth(i).locator("td.label").inner_text().split(" (")[0] for i in range(rows.count())]
    boxes = []
    for i in range(rows.count()):
        text = rows.nth(i).locator("td.box .mono").inner_text()
        boxes.append(tuple(float(v) for v in re.findall(r"-?\d+", text)))
    names = load_label_map(REPO_ROOT / "tf_server" / "models" / MODEL / "label_map.pbtxt")
    found = list(zip(labels, boxes, strict=True))
    matched = sum(any(label == names.name_for(shape.class_id) and _iou(box, shape.box) > 0.5
                      for label, box in found)
                  for shape in shapes)
    assert matched == len(shapes) == len(found), (labels, boxes, [(s.label, s.box) for s in shapes])
    # The file name the user sent is shown as text (escaped), never interpreted.
    assert image_path.name in page.locator(".meta").inner_text()

    # The JSON link serves the same result.
    json_href = page.get_attribute("#json-link", "href")
    prediction = page.request.get(f"{gateway.url}{json_href}").json()
    assert [d["label"] for d in prediction["detections"]] == labels
    assert prediction["image"] == {"width": WIDTH, "height": HEIGHT}

    SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOT_DIR / "result.png"), full_page=True)

    # The recent-results page shows it as a loaded thumbnail.
    page.click("nav >> text=Recent results")
    page.wait_for_selector("#results-list li")
    page.wait_for_function(THUMBNAILS_LOADED)
    assert page.locator("#results-list li").count() >= 1

    # The original (byte for byte) and the rendered picture are stored under the server-generated id.
    assert (gateway.upload_folder / f"{result_id}.jpg").read_bytes() == image_path.read_bytes()
    assert (gateway.output_folder / f"{result_id}.jpg").is_file()
    assert (gateway.output_folder / f"{result_id}.json").is_file()
    assert _only_loopback(browser_page.requested_urls) == []


def test_text_file_as_image_shows_the_message(gateway: RunningGateway, browser_page: BrowserPage,
                                              tmp_path: Path) -> None:
    page = browser_page.page
    not_an_image = tmp_path / "notes.jpg"
    not_an_image.write_text("these are my notes, not a picture\n")
    before = sorted(p.name for p in gateway.upload_folder.glob("*")) if gateway.upload_folder.exists() else []

    page.goto(f"{gateway.url}/")
    page.select_option("#model", MODEL)
    page.set_input_files("#image", str(not_an_image))
    with page.expect_response(lambda r: r.request.method == "POST") as answer:
        page.click("#submit-button")
    status = answer.value.status
    assert 400 <= status < 500
    error = page.locator("#form-error")
    error.wait_for(state="visible")
    message = error.inner_text()
    assert "JPEG" in message or "image" in message.lower()
    # The form is still there to try again, with the model still chosen, and nothing was stored.
    assert page.locator("#model").input_value() == MODEL
    after = sorted(p.name for p in gateway.upload_folder.glob("*")) if gateway.upload_folder.exists() else []
    assert after == before
    assert _only_loopback(browser_page.requested_urls) == []


def test_a_digit_is_classified_with_bars(gateway: RunningGateway, browser_page: BrowserPage,
                                         tmp_path: Path) -> None:
    """The demo classifier through the form: the top class as the headline, bars for the top 3."""
    page = browser_page.page
    picture = generate_digit(np.random.default_rng(12), digit=3, height=360)
    path = tmp_path / "three.jpg"
    path.write_bytes(encode_jpeg(picture.image))

    page.goto(f"{gateway.url}/")
    options = page.locator("#model option").all_inner_texts()
    assert any(o.strip().startswith("digits — classification") for o in options), options
    page.select_option("#model", "digits")
    page.set_input_files("#image", str(path))
    page.locator("#min_score").focus()
    page.keyboard.press("Home")  # threshold 0: every class of the top 3 is listed, not just the best
    page.click("#submit-button")
    page.wait_for_url(RESULT_URL)
    page.wait_for_function(IMAGE_LOADED)
    assert page.locator("#top-class").inner_text() == "3"
    assert page.locator("#classes-table tbody tr").count() == 3  # top_k = 3 in digits/gateway.toml
    bars = page.eval_on_selector_all(
        "#classes-table meter.bar",
        "els => els.map(e => [e.value, e.getBoundingClientRect().width])")
    values = [value for value, _ in bars]
    assert len(bars) == 3 and values[0] > 0.8 and values == sorted(values, reverse=True)
    assert all(width > 50 for _, width in bars)  # the meters are drawn as bars, not collapsed
    prediction = page.request.get(f"{gateway.url}{page.get_attribute('#json-link', 'href')}").json()
    best = prediction["classes"][0]
    assert (best["label"], best["class_id"]) == ("3", 3) and best["score"] > 0.9
    SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOT_DIR / "classification.png"), full_page=True)
    assert _only_loopback(browser_page.requested_urls) == []
