"""Liveness, readiness and metrics endpoints.

`/healthz` and a bare `/readyz` stay open when API_KEYS is set (probes carry no keys); readiness
details and `/metrics` need a key, a signed-in session or METRICS_TOKEN (see web/http/auth.py).

`/healthz` never calls the model server (a slow model server must not get the gateway killed);
`/readyz` asks it every time, with a short deadline, and caches nothing, so it cannot lie.
"""

from __future__ import annotations

import time

from flask import Blueprint, Flask, Response, current_app, jsonify, request

from web import metrics
from web.http.auth import authenticated
from web.http.jobs import JobMetrics

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> Response:
    """The process is up and serving HTTP."""
    return jsonify({"status": "ok"})


@bp.get("/readyz")
def readyz() -> tuple[Response, int]:
    """200 when the model server answers and every configured model has an AVAILABLE version, else 503."""
    gateway = current_app.extensions["gateway"]
    state = gateway.readiness()
    body = {"status": "ready" if state.ready else "not ready"}
    if authenticated():  # without a key: the status only, no addresses or model names
        body.update(
            reason=state.reason,
            model_server=gateway.settings.tf_serving_address,
            models=state.models,
            # Not part of readiness: predictions work without it, only stored results need it.
            storage=gateway.store.storage_problem() or "writable",
        )
    return jsonify(body), 200 if state.ready else 503


@bp.get("/metrics")
def prometheus_metrics() -> Response:
    """Prometheus text format: HTTP requests, and prediction stage latencies per model."""
    jobs = current_app.extensions.get("jobs")
    body, content_type = metrics.exposition(*([JobMetrics(jobs)] if jobs is not None else []))
    return Response(body, content_type=content_type)


KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def _route() -> str:
    """The route template (`/api/v1/models/<string:model>/predict`), never the raw path."""
    return request.url_rule.rule if request.url_rule is not None else "<unmatched>"


def _method() -> str:
    """The HTTP method, with anything made up collapsed into one label value."""
    return request.method if request.method in KNOWN_METHODS else "<other>"


def install_request_metrics(app: Flask) -> None:
    """Count and time every HTTP request by route template (not raw path: bounded label values)."""

    @app.before_request
    def _start_timer() -> None:
        request.environ["gateway.start"] = time.perf_counter()

    @app.after_request
    def _record(response: Response) -> Response:
        start = request.environ.get("gateway.start")
        route = _route()
        method = _method()
        metrics.child(metrics.HTTP_REQUESTS, route, method, str(response.status_code)).inc()
        if start is not None:
            metrics.child(metrics.HTTP_LATENCY, route, method).observe(time.perf_counter() - start)
        return response
