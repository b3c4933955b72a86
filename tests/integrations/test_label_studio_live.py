"""The gateway as a real Label Studio's ML backend, end to end.

Label Studio (its PyPI package, tests/support/label_studio.py) gets a project whose label names differ
from the model's in case ("circle", "SQUARE") and one that only LABEL_STUDIO_LABEL_MAP maps
(Triangle -> "tri"), pictures of demo shapes uploaded into it, and the gateway (gunicorn, API keys on)
connected as its model with basic auth, a key as the password. Label Studio's own "Retrieve
predictions" action then has to leave the gateway's rectangles and brush masks on the right controls,
under the project's label names, with the gateway fetching each picture back from Label Studio with
LABEL_STUDIO_API_KEY: a legacy token first, then a personal access token (a JWT exchanged at
/api/token/refresh). A task whose picture the gateway may not fetch gets an empty prediction; the
others are unaffected. Run by `make test-label-studio` (installing Label Studio takes about a minute
the first time); deselected from the plain `pytest` run.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import requests
from pycocotools import mask as coco_mask

from demo.synthetic import encode_jpeg, generate_image
from tests.browser.conftest import SCREENSHOT_DIR
from tests.support.gunicorn_gateway import running_gateway
from tests.support.label_studio import PASSWORD, USER, LabelStudio, running_label_studio
from tests.support.model_server import REPO_ROOT
from web.jobs.exporters.label_studio import brush_rle_to_mask

pytestmark = pytest.mark.label_studio

KEY = "label-studio-test-key-0123456789"
NAMES = {"circle": "circle", "square": "SQUARE", "triangle": "tri"}  # the model's label -> the project's
CONFIG = """<View>
  <Image name="image" value="$image"/>
  <RectangleLabels name="box" toName="image">
    <Label value="circle"/><Label value="SQUARE"/><Label value="tri"/><Label value="unused"/>
  </RectangleLabels>
  <BrushLabels name="mask" toName="image">
    <Label value="circle"/><Label value="SQUARE"/><Label value="tri"/>
  </BrushLabels>
</View>"""
SEEDS = (11, 12, 13)


@pytest.fixture(scope="module")
def label_studio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabelStudio]:
    with running_label_studio(tmp_path_factory.mktemp("label-studio")) as ls:
        yield ls


@pytest.fixture(scope="module")
def pictures() -> list[tuple[str, bytes, list]]:
    out = []
    for seed in SEEDS:
        image, shapes = generate_image(np.random.default_rng(seed), min_shapes=2, max_shapes=4)
        out.append((f"shapes-{seed}.jpg", encode_jpeg(image), shapes))
    return out


def gateway_for(folder: Path, model_server: str, ls: LabelStudio, api_key: str):
    return running_gateway(
        folder,
        TF_SERVING_ADDRESS=model_server,
        MODEL_CONFIG_FILE=REPO_ROOT / "tf_server" / "models.config",
        API_KEYS=KEY,
        SECRET_KEY="a-long-random-session-signing-secret",
        LABEL_STUDIO_URL=ls.url,
        LABEL_STUDIO_API_KEY=api_key,
        LABEL_STUDIO_LABEL_MAP="Triangle:tri",
    )


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def pre_label(ls: LabelStudio, gateway: str, pictures: list[tuple[str, bytes, list]], title: str) -> dict:
    project = ls.create_project(title, CONFIG)
    ls.upload(project, [(name, data) for name, data, _ in pictures])
    ls.api(
        "POST", f"/api/projects/{project}/import", json=[{"data": {"image": "http://169.254.169.254/x.jpg"}}]
    )
    backend = ls.connect_model(project, f"{gateway}/label-studio/shapes", "label-studio", KEY)
    assert backend["state"] == "CO", backend  # connected: health and setup answered in time
    assert backend["model_version"] == "shapes:v1"
    ls.retrieve_predictions(project)
    tasks = ls.tasks(project)
    assert len(tasks) == len(pictures) + 1
    return {"project": project, "tasks": tasks, "predictions": ls.predictions(project)}


def gateway_answer(gateway: str, jpeg: bytes) -> list[dict]:
    """The gateway's own REST answer for a picture: what Label Studio must end up with."""
    answer = requests.post(
        f"{gateway}/api/v1/models/shapes/predict",
        data=jpeg,
        headers={"Content-Type": "image/jpeg", "X-API-Key": KEY},
        timeout=60,
    )
    answer.raise_for_status()
    return answer.json()["detections"]


