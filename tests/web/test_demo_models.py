"""The demo models end to end over real gRPC: pictures with known shapes (or digits), known answers.

The pictures come from demo.synthetic (numpy/Pillow only), which knows every shape's
class, box and visible mask, so the gateway's answer can be checked against the truth.
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
from pycocotools import mask as coco_mask

from demo.digits import generate_digit
from demo.synthetic import Shape, encode_jpeg, generate_image
from tests.support.forms import flask_csrf_token
from tests.support.model_server import REPO_ROOT
from web.reading.label_maps import load_label_map

DEMO_CONFIG = REPO_ROOT / "tf_server" / "models.config"
DEMO_MODELS = ("shapes", "shapes_jpeg")
SEEDS = range(8)
MIN_RECALL = 0.8


@pytest.fixture()
def demo_app(make_app, demo_model_server: str) -> Flask:
    return make_app(TF_SERVING_ADDRESS=demo_model_server, MODEL_CONFIG_FILE=DEMO_CONFIG)


@pytest.fixture()
def demo_client(demo_app: Flask) -> FlaskClient:
    return demo_app.test_client()


def box_iou(a: tuple[float, ...], b: dict) -> float:
    bx = (b["xmin"], b["ymin"], b["xmax"], b["ymax"])
    iw = max(0.0, min(a[2], bx[2]) - max(a[0], bx[0]))
    ih = max(0.0, min(a[3], bx[3]) - max(a[1], bx[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (bx[2] - bx[0]) * (bx[3] - bx[1]) - inter
    return inter / union if union > 0 else 0.0


def match(shapes: list[Shape], detections: list[dict]) -> list[tuple[Shape, dict]]:
    """Greedy one-to-one matching of true shapes to detections by box IoU >= 0.5."""
    pairs = sorted(
        ((box_iou(s.box, d["box"]), i, j) for i, s in enumerate(shapes) for j, d in enumerate(detections)),
        reverse=True,
    )
    used_s, used_d, found = set(), set(), []
    for iou, i, j in pairs:
        if iou < 0.5:
            break
        if i not in used_s and j not in used_d:
            used_s.add(i)
            used_d.add(j)
            found.append((shapes[i], detections[j]))
    return found


def post(client: FlaskClient, model: str, data: bytes, endpoint: str = "predict", query: str = "", **files):
    payload = {"image": (io.BytesIO(data), "shapes.jpg")}
    payload.update({k: (io.BytesIO(v[0]), v[1]) for k, v in files.items()})
    return client.post(
        f"/api/v1/models/{model}/{endpoint}{query}", data=payload, content_type="multipart/form-data"
    )


def check_against_truth(results: list[tuple[list[Shape], dict]], names: dict[int, str]) -> None:
    """Recall at IoU >= 0.5 with the right label, and masks that overlap the true shapes."""
    total = sum(len(shapes) for shapes, _ in results)
    matched = []
    for shapes, body in results:
        for shape, det in match(shapes, body["detections"]):
            assert det["label"] == names[shape.class_id], (shape.label, det)
            matched.append((shape, det))
    assert len(matched) >= MIN_RECALL * total, f"{len(matched)} of {total} shapes found"
    mask_ious = []
    for shape, det in matched:
        rle = det["mask"]
        assert rle["size"] == list(shape.mask.shape)
        mask = coco_mask.decode({"size": rle["size"], "counts": rle["counts"].encode()}).astype(bool)
        mask_ious.append((mask & shape.mask).sum() / (mask | shape.mask).sum())
    assert np.mean(mask_ious) >= 0.5, f"mask IoUs {np.round(mask_ious, 2).tolist()}"
    assert min(mask_ious) > 0.0


@pytest.mark.parametrize("model", DEMO_MODELS)
def test_detections_match_the_drawn_shapes(demo_client: FlaskClient, model: str) -> None:
    names = load_label_map(REPO_ROOT / "tf_server" / "models" / model / "label_map.pbtxt").names
    results = []
    for seed in SEEDS:
        image, shapes = generate_image(np.random.default_rng(seed), 640, 480, 1, 4)
        response = post(demo_client, model, encode_jpeg(image))
        assert response.status_code == 200, response.get_json()
        body = response.get_json()
        assert body["model"]["name"] == model and body["image"] == {"width": 640, "height": 480}
        results.append((shapes, body))
    check_against_truth(results, names)


@pytest.mark.parametrize("model", DEMO_MODELS)
def test_uploaded_label_map_names_the_classes(demo_client: FlaskClient, model: str) -> None:
    renamed = {1: "ring", 2: "block", 3: "wedge"}
    stored = load_label_map(REPO_ROOT / "tf_server" / "models" / model / "label_map.pbtxt").names
    for seed in range(3):
        data = encode_jpeg(generate_image(np.random.default_rng(100 + seed), 640, 480, 2, 4)[0])
        default = post(demo_client, model, data).get_json()["detections"]
        uploaded = post(demo_client, model, data, label_map=(b"ring\nblock\nwedge\n", "l.txt"))
        assert uploaded.status_code == 200
        detections = uploaded.get_json()["detections"]
        assert default, "the demo model found nothing"
        assert [d["class_id"] for d in detections] == [d["class_id"] for d in default]
        assert [d["label"] for d in default] == [stored[d["class_id"]] for d in default]
        assert [d["label"] for d in detections] == [renamed[d["class_id"]] for d in detections]


@pytest.mark.parametrize("model", DEMO_MODELS)
def test_predict_image_is_a_jpeg_of_the_original_size(demo_client: FlaskClient, model: str) -> None:
    image, _ = generate_image(np.random.default_rng(7), 533, 401, 2, 4)
    response = post(demo_client, model, encode_jpeg(image), endpoint="predict_image")
    assert response.status_code == 200 and response.mimetype == "image/jpeg"
    picture = Image.open(io.BytesIO(response.data))
    picture.load()
    assert picture.format == "JPEG" and picture.size == (533, 401)
    assert int(response.headers["X-Detections"]) >= 1


@pytest.mark.parametrize("model", DEMO_MODELS)
def test_predict_batch_keeps_the_order(demo_client: FlaskClient, model: str) -> None:
    pictures = [
        encode_jpeg(generate_image(np.random.default_rng(200 + i), 640 - 40 * i, 480, 1, 4)[0])
        for i in range(4)
    ]
    one_by_one = [post(demo_client, model, data).get_json() for data in pictures]
    files = [(io.BytesIO(data), f"img{i}.jpg") for i, data in enumerate(pictures)]
    response = demo_client.post(
        f"/api/v1/models/{model}/predict_batch", data={"image": files}, content_type="multipart/form-data"
    )
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert [item["image"]["width"] for item in body] == [640, 600, 560, 520]
    # Item i is the answer for picture i: the same detections as asking for it alone.
    for batched, alone in zip(body, one_by_one, strict=True):
        assert [d["label"] for d in batched["detections"]] == [d["label"] for d in alone["detections"]]
        for a, b in zip(batched["detections"], alone["detections"], strict=True):
            assert a["score"] == pytest.approx(b["score"], abs=0.01)
            assert box_iou(tuple(a["box"][k] for k in ("xmin", "ymin", "xmax", "ymax")), b["box"]) > 0.95


@pytest.mark.parametrize("model", DEMO_MODELS)
def test_a_12_megapixel_photo_works_through_every_demo_model(demo_client: FlaskClient, model: str) -> None:
    names = load_label_map(REPO_ROOT / "tf_server" / "models" / model / "label_map.pbtxt").names
    image, shapes = generate_image(np.random.default_rng(11), 4000, 3000, 2, 4)
    data = encode_jpeg(image)
    assert len(data) > 1024 * 1024
    response = post(demo_client, model, data)
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["image"] == {"width": 4000, "height": 3000}
    # Boxes are in the photo's own pixels (a wrong scale would match nothing) with the right labels.
    found = match(shapes, body["detections"])
    assert found, body["detections"]
    for shape, det in found:
        assert det["label"] == names[shape.class_id]
        assert det["mask"]["size"] == [3000, 4000]


def digit_upload(rng: np.random.Generator, digit: int) -> bytes:
    picture = generate_digit(rng, digit=digit, height=int(rng.integers(60, 480)))
    return encode_jpeg(picture.image)


def test_the_digit_classifier_reads_digits_through_the_gateway(demo_client: FlaskClient) -> None:
    """Drawn digits of many sizes and aspect ratios, as JPEG uploads, through /predict_batch: the
    gateway must stretch them to 32x32 and scale to 0-1 as digits/gateway.toml says."""
    rng = np.random.default_rng(31)
    digits = [i % 10 for i in range(30)]
    files = [(io.BytesIO(digit_upload(rng, d)), f"{d}.jpg") for d in digits]
    response = demo_client.post(
        "/api/v1/models/digits/predict_batch", data={"image": files}, content_type="multipart/form-data"
    )
    assert response.status_code == 200, response.get_json()
    answers = [item["classes"][0] for item in response.get_json()]
    assert all(a["label"] == str(a["class_id"]) for a in answers)  # labels.txt: class d is "d"
    correct = sum(a["class_id"] == d for a, d in zip(answers, digits, strict=True))
    assert correct >= 27, answers


def test_the_digit_classifier_result_page_shows_bars(demo_client: FlaskClient) -> None:
    upload = digit_upload(np.random.default_rng(5), 7)
    form = {"model": "digits", "min_score": "0", "image": (io.BytesIO(upload), "seven.jpg"),
            "csrf_token": flask_csrf_token(demo_client)}
    response = demo_client.post("/", data=form, content_type="multipart/form-data")
    assert response.status_code == 303
    page = demo_client.get(response.headers["Location"]).get_data(as_text=True)
    assert '<span id="top-class">7</span>' in page
    bars = re.findall(r'<meter class="bar" min="0" max="1" value="([0-9.]+)"', page)
    assert len(bars) == 3 and float(bars[0]) > 0.9  # top_k = 3 in digits/gateway.toml
    assert [float(b) for b in bars] == sorted((float(b) for b in bars), reverse=True)
    detail = demo_client.get("/api/v1/models/digits").get_json()
    assert (detail["family"], detail["kind"]) == ("classifier", "classification")
    assert detail["preprocessing"]["pixel_range"] == "0-1" and detail["settings"]["found"]


@pytest.mark.parametrize("model", DEMO_MODELS)
def test_picture_option_answers_the_prediction_and_the_drawn_picture_in_one_call(
    demo_client: FlaskClient, model: str
) -> None:
    image, _ = generate_image(np.random.default_rng(11), 480, 360, 2, 4)
    data = encode_jpeg(image)
    plain = post(demo_client, model, data).get_json()
    both = post(demo_client, model, data, query="?picture=jpeg")
    assert both.status_code == 200
    body = both.get_json()
    assert body["detections"] == plain["detections"] and body["detections"]
    assert "render" in body["timings_ms"] and "picture" not in plain
    assert body["picture"]["format"] == "jpeg"
    drawn = Image.open(io.BytesIO(base64.b64decode(body["picture"]["base64"], validate=True)))
    drawn.load()
    alone = Image.open(io.BytesIO(post(demo_client, model, data, endpoint="predict_image").data))
    assert drawn.format == "JPEG" and drawn.size == alone.size == (480, 360)
    assert np.abs(np.asarray(drawn, np.float32) - np.asarray(alone.convert("RGB"), np.float32)).mean() < 1.0
    png = post(demo_client, model, data, query="?picture=png").get_json()["picture"]
    assert png["format"] == "png" and base64.b64decode(png["base64"]).startswith(b"\x89PNG")
    wrong = post(demo_client, model, data, query="?picture=gif")
    assert wrong.status_code == 400 and "picture must be jpeg or png" in wrong.get_json()["error"]["message"]


@pytest.mark.parametrize("model", DEMO_MODELS)
def test_a_raw_image_body_is_predicted_and_named_by_content_disposition(
    demo_client: FlaskClient, model: str
) -> None:
    image, _ = generate_image(np.random.default_rng(12), 400, 300, 2, 4)
    data = encode_jpeg(image)
    raw = demo_client.post(f"/api/v1/models/{model}/predict", data=data, content_type="image/jpeg")
    assert raw.status_code == 200
    assert raw.get_json()["detections"] == post(demo_client, model, data).get_json()["detections"]
    cut = data[: len(data) // 2]
    for disposition, shown in (('inline; filename="broken photo.jpg"', "broken photo.jpg"),
                               ("inline; filename*=UTF-8''caf%C3%A9.jpg", "caf\u00e9.jpg"),
                               (None, "image")):
        headers = {"Content-Disposition": disposition} if disposition else {}
        answer = demo_client.post(f"/api/v1/models/{model}/predict", data=cut, content_type="image/jpeg",
                                  headers=headers)
        assert answer.status_code == 400
        assert answer.get_json()["error"]["message"].startswith(f"{shown} is truncated or corrupt")


def test_each_stage_charges_its_cpu_time_to_the_model(demo_client: FlaskClient) -> None:
    """gateway_stage_cpu_seconds_total: where a request's own thread spent its CPU, per stage."""
    def cpu_seconds() -> dict[tuple[str, str], float]:
        text = demo_client.get("/metrics").get_data(as_text=True)
        found = re.findall(r'^gateway_stage_cpu_seconds_total\{model="([^"]+)",stage="([^"]+)"\} (\S+)$',
                           text, re.MULTILINE)
        return {(model, stage): float(value) for model, stage, value in found}

    before = cpu_seconds()
    image, _ = generate_image(np.random.default_rng(13), 640, 480, 2, 4)
    for _ in range(3):
        assert post(demo_client, "shapes", encode_jpeg(image), query="?picture=jpeg").status_code == 200
    after = cpu_seconds()
    spent = {stage: after[("shapes", stage)] - before.get(("shapes", stage), 0.0)
             for model, stage in after if model == "shapes"}
    assert set(spent) == {"read", "validate", "decode", "predict", "postprocess", "render", "respond"}
    assert all(value > 0 for value in spent.values()), spent
    # decoding a 640x480 JPEG and drawing on it are real work, not clock noise
    assert spent["decode"] > 3 * 0.0002 and spent["render"] > 3 * 0.0005, spent
    assert post(demo_client, "no_such_model", encode_jpeg(image)).status_code == 404
    assert not any(model == "no_such_model" for model, _ in cpu_seconds())  # no series per unknown name


