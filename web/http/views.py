"""HTML pages: the upload form, the result page, recent results, the stored files behind them, and
the jobs pages (start a job from a zip, follow its progress, its results and first pictures drawn).

The views only translate between HTTP forms and the gateway facade (`app.extensions["gateway"]`):
prediction, rendering and validation live below them. A submitted form is stored and answered
with a 303 redirect to the result page (post/redirect/get), so reloading the result page never
re-runs the model and every result has a URL that can be shared.
"""

from __future__ import annotations

import base64
import dataclasses
import io
import json
from dataclasses import dataclass
from typing import Any

from flask import (
    Blueprint,
    Response,
    current_app,
    g,
    jsonify,
    redirect,
    render_template,
    request,
    send_file,
    url_for,
)
from markupsafe import Markup, escape
from pycocotools import mask as mask_utils
from werkzeug.datastructures import FileStorage
from werkzeug.exceptions import RequestEntityTooLarge

from web.errors import BadRequest, GatewayError, InsufficientStorage, ResultNotFound
from web.http.auth import CSRF_FIELD, check_origin, check_token, owner
from web.http.errors import describe, error_body, error_response
from web.http.jobs import (
    COMPARE_FIELD,
    JobMissing,
    cancel_job,
    compare_with,
    delete_job,
    start_job,
    visible_job,
)
from web.jobs.archives import ArchiveError
from web.jobs.store import RESULT_URL, JobNotFound
from web.options import BY_NAME, MIN_SCORE, PREDICT_OPTIONS, PredictOptions
from web.pipeline import images
from web.pipeline.compare import mark_only, pair_detections
from web.pipeline.images import EXTENSIONS, SUPPORTED
from web.pipeline.render import class_color, detections_from_json, render_prediction
from web.pipeline.request import display_name
from web.reading.catalog import ModelSummary
from web.reading.label_maps import PBTXT_SUFFIXES, parse_label_map
from web.storage import StorageError, StoredResult

bp = Blueprint(
    "views",
    __name__,
    template_folder="../../templates",
    static_folder="static",
    static_url_path="/assets",
)

OPTION_FIELDS = tuple(option.name for option in PREDICT_OPTIONS)
FORM_DEFAULTS = {
    "model": "",
    **{option.name: option.form_default() for option in PREDICT_OPTIONS},
    COMPARE_FIELD: "",  # a second model ("name" or "name:version"): both drawn side by side
}
RECENT_DEFAULT = 48
RECENT_MAX = 200
RENDER_FORMAT = "jpeg"
RENDER_EXT = "jpg"
# Stored results never change, so browsers may keep the pictures for a day.
FILE_MAX_AGE_S = 86400
IMAGE_ACCEPT = "image/jpeg,image/png,image/gif,image/bmp,image/webp,image/tiff"
LABEL_MAP_ACCEPT = ",".join((*PBTXT_SUFFIXES, ".txt", "text/plain"))


@dataclass(frozen=True)
class DetectionRow:
    """One line of the detections table, already in the units the page shows."""

    index: int
    label: str
    class_id: int | None
    score: float
    xmin: int
    ymin: int
    xmax: int
    ymax: int
    mask_area: int | None
    color: str | None = None  # the colour the picture uses for this class, as #rrggbb

    @property
    def width(self) -> int:
        return self.xmax - self.xmin

    @property
    def height(self) -> int:
        return self.ymax - self.ymin


def _gateway() -> Any:
    return current_app.extensions["gateway"]


def _store() -> Any:
    return _gateway().store


# -- the form ----------------------------------------------------------------------------------


def _model_choices() -> tuple[list[Any], str | None]:
    """The models for the select, and a notice when the model server could not be asked.

    When the model server is down the form still works: the models come from models.config with
    their state unknown, and submitting shows the server's error.
    """
    gateway = _gateway()
    try:
        return list(gateway.list_models()), None
    except GatewayError as exc:
        notice = str(exc)
    try:
        names = gateway.model_names()
    except GatewayError:
        names = []
    return [ModelSummary(name=n, versions=[], kind="unknown", label_source=None) for n in names], notice


def _render_form(values: dict[str, str] | None = None, error: str | None = None, status: int = 200):
    models, models_notice = _model_choices()
    form = _form_values(values, models)
    settings = _gateway().settings
    return (
        render_template(
            "index.html",
            models=models,
            models_notice=models_notice,
            form=form,
            error=error,
            image_accept=IMAGE_ACCEPT,
            label_map_accept=LABEL_MAP_ACCEPT,
            max_upload_mb=_megabytes(getattr(settings, "max_content_length", None)),
            limits=_limits,
        ),
        status,
    )


