"""KerasHub's own RetinaNet, D-FINE and ImageClassifier (tests/support/keras_hub_models.py: random
weights, each detector exported with its image converter inside the serving function and outside),
served by the local model server and the gateway under gunicorn. For each export with the
gateway.toml that says how it was exported, the gateway's answer on pictures of the input size and
of other sizes and aspect ratios is KerasHub's own `predict` on the same picture, mapped back to
it; without that gateway.toml the model is refused with both settings to choose from."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.support import keras_hub_models as khm
from tests.support.built_models import build_models
from tests.support.gunicorn_gateway import running_gateway
from tests.support.model_server import running_model_server
from tests.web.adapters.endpoints import FamilyGateway, as_xyxy, post_to_app

MIN_IOU = 0.9
SCORE_TOLERANCE = 0.02
DETECTORS = ("retinanet_in_model", "retinanet_gateway", "d_fine_in_model", "d_fine_gateway")
QUERY = {"min_score": 0, "max_detections": khm.MAX_DETECTIONS}


@pytest.fixture(scope="module")
def keras_hub_models() -> Path:
    return build_models("tests.support.keras_hub_models", "test-keras-hub-models")


@pytest.fixture(scope="module")
def keras_hub_server(keras_hub_models: Path) -> Iterator[str]:
    with running_model_server(f"--model_config_file={keras_hub_models / 'models.config'}") as address:
        yield address


@pytest.fixture(scope="module")
def keras_hub_gateway(
    keras_hub_server: str, keras_hub_models: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[FamilyGateway]:
    """gunicorn in front of the KerasHub models, with each model's gateway.toml in MODELS_DIR."""
    with running_gateway(
        tmp_path_factory.mktemp("keras_hub_gateway"),
        workers=1,
        threads=4,
        TF_SERVING_ADDRESS=keras_hub_server,
        MODEL_CONFIG_FILE=keras_hub_models / "models.config",
        MODELS_DIR=keras_hub_models / "settings",
    ) as url:
        yield FamilyGateway(url)


@pytest.fixture(scope="module")
def expected(keras_hub_models: Path) -> dict:
    return json.loads((keras_hub_models / "expected.json").read_text())


def picture(models: Path, name: str) -> bytes:
    return (models / "pictures" / f"{name}.png").read_bytes()


def iou(a: list[float], b: list[float]) -> float:
    width = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = width * height
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def same_box(a: list[float], b: list[float]) -> bool:
    """IoU >= 0.9; a box of the padding (RetinaNet's anchors cover it) is clipped to a line on the
    picture's edge, and lines agree when they lie within a pixel of each other."""
    if min(a[2] - a[0], a[3] - a[1], b[2] - b[0], b[3] - b[1]) <= 0:
        return bool(np.allclose(a, b, atol=1.0))
    return iou(a, b) >= MIN_IOU


def agreeing(got: list[dict], want: list[dict]) -> list[dict]:
    """The KerasHub boxes among `want` that the gateway answered too: same class, same box, score
    within 0.02 (random weights score some neighbours alike, so the order may differ, not the boxes)."""
    return [
        w
        for w in want
        if any(
            g["class_id"] == w["class_id"]
            and same_box(as_xyxy(g["box"]), w["box"])
            and abs(g["score"] - w["score"]) <= SCORE_TOLERANCE
            for g in got
        )
    ]


def check_detections(body: dict, want: dict) -> None:
    top = want["detections"][: khm.TOP]
    assert len(top) == khm.TOP and top[0]["score"] - top[-1]["score"] > 2 * SCORE_TOLERANCE
    missing = [w for w in top if w not in agreeing(body["detections"], top)]
    assert not missing, (missing, body["detections"][: khm.TOP])
    # And nothing better that KerasHub does not have: the gateway's best are KerasHub's best.
    got = [d["score"] for d in body["detections"][: khm.TOP]]
    np.testing.assert_allclose(got, [w["score"] for w in top], atol=SCORE_TOLERANCE)


