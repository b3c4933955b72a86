"""The JSON answers of the REST API, declared once as flask-restx models (`/swagger.json` definitions).

Every model is strict (`additionalProperties: false`) and names its required fields, and a field
that can be null says so (`anyOf` with `{"type": "null"}`, the form flask-restx itself uses for
nullable nested models), so the documented schemas can be checked against real answers: the tests
validate what the running app answers against `/swagger.json` (tests/web/test_api_schema.py).
The answers themselves are built by the domain types' `to_dict` (web/domain.py), the catalog
(web/reading/catalog.py) and `web.http.errors.error_body`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from flask_restx import Model, Namespace, SchemaModel, fields

from web.options import MAX_DETECTIONS_LIMIT
from web.reading.model_settings import (
    CHANNEL_ORDERS,
    FAMILIES,
    PIXEL_RANGES,
    PREPROCESSING_PLACES,
    RESIZE_MODES,
    VALUE_SOURCES,
)
from web.reading.signatures import InputKind

KINDS = ["detection", "segmentation", "classification", "unknown"]
_VALUE_KEYS = (
    "type",
    "format",
    "enum",
    "items",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "minItems",
    "maxItems",
    "additionalProperties",
    "$ref",
    "allOf",
    "pattern",
    "minLength",
)


class _Nullable:
    """A field that may be null: its schema becomes `anyOf: [<the field's schema>, {"type": "null"}]`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("required", True)  # always in the answer, null when there is nothing to say
        super().__init__(*args, nullable=True, **kwargs)

    def schema(self) -> dict[str, Any]:
        schema = super().schema()
        if "anyOf" in schema:  # flask-restx's Nested does it itself
            return schema
        value = {key: schema.pop(key) for key in _VALUE_KEYS if schema.get(key) is not None}
        schema["anyOf"] = [value, {"type": "null"}]
        return schema


class NullableString(_Nullable, fields.String):
    pass


class NullableInteger(_Nullable, fields.Integer):
    pass


class NullableList(_Nullable, fields.List):
    pass


class NullableNested(_Nullable, fields.Nested):
    pass


class AnyValue(fields.Raw):
    """Any JSON value (a gateway.toml value: text, number, boolean or list)."""

    __schema_type__ = None


def _model(name: str, properties: dict[str, Any]) -> Model:
    return Model(name, properties, strict=True)


error_body = _model(
    "ErrorBody",
    {
        "code": fields.Integer(required=True, min=400, max=599, description="the HTTP status"),
        "message": fields.String(required=True, description="what was wrong and how to fix it"),
    },
)
error = _model("Error", {"error": fields.Nested(error_body, required=True)})

version_state = _model(
    "VersionState",
    {
        "version": fields.Integer(required=True, min=1),
        "state": fields.String(required=True, example="AVAILABLE", description="TF Serving's version state"),
    },
)
_summary_fields = {
    "name": fields.String(required=True, example="shapes"),
    "versions": fields.List(fields.Nested(version_state), required=True),
    "kind": fields.String(required=True, enum=KINDS),
    "label_source": NullableString(description="the stored label map's file name, null when there is none"),
}
model_summary = _model("ModelSummary", _summary_fields)
models = _model("Models", {"models": fields.List(fields.Nested(model_summary), required=True)})