def _form_values(values: dict[str, str] | None, models: list[Any]) -> dict[str, str]:
    """The form's fields: the declared defaults, the values given, and the first model by default."""
    form = dict(FORM_DEFAULTS)
    if values:
        form.update({k: v for k, v in values.items() if k in form})
    if not form["model"] and models:
        form["model"] = models[0].name
    return form


def _limits(name: str) -> Markup:
    """The `min`/`max`/`step` attributes of an option's input, from its one declaration (web.options)."""
    attributes = BY_NAME[name].html_limits()
    return Markup(" ".join(f'{key}="{escape(value)}"' for key, value in attributes.items()))


def _megabytes(limit: int | None) -> float | None:
    return round(limit / (1024 * 1024), 1) if limit else None


@bp.get("/")
def index():
    """The upload form; `?model=NAME` preselects a model (the result page's "try another")."""
    return _render_form({"model": request.args.get("model", "")})


@bp.post("/")
def submit():
    """Run the chosen model on the upload, store the result and redirect to its page."""
    try:
        too_large = g.pop("form_too_large", None)
        if too_large is not None:
            raise too_large
        form = request.form
        files = request.files
    except RequestEntityTooLarge as exc:
        return _render_form(error=describe(exc)[1], status=413)

    values = {k: form.get(k, "") for k in FORM_DEFAULTS}
    try:
        model = values["model"].strip()
        if not model:
            raise BadRequest("Choose a model.")
        image = _read_upload(files.get("image"), "image")
        if image is None:
            raise BadRequest(f"Choose an image file to upload ({SUPPORTED}).")
        options = PredictOptions.from_mapping({k: values[k] for k in OPTION_FIELDS})
        label_map_file = files.get("label_map")
        label_map_data = _read_upload(label_map_file, "label map")
        label_map = None
        if label_map_data is not None:
            label_map = parse_label_map(label_map_data, label_map_file.filename or "label_map.pbtxt")

        gateway = _gateway()
        second = compare_with(values)
        if second is not None:
            return _compare(gateway, model, image, options, label_map, second)
        upload = gateway.open(model, [(None, image)], options=options, label_map=label_map)
        prediction, rendered = gateway.run_and_render(upload, RENDER_FORMAT)
        try:
            result_id = gateway.store.save(
                image,
                EXTENSIONS[upload.pictures[0].info.format],
                rendered,
                RENDER_EXT,
                prediction.to_dict(),
                source_name=display_name(files["image"].filename, fallback="") or None,
                options=options.to_dict(),
            )
        except StorageError as exc:
            current_app.logger.error("storing a result failed: %s", exc)
            raise InsufficientStorage(
                f"The prediction worked but the result could not be stored ({exc}); try again later."
            ) from exc
    except GatewayError as exc:
        return _render_form(values, error=str(exc), status=exc.status)
    return redirect(url_for("views.result", result_id=result_id), code=303)


def _compare(gateway: Any, model: str, image: bytes, options: PredictOptions, label_map: Any, second: dict):
    """The picture through two models (or two versions), drawn side by side, the boxes only one of
    them found framed; a page of its own, not stored (the single results are for that)."""
    other = dataclasses.replace(options, version=second["version"], version_label=None)
    gateway.check_model(second["name"])
    runs = []
    for name, chosen, labels in ((model, options, label_map), (second["name"], other, None)):
        upload = gateway.open(name, [(None, image)], options=chosen, label_map=labels)
        runs.append(gateway.run_and_render(upload, RENDER_FORMAT))
    (first, first_drawn), (then, then_drawn) = runs
    pairing = pair_detections(first.detections, then.detections)
    sides = []
    for prediction, drawn, only in (
        (first, first_drawn, pairing.only_first),
        (then, then_drawn, pairing.only_second),
    ):
        alone = set(only)
        answer = prediction.to_dict()
        picture = base64.b64encode(mark_only(drawn, prediction.detections, only)).decode("ascii")
        sides.append(
            {
                "label": f"{prediction.model_name}:v{prediction.model_version}",
                "picture": f"data:image/jpeg;base64,{picture}",
                "rows": [(row, i in alone) for i, row in enumerate(_detection_rows(answer))],
                "classes": answer.get("classes"),
                "only": len(only),
            }
        )
    return render_template("compare.html", sides=sides, both=len(pairing.pairs), options=options.to_dict())