@pytest.mark.parametrize("model", DETECTORS)
@pytest.mark.parametrize("name", list(khm.PICTURES))
def test_detector_answers_keras_hubs_own_boxes(
    keras_hub_gateway: FamilyGateway, keras_hub_models: Path, expected: dict, model: str, name: str
) -> None:
    response = keras_hub_gateway.predict(model, picture(keras_hub_models, name), **QUERY)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["image"] == dict(zip(("width", "height"), khm.PICTURES[name], strict=True))
    check_detections(body, expected[model][name])


def test_the_form_and_batches_answer_the_same(
    keras_hub_gateway: FamilyGateway, keras_hub_models: Path, expected: dict
) -> None:
    images = [(f"{name}.png", picture(keras_hub_models, name)) for name in ("wide", "tall")]
    for model in ("retinanet_in_model", "d_fine_gateway"):
        batch = keras_hub_gateway.post(model, "predict_batch", images, **QUERY)
        assert batch.status_code == 200, batch.text
        for body, name in zip(batch.json(), ("wide", "tall"), strict=True):
            check_detections(body, expected[model][name])
        _, stored = keras_hub_gateway.form(
            model, images[0][1], min_score=0, max_detections=khm.MAX_DETECTIONS
        )
        check_detections(stored, expected[model]["wide"])


@pytest.mark.parametrize("name", list(khm.PICTURES))
def test_image_classifier_answers_keras_hubs_own_classes(
    keras_hub_gateway: FamilyGateway, keras_hub_models: Path, expected: dict, name: str
) -> None:
    logits = np.asarray(expected["image_classifier"][name]["probabilities"])
    probabilities = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    order = np.argsort(-probabilities)
    assert probabilities[order[0]] - probabilities[order[1]] > 2 * SCORE_TOLERANCE
    response = keras_hub_gateway.predict("image_classifier", picture(keras_hub_models, name), min_score=0)
    assert response.status_code == 200, response.text
    classes = response.json()["classes"]
    assert [c["class_id"] for c in classes] == list(order[: len(classes)]) and len(classes) == 5
    np.testing.assert_allclose([c["score"] for c in classes], probabilities[order], atol=SCORE_TOLERANCE)


def test_model_detail_says_where_each_value_came_from(keras_hub_gateway: FamilyGateway) -> None:
    d_fine = keras_hub_gateway.detail("d_fine_gateway")["preprocessing"]
    assert (d_fine["where"], d_fine["resize"], d_fine["pixel_range"], d_fine["mean"]) == (
        "gateway",
        "crop",
        "0-1",
        None,
    )
    assert d_fine["sources"] == {
        "where": "gateway.toml",
        "resize": "gateway.toml",
        "channel_order": "family default",
        "pad_value": "family default",
        "pixel_range": "gateway.toml",
        "mean": "gateway.toml",
        "std": "gateway.toml",
    }
    retinanet = keras_hub_gateway.detail("retinanet_in_model")["preprocessing"]
    assert (retinanet["where"], retinanet["pixel_range"], retinanet["resize"]) == (
        "in_model",
        "0-255",
        "letterbox",
    )
    sources = retinanet["sources"]
    assert (sources["where"], sources["resize"]) == ("gateway.toml", "family default")


# -- without the gateway.toml, or with the other export's ----------------------------------------


@pytest.fixture()
def bare_app(make_app, keras_hub_server: str, keras_hub_models: Path, tmp_path: Path):
    """The same models with a MODELS_DIR the test fills (empty: nothing says how they were exported)."""

    def app(settings: dict[str, str]):
        for model, text in settings.items():
            (tmp_path / "settings" / model).mkdir(parents=True)
            (tmp_path / "settings" / model / "gateway.toml").write_text(text)
        return make_app(
            TF_SERVING_ADDRESS=keras_hub_server,
            MODEL_CONFIG_FILE=keras_hub_models / "models.config",
            MODELS_DIR=tmp_path / "settings",
        ).test_client()

    return app


