"""The jobs API: a zip of pictures in, a job out (202), its progress, cancel, delete, and result files.

A job upload is streamed to disk (never whole in memory) under its own limit, MAX_JOB_UPLOAD_BYTES;
the archive is checked as a whole (`web.jobs.archives`: a bad archive is refused with a 4xx that says
what to fix, bad entries are listed in `skipped`); the job is recorded in JOBS_FOLDER and its chunks
queued for the workers (`web.jobs.queue`). Jobs belong to the API key (or the signed-in browser
session's key) that started them: another key gets 404 for them, as for a job that does not exist.
`start_job` is shared with the HTML page (web/http/views.py), which starts jobs from a form.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from flask import Response, current_app, jsonify, request, send_file
from flask_restx import Namespace, Resource
from prometheus_client.core import GaugeMetricFamily
from werkzeug.datastructures import MultiDict

from web.errors import (
    BadRequest,
    GatewayError,
    InsufficientStorage,
    ModelServerError,
    ModelServerTimeout,
    ModelServerUnavailable,
    PayloadTooLarge,
)
from web.http import schemas
from web.http.auth import owner
from web.http.multipart import receive_file
from web.jobs.archives import ArchiveError, ArchiveLimits, ArchiveTooLarge
from web.jobs.evaluate.prepare import ModelFacts, Preparer
from web.jobs.queue import JobQueue
from web.jobs.store import STATUSES, TERMINAL, Job, JobNotFound, parse_iso
from web.options import (
    FPS,
    MIN_SCORE,
    OPERATING_SCORE,
    TRACK,
    VERSION,
    VIDEO_OPTIONS,
    PredictOptions,
    parse_flag,
)

ns = Namespace("jobs", description="Jobs over many pictures: a zip in, progress, and results for every tool")
ARCHIVE_FIELD = "archive"
VIDEO_FIELD = "video"
COMPARE_FIELD = "compare_with"
PREDICT, EVALUATE, VIDEO = "predict", "evaluate", "video"
AVAILABLE_KINDS = (PREDICT, EVALUATE, VIDEO)
MAX_OPTION_BYTES = 1024


class JobMissing(GatewayError):
    status = 404


class JobConflict(GatewayError):
    status = 409


def job_queue() -> JobQueue:
    return current_app.extensions["jobs"]


def visible_job(job_id: str) -> Job:
    """The job if this request's key may see it; 404 otherwise (another key's job looks absent)."""
    try:
        job = job_queue().store.get(job_id)
    except JobNotFound:
        job = None
    if job is None or not job.visible_to(owner()):
        raise JobMissing(f"no job {job_id[:40]!r}: check the id (jobs are deleted after JOB_RETENTION_S)")
    return job


@dataclass(frozen=True)
class JobForm:
    """A job upload's fields, each checked: the model, its predict options, the kind and its extras."""

    model: str
    options: PredictOptions
    kind: str
    compare: dict[str, Any] | None = None  # evaluate: the second model {"name", "version"}
    operating_score: float = OPERATING_SCORE.default
    video: dict[str, Any] | None = None  # video: {"fps": float | None, "track": bool}


def _form_options(fields: MultiDict[str, str]) -> JobForm:
    """The job's fields from the form (and the query string), each checked."""
    values = MultiDict(request.args)
    values.update(fields)
    model = (values.get("model") or "").strip()
    if not model:
        raise BadRequest("no model: send the model's name as the form field 'model'")
    kind = (values.get("kind") or PREDICT).strip().lower()
    if kind not in AVAILABLE_KINDS:
        raise BadRequest(f"kind {kind[:40]!r} is not available: kind must be {' or '.join(AVAILABLE_KINDS)}")
    if kind != VIDEO:
        for option in VIDEO_OPTIONS:
            if (values.get(option.name) or "").strip():
                raise BadRequest(f"{option.name} is for kind=video jobs only")
    if kind != EVALUATE:
        for name in (COMPARE_FIELD, OPERATING_SCORE.name):
            if (values.get(name) or "").strip():
                raise BadRequest(f"{name} is for kind=evaluate jobs only")
        video = None
        if kind == VIDEO:
            text = (values.get(FPS.name) or "").strip()
            fps = FPS.parse(text) if text else None
            video = {"fps": fps, "track": parse_flag(TRACK, values.get(TRACK.name))}
        return JobForm(model, PredictOptions.from_mapping(values), kind, video=video)
    if not (values.get(MIN_SCORE.name) or "").strip():
        values[MIN_SCORE.name] = "0"  # COCO's protocol: every detection counts towards AP
    text = (values.get(OPERATING_SCORE.name) or "").strip()
    score = OPERATING_SCORE.parse(text) if text else OPERATING_SCORE.default
    return JobForm(model, PredictOptions.from_mapping(values), kind, compare_with(values), float(score))


