"""Every input and output signature layout end to end: REST API -> real gRPC -> the local model server.

Each model in tests/support/signature_models.py answers fixed boxes in normalized coordinates of
whatever it received, and the first score is the brightness of what it received, so the tests
know where every box must land in the uploaded picture and that the pixels arrived intact.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from flask.testing import FlaskClient
from PIL import Image
from pycocotools import mask as coco_mask

from tests.support import signature_models as layouts
from tests.support.model_server import REPO_ROOT
from tests.web.helpers import encode, result_files, solid

DETECTORS = ("od_uint8", "od_jpeg", "mg_uint8", "mg_bytes", "fixed_float")
WITH_MASKS = ("od_jpeg", "mg_uint8")
EXPECTED_LABELS = ["circle", "square", "triangle"]  # from label_map.pbtxt (display_name "square")


def predict(
    client: FlaskClient,
    model: str,
    image: bytes,
    name: str = "image.jpg",
    query: str = "?min_score=0",
    endpoint: str = "predict",
    label_map: tuple[bytes, str] | None = None,
):
    data = {"image": (io.BytesIO(image), name)}
    if label_map is not None:
        data["label_map"] = (io.BytesIO(label_map[0]), label_map[1])
    return client.post(
        f"/api/v1/models/{model}/{endpoint}{query}", data=data, content_type="multipart/form-data"
    )


def expected_boxes(width: int, height: int) -> np.ndarray:
    """[xmin, ymin, xmax, ymax] pixels of the first NUM_DETECTIONS rows (the padding rows must not appear)."""
    rows = np.asarray(layouts.BOXES[: layouts.NUM_DETECTIONS])
    return np.stack(
        [rows[:, 1] * width, rows[:, 0] * height, rows[:, 3] * width, rows[:, 2] * height], axis=1
    )


def as_array(box: dict) -> list[float]:
    return [box["xmin"], box["ymin"], box["xmax"], box["ymax"]]


def ellipse(height: int, width: int, box: list[float]) -> np.ndarray:
    yy, xx = np.mgrid[0:height, 0:width] + 0.5
    x0, y0, x1, y1 = box
    return (
        ((xx - (x0 + x1) / 2) / ((x1 - x0) / 2)) ** 2 + ((yy - (y0 + y1) / 2) / ((y1 - y0) / 2)) ** 2
    ) <= 1


def decode_rle(rle: dict) -> np.ndarray:
    return coco_mask.decode({"size": rle["size"], "counts": rle["counts"].encode()}).astype(bool)


def check_detections(
    body: dict, width: int, height: int, model: str, brightness: float, tolerance: float
) -> None:
    assert body["model"] == {"name": model, "version": 1}
    assert body["image"] == {"width": width, "height": height}
    detections = body["detections"]
    # min_score=0 and num_detections=3: three detections, never the two padding rows (score 0.99).
    assert [d["label"] for d in sorted(detections, key=lambda d: d["class_id"])] == EXPECTED_LABELS
    assert [d["class_id"] for d in detections] == sorted(
        [d["class_id"] for d in detections], key=lambda c: -{1: brightness, 2: 0.6, 3: 0.3}[c]
    )
    by_class = {d["class_id"]: d for d in detections}
    np.testing.assert_allclose(
        [as_array(by_class[c]["box"]) for c in (1, 2, 3)], expected_boxes(width, height), atol=tolerance
    )
    assert by_class[1]["score"] == pytest.approx(brightness, abs=0.02)
    assert set(body["timings_ms"]) >= {"decode", "predict", "postprocess", "total"}
    if model in WITH_MASKS:
        for det in detections:
            mask = decode_rle(det["mask"])
            assert det["mask"]["size"] == [height, width]
            inside = ellipse(height, width, as_array(det["box"]))
            assert np.logical_and(mask, inside).sum() / np.logical_or(mask, inside).sum() > 0.85
    else:
        assert all("mask" not in d for d in detections)


@pytest.mark.parametrize("model", DETECTORS)
@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_every_detection_layout(signature_client: FlaskClient, model: str, fmt: str) -> None:
    image = solid(640, 480, (200, 200, 200), fmt)
    response = predict(signature_client, model, image, f"grey.{fmt.lower()}")
    assert response.status_code == 200, response.get_json()
    check_detections(response.get_json(), 640, 480, model, 200 / 255, tolerance=0.6)


@pytest.mark.parametrize("model", DETECTORS)
def test_big_photo_is_downsized_for_tensor_models_and_boxes_come_back_in_its_pixels(
    signature_client: FlaskClient, model: str
) -> None:
    rng = np.random.default_rng(1)
    photo = np.clip(rng.normal(120, 40, (3000, 4000, 3)), 0, 255).astype(np.uint8)
    data = encode(photo, "JPEG", quality=85)
    assert len(data) > 4 * 1024 * 1024  # bigger than gRPC's default 4 MB message limit
    response = predict(signature_client, model, data, "photo.jpg")
    assert response.status_code == 200, response.get_json()
    # The tensor models saw at most 1600x1200 (MAX_INPUT_SIDE): a few pixels of slack once scaled back.
    check_detections(response.get_json(), 4000, 3000, model, float(photo.mean()) / 255, tolerance=4.0)


def test_max_input_side_is_honoured(make_app, signature_server: str, signature_models: Path) -> None:
    app = make_app(
        TF_SERVING_ADDRESS=signature_server,
        MODEL_CONFIG_FILE=signature_models / "models.config",
        MAX_INPUT_SIDE=100,
    )
    response = predict(app.test_client(), "mg_uint8", solid(640, 480, (90, 90, 90)))
    assert response.status_code == 200
    # The model saw 100x75: boxes are still in the upload's pixels (within the scale factor).
    check_detections(response.get_json(), 640, 480, "mg_uint8", 90 / 255, tolerance=6.5)


def test_odd_formats_reach_encoded_models_as_png(signature_client: FlaskClient) -> None:
    for fmt in ("GIF", "BMP", "WEBP", "TIFF"):
        response = predict(
            signature_client, "od_jpeg", solid(320, 240, (60, 60, 60), fmt), f"x.{fmt.lower()}"
        )
        assert response.status_code == 200, (fmt, response.get_json())
        check_detections(response.get_json(), 320, 240, "od_jpeg", 60 / 255, tolerance=0.6)


def test_threshold_and_max_detections(signature_client: FlaskClient) -> None:
    image = solid(320, 240, (250, 250, 250))
    default = predict(signature_client, "od_uint8", image, query="").get_json()
    assert [d["label"] for d in default["detections"]] == ["circle", "square"]  # 0.98 and 0.6 >= 0.5
    high = predict(signature_client, "od_uint8", image, query="?min_score=0.7").get_json()
    assert [d["label"] for d in high["detections"]] == ["circle"]
    top = predict(signature_client, "od_uint8", image, query="?min_score=0&max_detections=2").get_json()
    assert [d["label"] for d in top["detections"]] == ["circle", "square"]


@pytest.mark.parametrize(
    "label_map,names",
    [
        ((b"ball\nbox\ncone\n", "labels.txt"), ["ball", "box", "cone"]),
        (
            (b'item { id: 1 name: "disc" }\nitem { id: 3 display_name: "wedge" name: "t" }', "my.pbtxt"),
            ["disc", "class 2", "wedge"],
        ),
    ],
)
def test_uploaded_label_map_wins_over_the_stored_one(
    signature_client: FlaskClient, label_map, names
) -> None:
    response = predict(signature_client, "od_jpeg", solid(320, 240), label_map=label_map)
    assert response.status_code == 200
    assert [
        d["label"] for d in sorted(response.get_json()["detections"], key=lambda d: d["class_id"])
    ] == names


def test_model_without_a_label_map_uses_class_ids(
    signature_client: FlaskClient, make_app, signature_server, tmp_path: Path, signature_models: Path
) -> None:
    config = tmp_path / "models.config"
    config.write_text(
        f'model_config_list {{ config {{ name: "od_uint8" base_path: "{tmp_path / "nowhere"}" '
        'model_platform: "tensorflow" } }'
    )
    app = make_app(TF_SERVING_ADDRESS=signature_server, MODEL_CONFIG_FILE=config)
    body = predict(app.test_client(), "od_uint8", solid(320, 240)).get_json()
    assert sorted(d["label"] for d in body["detections"]) == ["class 1", "class 2", "class 3"]


def _assert_labels_come_from_models_dir(make_app, server: str, tmp_path: Path, base_path: str) -> None:
    """od_uint8 configured at `base_path`, its labels.txt in MODELS_DIR: the API and predictions use it."""
    config = tmp_path / "models.config"
    config.write_text(
        f'model_config_list {{ config {{ name: "od_uint8" base_path: "{base_path}" '
        'model_platform: "tensorflow" } }'
    )
    (tmp_path / "models" / "od_uint8").mkdir(parents=True)
    (tmp_path / "models" / "od_uint8" / "labels.txt").write_text("uno\ndos\ntres\n")
    app = make_app(TF_SERVING_ADDRESS=server, MODEL_CONFIG_FILE=config, MODELS_DIR=tmp_path / "models")
    client = app.test_client()
    assert client.get("/api/v1/models/od_uint8/labels").get_json() == {"1": "uno", "2": "dos", "3": "tres"}
    body = predict(client, "od_uint8", solid(320, 240)).get_json()
    assert sorted(d["label"] for d in body["detections"]) == ["dos", "tres", "uno"]


def test_models_dir_label_maps_are_found(make_app, signature_server, tmp_path: Path) -> None:
    _assert_labels_come_from_models_dir(make_app, signature_server, tmp_path, "/elsewhere")


@pytest.mark.parametrize("base_path", ["gs://bucket/models/od_uint8", "s3://bucket/od_uint8"])
def test_models_on_object_storage_take_their_labels_from_models_dir(
    make_app, signature_server, tmp_path: Path, base_path: str
) -> None:
    """TF Serving reads gs:// base paths itself; the gateway cannot, so it looks in MODELS_DIR only
    (and never in a folder made up from the URL)."""
    (tmp_path / "gs:" / "bucket" / "models" / "od_uint8").mkdir(parents=True)  # what a naive join would read
    (tmp_path / "gs:" / "bucket" / "models" / "od_uint8" / "labels.txt").write_text("wrong\nwrong\nwrong\n")
    _assert_labels_come_from_models_dir(make_app, signature_server, tmp_path, base_path)


@pytest.mark.parametrize(
    "model,color,label,class_id",
    [
        ("classifier", (230, 20, 20), "red", 0),
        ("classifier", (20, 20, 230), "blue", 2),
        ("classifier_named", (20, 230, 20), "green", 1),
        ("classifier_named", (20, 20, 230), "blue", 2),
    ],
)
def test_classifiers_answer_top_classes(
    signature_client: FlaskClient, model: str, color, label: str, class_id: int
) -> None:
    response = predict(
        signature_client, model, solid(200, 150, color), query="?min_score=0&max_detections=2"
    )
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert "detections" not in body and body["image"] == {"width": 200, "height": 150}
    classes = body["classes"]
    assert len(classes) == 2 and classes[0]["score"] >= classes[1]["score"]
    assert (classes[0]["label"], classes[0]["class_id"]) == (label, class_id)
    assert 0.5 < classes[0]["score"] <= 1.0


def test_unusable_signature_is_refused_clearly(signature_client: FlaskClient) -> None:
    response = predict(signature_client, "two_inputs", solid(64, 48))
    assert response.status_code == 422
    assert "requires inputs: image, threshold" in response.get_json()["error"]["message"]


def test_model_list_and_detail(signature_client: FlaskClient) -> None:
    models = {m["name"]: m for m in signature_client.get("/api/v1/models").get_json()["models"]}
    assert list(models) == list(layouts.MODELS)
    assert models["od_jpeg"]["kind"] == "segmentation" and models["mg_uint8"]["kind"] == "segmentation"
    assert models["od_uint8"]["kind"] == "detection" and models["classifier"]["kind"] == "classification"
    assert models["two_inputs"]["kind"] == "unknown"
    assert models["od_uint8"]["versions"] == [{"version": 1, "state": "AVAILABLE"}]
    assert models["classifier"]["label_source"] == "labels.txt"
    assert models["classifier_named"]["label_source"] is None
    detail = signature_client.get("/api/v1/models/mg_uint8").get_json()
    assert detail["signature"]["inputs"] == {"inputs": {"dtype": "uint8", "shape": [1, -1, -1, 3]}}
    assert detail["signature"]["outputs"]["image_info"] == {"dtype": "float32", "shape": [1, 4, 2]}
    assert detail["family"] == "model_garden" and detail["input"]["kind"] == "uint8_image"
    fixed = signature_client.get("/api/v1/models/fixed_float").get_json()
    assert fixed["input"]["fixed_size"] == {"width": layouts.FIXED_SIZE[0], "height": layouts.FIXED_SIZE[1]}
    assert signature_client.get("/api/v1/models/od_jpeg/labels").get_json() == {
        "1": "circle",
        "2": "square",
        "3": "triangle",
    }


def test_versions_and_version_labels(signature_client: FlaskClient) -> None:
    image = solid(64, 48)
    assert predict(signature_client, "od_uint8", image, query="?version=1").status_code == 200
    assert predict(signature_client, "od_uint8", image, query="?version_label=stable").status_code == 200
    missing = predict(signature_client, "od_uint8", image, query="?version=7")
    assert missing.status_code == 404
    assert missing.get_json()["error"]["message"] == (
        "model 'od_uint8' has no version 7; its versions: 1 (AVAILABLE)"
    )
    label = predict(signature_client, "od_uint8", image, query="?version_label=canary")
    assert label.status_code == 404 and "version label 'canary'" in label.get_json()["error"]["message"]
    detail = signature_client.get("/api/v1/models/od_uint8?version=9")
    assert detail.status_code == 404


@pytest.mark.parametrize("fmt,mime", [("", "image/jpeg"), ("png", "image/png")])
def test_predict_image_returns_the_picture_at_its_original_size(
    signature_client: FlaskClient, fmt: str, mime: str
) -> None:
    query = f"?format={fmt}" if fmt else ""
    response = predict(
        signature_client, "od_jpeg", solid(500, 300, (40, 40, 40)), query=query, endpoint="predict_image"
    )
    assert response.status_code == 200 and response.mimetype == mime
    picture = Image.open(io.BytesIO(response.data))
    picture.load()
    assert picture.size == (500, 300) and picture.format == ("PNG" if fmt else "JPEG")
    # Something was drawn where the first box is, nothing in the far corner.
    pixels = np.asarray(picture.convert("RGB")).astype(int)
    x0, y0, x1, y1 = expected_boxes(500, 300)[0]
    assert np.abs(pixels[int(y0) + 3 : int(y1) - 3, int(x0) + 3 : int(x1) - 3] - 40).max() > 40
    assert np.abs(pixels[295:, 5:20] - 40).max() < 12
    assert "predict;dur=" in response.headers["Server-Timing"]


@pytest.mark.parametrize("model", ["od_jpeg", "od_uint8", "mg_bytes", "classifier"])
def test_predict_batch_keeps_the_order(signature_client: FlaskClient, model: str) -> None:
    shades = [30, 220, 120, 180]
    sizes = [(320, 240), (200, 100), (640, 480), (64, 64)]
    files = [
        (io.BytesIO(solid(w, h, (s, s, s) if model != "classifier" else (s, 255 - s, 40))), f"img{i}.jpg")
        for i, (s, (w, h)) in enumerate(zip(shades, sizes, strict=True))
    ]
    response = signature_client.post(
        f"/api/v1/models/{model}/predict_batch?min_score=0",
        data={"image": files},
        content_type="multipart/form-data",
    )
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert [item["image"] for item in body] == [{"width": w, "height": h} for w, h in sizes]
    if model == "classifier":
        assert [item["classes"][0]["label"] for item in body] == ["green", "red", "green", "red"]
        return
    for item, shade, (w, h) in zip(body, shades, sizes, strict=True):
        check_detections(item, w, h, model, shade / 255, tolerance=0.6)


def test_store_keeps_a_result_for_the_html_pages(signature_app, signature_client: FlaskClient) -> None:
    response = predict(signature_client, "od_jpeg", solid(320, 240), query="?store=true")
    assert response.status_code == 200
    url = response.get_json()["result_url"]
    assert url.startswith("/results/")
    stored = signature_app.extensions["gateway"].store.get(url.rsplit("/", 1)[1])
    assert stored is not None and stored.prediction["detections"] == response.get_json()["detections"]
    assert len(result_files(signature_app)) >= 3
    assert predict(signature_client, "od_jpeg", solid(320, 240)).get_json().get("result_url") is None


def test_timings_reach_the_stage_histograms(signature_client: FlaskClient) -> None:
    predict(signature_client, "mg_uint8", solid(320, 240), endpoint="predict_image")
    text = signature_client.get("/metrics").get_data(as_text=True)
    for stage in ("decode", "predict", "postprocess", "render", "total"):
        assert f'gateway_stage_duration_seconds_count{{model="mg_uint8",stage="{stage}"}}' in text
    assert 'gateway_model_requests_total{model="mg_uint8",outcome="ok"}' in text


def test_readyz_when_every_model_is_available(signature_client: FlaskClient) -> None:
    response = signature_client.get("/readyz")
    assert response.status_code == 200
    assert response.get_json()["models"]["od_jpeg"] == [{"version": 1, "state": "AVAILABLE"}]


def test_readyz_names_a_model_the_server_does_not_have(
    make_app, signature_server, tmp_path: Path, signature_models: Path
) -> None:
    config = tmp_path / "models.config"
    text = (signature_models / "models.config").read_text().rstrip().rstrip("}")
    config.write_text(
        text + '  config { name: "ghost" base_path: "/nowhere" model_platform: "tensorflow" }\n}\n'
    )
    app = make_app(TF_SERVING_ADDRESS=signature_server, MODEL_CONFIG_FILE=config)
    response = app.test_client().get("/readyz")
    assert (
        response.status_code == 503
        and "model 'ghost' has no AVAILABLE version" in response.get_json()["reason"]
    )


NO_TENSORFLOW = """
import io, json, sys
from PIL import Image
from web import create_app
app = create_app({"TF_SERVING_ADDRESS": sys.argv[1], "MODEL_CONFIG_FILE": sys.argv[2],
                  "UPLOAD_FOLDER": sys.argv[3], "OUTPUT_FOLDER": sys.argv[3]})
