"""The REST API (flask-restx): models, labels and predictions under /api/v1, Swagger UI at /docs.

Resources only translate HTTP <-> the gateway facade; every error goes through
`web.http.errors.error_response`, so the API answers `{"error": {"code", "message"}}` for everything,
including Werkzeug's 404/405/413. Who may call it is decided for the whole app in `web.http.auth`.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

from flask import Blueprint, Flask, Response, current_app, jsonify, request
from flask_restx import Api, Namespace, Resource, fields, reqparse
from werkzeug.datastructures import CombinedMultiDict, FileStorage
from werkzeug.http import parse_options_header

from web.errors import BadRequest, InsufficientStorage
from web.gateway import Gateway
from web.http.errors import error_response
from web.metrics import StageClock
from web.options import PredictOptions
from web.pipeline.images import EXTENSIONS
from web.pipeline.request import Picture, PipelineRequest, display_name
from web.reading.label_maps import LabelMap, parse_label_map
from web.storage import StorageError

API_PREFIX = "/api/v1"
TRUE_VALUES = frozenset({"1", "true", "yes", "on"})
FALSE_VALUES = frozenset({"", "0", "false", "no", "off"})

ns = Namespace("models", description="Models served by the model server, their labels, and predictions")


def _upload_parser(batch: bool = False) -> reqparse.RequestParser:
    """Documentation of the multipart inputs (values are read and validated by the resources)."""
    parser = reqparse.RequestParser()
    parser.add_argument(
        "image",
        type=FileStorage,
        location="files",
        required=True,
        action="append" if batch else "store",
        help="JPEG, PNG, GIF, BMP, WEBP or TIFF" + (" (repeat the field per image)" if batch else ""),
    )
    parser.add_argument(
        "label_map",
        type=FileStorage,
        location="files",
        help="optional label_map.pbtxt (StringIntLabelMap) or labels.txt; overrides the stored one",
    )
    parser.add_argument("min_score", type=float, location="args", default=0.5, help="score threshold, 0..1")
    parser.add_argument("max_detections", type=int, location="args", default=100, help="1..1000")
    parser.add_argument(
        "iou_threshold",
        type=float,
        location="args",
        help="overlap above which NMS drops a box, for models whose NMS the gateway runs (YOLO raw); "
        "default: the model's gateway.toml, else 0.7",
    )
    parser.add_argument("version", type=int, location="args", help="model version (default: latest)")
    parser.add_argument("version_label", type=str, location="args", help="model version label, e.g. stable")
    parser.add_argument(
        "store",
        type=bool,
        location="args",
        default=False,
        help="keep the result for the HTML result pages; adds result_url to the answer",
    )
    return parser


predict_parser = _upload_parser()
predict_parser.add_argument(
    "picture",
    type=str,
    location="args",
    choices=("jpeg", "png"),
    help="also answer the picture with the prediction drawn, base64-encoded in `picture` "
    "(one request for both, as the command-line client's --out uses it)",
)
batch_parser = _upload_parser(batch=True)
image_parser = _upload_parser()
image_parser.add_argument(
    "format",
    type=str,
    location="args",
    choices=("jpeg", "png"),
    default="jpeg",
    help="picture format of the answer",
)

error_model = ns.model(
    "Error",
    {
        "error": fields.Nested(
            ns.model(
                "ErrorBody",
                {
                    "code": fields.Integer(description="HTTP status"),
                    "message": fields.String(description="what was wrong and how to fix it"),
                },
            )
        )
    },
)
version_model = ns.model(
    "VersionState", {"version": fields.Integer, "state": fields.String(example="AVAILABLE")}
)
model_summary = ns.model(
    "ModelSummary",
    {
        "name": fields.String(example="shapes"),
        "versions": fields.List(fields.Nested(version_model)),
        "kind": fields.String(enum=["detection", "segmentation", "classification", "unknown"]),
        "label_source": fields.String(description="stored label map file, null when there is none"),
    },
)
models_model = ns.model("Models", {"models": fields.List(fields.Nested(model_summary))})
box_model = ns.model("Box", {k: fields.Float for k in ("xmin", "ymin", "xmax", "ymax")})
rle_model = ns.model(
    "RLE",
    {
        "size": fields.List(fields.Integer, description="[height, width]"),
        "counts": fields.String(description="COCO RLE (pycocotools)"),
    },
)
detection_model = ns.model(
    "Detection",
    {
        "label": fields.String,
        "class_id": fields.Integer,
        "score": fields.Float,
        "box": fields.Nested(box_model, description="pixels of the uploaded image"),
        "mask": fields.Nested(rle_model, description="segmentation models only", skip_none=True),
    },
)
class_model = ns.model("Class", {"label": fields.String, "class_id": fields.Integer, "score": fields.Float})
prediction_model = ns.model(
    "Prediction",
    {
        "model": fields.Nested(ns.model("ModelRef", {"name": fields.String, "version": fields.Integer})),
        "image": fields.Nested(ns.model("ImageSize", {"width": fields.Integer, "height": fields.Integer})),
        "detections": fields.List(
            fields.Nested(detection_model), description="detection/segmentation models"
        ),
        "classes": fields.List(fields.Nested(class_model), description="classification models, best first"),
        "timings_ms": fields.Raw(example={"decode": 1.2, "predict": 8.4, "postprocess": 0.9, "total": 11.0}),
        "result_url": fields.String(description="with store=true: the HTML result page"),
        "picture": fields.Nested(
            ns.model(
                "Picture",
                {
                    "format": fields.String(enum=["jpeg", "png"]),
                    "base64": fields.String(description="the drawn picture, base64 (RFC 4648)"),
                },
            ),
            description="with picture=jpeg or png: the upload with the prediction drawn",
            skip_none=True,
        ),
    },
)


def _gateway() -> Gateway:
    return current_app.extensions["gateway"]


def _options() -> PredictOptions:
    return PredictOptions.from_mapping(CombinedMultiDict([request.args, request.form]))


def _flag(name: str) -> bool:
    """A boolean option (query or form); anything but true/false/1/0/yes/no/on/off is a 400."""
    value = (request.args.get(name) or request.form.get(name) or "").strip().lower()
    if value in TRUE_VALUES:
        return True
    if value in FALSE_VALUES:
        return False
    raise BadRequest(f"{name} must be true or false, not {value[:40]!r}")


def _picture_format(name: str = "picture", default: str | None = None) -> str | None:
    """`jpeg`/`png` from the query or form (`jpg` accepted), `default` when absent; else a 400."""
    value = (request.args.get(name) or request.form.get(name) or "").strip().lower()
    if not value:
        return default
    if value not in ("jpeg", "jpg", "png"):
        raise BadRequest(f"{name} must be jpeg or png, not {value[:40]!r}")
    return "png" if value == "png" else "jpeg"


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
    store = _flag("store")
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
    @ns.response(200, "every configured model", models_model)
    @ns.response(503, "model server unavailable", error_model)
    def get(self) -> dict:
        """Every model in models.config with its versions, their states, and its kind."""
        return {"models": [m.to_dict() for m in _gateway().list_models()]}


@ns.route("/<string:model>")
@ns.param("model", "model name as in models.config")
class ModelDetail(Resource):
    @ns.doc(params={"version": {"description": "model version (default: latest)", "type": "integer"}})
    @ns.response(404, "unknown model or version", error_model)
    def get(self, model: str) -> dict:
        """Signature inputs and outputs, versions, kind, and where the labels come from."""
        options = PredictOptions.from_mapping({"version": request.args.get("version", "")})
        return _gateway().describe(model, options.version)


@ns.route("/<string:model>/labels")
@ns.param("model", "model name as in models.config")
class ModelLabels(Resource):
    @ns.response(
        200, "class id -> name", ns.model("Labels", {"*": fields.Wildcard(fields.String(example="circle"))})
    )
    @ns.response(404, "unknown model", error_model)
    def get(self, model: str) -> dict:
        """The stored label map as `{"<id>": "<name>"}` (empty when the model has none)."""
        return _gateway().labels(model).to_dict()


@ns.route("/<string:model>/predict")
@ns.param("model", "model name as in models.config")
class Predict(Resource):
    @ns.expect(predict_parser)
    @ns.response(200, "the prediction", prediction_model)
    @ns.response(400, "bad image, label map or option", error_model)
    @ns.response(404, "unknown model or version", error_model)
    @ns.response(413, "upload or image too large", error_model)
    @ns.response(415, "not an image", error_model)
    @ns.response(503, "model server unavailable", error_model)
    @ns.response(504, "model server deadline exceeded", error_model)
    def post(self, model: str) -> Response:
        """Detect (or classify) one uploaded image; boxes are in pixels of the upload, masks COCO RLE.

        A raw `image/*` body works as well as the multipart field (a little cheaper to parse)."""
        clock = StageClock(model)
        upload = _read_upload(model, many=False)
        picture = _picture_format()
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
    @ns.expect(image_parser)
    @ns.produces(["image/jpeg", "image/png"])
    @ns.response(200, "the uploaded picture with boxes, masks and captions drawn (original size)")
    @ns.response(400, "bad image, label map or option", error_model)
    @ns.response(404, "unknown model or version", error_model)
    def post(self, model: str) -> Response:
        """Like predict, but answers with the picture (JPEG, or PNG with format=png)."""
        clock = StageClock(model)
        fmt = _picture_format("format", default="jpeg")
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
    @ns.expect(batch_parser)
    @ns.response(200, "one prediction per image, in the order sent", [prediction_model])
    @ns.response(400, "a bad image (the message names its position and file name)", error_model)
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
    app.register_blueprint(bp)

    @app.get("/swagger.json")
    def swagger_json() -> Response:
        return jsonify(api.__schema__)

    return api