def compare_with(values: Mapping[str, str]) -> dict[str, Any] | None:
    """`compare_with`: "name" or "name:version" (None when absent)."""
    text = (values.get(COMPARE_FIELD) or "").strip()
    if not text:
        return None
    name, _, version = text.partition(":")
    name, version = name.strip(), version.strip().lstrip("vV")
    if not name:
        raise BadRequest(f"{COMPARE_FIELD} must be a model name or name:version, not {text[:60]!r}")
    return {"name": name, "version": VERSION.parse(version) if version else None}


def _compare_entry(compare: dict[str, Any] | None, prepare: Preparer | None) -> dict[str, Any] | None:
    """The job's second model with its label map, so the report scores it on its own labels too (a
    category it never predicts then counts, with AP 0, as it does for the first model)."""
    if compare is None or prepare is None or len(prepare.models) < 2:
        return compare
    labels = prepare.models[1].labels
    return {**compare, "labels": {str(class_id): label for class_id, label in labels.items()}}


def _model_facts(gateway: Any, name: str, version: int | None) -> ModelFacts:
    """The labels and kind of a model to evaluate; an unknown model or version is a 404 here, while
    a model server that is away leaves the kind to be found when predicting."""
    gateway.check_model(name)
    labels = {int(key): label for key, label in gateway.labels(name).to_dict().items()}
    try:
        kind = gateway.describe(name, version).get("kind") or "unknown"
    except (ModelServerUnavailable, ModelServerTimeout, ModelServerError):
        kind = "unknown"
    return ModelFacts(name, labels, kind)


def start_job() -> Job:
    """Receive a job upload from this request and queue it (the API's POST and the HTML form's).

    In the order mistakes are reported: the disk budget (507), the body and its fields (413, 415,
    400), the model (404) and options (400), then the archive (400, 413)."""
    queue = job_queue()
    gateway = current_app.extensions["gateway"]
    settings = gateway.settings
    incoming_bytes = request.content_length or 0
    budget = settings.jobs_disk_budget_bytes
    if queue.store.would_exceed(budget, incoming_bytes):
        raise InsufficientStorage(
            f"the jobs' disk budget (JOBS_DISK_BUDGET_BYTES, {budget / 2**30:g} GiB) would be exceeded: "
            "delete finished jobs, or try again when older ones have expired"
        )
    path = queue.store.incoming()
    try:
        received = receive_file(request, (ARCHIVE_FIELD, VIDEO_FIELD), path)
        if received.name is None or received.size == 0:
            raise BadRequest(
                f"no archive: send a .zip of pictures as the multipart field '{ARCHIVE_FIELD}' "
                f"(or, with kind=video, a video as '{VIDEO_FIELD}')"
            )
        form = _form_options(received.fields)
        model, options, kind = form.model, form.options, form.kind
        if (received.field == VIDEO_FIELD) != (kind == VIDEO):
            raise BadRequest(
                f"kind=video jobs take a video in the field '{VIDEO_FIELD}', the other kinds a .zip in "
                f"'{ARCHIVE_FIELD}': this upload sent {received.field!r} with kind={kind}"
            )
        gateway.check_model(model)
        prepare = probe = None
        if kind == VIDEO:
            from web.jobs.video.probe import VideoProbe  # PyAV is loaded only by video uploads

            probe = VideoProbe.from_settings(settings, fps=form.video["fps"])
        if kind == EVALUATE:
            models = [_model_facts(gateway, model, options.version)]
            if form.compare:
                models.append(_model_facts(gateway, form.compare["name"], form.compare["version"]))
            prepare = Preparer(tuple(models))
        if queue.store.would_exceed(budget, 0):  # a chunked upload, whose size was not known before
            raise InsufficientStorage(
                f"the jobs' disk budget (JOBS_DISK_BUDGET_BYTES, {budget / 2**30:g} GiB) is used up with "
                "this upload: delete finished jobs"
            )
        labels = {int(key): name for key, name in gateway.labels(model).to_dict().items()}
        limits = ArchiveLimits(
            max_pictures=settings.max_job_pictures, max_entry_bytes=settings.max_content_length
        )
        option_values = {k: v for k, v in options.to_dict().items() if k != "version" and v is not None}
        if form.video is not None:
            option_values.update({k: v for k, v in form.video.items() if v is not None})
        job = queue.create(
            model=model,
            archive=path,
            version=options.version,
            kind=kind,
            options=option_values,
            owner=owner(),
            labels=labels,
            limits=limits,
            compare=_compare_entry(form.compare, prepare),
            evaluation={"operating_score": form.operating_score} if kind == EVALUATE else None,
            prepare=prepare,
            probe=probe,
        )
    except ArchiveTooLarge as error:
        raise PayloadTooLarge(error.message) from None
    except ArchiveError as error:
        raise BadRequest(error.message) from None
    finally:
        with contextlib.suppress(OSError):
            path.unlink(missing_ok=True)  # moved into the job by create; otherwise nothing stays
    queue.submit(job)
    return job