tensor_spec = _model(
    "TensorSpec",
    {
        "dtype": fields.String(required=True, example="uint8"),
        "shape": NullableList(fields.Integer, description="-1 for a free dimension; null: unknown rank"),
    },
)
signature = _model(
    "Signature",
    {
        "name": fields.String(required=True, example="serving_default"),
        "inputs": fields.Wildcard(fields.Nested(tensor_spec), required=True, description="by input name"),
        "outputs": fields.Wildcard(fields.Nested(tensor_spec), required=True, description="by output name"),
    },
)
size = _model(
    "Size", {"width": fields.Integer(required=True, min=1), "height": fields.Integer(required=True, min=1)}
)
image_input = _model(
    "ImageInput",
    {
        "name": fields.String(required=True, description="the signature input the picture goes to"),
        "kind": fields.String(required=True, enum=[str(kind) for kind in InputKind]),
        "fixed_size": NullableNested(size, description="the one size the model takes; null: any size"),
        "channels": fields.Integer(required=True, min=1),
    },
)
preprocessing_sources = _model(
    "PreprocessingSources",
    {
        key: fields.String(required=True, enum=list(VALUE_SOURCES))
        for key in ("where", "resize", "channel_order", "pad_value", "pixel_range", "mean", "std")
    },
)
preprocessing = _model(
    "Preprocessing",
    {
        "where": fields.String(
            required=True,
            enum=list(PREPROCESSING_PLACES),
            description="who converts 0-255 pixels for the network: the gateway, or the model itself",
        ),
        "resize": fields.String(required=True, enum=list(RESIZE_MODES)),
        "pixel_range": fields.String(required=True, enum=list(PIXEL_RANGES)),
        "mean": NullableList(fields.Float),
        "std": NullableList(fields.Float),
        "channel_order": fields.String(required=True, enum=list(CHANNEL_ORDERS)),
        "pad_value": fields.Integer(required=True, min=0, max=255),
        "sources": fields.Nested(
            preprocessing_sources,
            required=True,
            description="where each value came from: family default, export metadata or gateway.toml",
        ),
    },
)
settings_file = _model(
    "ModelSettingsFile",
    {
        "file": fields.String(required=True, description="where the model's gateway.toml is (or would be)"),
        "found": fields.Boolean(required=True),
        "values": fields.Wildcard(AnyValue, required=True, description="the keys the file sets"),
    },
)
export_metadata = _model(
    "ExportMetadata",
    {
        "file": fields.String(required=True),
        "exporter": fields.String(required=True, example="Ultralytics"),
        "task": NullableString(example="detect"),
        "classes": fields.Integer(required=True, min=0, description="how many class names it gives"),
    },
)
model_detail = _model(
    "ModelDetail",
    {
        **_summary_fields,
        "version": fields.Integer(required=True, min=1, description="the version described"),
        "signature": fields.Nested(signature, required=True),
        "family": NullableString(enum=list(FAMILIES), description="the adapter that reads it; null: none"),
        "input": NullableNested(image_input),
        "preprocessing": NullableNested(preprocessing),
        "class_offset": NullableInteger(description="added to the model's class numbers to get label ids"),
        "settings": fields.Nested(settings_file, required=True),
        "export_metadata": NullableNested(export_metadata, description="what the exporter wrote beside it"),
        "candidates": fields.List(fields.String(enum=list(FAMILIES)), required=True),
        "problem": NullableString(description="why the gateway refuses to read it; null when it reads it"),
    },
)
labels = SchemaModel(
    "Labels",
    {
        "type": "object",
        "description": "class id -> name",
        "additionalProperties": {"type": "string"},
        "example": {"1": "circle", "2": "square"},
    },
)

box = _model(
    "Box",
    {key: fields.Float(required=True) for key in ("xmin", "ymin", "xmax", "ymax")},
)
rle = _model(
    "RLE",
    {
        "size": fields.List(
            fields.Integer, required=True, min_items=2, max_items=2, description="[height, width]"
        ),
        "counts": fields.String(required=True, description="COCO RLE (pycocotools)"),
    },
)
detection = _model(
    "Detection",
    {
        "label": fields.String(required=True),
        "class_id": fields.Integer(required=True),
        "score": fields.Float(required=True),
        "box": fields.Nested(box, required=True, description="pixels of the uploaded image"),
        "mask": fields.Nested(rle, description="segmentation models only"),
    },
)
classification = _model(
    "Class",
    {
        "label": fields.String(required=True),
        "class_id": fields.Integer(required=True),
        "score": fields.Float(required=True),
    },
)
timings = _model(
    "Timings",
    {
        "decode": fields.Float(
            required=True, min=0, description="milliseconds: checking and decoding the upload"
        ),
        "predict": fields.Float(required=True, min=0, description="the model server's call"),
        "postprocess": fields.Float(required=True, min=0, description="reading the model's answer"),
        "render": fields.Float(min=0, description="drawing the picture, when one is drawn"),
        "total": fields.Float(required=True, min=0),
    },
)
picture = _model(
    "Picture",
    {
        "format": fields.String(required=True, enum=["jpeg", "png"]),
        "base64": fields.String(required=True, description="the drawn picture, base64 (RFC 4648)"),
    },
)
model_ref = _model(
    "ModelRef", {"name": fields.String(required=True), "version": fields.Integer(required=True)}
)
prediction = _model(
    "Prediction",
    {
        "model": fields.Nested(model_ref, required=True),
        "image": fields.Nested(size, required=True, description="the upload's size, upright"),
        "detections": fields.List(
            fields.Nested(detection),
            max_items=MAX_DETECTIONS_LIMIT,
            description="detection and segmentation models, best first",
        ),
        "classes": fields.List(
            fields.Nested(classification),
            max_items=MAX_DETECTIONS_LIMIT,
            description="classification models, best first",
        ),
        "timings_ms": fields.Nested(timings, required=True),
        "result_url": fields.String(description="with store=true: the HTML result page"),
        "picture": fields.Nested(
            picture, description="with picture=jpeg or png: the upload with the prediction drawn"
        ),
    },
)