@pytest.mark.parametrize("model", [*DETECTORS, "image_classifier"])
def test_unsettled_exports_are_refused_with_both_settings(
    bare_app, keras_hub_models: Path, model: str
) -> None:
    client = bare_app({})
    response = post_to_app(client, model, picture(keras_hub_models, "wide"))
    assert response.status_code == 422
    message = response.get_json()["error"]["message"]
    family = "keras_hub" if model in DETECTORS else "classifier"
    assert f"{model}/gateway.toml: a {family} signature cannot tell" in message
    assert '\n\npreprocessing = "in_model"\n\n' in message
    assert ('preprocessing = "gateway"' if model in DETECTORS else 'pixel_range = "0-1"') in message
    detail = client.get(f"/api/v1/models/{model}").get_json()
    assert detail["kind"] == "unknown" and 'preprocessing = "in_model"' in detail["problem"]


@pytest.mark.parametrize(
    ("model", "wrong"), [("retinanet_in_model", "gateway"), ("retinanet_gateway", "in_model")]
)
def test_the_other_exports_settings_give_other_boxes(
    bare_app, keras_hub_models: Path, expected: dict, model: str, wrong: str
) -> None:
    """Why the gateway refuses to guess: read the other way, the same model answers other boxes."""
    client = bare_app({model: f'preprocessing = "{wrong}"\n'})
    query = f"?min_score=0&max_detections={khm.MAX_DETECTIONS}"
    response = post_to_app(client, model, picture(keras_hub_models, "square"), query)
    assert response.status_code == 200
    top = expected[model]["square"]["detections"][: khm.TOP]
    assert len(agreeing(response.get_json()["detections"], top)) < khm.TOP // 2


def test_jobs_answer_keras_hubs_own_boxes_or_fail_with_the_setting_to_choose(
    keras_hub_server: str, keras_hub_models: Path, expected: dict, tmp_path: Path
) -> None:
    """A job runs the same pipeline: a settled export's pictures come back with KerasHub's own boxes;
    an unsettled one (no gateway.toml) fails the job with the problem naming both settings."""
    import io
    import zipfile

    from tests.web.jobs.queue_helpers import Workers, wait_for
    from web.jobs.config import JobSettings
    from web.jobs.queue import JobQueue

    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        for name in khm.PICTURES:
            zf.writestr(f"{name}.png", picture(keras_hub_models, name))
    workers = Workers(tmp_path)
    try:
        results = {}
        readings = (("settled", keras_hub_models / "settings"), ("unsettled", tmp_path / "none"))
        for folder, models_dir in readings:
            models_dir.mkdir(exist_ok=True)
            settings = JobSettings(jobs_folder=tmp_path / folder / "jobs", poll_s=0.1)
            queue = JobQueue(settings)
            upload = queue.store.incoming()
            upload.write_bytes(archive.getvalue())
            job = queue.create(model="retinanet_gateway", archive=upload, options=QUERY)
            queue.submit(job)
            env = {"TF_SERVING_ADDRESS": keras_hub_server, "MODELS_DIR": str(models_dir),
                   "MODEL_CONFIG_FILE": str(keras_hub_models / "models.config")}
            workers.start(settings, predictor=None, **env)
            wait_for(lambda q=queue, j=job: q.store.get(j.id).terminal, 180, f"the {folder} job to end")
            results[folder] = queue.store.get(job.id)
        settled = results["settled"]
        assert settled.status == "succeeded", settled.error
        path = JobQueue(JobSettings(jobs_folder=tmp_path / "settled" / "jobs")).store.result_path(
            settled.id, "predictions.jsonl"
        )
        lines = [json.loads(line) for line in path.read_text().splitlines()]
        assert [line["file"] for line in lines] == sorted(f"{name}.png" for name in khm.PICTURES)
        for line in lines:
            check_detections(line, expected["retinanet_gateway"][line["file"].removesuffix(".png")])
        unsettled = results["unsettled"]
        assert unsettled.status == "failed" and 'preprocessing = "in_model"' in unsettled.error
        assert 'preprocessing = "gateway"' in unsettled.error
    finally:
        workers.stop_all()
