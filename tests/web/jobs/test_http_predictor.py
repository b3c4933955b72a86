"""The HTTP predictor end to end: `python -m web.worker` with JOB_PREDICTOR=web.jobs.runner:HttpPredictor
posting each picture of a job to a gateway's predict API (gunicorn in front of the local model server
over real gRPC)."""

from __future__ import annotations

from pathlib import Path

from tests.support.gunicorn_gateway import running_gateway
from tests.support.model_server import free_port
from tests.web.helpers import solid
from tests.web.jobs.queue_helpers import new_job_from, result_lines, wait_until_ended

HTTP = "web.jobs.runner:HttpPredictor"


def test_a_job_through_the_gateways_predict_api(
    signature_server: str, signature_models: Path, make_queue, workers, tmp_path: Path
) -> None:
    queue = make_queue(None)
    pictures = {f"grey/{i}.jpg": solid(320, 240, (90 + i, 100, 110)) for i in range(3)}
    broken = {"broken.jpg": solid(320, 240)[:200]}  # a JPEG that ends early: /predict answers 400
    job = new_job_from(queue, {**pictures, **broken}, model="od_uint8", options={"min_score": 0.0})
    queue.submit(job)
    settings = {
        "TF_SERVING_ADDRESS": signature_server,
        "MODEL_CONFIG_FILE": signature_models / "models.config",
    }
    with running_gateway(tmp_path / "gateway", **settings) as base:
        workers.start(queue.settings, predictor=HTTP, GATEWAY_URL=base)
        wait_until_ended(queue, job.id, 120, workers)
    done = queue.store.get(job.id)
    assert done.status == "succeeded", done.error
    lines = result_lines(queue, job.id)
    assert [line["file"] for line in lines] == sorted(pictures)
    for line in lines:
        assert line["model"]["name"] == "od_uint8"
        assert line["image"] == {"width": 320, "height": 240}
        assert len(line["detections"]) == 3  # the signature model's three boxes at min_score 0
    assert done.model["version"] == lines[0]["model"]["version"]
    (skipped,) = done.to_json()["skipped"]
    assert skipped["file"] == "broken.jpg" and skipped["reason"]


def test_an_unreachable_gateway_fails_the_job_with_the_reason(make_queue, workers) -> None:
    queue = make_queue(None, retries=1)
    job = new_job_from(queue, {"a.jpg": solid(32, 24)}, model="od_uint8")
    queue.submit(job)
    nobody = f"http://127.0.0.1:{free_port()}"
    workers.start(queue.settings, predictor=HTTP, GATEWAY_URL=nobody)
    wait_until_ended(queue, job.id, 60, workers)
    failed = queue.store.get(job.id)
    assert failed.status == "failed"
    assert f"cannot reach the gateway at {nobody}" in failed.error and "tried 2 times" in failed.error


def test_with_api_keys_the_worker_sends_its_key(
    signature_server: str, signature_models: Path, make_queue, workers, tmp_path: Path
) -> None:
    queue = make_queue(None)
    settings = {
        "TF_SERVING_ADDRESS": signature_server,
        "MODEL_CONFIG_FILE": signature_models / "models.config",
        "API_KEYS": "worker-key,other-key",
        "SECRET_KEY": "s" * 32,
    }
    with running_gateway(tmp_path / "gateway", **settings) as base:
        refused = new_job_from(queue, {"a.jpg": solid(64, 48)}, model="od_uint8")
        queue.submit(refused)
        keyless = workers.start(queue.settings, predictor=HTTP, GATEWAY_URL=base)
        wait_until_ended(queue, refused.id, 60, workers)
        failed = queue.store.get(refused.id)
        assert failed.status == "failed" and "HTTP 401" in failed.error and "JOB_API_KEY" in failed.error
        keyless.terminate()
        keyless.wait(15)

        accepted = new_job_from(queue, {"a.jpg": solid(64, 48)}, model="od_uint8")
        queue.submit(accepted)
        workers.start(queue.settings, predictor=HTTP, GATEWAY_URL=base, JOB_API_KEY="worker-key")
        wait_until_ended(queue, accepted.id, 60, workers)
    assert queue.store.get(accepted.id).status == "succeeded"