JOB_STATUSES = ["queued", "running", "succeeded", "failed", "cancelled"]
JOB_KINDS = ["predict", "evaluate", "video"]
job_model_ref = _model(
    "JobModel",
    {
        "name": fields.String(required=True, example="shapes"),
        "version": NullableInteger(description="the version asked for; null: the latest"),
    },
)
job_progress = _model(
    "JobProgress",
    {
        "done": fields.Integer(required=True, min=0, description="pictures finished; only grows"),
        "total": fields.Integer(required=True, min=0, description="pictures in the archive"),
    },
)
job_skipped = _model(
    "JobSkipped",
    {
        "file": fields.String(required=True, description="its path in the archive"),
        "reason": fields.String(required=True, description="why it was left out"),
    },
)
job_results = SchemaModel(
    "JobResults",
    {
        "type": "object",
        "description": "result file name -> download URL (when the job has succeeded)",
        "additionalProperties": {"type": "string"},
        "example": {"coco.json": "/api/v1/jobs/0f3c.../results/coco.json"},
    },
)
job = _model(
    "Job",
    {
        "id": fields.String(required=True, pattern="^[0-9a-f]{32}$"),
        "kind": fields.String(required=True, enum=JOB_KINDS),
        "model": fields.Nested(job_model_ref, required=True),
        "status": fields.String(required=True, enum=JOB_STATUSES),
        "progress": fields.Nested(job_progress, required=True),
        "error": NullableString(description="why the job failed; null otherwise"),
        "skipped": fields.List(fields.Nested(job_skipped), required=True),
        "results": fields.Nested(job_results, required=True),
        "created": fields.String(required=True, example="2026-12-02T18:00:00.000Z"),
        "finished": NullableString(description="when it ended; null while queued or running"),
    },
)
jobs = _model("Jobs", {"jobs": fields.List(fields.Nested(job), required=True, description="newest first")})

ALL: tuple[Model | SchemaModel, ...] = (
    error_body,
    error,
    version_state,
    model_summary,
    models,
    tensor_spec,
    signature,
    size,
    image_input,
    preprocessing_sources,
    preprocessing,
    settings_file,
    export_metadata,
    model_detail,
    labels,
    box,
    rle,
    detection,
    classification,
    timings,
    picture,
    model_ref,
    prediction,
    job_model_ref,
    job_progress,
    job_skipped,
    job_results,
    job,
    jobs,
)


def errors_doc(ns: Namespace, descriptions: Mapping[int, str], statuses: Iterable[int]) -> Any:
    """A decorator documenting `statuses` as answering the Error model, in one `doc` call: each
    `ns.response` deep-copies the route's whole documentation so far, which stacked per status
    made building the API take a sixth of a second."""
    return ns.doc(responses={str(status): (descriptions[status], error, {}) for status in sorted(statuses)})


def register(ns: Namespace) -> None:
    """Add every answer model to `ns`, so /swagger.json defines them."""
    for model in ALL:
        ns.add_model(model.name, model)