def _read_upload(upload: FileStorage | None, what: str) -> bytes | None:
    """The uploaded bytes, None when the field was left empty; an empty named file is an error."""
    if upload is None:
        return None
    data = upload.read()
    if not data:
        if upload.filename:
            raise BadRequest(f"The {what} file {upload.filename!r} is empty; choose a file with content.")
        return None
    return data


# -- results -----------------------------------------------------------------------------------


def _not_found(message: str) -> Response:
    return error_response(ResultNotFound(message))


_MISSING = "No result with this id. Results are kept for a limited time and the oldest are removed first."


def _detection_rows(prediction: dict[str, Any]) -> list[DetectionRow]:
    rows = []
    for i, det in enumerate(prediction.get("detections") or [], start=1):
        box = det.get("box") or {}
        mask = det.get("mask")
        area = None
        if isinstance(mask, dict) and "counts" in mask and "size" in mask:
            try:
                area = int(mask_utils.area({"size": list(mask["size"]), "counts": mask["counts"]}))
            except (TypeError, ValueError):
                area = None
        rows.append(
            DetectionRow(
                index=i,
                label=str(det.get("label", "")),
                class_id=det.get("class_id"),
                score=float(det.get("score", 0.0)),
                xmin=round(float(box.get("xmin", 0))),
                ymin=round(float(box.get("ymin", 0))),
                xmax=round(float(box.get("xmax", 0))),
                ymax=round(float(box.get("ymax", 0))),
                mask_area=area,
                color=_hex_color(det.get("class_id")),
            )
        )
    return rows


def _hex_color(class_id: Any) -> str | None:
    if not isinstance(class_id, int) or isinstance(class_id, bool):
        return None
    return "#{:02x}{:02x}{:02x}".format(*class_color(class_id))


@bp.get("/results/<result_id>")
def result(result_id: str):
    """The drawn picture, the detections table, timings and links to JSON and the files."""
    stored = _store().get(result_id)
    if stored is None:
        return _not_found(_MISSING)
    prediction = stored.prediction
    return render_template(
        "result.html",
        result=stored,
        prediction=prediction,
        rows=_detection_rows(prediction),
        classes=prediction.get("classes"),
        image=prediction.get("image") or {},
        timings=prediction.get("timings_ms") or {},
    )


LIVE_MAX_SIDE = 640  # live.js sends frames scaled to this, so a frame is a small JPEG


@bp.get("/live")
def live():
    """The browser's camera, frames sent one at a time to the model, boxes drawn over the video."""
    models, models_notice = _model_choices()
    return render_template(
        "live.html",
        models=models,
        models_notice=models_notice,
        min_score=MIN_SCORE.form_default(),
        limits=_limits,
        max_side=LIVE_MAX_SIDE,
    )


@bp.post("/live/predict")
def live_predict():
    """One camera frame (multipart `image`, `model`, `min_score`, the page's CSRF token): the
    prediction JSON. A page endpoint, so the sign-in session is enough (the API takes keys only)."""
    try:
        model = (request.form.get("model") or "").strip()
        if not model:
            raise BadRequest("choose a model")
        image = _read_upload(request.files.get("image"), "frame")
        if image is None:
            raise BadRequest("no frame: send the camera frame as the multipart field 'image'")
        options = PredictOptions.from_mapping({MIN_SCORE.name: request.form.get(MIN_SCORE.name, "")})
        gateway = _gateway()
        prediction = gateway.run(gateway.open(model, [(None, image)], options=options))[0]
    except (GatewayError, RequestEntityTooLarge) as exc:
        status, message = describe(exc)
        return jsonify(error_body(status, message)), status
    return jsonify(prediction.to_dict())


@bp.get("/results")
def results():
    """Recent results, newest first, as thumbnails of the rendered pictures."""
    try:
        limit = int(request.args.get("limit", RECENT_DEFAULT))
    except ValueError:
        limit = RECENT_DEFAULT
    limit = max(1, min(limit, RECENT_MAX))
    return render_template("results.html", results=_store().recent(limit), limit=limit)


@bp.get("/results/<result_id>.json")
def result_json(result_id: str):
    """The stored prediction, exactly the REST API's prediction JSON."""
    stored = _store().get(result_id)
    if stored is None:
        return _not_found(_MISSING)  # JSON: the URL ends with .json
    return jsonify(stored.prediction)