def check_predictions(found: dict, gateway: str, pictures: list[tuple[str, bytes, list]]) -> None:
    by_name = {name: (jpeg, shapes) for name, jpeg, shapes in pictures}
    checked, matched, total = 0, 0, 0
    for task in found["tasks"]:
        predictions = found["predictions"].get(task["id"], [])
        image = task["data"]["image"]
        if image.startswith("http://169.254."):
            # refused before any connection: an empty prediction of a version that is retried next time
            assert [p["result"] for p in predictions] == [[]]
            assert predictions[0]["model_version"] == "shapes:v1:failed"
            continue
        assert image.startswith("/data/upload/")
        name = next(n for n in by_name if image.endswith(n))
        jpeg, truth = by_name[name]
        height, width = truth[0].mask.shape
        (prediction,) = predictions
        assert prediction["model_version"] == "shapes:v1"
        boxes = [r for r in prediction["result"] if r["type"] == "rectanglelabels"]
        brushes = [r for r in prediction["result"] if r["type"] == "brushlabels"]
        assert {r["from_name"] for r in boxes} == {"box"} and {r["from_name"] for r in brushes} == {"mask"}
        assert all(r["to_name"] == "image" for r in prediction["result"])
        assert all(
            r["original_width"] == width and r["original_height"] == height for r in prediction["result"]
        )
        detections = gateway_answer(gateway, jpeg)
        assert len(boxes) == len(brushes) == len(detections) > 0
        for box, brush, det in zip(boxes, brushes, detections, strict=True):
            wanted = NAMES[det["label"].lower()]  # the project's name for the model's label
            assert box["value"]["rectanglelabels"] == [wanted] and brush["value"]["brushlabels"] == [wanted]
            assert box["value"]["x"] == pytest.approx(100 * det["box"]["xmin"] / width, abs=0.01)
            assert box["value"]["y"] == pytest.approx(100 * det["box"]["ymin"] / height, abs=0.01)
            assert box["value"]["width"] == pytest.approx(
                100 * (det["box"]["xmax"] - det["box"]["xmin"]) / width, abs=0.01
            )
            assert box["score"] == pytest.approx(det["score"], abs=1e-3)
            rle = {"size": det["mask"]["size"], "counts": det["mask"]["counts"].encode()}
            stored = brush_rle_to_mask(brush["value"]["rle"], height, width)
            assert np.array_equal(stored, coco_mask.decode(rle).astype(bool))  # Label Studio's brush, exactly
        for shape in truth:  # and the shapes are the ones in the picture
            total += 1
            masks = [brush_rle_to_mask(r["value"]["rle"], height, width) for r in brushes
                     if r["value"]["brushlabels"] == [NAMES[shape.label.lower()]]]  # fmt: skip
            matched += any(iou(m, shape.mask) > 0.5 for m in masks)
        checked += 1
    assert checked == len(pictures)
    assert matched / total >= 0.7, f"{matched} of {total} shapes found"


def screenshot_task(ls: LabelStudio, project: int, task: int, path: Path) -> None:
    """Label Studio's own labeling page for `task`, signed in as its user, in Debian's Chromium: the
    gateway's predictions as an annotator sees them (the README's picture)."""
    from playwright.sync_api import sync_playwright

    from tests.browser.conftest import CHROMIUM_ARGS, chromium_executable

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_executable(), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 860})
            page.set_default_timeout(60_000)
            page.goto(f"{ls.url}/user/login")
            page.fill("input[name=email]", USER)
            page.fill("input[name=password]", PASSWORD)
            page.locator("button[type=submit], input[type=submit]").first.click()
            page.wait_for_url(lambda url: "/user/login" not in url)
            page.goto(f"{ls.url}/projects/{project}/data?task={task}")
            page.wait_for_selector("canvas", timeout=60_000)
            page.wait_for_timeout(3000)  # the picture and the regions are drawn after the canvas appears
            path.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(path))
        finally:
            browser.close()


def test_label_studio_retrieves_the_gateways_predictions_with_a_legacy_token(
    label_studio: LabelStudio, demo_model_server: str, pictures: list, tmp_path: Path
) -> None:
    with gateway_for(tmp_path / "gateway", demo_model_server, label_studio, label_studio.token) as gateway:
        found = pre_label(label_studio, gateway, pictures, "legacy token")
        check_predictions(found, gateway, pictures)
    task = next(t["id"] for t in found["tasks"] if t["data"]["image"].startswith("/data/upload/"))
    shot = SCREENSHOT_DIR / "label-studio.png"
    screenshot_task(label_studio, found["project"], task, shot)
    assert shot.stat().st_size > 20_000


def test_label_studio_retrieves_the_gateways_predictions_with_a_personal_access_token(
    label_studio: LabelStudio, demo_model_server: str, pictures: list, tmp_path: Path
) -> None:
    token = label_studio.personal_access_token()
    assert token.count(".") == 2  # a JWT: the gateway exchanges it for access tokens
    with gateway_for(tmp_path / "gateway", demo_model_server, label_studio, token) as gateway:
        found = pre_label(label_studio, gateway, pictures, "personal access token")
        check_predictions(found, gateway, pictures)


def test_label_studio_cannot_connect_the_gateway_without_the_key(
    label_studio: LabelStudio, demo_model_server: str, tmp_path: Path
) -> None:
    project = label_studio.create_project("no key", CONFIG)
    with gateway_for(tmp_path / "gateway", demo_model_server, label_studio, label_studio.token) as gateway:
        response = label_studio.session.post(
            label_studio.url + "/api/ml",
            json={"url": f"{gateway}/label-studio/shapes", "project": project, "title": "gateway",
                  "auth_method": "BASIC_AUTH", "basic_auth_user": "x", "basic_auth_pass": "wrong-key"},
            timeout=60,
        )  # fmt: skip
    assert response.status_code == 400, response.text  # Label Studio checks the backend before saving it
