"""The gateway as a Label Studio ML backend: paste `<gateway>/label-studio/<model>` into a project's
Settings > Model > Connect model.

Label Studio's protocol (its label_studio/ml/api_connector.py): `GET health` (1 s to answer),
`POST setup` with the project's config as `schema` (3 s; answers the model version), `POST predict`
with `tasks`, `label_config` and `project` (100 s; answers `results`, one prediction per task, in the
tasks' order), `POST webhook` (and the older `train`: nothing to train here, accepted). Each picture
goes through the same pipeline as an upload to /api/v1/models/<model>/predict; a task that fails (its
picture missing, refused, not an image) gets an empty prediction with an `error` note and the others
go on, while a body the gateway cannot read at all is a 400 that says what to fix.
"""

from __future__ import annotations

import dataclasses
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from flask import Blueprint, Flask, current_app, jsonify, request

from web.errors import BadRequest, GatewayError, PayloadTooLarge, ServiceBusy
from web.gateway import Gateway
from web.integrations.label_studio.label_config import LabelConfig, LabelMatcher, parse_label_map_param
from web.integrations.label_studio.pictures import PictureFetcher
from web.integrations.label_studio.regions import model_version, prediction_result
from web.options import PredictOptions

MODEL_CLASS = "TFDetectionGateway"
STATUS_TIMEOUT_S = 2.0  # setup and predict ask the model server for its versions, within setup's 3 s
URL_PREFIX = "/label-studio"
TRAIN_EVENTS = ("ANNOTATION_CREATED", "ANNOTATION_UPDATED", "ANNOTATION_DELETED", "START_TRAINING")

bp = Blueprint("label_studio", __name__, url_prefix=URL_PREFIX)


def _gateway() -> Gateway:
    return current_app.extensions["gateway"]


def _fetcher() -> PictureFetcher:
    return current_app.extensions["label_studio_pictures"]


def _body() -> dict[str, Any]:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise BadRequest("send a JSON object (Content-Type: application/json), as Label Studio does")
    return body


def _latest_version(model: str) -> int:
    """The newest AVAILABLE version, asked of the model server with a short deadline."""
    versions = _gateway().registry.versions(model, timeout=STATUS_TIMEOUT_S)
    available = [v.version for v in versions if v.state == "AVAILABLE"]
    if not available:
        raise ServiceBusy(
            f"model '{model}' has no AVAILABLE version yet (still loading?): try again shortly", 5
        )
    return max(available)


@bp.get("/<string:model>")
@bp.get("/<string:model>/")
@bp.get("/<string:model>/health")
def health(model: str):
    """Up when the model is configured; the model server is not asked (Label Studio waits 1 s)."""
    _gateway().check_model(model)
    return jsonify({"status": "UP", "model_class": MODEL_CLASS, "model": model})


@bp.post("/<string:model>/setup")
def setup(model: str):
    """The model version predictions will carry; the project's config is checked when it is sent, so a
    project the gateway cannot fill fails at Connect model with the reason."""
    _gateway().check_model(model)
    body = _body()
    schema = body.get("schema")
    if schema:
        LabelConfig.parse(schema)
    return jsonify({"model_version": model_version(model, _latest_version(model))})


@bp.get("/<string:model>/versions")
def versions(model: str):
    _gateway().check_model(model)
    found = _gateway().registry.versions(model, timeout=STATUS_TIMEOUT_S)
    names = [model_version(model, v.version) for v in found if v.state == "AVAILABLE"]
    return jsonify({"versions": names})


@bp.post("/<string:model>/webhook")
@bp.post("/<string:model>/train")
def webhook(model: str):
    """Accepted and ignored: the model is trained elsewhere and served as it is."""
    _gateway().check_model(model)
    body = request.get_json(silent=True)
    action = body.get("action") if isinstance(body, dict) else None
    status = 201 if action in TRAIN_EVENTS else 200
    return jsonify({"status": "ok", "detail": "this backend serves a fixed model; nothing to train"}), status


@bp.post("/<string:model>/predict")
def predict(model: str):
    """One prediction per task, in the tasks' order."""
    gateway = _gateway()
    gateway.check_model(model)
    settings = gateway.settings
    body = _body()
    tasks = body.get("tasks")
    if not isinstance(tasks, list) or not all(isinstance(t, dict) for t in tasks):
        raise BadRequest('"tasks" must be a list of task objects, each with its "data"')
    if len(tasks) > settings.label_studio_max_tasks:
        raise PayloadTooLarge(
            f"{len(tasks)} tasks in one request, more than LABEL_STUDIO_MAX_TASKS "
            f"({settings.label_studio_max_tasks}): retrieve predictions for fewer tasks at a "
            "time, or pre-annotate them all with a job and import its label_studio.json (README, "
            "Pre-labelling)"
        )
    config = LabelConfig.parse(body.get("label_config") or "")
    pairs = (*settings.label_studio_label_map, *parse_label_map_param(request.args.get("label_map")))
    matcher = LabelMatcher.of(pairs)
    options = PredictOptions.from_mapping(request.args)
    if options.version is None and options.version_label is None:
        options = dataclasses.replace(options, version=_latest_version(model))
    version = options.version
    fetcher = _fetcher()

    def one(task: dict[str, Any]) -> tuple[dict[str, Any], GatewayError | None]:
        try:
            data = task.get("data")
            url = data.get(config.data_key) if isinstance(data, dict) else None
            if not isinstance(url, str) or not url:
                raise BadRequest(
                    f'the task has no picture URL in data["{config.data_key}"] (the <Image> tag\'s value)'
                )
            picture = fetcher.fetch(url)
            name = url.rsplit("/", 1)[-1][:80] if not url.startswith("data:") else "data URI"
            prediction = gateway.predict(model, picture, options=options, filename=name)
            return prediction_result(prediction, config, matcher), None
        except GatewayError as exc:
            current_app.logger.info("label studio task %s of %s: %s", task.get("id"), model, exc.message)
            failed = f"{model_version(model, version)}:failed" if version else f"{model}:failed"
            return {"result": [], "score": 0.0, "model_version": failed, "error": exc.message}, exc

    app = current_app._get_current_object()  # type: ignore[attr-defined]

    def in_app(task: dict[str, Any]) -> tuple[dict[str, Any], GatewayError | None]:
        with app.app_context():
            return one(task)

    workers = max(1, min(settings.label_studio_threads, len(tasks)))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="label-studio") as pool:
        answers = list(pool.map(in_app, tasks))
    errors = [error for _, error in answers]
    if errors and all(e is not None and e.status >= 500 for e in errors):
        # Nothing worked, and not because of the pictures (the model server is down): Label Studio should
        # see the error rather than store empty predictions.
        raise errors[0]  # type: ignore[misc]
    results = [result for result, _ in answers]
    return jsonify({"results": results, "model_version": model_version(model, version) if version else None})


def register_label_studio(app: Flask) -> None:
    """The ML backend's routes and the picture fetcher they share."""
    app.extensions["label_studio_pictures"] = PictureFetcher.from_settings(app.extensions["gateway"].settings)
    app.register_blueprint(bp)