def _send_stored(stored: StoredResult | None, which: str) -> Response | tuple:
    if stored is None:
        return _not_found(_MISSING)
    path = stored.rendered_path if which == "rendered" else stored.original_path
    mimetype = stored.rendered_mimetype if which == "rendered" else stored.original_mimetype
    try:
        handle = path.open("rb")
    except FileNotFoundError:
        return _not_found(_MISSING)
    response = send_file(
        handle,
        mimetype=mimetype,
        max_age=FILE_MAX_AGE_S,
        conditional=True,
        etag=f"{stored.result_id}-{which}",
        last_modified=stored.created_at,
    )
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Content-Security-Policy"] = "default-src 'none'"
    # Results are the uploader's: browsers may keep them, shared caches and proxies may not.
    response.cache_control.public = False
    response.cache_control.private = True
    return response


@bp.get("/results/<result_id>/image")
def result_image(result_id: str):
    """The rendered picture (boxes, masks and captions drawn)."""
    return _send_stored(_store().get(result_id), "rendered")


@bp.get("/results/<result_id>/original")
def result_original(result_id: str):
    """The uploaded original, byte for byte, with the type detected from its content."""
    return _send_stored(_store().get(result_id), "original")


# -- jobs --------------------------------------------------------------------------------------
# The browser side of the jobs API (web/http/jobs.py): a form that starts a job, a table of this
# key's jobs whose progress bars jobs.js keeps live by polling GET /api/v1/jobs, and a page per job
# with thumbnails of its first results. Starting, cancelling and deleting go through these form
# routes, never the API: a signed-in browser session may only read the API (web/http/auth.py).

REPORT_FILE = "report.json"  # an evaluate job's report, shown on its page
VIDEO_SUMMARY_FILE = "summary.json"  # a video job's timeline, top frames and tracks, shown on its page
JOB_THUMBNAILS = 8  # the job page shows the first pictures of a succeeded job, drawn
THUMB_SIZE = 320  # the longer side of a thumbnail, in pixels
ZIP_ACCEPT = ".zip,application/zip,application/x-zip-compressed"
VIDEO_ACCEPT = ".mp4,.m4v,.mov,.webm,.mkv,.avi,video/*"


def _job_queue() -> Any:
    return current_app.extensions["jobs"]


def _render_jobs(error: str | None = None, status: int = 200, values: dict[str, str] | None = None):
    models, models_notice = _model_choices()
    form = _form_values(values, models)
    jobs = [job.to_json() for job in _job_queue().store.list(owner())]
    settings = _gateway().settings
    return (
        render_template(
            "jobs.html",
            jobs=jobs,
            models=models,
            models_notice=models_notice,
            form=form,
            error=error,
            zip_accept=ZIP_ACCEPT,
            video_accept=VIDEO_ACCEPT,
            max_video_mb=_megabytes(min(settings.max_video_bytes, settings.max_job_upload_bytes)),
            max_video_minutes=f"{settings.max_video_duration_s / 60:g}",
            max_job_upload_mb=_megabytes(settings.max_job_upload_bytes),
            max_job_pictures=settings.max_job_pictures,
            limits=_limits,
        ),
        status,
    )


def _check_streamed_form() -> None:
    """CSRF for the job form, whose body (up to MAX_JOB_UPLOAD_BYTES) is streamed to disk by
    `start_job`: reading it as `request.form` for the usual check would hold it all in memory, so
    this form carries its token in the query string of its action, checked here against the cookie
    (the same double-submit rule as every other form), before a byte of the body is read."""
    check_origin()
    check_token(request.args.get(CSRF_FIELD, ""))


@bp.get("/jobs")
def jobs():
    """Start a job from a zip; this key's jobs, newest first, with live progress (jobs.js)."""
    return _render_jobs(values={"model": request.args.get("model", "")})


@bp.post("/jobs")
def jobs_submit():
    """Start a job from the form (streamed to disk by the jobs API's `start_job`), then its page."""
    _check_streamed_form()
    try:
        job = start_job()
    except GatewayError as exc:
        return _render_jobs(error=str(exc), status=exc.status)
    except RequestEntityTooLarge as exc:
        return _render_jobs(error=describe(exc)[1], status=413)
    return redirect(url_for("views.job", job_id=job.id), code=303)


@bp.get("/jobs/<job_id>")
def job(job_id: str):
    """One job: status, live progress, skipped files, result links and the first results drawn."""
    found = visible_job(job_id)
    shown = found.to_json()
    report = _evaluation_report(found)
    base = RESULT_URL.format(id=found.id, name="")
    return render_template(
        "job.html",
        job=shown,
        video_summary=_result_json(found, "video", VIDEO_SUMMARY_FILE),
        class_color=class_color,
        thumbnails=_thumbnail_count(found),
        report=report,
        plots=[name for name in (report or {}).get("plots", ()) if name in shown["results"]],
        result_src=lambda name: base + name,  # a result file or a gallery/ picture of the report
    )


