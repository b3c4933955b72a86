"""The live camera page in Chromium, with a fake camera that plays a Y4M file of moving demo shapes.

The gateway has API keys on, so the page runs on the sign-in session alone (its frames go to the
page's own /live/predict, never to the key-only API); `#live-detections` must name the shapes the
frames hold, the frame rate and latency must show, and nothing may break the CSP. A browser with no
camera at all gets the page's own message instead.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from demo.synthetic import generate_image
from tests.browser.conftest import (
    CHROMIUM_ARGS,
    SCREENSHOT_DIR,
    BrowserPage,
    chromium_executable,
    demo_config,
    serving_app,
    sign_in,
)

KEY = "live-camera-key"
WIDTH, HEIGHT, FRAMES = 640, 480, 40
RECORD_VIOLATIONS = """
window.__csp = [];
document.addEventListener('securitypolicyviolation',
    e => window.__csp.push(e.violatedDirective + ' ' + (e.blockedURI || 'inline')));
"""


def write_y4m(path: Path, frames: list[np.ndarray], fps: int = 10) -> None:
    """Frames (RGB uint8) as a YUV4MPEG2 file, 4:2:0: what Chromium's fake capture device plays."""
    height, width = frames[0].shape[:2]
    with path.open("wb") as out:
        out.write(f"YUV4MPEG2 W{width} H{height} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
        for frame in frames:
            y, cb, cr = Image.fromarray(frame).convert("YCbCr").split()
            half = (width // 2, height // 2)
            out.write(b"FRAME\n")
            out.write(
                y.tobytes() + cb.resize(half, Image.BOX).tobytes() + cr.resize(half, Image.BOX).tobytes()
            )


@pytest.fixture(scope="module")
def camera_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, set[str]]:
    """A picture of demo shapes sliding 4 pixels a frame: the file and the labels of its shapes."""
    pixels, shapes = generate_image(np.random.default_rng(11), WIDTH, HEIGHT, min_shapes=3, max_shapes=3)
    frames = [np.roll(pixels, 4 * i, axis=1) for i in range(FRAMES)]
    path = tmp_path_factory.mktemp("camera") / "shapes.y4m"
    write_y4m(path, frames)
    return path, {shape.label.casefold() for shape in shapes}


@pytest.fixture(scope="module")
def keyed_gateway(demo_model_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from web import create_app

    root = tmp_path_factory.mktemp("live_gateway")
    config = demo_config(demo_model_server, root, API_KEYS=KEY, SECRET_KEY="live-camera-session-secret")
    with serving_app(create_app(config)) as url:
        yield url


def test_the_live_page_names_the_shapes_the_camera_shows(
    keyed_gateway: str, camera_file: tuple[Path, set[str]], browser
) -> None:
    path, truth = camera_file
    camera_args = [
        "--use-fake-ui-for-media-stream",  # grants the camera as a user clicking "Allow" would
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-video-capture={path}",
    ]
    # A Chromium of its own (the camera is a launch flag), from the session's Playwright.
    camera_browser = browser.browser_type.launch(
        executable_path=chromium_executable(), args=[*CHROMIUM_ARGS, *camera_args], timeout=60_000
    )
    try:
        context = camera_browser.new_context(viewport={"width": 1280, "height": 900})
        context.set_default_timeout(60_000)
        page = context.new_page()
        page.add_init_script(RECORD_VIOLATIONS)
        sign_in(page, keyed_gateway, "/live", KEY)
        page.select_option("#live-model", "shapes")
        page.click("#live-start")
        page.wait_for_function("() => Number(document.getElementById('live-frames').textContent) >= 5")
        shown = page.locator("#live-detections li").all_inner_texts()
        labels = {text.rsplit(" ", 1)[0].casefold() for text in shown}
        assert labels and labels <= {"circle", "square", "triangle"}, shown
        assert labels & truth, (shown, truth)  # the shapes in the picture, by name
        assert float(page.locator("#live-fps").inner_text()) > 0
        assert int(page.locator("#live-latency").inner_text()) > 0
        assert page.locator("#live-error").is_hidden() and page.locator("#live-start").is_hidden()
        assert page.evaluate("() => document.getElementById('live-video').videoWidth") == WIDTH
        SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOT_DIR / "live.png"), full_page=True)
        page.click("#live-stop")
        assert page.locator("#live-stage").is_hidden() and page.locator("#live-start").is_visible()
        assert page.evaluate("() => window.__csp") == []
        context.close()
    finally:
        camera_browser.close()


def test_without_a_camera_the_page_says_so(keyed_gateway: str, browser_page: BrowserPage) -> None:
    page = browser_page.page
    sign_in(page, keyed_gateway, "/live", KEY)
    page.click("#live-start")
    error = page.locator("#live-error")
    error.wait_for(state="visible")
    assert "camera" in error.inner_text().lower()
    assert page.locator("#live-stage").is_hidden()


def test_a_frame_without_the_page_token_is_refused(keyed_gateway: str, browser_page: BrowserPage) -> None:
    page = browser_page.page
    sign_in(page, keyed_gateway, "/live", KEY)
    answer = page.request.post(
        f"{keyed_gateway}/live/predict",
        multipart={"model": "shapes", "image": {"name": "f.jpg", "mimeType": "image/jpeg", "buffer": b"x"}},
    )
    assert answer.status == 403