buf = io.BytesIO()
Image.new("RGB", (64, 48), (9, 9, 9)).save(buf, "JPEG")
client = app.test_client()
statuses = []
for model, endpoint in (("od_uint8", "predict"), ("od_jpeg", "predict"), ("mg_uint8", "predict_image")):
    upload = {"image": (io.BytesIO(buf.getvalue()), "a.jpg")}
    statuses.append(client.post(f"/api/v1/models/{model}/{endpoint}", data=upload).status_code)
loaded = sorted(m for m in sys.modules if m.split(".")[0] == "tensorflow")
print(json.dumps({"statuses": statuses, "tensorflow": loaded}))
"""


def test_the_gateway_never_imports_tensorflow(
    signature_server: str, signature_models: Path, tmp_path
) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            NO_TENSORFLOW,
            signature_server,
            str(signature_models / "models.config"),
            str(tmp_path),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report == {"statuses": [200, 200, 200], "tensorflow": []}


def test_a_raw_image_body_works_too(signature_client: FlaskClient) -> None:
    response = signature_client.post(
        "/api/v1/models/od_jpeg/predict?min_score=0",
        data=solid(320, 240, (70, 70, 70)),
        content_type="image/jpeg",
    )
    assert response.status_code == 200, response.get_json()
    check_detections(response.get_json(), 320, 240, "od_jpeg", 70 / 255, tolerance=0.6)


def test_a_broken_stored_label_map_is_reported(
    make_app, signature_server: str, tmp_path: Path, signature_models: Path
) -> None:
    (tmp_path / "od_uint8").mkdir()
    (tmp_path / "od_uint8" / "label_map.pbtxt").write_text('item { id: 1 name: "circle" ')
    config = tmp_path / "models.config"
    config.write_text(
        'model_config_list { config { name: "od_uint8" base_path: "od_uint8" model_platform: "x" } }'
    )
    app = make_app(TF_SERVING_ADDRESS=signature_server, MODEL_CONFIG_FILE=config)
    response = predict(app.test_client(), "od_uint8", solid(64, 48))
    assert response.status_code == 500
    message = response.get_json()["error"]["message"]
    assert "label map stored for model 'od_uint8' is broken" in message and "line 1" in message
    # An uploaded label map does not need the stored one.
    ok = predict(app.test_client(), "od_uint8", solid(64, 48), label_map=(b"a\nb\nc\n", "labels.txt"))
    assert ok.status_code == 200