@pytest.mark.parametrize("model", DEMO_MODELS)
def test_a_big_photo_is_drawn_while_the_model_predicts_with_the_same_result(
    demo_app: Flask, demo_client: FlaskClient, model: str
) -> None:
    """From 2 MP up, /predict_image decodes the picture to draw on in another thread during the
    gRPC call; the answer is byte for byte what predicting, then drawing, gives."""
    import threading

    from web.options import PredictOptions
    from web.pipeline.predict import BACKGROUND_MIN_PIXELS

    image, _ = generate_image(np.random.default_rng(14), 1800, 1200, 3, 5)
    assert 1800 * 1200 >= BACKGROUND_MIN_PIXELS
    data = encode_jpeg(image)
    threads = threading.active_count()
    drawn = post(demo_client, model, data, endpoint="predict_image")
    assert drawn.status_code == 200 and int(drawn.headers["X-Detections"]) >= 1
    gateway = demo_app.extensions["gateway"]
    options = PredictOptions.from_mapping({})
    one_after_the_other = gateway.render(data, gateway.predict(model, data, options=options), "jpeg")
    assert drawn.data == one_after_the_other
    for endpoint in ("predict_image", "predict"):  # big JPEGs are scanned while the model works
        cut = post(demo_client, model, data[: len(data) * 2 // 3], endpoint=endpoint)
        assert cut.status_code == 400 and "truncated or corrupt" in cut.get_json()["error"]["message"]
    assert threading.active_count() == threads  # no decoding thread left behind


def test_each_picture_is_inspected_and_planned_once(
    demo_client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pipeline carries a picture's header and frame from stage to stage: drawing a big photo,
    storing the result and a batch read each header once and plan each model input once."""
    from web.pipeline import images, predict

    calls: dict[str, int] = {}

    def counted(name: str, function):
        def wrapper(*args, **kwargs):
            calls[name] = calls.get(name, 0) + 1
            return function(*args, **kwargs)

        return wrapper

    monkeypatch.setattr(images, "inspect_image", counted("inspect", images.inspect_image))
    monkeypatch.setattr(images, "sniff_format", counted("sniff", images.sniff_format))
    monkeypatch.setattr(predict, "plan_input", counted("plan", predict.plan_input))
    image, _ = generate_image(np.random.default_rng(15), 1800, 1200, 3, 5)
    data = encode_jpeg(image)
    for query in ("?picture=jpeg&store=true", "?store=true"):
        calls.clear()
        assert post(demo_client, "shapes", data, query=query).status_code == 200
        assert calls == {"inspect": 1, "sniff": 1, "plan": 1}, query
    calls.clear()
    answer = demo_client.post(
        "/api/v1/models/shapes/predict_batch?store=true",
        data={"image": [(io.BytesIO(data), f"{i}.jpg") for i in range(3)]},
        content_type="multipart/form-data",
    )
    assert answer.status_code == 200 and len(answer.get_json()) == 3
    assert calls == {"inspect": 3, "sniff": 3, "plan": 3}
