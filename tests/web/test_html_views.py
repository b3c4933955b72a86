"""The HTML pages through Flask's test client: the form, its error paths, and the result pages.

Two set-ups: an app whose model server is down (a closed loopback port: the form must still render
and every bad input must get its 4xx without leaving a file behind), and an app in front of the
real local model server with the demo models, for the full upload -> redirect -> result flow.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from demo.synthetic import encode_jpeg, generate_image
from tests.support.forms import flask_csrf_token
from tests.support.model_server import REPO_ROOT, free_port
from web.reading.label_maps import load_label_map

OFFLINE_MODELS_CONFIG = """
model_config_list {
  config { name: "shapes" base_path: "/nowhere/shapes" model_platform: "tensorflow" }
  config { name: "other<model>" base_path: "/nowhere/other" model_platform: "tensorflow" }
}
"""
RESULT_PATH = re.compile(r"^/results/([0-9]{8}T[0-9]{12}Z-[0-9a-f]{16})$")


def _folders_are_empty(app) -> bool:
    settings = app.extensions["gateway"].settings
    return all(
        not folder.exists() or [p for p in folder.iterdir() if not p.name.startswith(".")] == []
        for folder in (Path(settings.upload_folder), Path(settings.output_folder))
    )


def _jpeg(width: int = 64, height: int = 48) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (20, 120, 200)).save(buf, "JPEG")
    return buf.getvalue()


def _png(width: int = 64, height: int = 48) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (220, 20, 60)).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture()
def offline_app(tmp_path: Path):
    from web import create_app

    config = tmp_path / "models.config"
    config.write_text(OFFLINE_MODELS_CONFIG)
    app = create_app({
        "TF_SERVING_ADDRESS": f"127.0.0.1:{free_port()}",
        "MODEL_CONFIG_FILE": str(config),
        "UPLOAD_FOLDER": str(tmp_path / "upload_folder"),
        "OUTPUT_FOLDER": str(tmp_path / "output"),
        "GRPC_TIMEOUT_S": "3",
        "MAX_CONTENT_LENGTH": str(256 * 1024),
    })
    app.config["TESTING"] = True
    return app


@pytest.fixture()
def offline(offline_app):
    return offline_app.test_client()


def _submit(client, *, image: tuple[bytes, str] | None = None, label_map: tuple[bytes, str] | None = None,
            **fields: str):
    data: dict = {"model": "shapes", "min_score": "0.5", "max_detections": "100", **fields}
    data.setdefault("csrf_token", flask_csrf_token(client))
    if image is not None:
        data["image"] = (io.BytesIO(image[0]), image[1])
    if label_map is not None:
        data["label_map"] = (io.BytesIO(label_map[0]), label_map[1])
    return client.post("/", data=data, content_type="multipart/form-data")


# -- the form ----------------------------------------------------------------------------------


def test_form_renders_with_the_configured_models_while_the_server_is_down(offline) -> None:
    response = offline.get("/")
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert 'enctype="multipart/form-data"' in html
    assert '<option value="shapes"' in html
    assert "unknown" in html
    # Model names come from a config file: escaped like anything else.
    assert "other&lt;model&gt;" in html and "other<model>" not in html
    for field_id in ("model", "image", "label_map", "min_score", "max_detections"):
        assert f'<label for="{field_id}"' in html
    assert 'accept="image/jpeg' in html
    assert "https://" not in html and "http://" not in html  # nothing from a CDN


def test_stylesheet_and_script_are_served(offline) -> None:
    html = offline.get("/").get_data(as_text=True)
    assets = re.findall(r'(?:href|src)="(/assets/[^"]+)"', html)
    assert any(a.split("?")[0].endswith(".css") for a in assets), html  # not a loop over nothing
    assert any(a.split("?")[0].endswith(".js") for a in assets), html
    for asset in assets:
        response = offline.get(asset)
        assert response.status_code == 200, asset
        assert response.data


def test_model_query_preselects_a_model(offline) -> None:
    html = offline.get("/?model=other<model>").get_data(as_text=True)
    assert re.search(r'<option value="other&lt;model&gt;"\s+selected', html)


@pytest.mark.parametrize(
    "fields,upload,status,fragment",
    [
        ({}, None, 400, "Choose an image"),
        ({}, (b"", "empty.jpg"), 400, "is empty"),
        ({"model": ""}, (_jpeg(), "a.jpg"), 400, "Choose a model"),
        ({}, (b"just some notes\n", "notes.jpg"), 415, "JPEG"),
        ({"min_score": "2"}, (_jpeg(), "a.jpg"), 400, "min_score"),
        ({"min_score": "abc"}, (_jpeg(), "a.jpg"), 400, "min_score"),
        ({"max_detections": "0"}, (_jpeg(), "a.jpg"), 400, "max_detections"),
        ({"version": "-3"}, (_jpeg(), "a.jpg"), 400, "version"),
        ({"version": "1", "version_label": "stable"}, (_jpeg(), "a.jpg"), 400, "version_label"),
    ],
)
def test_bad_input_rerenders_the_form_with_a_4xx_and_stores_nothing(offline_app, offline, fields, upload,
                                                                    status, fragment) -> None:
    response = _submit(offline, image=upload, **fields)
    assert response.status_code == status
    html = response.get_data(as_text=True)
    assert 'role="alert"' in html and fragment in html
    assert '<form class="upload-form"' in html
    assert _folders_are_empty(offline_app)


def test_bad_label_map_names_line_and_column(offline_app, offline) -> None:
    response = _submit(offline, image=(_jpeg(), "a.jpg"),
                       label_map=(b'item {\n  id: 1\n  name: circle\n}\n', "labels.pbtxt"))
    assert response.status_code == 400
    html = response.get_data(as_text=True)
    assert "labels.pbtxt" in html and "line 3, column 9" in html
    assert _folders_are_empty(offline_app)


def test_too_large_upload_is_413_with_the_form(offline_app, offline) -> None:
    response = _submit(offline, image=(b"\xff\xd8\xff" + bytes(300 * 1024), "huge.jpg"))
    assert response.status_code == 413
    html = response.get_data(as_text=True)
    assert "larger than MAX_CONTENT_LENGTH" in html and "<form class=\"upload-form\"" in html
    assert _folders_are_empty(offline_app)


def test_model_server_down_is_503_with_the_message(offline_app, offline) -> None:
    response = _submit(offline, image=(_jpeg(), "a.jpg"))
    assert response.status_code == 503
    html = response.get_data(as_text=True)
    assert 'role="alert"' in html
    assert _folders_are_empty(offline_app)


def test_values_are_kept_and_escaped_when_the_form_comes_back(offline) -> None:
    response = _submit(offline, image=(_jpeg(), "a.jpg"), min_score="0.25", max_detections="7",
                       version_label='"><script>alert(1)</script>', version="2")
    assert response.status_code == 400
    html = response.get_data(as_text=True)
    assert 'value="0.25"' in html and 'value="7"' in html
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;" in html or "&#34;&gt;&lt;script&gt;" in html


# -- result pages (results stored through the store the app uses) ------------------------------


def _stored(app, prediction: dict, *, source_name: str | None = "photo.jpg",
            original: tuple[bytes, str] | None = None) -> str:
    store = app.extensions["gateway"].store
    data, ext = original or (_jpeg(), "jpg")
    return store.save(data, ext, _jpeg(), "jpg", prediction, source_name=source_name)


def _mask_rle(height: int, width: int, box: tuple[int, int, int, int]) -> tuple[dict, int]:
    mask = np.zeros((height, width), dtype=np.uint8, order="F")
    x0, y0, x1, y1 = box
    mask[y0:y1, x0:x1] = 1
    rle = mask_utils.encode(mask)
    return {"size": [height, width], "counts": rle["counts"].decode("ascii")}, int(mask.sum())


def test_result_page_escapes_labels_and_file_names(offline_app, offline) -> None:
    rle, area = _mask_rle(48, 64, (5, 6, 20, 30))
    prediction = {
        "model": {"name": "shapes", "version": 3},
        "image": {"width": 64, "height": 48},
        "detections": [
            {"label": "<img src=x onerror=alert(1)>", "class_id": 1, "score": 0.91234,
             "box": {"xmin": 5.0, "ymin": 6.0, "xmax": 20.0, "ymax": 30.0}, "mask": rle},
            {"label": "square", "class_id": 2, "score": 0.6,
             "box": {"xmin": 30.4, "ymin": 2.6, "xmax": 60.0, "ymax": 40.0}, "mask": rle},
        ],
        "timings_ms": {"decode": 1.5, "predict": 10.25, "total": 12.0},
    }
    result_id = _stored(offline_app, prediction, source_name='"><script>alert("name")</script>.jpg')
    response = offline.get(f"/results/{result_id}")
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert "<img src=x" not in html and "&lt;img src=x onerror=alert(1)&gt;" in html
    assert "<script>alert(" not in html and "&lt;script&gt;" in html
    assert 'id="detections-table"' in html
    assert html.count("<tr>") == 1 + 2  # header + two detections
    assert "0.912" in html and "(5, 6) – (20, 30)" in html and "(30, 3) – (60, 40)" in html
    assert f">{area}<" in html  # mask area in pixels, decoded from the RLE
    assert "10.2 ms" in html or "10.3 ms" in html
    base = f"/results/{result_id}"
    for link in (f"{base}.json", f"{base}/original", f"{base}/image", "/?model=shapes"):
        assert f'href="{link}"' in html
    assert re.search(r'<img id="result-image"[^>]*alt="[^"]+"', html)


def test_result_json_and_files(offline_app, offline) -> None:
    prediction = {"model": {"name": "shapes", "version": 1}, "image": {"width": 64, "height": 48},
                  "detections": [], "timings_ms": {"total": 1.0}}
    png = _png()
    result_id = _stored(offline_app, prediction, original=(png, "png"))

    as_json = offline.get(f"/results/{result_id}.json")
    assert as_json.status_code == 200 and as_json.is_json
    assert as_json.get_json() == prediction

    original = offline.get(f"/results/{result_id}/original")
    assert original.status_code == 200
    assert original.mimetype == "image/png" and original.data == png
    assert original.headers["X-Content-Type-Options"] == "nosniff"

    rendered = offline.get(f"/results/{result_id}/image")
    assert rendered.status_code == 200 and rendered.mimetype == "image/jpeg"
    assert Image.open(io.BytesIO(rendered.data)).size == (64, 48)

    page = offline.get(f"/results/{result_id}").get_data(as_text=True)
    assert 'id="no-detections"' in page


def test_classification_result_shows_the_classes(offline_app, offline) -> None:
    prediction = {"model": {"name": "clf", "version": 1}, "image": {"width": 64, "height": 48},
                  "classes": [{"label": "tabby cat", "class_id": 282, "score": 0.8},
                              {"label": "tiger cat", "class_id": 283, "score": 0.1}],
                  "timings_ms": {"total": 2.0}}
    result_id = _stored(offline_app, prediction)
    html = offline.get(f"/results/{result_id}").get_data(as_text=True)
    assert 'id="classes-table"' in html and "tabby cat" in html and "tiger cat" in html
    listing = offline.get("/results").get_data(as_text=True)
    assert "2 classes" in listing


def test_recent_results_lists_newest_first_with_thumbnails(offline_app, offline) -> None:
    ids = []
    for n in range(3):
        prediction = {"model": {"name": f"model{n}", "version": 1}, "image": {"width": 64, "height": 48},
                      "detections": [{"label": "circle", "class_id": 1, "score": 0.9,
                                      "box": {"xmin": 1, "ymin": 1, "xmax": 9, "ymax": 9}}] * n,
                      "timings_ms": {}}
        ids.append(_stored(offline_app, prediction, source_name=f"<b>file{n}</b>.jpg"))
    response = offline.get("/results")
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    positions = [html.index(f'href="/results/{i}"') for i in ids]
    assert positions == sorted(positions, reverse=True)
    for i in ids:
        assert f'src="/results/{i}/image"' in html
    assert "0 detections" in html and "1 detection<" in html and "2 detections" in html
    assert "&lt;b&gt;file1&lt;/b&gt;.jpg" in html and "<b>file1</b>" not in html
    limited = offline.get("/results?limit=1").get_data(as_text=True)
    assert f'href="/results/{ids[-1]}"' in limited and f'href="/results/{ids[0]}"' not in limited


def test_recent_results_empty_state(offline) -> None:
    response = offline.get("/results?limit=nonsense")
    assert response.status_code == 200
    assert "No results yet" in response.get_data(as_text=True)


@pytest.mark.parametrize(
    "path",
    [
        "/results/20240101T000000000000Z-0123456789abcdef",
        "/results/20240101T000000000000Z-0123456789abcdef/image",
        "/results/20240101T000000000000Z-0123456789abcdef/original",
        "/results/..%2F..%2Fetc%2Fpasswd",
        "/results/..%2F..%2Fetc%2Fpasswd/original",
        "/results/../../etc/passwd",
        "/results/%2e%2e/original",
        "/results/not-an-id",
        "/results/not-an-id.json",
    ],
)
def test_unknown_and_malicious_ids_are_404(offline, path: str) -> None:
    response = offline.get(path)
    assert response.status_code == 404
    assert b"root:" not in response.data


def test_unknown_result_json_is_a_json_404(offline) -> None:
    response = offline.get("/results/20240101T000000000000Z-0123456789abcdef.json")
    assert response.status_code == 404
    assert response.get_json()["error"]["code"] == 404


def test_pruned_files_give_404_not_500(offline_app, offline) -> None:
    prediction = {"model": {"name": "shapes", "version": 1}, "image": {"width": 64, "height": 48},
                  "detections": [], "timings_ms": {}}
    result_id = _stored(offline_app, prediction)
    stored = offline_app.extensions["gateway"].store.get(result_id)
    stored.rendered_path.unlink()
    assert offline.get(f"/results/{result_id}/image").status_code == 404


def test_error_page_for_unknown_pages(offline) -> None:
    response = offline.get("/no/such/page")
    assert response.status_code == 404
    html = response.get_data(as_text=True)
    assert 'id="error-message"' in html and "Back to the upload form" in html


# -- the full flow against the real model server -----------------------------------------------


@pytest.fixture(scope="module")
def live_app(demo_model_server: str, tmp_path_factory: pytest.TempPathFactory):
    from web import create_app

    root = tmp_path_factory.mktemp("html_live")
    app = create_app({
        "TF_SERVING_ADDRESS": demo_model_server,
        "MODEL_CONFIG_FILE": str(REPO_ROOT / "tf_server" / "models.config"),
        "UPLOAD_FOLDER": str(root / "upload_folder"),
        "OUTPUT_FOLDER": str(root / "output"),
    })
    app.config["TESTING"] = True
    return app


@pytest.fixture()
def live(live_app) -> Iterator:
    yield live_app.test_client()


@pytest.fixture(scope="module")
def photo() -> tuple[bytes, list]:
    image, shapes = generate_image(np.random.default_rng(7), 320, 240, min_shapes=2, max_shapes=3)
    return encode_jpeg(image), shapes


def test_form_lists_the_demo_models_as_available(live) -> None:
    html = live.get("/").get_data(as_text=True)
    assert '<option value="shapes"' in html and '<option value="shapes_jpeg"' in html
    assert "AVAILABLE" in html


@pytest.mark.parametrize("model", ["shapes", "shapes_jpeg"])
def test_upload_redirects_to_a_stored_result(live_app, live, photo, model: str) -> None:
    data, shapes = photo
    response = _submit(live, image=(data, "../../etc/passwd.jpg"), model=model, min_score="0.3")
    assert response.status_code == 303
    match = RESULT_PATH.match(response.headers["Location"].replace("http://localhost", ""))
    assert match, response.headers["Location"]
    result_id = match.group(1)

    page = live.get(f"/results/{result_id}")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    prediction = live.get(f"/results/{result_id}.json").get_json()
    assert prediction["model"]["name"] == model
    assert prediction["image"] == {"width": 320, "height": 240}
    assert html.count('<td class="label">') == len(prediction["detections"])
    # Labels come from the label map stored beside the model; the drawn shapes are found.
    names = load_label_map(REPO_ROOT / "tf_server" / "models" / model / "label_map.pbtxt")
    assert all(d["label"] == names.name_for(d["class_id"]) for d in prediction["detections"])
    assert {d["class_id"] for d in prediction["detections"]} & {s.class_id for s in shapes}
    for d in prediction["detections"]:
        assert f'{d["label"]} <span class="muted">({d["class_id"]})</span>' in html
    assert all(d["score"] >= 0.3 for d in prediction["detections"])

    # The original is kept byte for byte under the server's name; the client's name is only text.
    settings = live_app.extensions["gateway"].settings
    assert (Path(settings.upload_folder) / f"{result_id}.jpg").read_bytes() == data
    assert "../../etc/passwd.jpg" in html
    assert not (Path(settings.upload_folder) / "passwd.jpg").exists()
    rendered = live.get(f"/results/{result_id}/image")
    assert Image.open(io.BytesIO(rendered.data)).size == (320, 240)


def test_uploaded_label_map_names_are_escaped(live, photo) -> None:
    data, _ = photo
    label_map = (b'item { id: 1 name: "<i>round</i>" }\nitem { id: 2 name: "<i>boxy</i>" }\n'
                 b'item { id: 3 name: "<i>pointy</i>" }\n')
    response = _submit(live, image=(data, "p.jpg"), label_map=(label_map, "labels.pbtxt"), min_score="0.3")
    assert response.status_code == 303
    html = live.get(response.headers["Location"]).get_data(as_text=True)
    assert "<i>" not in html
    assert "&lt;i&gt;" in html


def test_unknown_model_is_404_on_the_form(live_app, live, photo) -> None:
    before = sorted(p.name for p in Path(live_app.extensions["gateway"].settings.upload_folder).glob("*"))
    response = _submit(live, image=(photo[0], "p.jpg"), model="no_such_model")
    assert response.status_code == 404
    html = response.get_data(as_text=True)
    assert "no_such_model" in html and '<form class="upload-form"' in html
    after = sorted(p.name for p in Path(live_app.extensions["gateway"].settings.upload_folder).glob("*"))
    assert after == before


def test_a_failing_disk_is_507_and_leaves_no_file(demo_model_server: str, tmp_path: Path, photo) -> None:
    """The prediction works but the output folder cannot be written: a clear 507, nothing left over."""
    from web import create_app

    output = tmp_path / "output"
    output.write_text("a file where the output folder should be")
    upload = tmp_path / "upload_folder"
    app = create_app({
        "TF_SERVING_ADDRESS": demo_model_server,
        "MODEL_CONFIG_FILE": str(REPO_ROOT / "tf_server" / "models.config"),
        "UPLOAD_FOLDER": str(upload),
        "OUTPUT_FOLDER": str(output),
    })
    response = _submit(app.test_client(), image=(photo[0], "p.jpg"))
    assert response.status_code == 507
    html = response.get_data(as_text=True)
    assert "could not be stored" in html and '<form class="upload-form"' in html
    assert not upload.exists() or list(upload.iterdir()) == []
