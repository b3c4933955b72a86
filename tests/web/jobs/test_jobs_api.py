"""The jobs API over the real path: the app (and gunicorn), a real `python -m web.worker` predicting
through the gateway's pipeline over gRPC, the embedded SQLite queue; every JSON answer checked against
/swagger.json."""

from __future__ import annotations

import io
import json
import time
import zipfile
from pathlib import Path
from typing import Any

import pytest
import requests
from flask.testing import FlaskClient
from pycocotools.coco import COCO

from tests.support.gunicorn_gateway import running_gateway
from tests.web.helpers import solid
from tests.web.jobs.queue_helpers import Workers, wait_for
from tests.web.test_api_schema import Documented
from web import create_app
from web.jobs.config import JobSettings
from web.jobs.exporters import RESULT_FILES

API = "/api/v1/jobs"
KEYS = {"API_KEYS": "key-a,key-b", "SECRET_KEY": "s" * 32}


def zip_of(entries: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return buf.getvalue()


PICTURES = {f"set/{i:02d}.jpg": solid(160, 120, (80 + 10 * i, 100, 120)) for i in range(6)}


def make_client(tmp_path: Path, serving: dict[str, str], **extra: Any) -> FlaskClient:
    config = {"UPLOAD_FOLDER": tmp_path / "up", "OUTPUT_FOLDER": tmp_path / "out", **serving, **extra}
    return create_app(config).test_client()


def start_worker(workers: Workers, serving: dict[str, str]) -> None:
    settings = JobSettings.from_env(serving)
    workers.start(settings, predictor=None, **serving)


def post_job(client: FlaskClient, archive: bytes, headers: dict[str, str] | None = None, **fields: Any):
    data = {"model": "od_uint8", "min_score": "0", **fields, "archive": (io.BytesIO(archive), "set.zip")}
    data = {name: value for name, value in data.items() if value is not None}  # None: the field left out
    return client.post(API, data=data, content_type="multipart/form-data", headers=headers or {})


def wait_ended(client: FlaskClient, job_id: str, headers: dict[str, str] | None = None) -> tuple[dict, list]:
    seen: list[int] = []

    def ended() -> dict | None:
        job = client.get(f"{API}/{job_id}", headers=headers or {}).get_json()
        seen.append(job["progress"]["done"])
        return job if job["status"] in ("succeeded", "failed", "cancelled") else None

    return wait_for(ended, 120, f"job {job_id} to end"), seen  # type: ignore[return-value]


def test_a_job_from_upload_to_every_result_file(tmp_path: Path, serving, workers: Workers) -> None:
    client = make_client(tmp_path, serving)
    spec = Documented(client.get("/swagger.json").get_json())
    extra = {"notes/readme.txt": b"not a picture", "../evil.jpg": PICTURES["set/00.jpg"]}
    archive = zip_of({**PICTURES, **extra})
    answer = post_job(client, archive)
    assert answer.status_code == 202, answer.get_json()
    job = spec.check("POST", API, answer)
    assert answer.headers["Location"] == f"{API}/{job['id']}"
    assert job["status"] == "queued" and job["progress"] == {"done": 0, "total": len(PICTURES)}
    assert {item["file"] for item in job["skipped"]} == {"notes/readme.txt", "../evil.jpg"}

    start_worker(workers, serving)
    done, seen = wait_ended(client, job["id"])
    assert done["status"] == "succeeded", done["error"]
    assert seen == sorted(seen)  # progress only grows
    spec.check("GET", f"{API}/{job['id']}", client.get(f"{API}/{job['id']}"))
    spec.check("GET", API, client.get(API))
    assert set(done["results"]) == set(RESULT_FILES)
    files = {}
    for name, url in done["results"].items():
        download = client.get(url)
        assert download.status_code == 200, name
        assert f'filename={name}' in download.headers["Content-Disposition"]
        files[name] = download.data
    lines = [json.loads(line) for line in files["predictions.jsonl"].splitlines()]
    assert [line["file"] for line in lines] == sorted(PICTURES)  # each picture once, in order
    assert all(len(line["detections"]) == 3 for line in lines)  # the model's three boxes at min_score 0
    coco_path = tmp_path / "coco.json"
    coco_path.write_bytes(files["coco.json"])
    coco = COCO(str(coco_path))
    assert len(coco.getImgIds()) == len(PICTURES) and len(coco.getAnnIds()) == 3 * len(PICTURES)
    assert client.get(f"{API}/{job['id']}/results/nope.txt").status_code == 404

    metrics = client.get("/metrics").get_data(as_text=True)
    assert 'gateway_jobs{status="succeeded"} 1.0' in metrics
    assert f"gateway_job_pictures_done {float(len(PICTURES))}" in metrics

    assert client.delete(f"{API}/{job['id']}").status_code == 204
    assert client.get(f"{API}/{job['id']}").status_code == 404
    assert not (Path(serving["JOBS_FOLDER"]) / job["id"]).exists()


@pytest.mark.parametrize(
    "fields, archive, status, words",
    [
        ({}, b"not a zip at all", 400, "not a readable zip"),
        ({}, zip_of({"a.txt": b"hello", "b.csv": b"1,2"}), 400, "no pictures"),
        ({"model": "no_such_model"}, zip_of(PICTURES), 404, "no_such_model"),
        ({"min_score": "7"}, zip_of(PICTURES), 400, "min_score"),
        ({"kind": "teleport"}, zip_of(PICTURES), 400, "kind"),
        ({"model": None}, zip_of(PICTURES), 400, "model"),
    ],
    ids=["not-a-zip", "no-pictures", "unknown-model", "bad-option", "bad-kind", "no-model"],
)
def test_bad_uploads_are_refused_with_what_to_fix_and_leave_nothing(
    tmp_path: Path, serving, fields: dict, archive: bytes, status: int, words: str
) -> None:
    client = make_client(tmp_path, serving)
    spec = Documented(client.get("/swagger.json").get_json())
    answer = post_job(client, archive, **fields)
    assert answer.status_code == status
    body = spec.check("POST", API, answer)
    assert words in body["error"]["message"]
    jobs = Path(serving["JOBS_FOLDER"])
    assert [p.name for p in jobs.iterdir() if not p.name.startswith(("queue.db", "."))] == []
    assert not any((jobs / ".incoming").iterdir())


def test_no_archive_and_not_multipart(tmp_path: Path, serving) -> None:
    client = make_client(tmp_path, serving)
    no_file = client.post(API, data={"model": "od_uint8"}, content_type="multipart/form-data")
    assert no_file.status_code == 400 and "'archive'" in no_file.get_json()["error"]["message"]
    raw = client.post(API, data=zip_of(PICTURES), content_type="application/zip")
    assert raw.status_code == 415 and "multipart/form-data" in raw.get_json()["error"]["message"]


def test_job_limits_size_count_and_disk_budget(tmp_path: Path, serving) -> None:
    archive = zip_of(PICTURES)
    small = make_client(tmp_path / "a", serving, MAX_JOB_UPLOAD_BYTES=len(archive) // 2)
    too_big = post_job(small, archive)
    assert too_big.status_code == 413
    assert "MAX_JOB_UPLOAD_BYTES" in too_big.get_json()["error"]["message"]
    # the rest of the API keeps its own limit
    few = make_client(tmp_path / "b", serving, MAX_JOB_PICTURES=3)
    over = post_job(few, archive)
    assert over.status_code == 413 and "3" in over.get_json()["error"]["message"]
    budget = make_client(tmp_path / "c", serving, JOBS_DISK_BUDGET_BYTES=len(archive) // 3)
    full = post_job(budget, archive)
    assert full.status_code == 507 and "JOBS_DISK_BUDGET_BYTES" in full.get_json()["error"]["message"]


def test_cancel_stops_a_job_and_an_ended_job_cannot_be_cancelled(tmp_path: Path, serving, workers) -> None:
    client = make_client(tmp_path, serving)
    job = post_job(client, zip_of(PICTURES)).get_json()
    cancelled = client.post(f"{API}/{job['id']}/cancel")
    assert cancelled.status_code == 200 and cancelled.get_json()["status"] == "cancelled"
    start_worker(workers, serving)
    time.sleep(2)  # a worker that picked the chunks up would have predicted by now
    again = client.get(f"{API}/{job['id']}").get_json()
    assert again["status"] == "cancelled" and again["progress"]["done"] == 0 and again["results"] == {}
    conflict = client.post(f"{API}/{job['id']}/cancel")
    assert conflict.status_code == 409 and "already cancelled" in conflict.get_json()["error"]["message"]


def test_jobs_belong_to_the_key_that_started_them(tmp_path: Path, serving) -> None:
    client = make_client(tmp_path, serving, **KEYS)
    a, b = {"X-API-Key": "key-a"}, {"Authorization": "Bearer key-b"}
    assert post_job(client, zip_of(PICTURES)).status_code == 401
    job = post_job(client, zip_of(PICTURES), headers=a).get_json()
    assert [j["id"] for j in client.get(API, headers=a).get_json()["jobs"]] == [job["id"]]
    assert client.get(API, headers=b).get_json()["jobs"] == []
    for method, path in (
        ("get", f"{API}/{job['id']}"),
        ("post", f"{API}/{job['id']}/cancel"),
        ("delete", f"{API}/{job['id']}"),
        ("get", f"{API}/{job['id']}/results/coco.json"),
    ):
        assert getattr(client, method)(path, headers=b).status_code == 404, path
        assert getattr(client, method)(path).status_code == 401, path
    assert client.get(f"{API}/{job['id']}", headers=a).get_json()["status"] == "queued"


def test_jobs_survive_a_gateway_restart_and_run_over_gunicorn(tmp_path: Path, serving, workers) -> None:
    """gunicorn with the job route's own body limit; stop it mid-way and start another: the job, its
    progress and its results are still there (state lives in JOBS_FOLDER, not in a process)."""
    archive = zip_of(PICTURES)
    settings = {**serving, "MAX_CONTENT_LENGTH": str(len(archive) // 2)}  # the job route has its own limit
    with running_gateway(tmp_path / "g1", **settings) as base:
        answer = requests.post(
            f"{base}{API}",
            data={"model": "od_uint8", "min_score": "0"},
            files={"archive": ("set.zip", archive, "application/zip")},
            timeout=60,
        )
        assert answer.status_code == 202, answer.text
        job_id = answer.json()["id"]
    start_worker(workers, serving)
    with running_gateway(tmp_path / "g2", **settings) as base:

        def ended() -> dict | None:
            job = requests.get(f"{base}{API}/{job_id}", timeout=10).json()
            return job if job["status"] == "succeeded" else None

        job = wait_for(ended, 120, "the job to succeed after the restart")
        lines = requests.get(f"{base}{job['results']['predictions.jsonl']}", timeout=30).text.splitlines()
        assert len(lines) == len(PICTURES)
        big = {"image": ("a.jpg", b"\xff" * len(archive))}
        picture = requests.post(f"{base}/api/v1/models/od_uint8/predict", files=big, timeout=30)
        assert picture.status_code == 413  # other routes keep MAX_CONTENT_LENGTH
