"""The jobs pages through the Flask app: the form starts a job (its upload streamed by the jobs API's
`start_job`), mistakes re-render the page with the message and a 4xx, CSRF and key ownership hold on
every form route, and a job run by a real `python -m web.worker` over gRPC to the demo model server
shows its result links and thumbnails drawn with its boxes."""

from __future__ import annotations

import html as html_lib
import io
import json
import re
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
from flask.testing import FlaskClient
from PIL import Image

from demo.digits import generate_digit
from demo.synthetic import encode_jpeg, generate_image
from tests.support.datasets import demo_coco_zip
from tests.support.forms import flask_csrf_token
from tests.support.gunicorn_gateway import running_gateway
from tests.support.model_server import REPO_ROOT
from tests.web.jobs.queue_helpers import Workers, wait_for
from web import create_app
from web.jobs.config import JobSettings
from web.jobs.exporters import RESULT_FILES
from web.pipeline.render import class_color

KEYS = {"API_KEYS": "key-a,key-b", "SECRET_KEY": "s" * 32}
JOB_PAGE = re.compile(r"/jobs/([0-9a-f]{32})$")


def zip_of(entries: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return buf.getvalue()


def pictures(count: int, size: tuple[int, int] = (640, 480)) -> dict[str, bytes]:
    rng = np.random.default_rng(11)
    out = {}
    for i in range(count):
        image, _ = generate_image(rng, *size, min_shapes=2, max_shapes=3)
        out[f"photos/{i:02d}.jpg"] = encode_jpeg(image)
    return out


@pytest.fixture()
def serving(demo_model_server: str, tmp_path: Path) -> dict[str, str]:
    return {
        "TF_SERVING_ADDRESS": demo_model_server,
        "MODEL_CONFIG_FILE": str(REPO_ROOT / "tf_server" / "models.config"),
        "JOBS_FOLDER": str(tmp_path / "jobs"),
        "JOB_QUEUE_POLL_S": "0.1",
        "JOB_CHUNK_SIZE": "4",
    }


def make_client(tmp_path: Path, serving: dict[str, str], **extra: Any) -> FlaskClient:
    config = {"UPLOAD_FOLDER": tmp_path / "up", "OUTPUT_FOLDER": tmp_path / "out", **serving, **extra}
    return create_app(config).test_client()


@pytest.fixture()
def workers(tmp_path: Path) -> Iterator[Workers]:
    pool = Workers(tmp_path)
    yield pool
    pool.stop_all()


def post_form(client: FlaskClient, archive: bytes | None, token: str | None, headers=None, **fields: str):
    data: dict[str, Any] = {"model": "shapes", "min_score": "0.3", **fields}
    if archive is not None:
        data["archive"] = (io.BytesIO(archive), "photos.zip")
    query = f"?csrf_token={token}" if token is not None else ""
    return client.post(f"/jobs{query}", data=data, content_type="multipart/form-data", headers=headers or {})


def job_folders(serving: dict[str, str]) -> list[Path]:
    root = Path(serving["JOBS_FOLDER"])
    return [p for p in root.iterdir() if re.fullmatch(r"[0-9a-f]{32}", p.name)] if root.exists() else []


def sign_in(client: FlaskClient, key: str) -> str:
    token = flask_csrf_token(client, "/login")
    answer = client.post("/login", data={"key": key, "next": "/jobs", "csrf_token": token})
    assert answer.status_code == 303
    return token


def test_the_jobs_page_offers_the_upload_pages_options(tmp_path: Path, serving) -> None:
    client = make_client(tmp_path, serving)
    page = client.get("/jobs")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert 'name="archive" type="file"' in html
    assert re.search(r'action="/jobs\?csrf_token=[\w-]{32,}"', html)  # the token of a streamed form
    # every option with the bounds and defaults of its one declaration, as on the upload page
    upload = client.get("/").get_data(as_text=True)
    for name in ("min_score", "max_detections", "iou_threshold", "version", "version_label"):
        field = re.search(rf'<input id="{name}" name="{name}"[^>]*>', html, re.S)
        same = re.search(rf'<input id="{name}" name="{name}"[^>]*>', upload, re.S)
        assert field and same, name
        attributes = lambda tag: sorted(re.findall(r'(min|max|step|value|type)="([^"]*)"', tag))  # noqa: E731
        assert attributes(field.group(0)) == attributes(same.group(0)), name
    assert '<option value="shapes"' in html
    assert 'href="/jobs"' in html and "No jobs yet" in html


@pytest.mark.parametrize(
    ("archive", "fields", "status", "message"),
    [
        (None, {}, 400, "no archive: send a .zip of pictures"),
        (b"these bytes are not a zip", {}, 400, "zip"),
        (zip_of({"notes.txt": b"no pictures here"}), {}, 400, "picture"),
        ("valid", {"model": "no_such_model"}, 404, "no_such_model"),
        ("valid", {"min_score": "7"}, 400, "min_score"),
    ],
)
def test_form_mistakes_rerender_the_page_with_the_message(
    tmp_path: Path, serving, archive, fields, status: int, message: str
) -> None:
    client = make_client(tmp_path, serving)
    token = flask_csrf_token(client, "/jobs")
    body = zip_of(pictures(1, (64, 48))) if archive == "valid" else archive
    answer = post_form(client, body, token, **fields)
    assert answer.status_code == status
    assert answer.mimetype == "text/html"
    html = answer.get_data(as_text=True)
    error = re.search(r'<div class="alert alert-error" role="alert" id="form-error">(.*?)</div>', html, re.S)
    assert error, html[:2000]
    assert message.lower() in error.group(1).lower()
    assert 'id="job-form"' in html  # the form again, to fix and resend
    assert job_folders(serving) == []  # nothing was started, nothing stays
    incoming = Path(serving["JOBS_FOLDER"]) / ".incoming"
    assert not incoming.exists() or list(incoming.iterdir()) == []


def test_an_upload_over_the_job_limit_is_a_413_page(tmp_path: Path, serving) -> None:
    client = make_client(tmp_path, serving, MAX_JOB_UPLOAD_BYTES="2000")
    token = flask_csrf_token(client, "/jobs")
    answer = post_form(client, zip_of(pictures(2, (64, 48))), token)
    assert answer.status_code == 413
    assert "MAX_JOB_UPLOAD_BYTES" in answer.get_data(as_text=True)
    assert job_folders(serving) == []


def test_with_keys_the_forms_need_their_token_and_the_sites_origin(tmp_path: Path, serving) -> None:
    client = make_client(tmp_path, serving, **KEYS)
    assert client.get("/jobs").status_code == 303  # sign in first
    token = sign_in(client, "key-a")
    archive = zip_of(pictures(1, (64, 48)))
    assert post_form(client, archive, None).status_code == 403
    assert post_form(client, archive, "x" * 43).status_code == 403  # not this browser's token
    evil = post_form(client, archive, token, headers={"Origin": "https://evil.example"})
    assert evil.status_code == 403
    assert job_folders(serving) == []
    started = post_form(client, archive, token, headers={"Origin": "http://localhost"})
    assert started.status_code == 303, started.get_data(as_text=True)[:1000]
    job_id = JOB_PAGE.search(started.headers["Location"]).group(1)
    # the small forms go through the usual check (token in the body)
    assert client.post(f"/jobs/{job_id}/cancel").status_code == 403
    assert client.post(f"/jobs/{job_id}/delete", data={"csrf_token": "y" * 43}).status_code == 403
    assert client.get(f"/api/v1/jobs/{job_id}").get_json()["status"] == "queued"
    cancelled = client.post(f"/jobs/{job_id}/cancel", data={"csrf_token": token, "back": "job"})
    assert cancelled.status_code == 303 and cancelled.headers["Location"].endswith(f"/jobs/{job_id}")
    assert client.get(f"/api/v1/jobs/{job_id}").get_json()["status"] == "cancelled"
    again = client.post(f"/jobs/{job_id}/cancel", data={"csrf_token": token})
    assert again.status_code == 409 and "already cancelled" in again.get_data(as_text=True)
    # the session may read the API, but changing anything there takes a key header
    assert client.post(f"/api/v1/jobs/{job_id}/cancel").status_code == 401
    deleted = client.post(f"/jobs/{job_id}/delete", data={"csrf_token": token})
    assert deleted.status_code == 303 and deleted.headers["Location"].endswith("/jobs")
    assert client.get(f"/jobs/{job_id}").status_code == 404
    assert job_folders(serving) == []


def test_another_keys_job_is_not_found_on_every_page(tmp_path: Path, serving) -> None:
    app_config = {"UPLOAD_FOLDER": tmp_path / "up", "OUTPUT_FOLDER": tmp_path / "out", **serving, **KEYS}
    app = create_app(app_config)
    owner, other = app.test_client(), app.test_client()
    token = sign_in(owner, "key-a")
    started = post_form(owner, zip_of(pictures(1, (64, 48))), token)
    job_id = JOB_PAGE.search(started.headers["Location"]).group(1)
    assert owner.get(f"/jobs/{job_id}").status_code == 200
    assert job_id[:8] in owner.get("/jobs").get_data(as_text=True)

    other_token = sign_in(other, "key-b")
    assert job_id[:8] not in other.get("/jobs").get_data(as_text=True)
    for answer in (
        other.get(f"/jobs/{job_id}"),
        other.get(f"/jobs/{job_id}/thumbs/0.jpg"),
        other.post(f"/jobs/{job_id}/cancel", data={"csrf_token": other_token}),
        other.post(f"/jobs/{job_id}/delete", data={"csrf_token": other_token}),
    ):
        assert answer.status_code == 404
        assert answer.mimetype == "text/html"
    job = owner.get(f"/api/v1/jobs/{job_id}").get_json()
    assert job["status"] == "queued"  # untouched by the other key
    assert other.get("/jobs/not-a-job-id").status_code == 404


def test_a_job_from_the_form_to_its_results_and_thumbnails(tmp_path: Path, serving, workers: Workers) -> None:
    client = make_client(tmp_path, serving)
    token = flask_csrf_token(client, "/jobs")
    photos = pictures(10)
    started = post_form(client, zip_of({**photos, "readme.txt": b"not a picture"}), token)
    assert started.status_code == 303
    job_id = JOB_PAGE.search(started.headers["Location"]).group(1)
    page = client.get(f"/jobs/{job_id}").get_data(as_text=True)
    assert "readme.txt" in page  # skipped, with its reason
    assert 'data-job-state="queued"' in page
    assert client.get(f"/jobs/{job_id}/thumbs/0.jpg").status_code == 404  # nothing drawn before it ends

    workers.start(JobSettings.from_env(serving), predictor=None, **serving)
    wait_for(
        lambda: client.get(f"/api/v1/jobs/{job_id}").get_json()["status"] == "succeeded",
        120,
        f"job {job_id} to succeed\n{workers.logs()[-3000:]}",
    )
    page = client.get(f"/jobs/{job_id}").get_data(as_text=True)
    for name in RESULT_FILES:
        assert f'href="/api/v1/jobs/{job_id}/results/{name}"' in page
    thumbs = re.findall(rf'src="(/jobs/{job_id}/thumbs/\d+\.jpg)"', page)
    assert thumbs == [f"/jobs/{job_id}/thumbs/{i}.jpg" for i in range(8)]  # the first eight of ten
    for beyond in ("8", "-1", "x", "007", "1e3"):
        assert client.get(f"/jobs/{job_id}/thumbs/{beyond}.jpg").status_code == 404, beyond

    jsonl = client.get(f"/api/v1/jobs/{job_id}/results/predictions.jsonl").data
    lines = [json.loads(line) for line in jsonl.splitlines()]
    for index, url in enumerate(thumbs[:3]):
        answer = client.get(url)
        assert answer.status_code == 200 and answer.mimetype == "image/jpeg"
        assert "private" in answer.headers["Cache-Control"]
        thumb = Image.open(io.BytesIO(answer.data)).convert("RGB")
        assert thumb.size == (320, 240)  # the longer side at 320 px
        record = lines[index]
        drawn = np.asarray(thumb, dtype=float)
        original = Image.open(io.BytesIO(photos[record["file"]])).convert("RGB")
        plain = np.asarray(original.resize(thumb.size), dtype=float)
        assert record["detections"], record
        outside = np.ones(drawn.shape[:2], dtype=bool)
        for det in record["detections"]:
            x0, y0, x1, y1 = (round(det["box"][k] * 0.5) for k in ("xmin", "ymin", "xmax", "ymax"))
            outside[max(0, y0 - 20) : y1 + 2, max(0, x0 - 2) : x1 + 60] = False  # box, caption above it
            # the box's left outline, scaled to the thumbnail: its pixels moved toward the class colour
            edge = (slice(y0 + 3, y1 - 3), slice(x0, x0 + 2))
            color = np.array(class_color(det["class_id"]), dtype=float)
            change, toward = drawn[edge] - plain[edge], color - plain[edge]
            assert float(np.abs(change).mean()) > 30, det
            assert float((change * toward).sum(axis=-1).mean()) > 0, det
        # elsewhere it is the picture itself, made smaller
        assert float(np.abs(drawn - plain)[outside].mean()) < 12

    ended = client.post(f"/jobs/{job_id}/cancel", data={"csrf_token": token})
    assert ended.status_code == 409 and "already succeeded" in ended.get_data(as_text=True)
    deleted = client.post(f"/jobs/{job_id}/delete", data={"csrf_token": token})
    assert deleted.status_code == 303
    assert client.get(f"/jobs/{job_id}").status_code == 404
    assert client.get(f"/jobs/{job_id}/thumbs/0.jpg").status_code == 404
    assert job_folders(serving) == []


def test_a_classifiers_thumbnails_show_its_top_classes(tmp_path: Path, serving, workers: Workers) -> None:
    client = make_client(tmp_path, serving)
    token = flask_csrf_token(client, "/jobs")
    rng = np.random.default_rng(3)
    digits = {f"d/{i}.jpg": encode_jpeg(generate_digit(rng, digit=i, height=400).image) for i in range(2)}
    started = post_form(client, zip_of(digits), token, model="digits", min_score="0")
    job_id = JOB_PAGE.search(started.headers["Location"]).group(1)
    workers.start(JobSettings.from_env(serving), predictor=None, **serving)
    wait_for(
        lambda: client.get(f"/api/v1/jobs/{job_id}").get_json()["status"] == "succeeded",
        120,
        f"job {job_id} to succeed\n{workers.logs()[-3000:]}",
    )
    jsonl = client.get(f"/api/v1/jobs/{job_id}/results/predictions.jsonl").data
    first = json.loads(jsonl.splitlines()[0])
    assert first["classes"], first
    answer = client.get(f"/jobs/{job_id}/thumbs/0.jpg")
    assert answer.status_code == 200
    thumb = np.asarray(Image.open(io.BytesIO(answer.data)).convert("RGB"), dtype=float)
    height, width = thumb.shape[:2]
    assert max(height, width) == 320
    plain = Image.open(io.BytesIO(digits[first["file"]])).convert("RGB").resize((width, height))
    plain = np.asarray(plain, dtype=float)
    # the captions of the top classes are drawn from the top-left corner down, in their class colours
    corner = (slice(2, 14), slice(2, 30))
    color = np.array(class_color(first["classes"][0]["class_id"]), dtype=float)
    assert np.abs(thumb[corner] - color).mean() < 0.7 * np.abs(plain[corner] - color).mean()  # text: black
    assert np.abs(thumb[height // 2 :] - plain[height // 2 :]).mean() < 12  # the rest: the picture


def test_the_form_under_gunicorn(tmp_path: Path, serving) -> None:
    """As in production: the form's zip streamed through gunicorn, refused or started as in the app."""
    with running_gateway(tmp_path / "gunicorn", **serving, MAX_JOB_UPLOAD_BYTES="200000") as base:
        session = requests.Session()
        page = session.get(f"{base}/jobs", timeout=60).text
        action = html_lib.unescape(re.search(r'<form [^>]*action="(/jobs\?csrf_token=[^"]+)"', page).group(1))
        archive = zip_of(pictures(3, (160, 120)))
        fields = {"model": "shapes", "min_score": "0.3"}
        files = {"archive": ("photos.zip", archive, "application/zip")}
        refused = session.post(f"{base}/jobs", data=fields, files=files, timeout=60, allow_redirects=False)
        assert refused.status_code == 403  # no token
        started = session.post(f"{base}{action}", data=fields, files=files, timeout=60, allow_redirects=False)
        assert started.status_code == 303, started.text[:1000]
        job_id = JOB_PAGE.search(started.headers["Location"]).group(1)
        assert session.get(f"{base}/jobs/{job_id}", timeout=60).status_code == 200
        big = {"archive": ("big.zip", zip_of({"noise.bin": np.random.default_rng(1).bytes(300_000)}), "")}
        too_large = session.post(f"{base}{action}", data=fields, files=big, timeout=60, allow_redirects=False)
        assert too_large.status_code == 413 and "MAX_JOB_UPLOAD_BYTES" in too_large.text
        assert 'id="job-form"' in too_large.text
    assert [p.name for p in job_folders(serving)] == [job_id]


def test_an_evaluation_from_the_form_scores_the_demo_detector(
    tmp_path: Path, serving, workers: Workers
) -> None:
    """The form's "Evaluate" on the demo's kind of set: the trained detector scores as the README says."""
    client = make_client(tmp_path, serving)
    page = client.get("/jobs").get_data(as_text=True)
    assert 'name="kind" value="evaluate"' in page and 'id="compare_with"' in page
    assert re.search(r'<input id="operating_score" name="operating_score"[^>]*min="0"[^>]*max="1"', page)
    token = flask_csrf_token(client, "/jobs")
    started = post_form(
        client,
        demo_coco_zip(tmp_path, 12, seed=777).read_bytes(),
        token,
        kind="evaluate",
        min_score="0",
        compare_with="shapes_jpeg",
    )
    assert started.status_code == 303, started.get_data(as_text=True)
    job_id = JOB_PAGE.search(started.headers["Location"]).group(1)
    workers.start(JobSettings.from_env(serving), predictor=None, **serving)
    wait_for(
        lambda: client.get(f"/api/v1/jobs/{job_id}").get_json()["status"] in ("succeeded", "failed"),
        180,
        f"job {job_id} to end\n{workers.logs()[-3000:]}",
    )
    job = client.get(f"/api/v1/jobs/{job_id}").get_json()
    assert job["status"] == "succeeded", job["error"]
    report = json.loads(client.get(job["results"]["report.json"]).data)
    assert [m["name"] for m in report["models"]] == ["shapes", "shapes_jpeg"]
    for model in report["models"]:
        # README: box AP@0.5 0.988 and mask AP@0.5 0.948 on 300 pictures; 12 pictures leave some spread
        assert model["metrics"]["bbox"]["AP50"] > 0.85, model["metrics"]
        assert model["metrics"]["segm"]["AP50"] > 0.75, model["metrics"]
        assert all(m["by"] == "name" for m in model["matching"]["matched"])
        assert not model["matching"]["unmatched_categories"] and not model["matching"]["unmatched_labels"]
    # the same network, raw pixels against JPEG bytes: nearly the same numbers
    assert abs(report["comparison"]["deltas"]["bbox"]["AP50"]) < 0.05
    page = client.get(f"/jobs/{job_id}").get_data(as_text=True)
    assert "AP50" in page