def _evaluation_report(found: Any) -> dict[str, Any] | None:
    """A succeeded evaluate job's report.json (its page shows the report), else None."""
    return _result_json(found, "evaluate", REPORT_FILE)


def _result_json(found: Any, kind: str, name: str) -> dict[str, Any] | None:
    """A succeeded job's JSON result `name` when the job is of `kind` (its page shows it), else None."""
    if found.kind != kind or name not in found.results:
        return None
    try:
        with open(_job_queue().store.result_path(found.id, name), encoding="utf-8") as stream:
            return json.load(stream)
    except (OSError, ValueError, JobNotFound):
        return None


@bp.post("/jobs/<job_id>/cancel")
def job_cancel(job_id: str):
    """Cancel a queued or running job (the form's `back=job` returns to its page, else to /jobs)."""
    try:
        cancel_job(job_id)
    except GatewayError as exc:
        if exc.status != 409:
            raise
        return _render_jobs(error=str(exc), status=409)
    if request.form.get("back") == "job":
        return redirect(url_for("views.job", job_id=job_id), code=303)
    return redirect(url_for("views.jobs"), code=303)


@bp.post("/jobs/<job_id>/delete")
def job_delete(job_id: str):
    """Delete the job and every file of it (cancelled first if it still runs)."""
    visible_job(job_id)
    delete_job(job_id)
    return redirect(url_for("views.jobs"), code=303)


def _first_records(job: Any, limit: int) -> list[dict[str, Any]]:
    """The first `limit` lines of a succeeded job's predictions.jsonl (read line by line, not whole)."""
    if job.status != "succeeded" or "predictions.jsonl" not in job.results:
        return []
    try:
        path = _job_queue().store.result_path(job.id, "predictions.jsonl")
        records = []
        with path.open("rb") as lines:
            for line in lines:
                if len(records) >= limit:
                    break
                if line.strip():
                    records.append(json.loads(line))
        return records
    except (JobNotFound, OSError, ValueError):
        return []


def _thumbnail_count(job: Any) -> int:
    return len(_first_records(job, JOB_THUMBNAILS))


@bp.get("/jobs/<job_id>/thumbs/<number>.jpg")
def job_thumbnail(job_id: str, number: str):
    """Picture `index` (0-based, in predictions.jsonl's order) of a succeeded job, small, with its
    boxes, masks and captions drawn by the gateway's renderer; made on request, nothing stored."""
    found = visible_job(job_id)
    index = int(number) if number.isdecimal() and len(number) < 3 else JOB_THUMBNAILS
    records = _first_records(found, JOB_THUMBNAILS) if index < JOB_THUMBNAILS else []
    if index >= len(records):
        raise JobMissing(f"no thumbnail {index}: a succeeded job has its first {JOB_THUMBNAILS} drawn")
    record = records[index]
    try:
        data = _job_queue().store.archive(found).read(str(record.get("file", "")))
    except (JobNotFound, ArchiveError, KeyError, OSError):
        raise JobMissing(f"the picture of thumbnail {index} cannot be read from the job's archive") from None
    response = send_file(
        io.BytesIO(_draw_thumbnail(data, record)), mimetype="image/jpeg", max_age=FILE_MAX_AGE_S
    )
    response.cache_control.public = False
    response.cache_control.private = True
    return response


def _draw_thumbnail(data: bytes, record: dict[str, Any]) -> bytes:
    """The picture decoded at thumbnail size (as the pipeline decodes it: EXIF orientation applied, so
    the boxes fit), the record's detections scaled to it and drawn with `render_prediction`."""
    gateway = _gateway()
    info = images.inspect_image(data, max_pixels=gateway.settings.max_image_pixels, complete=False)
    scale = min(1.0, THUMB_SIZE / max(info.width, info.height))
    size = (max(1, round(info.width * scale)), max(1, round(info.height * scale)))
    with gateway.decode_budget.reserve(info.width * info.height, "drawing a job's thumbnail"):
        picture = images.decode_image(data, info, size=size, strict=False)
    if picture.size != size:
        picture = picture.resize(size)
    detections, classes = detections_from_json(record, size)
    drawn = render_prediction(picture, detections, classes, in_place=True)
    return images.encode_image(drawn, RENDER_FORMAT, quality=85)
