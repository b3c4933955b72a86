"""The REST API (flask-restx): models, labels and predictions under /api/v1, Swagger UI at /docs.

Resources only translate HTTP <-> the gateway facade. What they take is declared once in
`web.options` (the query parameters of /swagger.json, with their bounds, come from there) and
what they answer once in `web.http.schemas`; every error goes through
`web.http.errors.error_response`, so the API answers `{"error": {"code", "message"}}` for everything,
including Werkzeug's 404/405/413. Who may call it is decided for the whole app in `web.http.auth`.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from flask import Blueprint, Flask, Response, current_app, jsonify, request
from flask_restx import Api, Namespace, Resource
from werkzeug.datastructures import CombinedMultiDict
from werkzeug.http import parse_options_header

from web import options as declared
from web.errors import BadRequest, InsufficientStorage
from web.gateway import Gateway
from web.http import schemas
from web.http.errors import error_response
from web.http.jobs import ns as jobs_ns
from web.metrics import StageClock
from web.options import PredictOptions
from web.pipeline.images import EXTENSIONS
from web.pipeline.request import Picture, PipelineRequest, display_name
from web.reading.label_maps import LabelMap, parse_label_map
from web.storage import StorageError

API_PREFIX = "/api/v1"

ns = Namespace("models", description="Models served by the model server, their labels, and predictions")
schemas.register(ns)

# -- what the endpoints take (documentation; the values are read by the resources below) ----------
IMAGE_TYPES = "JPEG, PNG, GIF, BMP, WEBP or TIFF"
IMAGE_PARAM = {"in": "formData", "type": "file", "required": True, "description": IMAGE_TYPES}
IMAGES_PARAM = {
    "in": "formData",
    "type": "array",
    "items": {"type": "file"},
    "collectionFormat": "multi",
    "required": True,
    "description": f"{IMAGE_TYPES} (repeat the field per image)",
}
LABEL_MAP_PARAM = {
    "in": "formData",
    "type": "file",
    "description": "optional label_map.pbtxt (StringIntLabelMap) or labels.txt; overrides the stored one",
}


def _params(image: dict[str, Any], *extra: declared.Option) -> dict[str, dict[str, Any]]:
    """The Swagger parameters of a predict endpoint: the upload fields, then every declared option."""
    params = {"image": image, "label_map": LABEL_MAP_PARAM}
    for option in (*declared.PREDICT_OPTIONS, declared.STORE, *extra):
        params[option.name] = option.openapi()
    return params


# -- what they answer on errors ------------------------------------------------------------------
ERROR_STATUSES = {
    400: "bad image, label map or option",
    401: "no or wrong API key (only when API_KEYS is set)",
    404: "unknown model or version",
    413: "upload or image too large",
    415: "not an image the gateway reads",
    422: "the gateway cannot read this model (the message says which setting decides)",
    500: "internal error (logged)",
    502: "the model server answered with an error",
    503: "model server unavailable, or the gateway busy (Retry-After)",
    504: "model server deadline exceeded",
    507: "the prediction worked but the result could not be stored",
}
CATALOG_ERRORS = (401, 500, 502, 503, 504)
MODEL_ERRORS = (400, 404, *CATALOG_ERRORS)
PREDICT_ERRORS = (*MODEL_ERRORS, 413, 415, 422, 507)


def _errors(statuses: Iterable[int]) -> Callable[[Any], Any]:
    """Document `statuses` as answering the Error model."""
    return schemas.errors_doc(ns, ERROR_STATUSES, statuses)


def _gateway() -> Gateway:
    return current_app.extensions["gateway"]


def _value(name: str) -> str | None:
    return request.args.get(name) or request.form.get(name)


def _options() -> PredictOptions:
    return PredictOptions.from_mapping(CombinedMultiDict([request.args, request.form]))


def _uploads(many: bool) -> list[tuple[str | None, bytes]]:
    """The uploaded images (multipart field `image`, or a raw image/* body for single images, named
    by an optional `Content-Disposition: inline; filename="..."` header)."""
    if not many and request.mimetype.startswith("image/"):
        disposition = request.headers.get("Content-Disposition")
        filename = parse_options_header(disposition)[1].get("filename") if disposition else None
        return [(filename, request.get_data())]
    files = [f for f in request.files.getlist("image") if f.filename or f.content_length]
    if not files:
        raise BadRequest("no image: send the picture as the multipart/form-data field 'image'")
    if not many and len(files) > 1:
        raise BadRequest(f"{len(files)} images sent; use predict_batch for more than one")
    return [(f.filename, f.read()) for f in files]


def _label_map() -> LabelMap | None:
    upload = request.files.get("label_map")
    if upload is None or not (upload.filename or upload.content_length):
        return None
    return parse_label_map(upload.read(), display_name(upload.filename, "label_map.pbtxt"))


@dataclass(frozen=True)
class _Upload:
    """What every predict endpoint reads before the pipeline opens the request."""

    options: PredictOptions
    store: bool
    label_map: LabelMap | None
    uploads: list[tuple[str | None, bytes]]

    def open(self, model: str, clock: StageClock) -> PipelineRequest:
        """The pipeline's request (every image header checked), the HTTP reading lapped as `read`."""
        clock.lap("read")
        gateway = _gateway()
        return gateway.open(model, self.uploads, options=self.options, label_map=self.label_map, clock=clock)


def _read_upload(model: str, many: bool) -> _Upload:
    """In the order its mistakes are reported: the model (404), the options (400), the label map
    (400), then the images."""
    _gateway().check_model(model)
    options = _options()
    store = declared.parse_flag(declared.STORE, _value("store"))
    return _Upload(options, store, _label_map(), _uploads(many))


def _server_timing(timings: dict[str, float]) -> str:
    return ", ".join(f"{stage};dur={value:.2f}" for stage, value in timings.items())


def _store(
    gateway: Gateway, request: PipelineRequest, picture: Picture, prediction: Any, rendered: bytes | None
) -> str:
    """Keep a result for the HTML pages (only when the client asked with store=true)."""
    if rendered is None:
        rendered = gateway.render(picture.data, prediction, "jpeg", picture.info, request.clock)
    try:
        result_id = gateway.store.save(
            picture.data,
            EXTENSIONS[picture.info.format],
            rendered,
            "jpg",
            prediction.to_dict(),
            source_name=display_name(picture.filename, "") or None,
            options=request.options.to_dict(),
        )
    except StorageError as exc:
        current_app.logger.error("storing a result failed: %s", exc)
        raise InsufficientStorage(
            f"the prediction worked but the result could not be stored ({exc}): free space in "
            "OUTPUT_FOLDER and UPLOAD_FOLDER, or send the request without store=true"
        ) from None
    request.clock.lap("store")
    return f"/results/{result_id}"


@ns.route("")
class ModelList(Resource):
    @ns.response(200, "every configured model", schemas.models)
    @_errors(CATALOG_ERRORS)
    def get(self) -> dict:
        """Every model in models.config with its versions, their states, and its kind."""
        return {"models": [m.to_dict() for m in _gateway().list_models()]}


@ns.route("/<string:model>")
@ns.param("model", "model name as in models.config")
class ModelDetail(Resource):
    @ns.doc(params={"version": declared.VERSION.openapi()})
    @ns.response(200, "the model and how the gateway reads it", schemas.model_detail)
    @_errors(MODEL_ERRORS)
    def get(self, model: str) -> dict:
        """Signature inputs and outputs, versions, kind, and where the labels come from."""
        options = PredictOptions.from_mapping({"version": request.args.get("version", "")})
        return _gateway().describe(model, options.version)


@ns.route("/<string:model>/labels")
@ns.param("model", "model name as in models.config")
class ModelLabels(Resource):
    @ns.response(200, "class id -> name", schemas.labels)
    @_errors((404, *CATALOG_ERRORS))
    def get(self, model: str) -> dict:
        """The stored label map as `{"<id>": "<name>"}` (empty when the model has none)."""
        return _gateway().labels(model).to_dict()


@ns.route("/<string:model>/predict")
@ns.param("model", "model name as in models.config")
class Predict(Resource):
    @ns.doc(params=_params(IMAGE_PARAM, declared.PICTURE))
    @ns.response(200, "the prediction", schemas.prediction)
    @_errors(PREDICT_ERRORS)
    def post(self, model: str) -> Response:
        """Detect (or classify) one uploaded image; boxes are in pixels of the upload, masks COCO RLE.

        A raw `image/*` body works as well as the multipart field (a little cheaper to parse)."""
        clock = StageClock(model)
        upload = _read_upload(model, many=False)
        picture = declared.parse_choice(declared.PICTURE, _value("picture"))
        req, store = upload.open(model, clock), upload.store
        gateway = _gateway()
        if picture:
            prediction, rendered = gateway.run_and_render(req, picture)
        else:
            (prediction,) = gateway.run(req)
            rendered = None
        result_url = None
        if store:
            jpeg = rendered if picture == "jpeg" else None
            result_url = _store(gateway, req, req.pictures[0], prediction, jpeg)
        body = prediction.to_dict()
        if result_url is not None:
            body["result_url"] = result_url
        if rendered is not None:
            body["picture"] = {"format": picture, "base64": base64.b64encode(rendered).decode("ascii")}
        response = jsonify(body)
        response.headers["Server-Timing"] = _server_timing(prediction.timings_ms)
        clock.lap("respond")
        return response


@ns.route("/<string:model>/predict_image")
@ns.param("model", "model name as in models.config")
class PredictImage(Resource):
    @ns.doc(params=_params(IMAGE_PARAM, declared.FORMAT))
    @ns.produces(["image/jpeg", "image/png"])
    @ns.response(200, "the uploaded picture with boxes, masks and captions drawn (original size)")
    @_errors(PREDICT_ERRORS)
    def post(self, model: str) -> Response:
        """Like predict, but answers with the picture (JPEG, or PNG with format=png)."""
        clock = StageClock(model)
        fmt = declared.parse_choice(declared.FORMAT, _value("format"))
        upload = _read_upload(model, many=False)
        req, store = upload.open(model, clock), upload.store
        gateway = _gateway()
        prediction, rendered = gateway.run_and_render(req, fmt)
        response = Response(rendered, mimetype="image/png" if fmt == "png" else "image/jpeg")
        if store:
            jpeg = rendered if fmt != "png" else None
            response.headers["Location"] = _store(gateway, req, req.pictures[0], prediction, jpeg)
        response.headers["Server-Timing"] = _server_timing(prediction.timings_ms)
        count = len(prediction.classes) if prediction.classes is not None else len(prediction.detections)
        response.headers["X-Detections"] = str(count)
        return response


@ns.route("/<string:model>/predict_batch")
@ns.param("model", "model name as in models.config")
class PredictBatch(Resource):
    @ns.doc(params=_params(IMAGES_PARAM))
    @ns.response(200, "one prediction per image, in the order sent", [schemas.prediction])
    @_errors(PREDICT_ERRORS)
    def post(self, model: str) -> Response:
        """Several `image` parts in one request; answers a list of predictions in the same order."""
        clock = StageClock(model)
        upload = _read_upload(model, many=True)
        req, store = upload.open(model, clock), upload.store
        gateway = _gateway()
        predictions = gateway.run(req)
        body = []
        for picture, prediction in zip(req.pictures, predictions, strict=True):
            item = prediction.to_dict()
            if store:
                item["result_url"] = _store(gateway, req, picture, prediction, None)
            body.append(item)
        response = jsonify(body)
        clock.lap("respond")
        return response


class _GatewayApi(Api):
    """flask-restx's Api, but its routes' errors are answered exactly like the rest of the app's."""

    def handle_error(self, e: Exception) -> Response:
        return error_response(e)


def register_api(app: Flask) -> Api:
    """Mount the API blueprint (a fresh Api per app), Swagger UI at /docs and the spec at /swagger.json."""
    bp = Blueprint("api", __name__)
    api = _GatewayApi(
        bp,
        version="1.0",
        title="Detection gateway API",
        description="Upload images, get boxes, masks and labels from models served by TensorFlow Serving.",
        doc="/docs",
        prefix=API_PREFIX,
        authorizations={
            "apikey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            "bearer": {
                "type": "apiKey",
                "in": "header",
                "name": "Authorization",
                "description": "Bearer <key>",
            },
        },
        security=["apikey", "bearer"] if app.extensions["gateway"].settings.api_keys else None,
    )
    api.add_namespace(ns, path="/models")
    api.add_namespace(jobs_ns, path="/jobs")
    app.register_blueprint(bp)

    @app.get("/swagger.json")
    def swagger_json() -> Response:
        return jsonify(api.__schema__)

    return api
