"""The worker's default predictor end to end: `python -m web.worker` running each picture of a job through
the gateway's own pipeline in its process, over real gRPC to the local model server."""

from __future__ import annotations

from pathlib import Path

from tests.support.model_server import free_port
from tests.web.helpers import solid
from tests.web.jobs.queue_helpers import new_job_from, result_lines, wait_until_ended


def _serving(signature_server: str, signature_models: Path) -> dict[str, str]:
    config = str(signature_models / "models.config")
    return {"TF_SERVING_ADDRESS": signature_server, "MODEL_CONFIG_FILE": config}


def test_pictures_go_through_the_gateways_pipeline_in_the_worker(
    signature_server: str, signature_models: Path, make_queue, workers
) -> None:
    queue = make_queue(None)
    pictures = {f"grey/{i}.jpg": solid(320, 240, (90 + i, 100, 110)) for i in range(5)}
    broken = {"broken.jpg": solid(320, 240)[:200]}  # a JPEG that ends early: /predict would answer 400
    huge = {"huge.png": solid(9000, 9000, fmt="PNG")}  # 81 MP: over MAX_IMAGE_PIXELS, as on /predict
    job = new_job_from(queue, {**pictures, **broken, **huge}, model="od_uint8", options={"min_score": 0.0})
    queue.submit(job)
    workers.start(queue.settings, predictor=None, **_serving(signature_server, signature_models))
    wait_until_ended(queue, job.id, 120, workers)
    done = queue.store.get(job.id)
    assert done.status == "succeeded", done.error
    lines = result_lines(queue, job.id)
    assert [line["file"] for line in lines] == sorted(pictures)
    for line in lines:
        assert line["model"]["name"] == "od_uint8"
        assert line["image"] == {"width": 320, "height": 240}
        assert len(line["detections"]) == 3  # the signature model's three boxes at min_score 0
        assert set(line["timings_ms"]) >= {"decode", "predict", "postprocess", "total"}
    skipped = {item["file"]: item["reason"] for item in done.to_json()["skipped"]}
    assert set(skipped) == {"broken.jpg", "huge.png"}
    assert "MAX_IMAGE_PIXELS" in skipped["huge.png"]


def test_a_model_the_gateway_does_not_serve_fails_the_job_at_once(
    signature_server: str, signature_models: Path, make_queue, workers
) -> None:
    queue = make_queue(None)
    job = new_job_from(queue, {"a.jpg": solid(64, 48)}, model="no_such_model")
    queue.submit(job)
    workers.start(queue.settings, predictor=None, **_serving(signature_server, signature_models))
    wait_until_ended(queue, job.id, 60, workers)
    failed = queue.store.get(job.id)
    assert failed.status == "failed" and "no_such_model" in failed.error


def test_an_unreachable_model_server_is_retried_then_fails_the_job(
    signature_models: Path, make_queue, workers
) -> None:
    queue = make_queue(None, retries=1)
    job = new_job_from(queue, {"a.jpg": solid(64, 48)}, model="od_uint8")
    queue.submit(job)
    env = {**_serving(f"127.0.0.1:{free_port()}", signature_models), "GRPC_TIMEOUT_S": "2"}
    workers.start(queue.settings, predictor=None, **env)
    wait_until_ended(queue, job.id, 90, workers)
    failed = queue.store.get(job.id)
    assert failed.status == "failed"
    assert "tried 2 times" in failed.error, failed.error