def job_json(job: Job) -> dict[str, Any]:
    return job.to_json()


ERROR_STATUSES = {
    400: "bad upload, archive or option",
    401: "no or wrong API key (only when API_KEYS is set)",
    404: "no such job (or another key's), or no such model",
    409: "the job has already ended",
    413: "upload over MAX_JOB_UPLOAD_BYTES, too many pictures (MAX_JOB_PICTURES), or a video over its limits",
    415: "not a multipart/form-data upload",
    507: "the jobs' disk budget (JOBS_DISK_BUDGET_BYTES) would be exceeded",
}


def _errors(*statuses: int) -> Any:
    """Document `statuses` as answering the Error model."""
    return schemas.errors_doc(ns, ERROR_STATUSES, statuses)


UPLOAD_PARAMS = {
    "model": {"in": "formData", "type": "string", "required": True, "description": "model name"},
    ARCHIVE_FIELD: {
        "in": "formData",
        "type": "file",
        "required": False,
        "description": "a .zip of pictures (JPEG, PNG, WebP, BMP, GIF, TIFF), any folder depth "
        "(kind=evaluate: a labelled dataset); every kind but video needs it",
    },
    VIDEO_FIELD: {
        "in": "formData",
        "type": "file",
        "required": False,
        "description": "kind=video instead of `archive`: an MP4, MOV, WebM, MKV or AVI video "
        "(MAX_VIDEO_BYTES, MAX_VIDEO_DURATION_S, MAX_VIDEO_PIXELS per frame)",
    },
    "kind": {"in": "formData", "type": "string", "enum": list(AVAILABLE_KINDS), "default": "predict"},
}


def _upload_params() -> dict[str, Any]:
    from web import options as declared

    params = dict(UPLOAD_PARAMS)
    for option in (*declared.PREDICT_OPTIONS, *declared.VIDEO_OPTIONS):
        params[option.name] = {**option.openapi(), "in": "formData"}
    return params


@ns.route("")
class JobList(Resource):
    @ns.doc(params=_upload_params())
    @ns.response(202, "the job, queued (Location: its URL)", schemas.job)
    @_errors(400, 401, 404, 413, 415, 507)
    def post(self) -> Response:
        """Start a job: predict every picture of a zip (results for every annotation tool), evaluate a
        model on a labelled zip, or annotate a video (kind=video: frames.jsonl and the annotated video)."""
        job = start_job()
        response = jsonify(job_json(job))
        response.status_code = 202
        response.headers["Location"] = f"{request.path}/{job.id}"
        return response

    @ns.response(200, "this key's jobs, newest first", schemas.jobs)
    @_errors(401)
    def get(self) -> dict:
        """Every job this key started (all jobs when the gateway has no API keys)."""
        return {"jobs": [job_json(job) for job in job_queue().store.list(owner())]}


@ns.route("/<string:job_id>")
@ns.param("job_id", "the job's id")
class JobDetail(Resource):
    @ns.response(200, "the job", schemas.job)
    @_errors(401, 404)
    def get(self, job_id: str) -> dict:
        """The job: status, progress, skipped pictures and, once it has succeeded, its result files."""
        return job_json(visible_job(job_id))

    @ns.response(204, "deleted: every file of the job is gone")
    @_errors(401, 404)
    def delete(self, job_id: str) -> Response:
        """Delete the job and all its files (a running job is cancelled first)."""
        visible_job(job_id)
        delete_job(job_id)
        return Response(status=204)


def delete_job(job_id: str) -> None:
    store = job_queue().store
    with contextlib.suppress(JobNotFound):
        store.cancel(job_id)
        store.delete(job_id)


def cancel_job(job_id: str) -> Job:
    job = visible_job(job_id)
    if job.status in TERMINAL:
        raise JobConflict(f"the job has already {job.status}: nothing to cancel (DELETE removes it)")
    return job_queue().store.cancel(job_id)


@ns.route("/<string:job_id>/cancel")
@ns.param("job_id", "the job's id")
class JobCancel(Resource):
    @ns.response(200, "the job, cancelled: workers stop before their next picture", schemas.job)
    @_errors(401, 404, 409)
    def post(self, job_id: str) -> dict:
        """Cancel a queued or running job."""
        return job_json(cancel_job(job_id))


@ns.route("/<string:job_id>/results/<path:name>")
@ns.param("job_id", "the job's id")
@ns.param("name", "a result file name as the job's `results` list it, or a gallery/ picture of its report")
class JobResult(Resource):
    @ns.produces(
        ["application/json", "application/zip", "text/csv", "application/x-ndjson", "text/html", "image/png"]
    )
    @ns.response(200, "the file")
    @_errors(401, 404)
    def get(self, job_id: str, name: str) -> Response:
        """Download one result file of a succeeded job."""
        visible_job(job_id)
        try:
            path = job_queue().store.result_path(job_id, name)
        except JobNotFound:
            raise JobMissing(f"the job has no result {name[:60]!r}: its `results` list the files") from None
        return send_file(path, as_attachment=True, download_name=name, max_age=0)


class JobMetrics:
    """Prometheus collector read at each scrape from the store and the queue: queue length, jobs by
    status, pictures done and the pictures-per-second of running jobs."""

    def __init__(self, queue: JobQueue) -> None:
        self.queue = queue

    def collect(self):  # noqa: ANN201 - prometheus_client's collector protocol
        jobs = self.queue.store.list()
        length = GaugeMetricFamily("gateway_job_queue_length", "job chunks waiting in the queue")
        try:
            length.add_metric([], self.queue.pending())
        except Exception:  # noqa: BLE001 - a queue that cannot be reached has no length to report
            pass
        yield length
        by_status = GaugeMetricFamily("gateway_jobs", "jobs in JOBS_FOLDER by status", labels=["status"])
        for status in STATUSES:
            by_status.add_metric([status], sum(job.status == status for job in jobs))
        yield by_status
        done = GaugeMetricFamily("gateway_job_pictures_done", "pictures finished by the jobs in JOBS_FOLDER")
        done.add_metric([], sum(job.progress["done"] for job in jobs))
        yield done
        rate = GaugeMetricFamily("gateway_job_pictures_per_second", "pictures per second of the running jobs")
        now = time.time()
        rate.add_metric(
            [],
            sum(
                job.progress["done"] / max(now - parse_iso(job.started), 1e-3)
                for job in jobs
                if job.status == "running" and job.started
            ),
        )
        yield rate
