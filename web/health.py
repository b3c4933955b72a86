"""Liveness, readiness and metrics endpoints (open even when API_KEYS is set).

`/healthz` never calls the model server (a slow model server must not get the gateway killed);
`/readyz` asks it every time, with a short deadline, and caches nothing, so it cannot lie.
"""

from __future__ import annotations

import time

from flask import Blueprint, Flask, Response, current_app, jsonify, request

from web import metrics

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
    body = {
        "status": "ready" if state.ready else "not ready",
        "reason": state.reason,
        "model_server": gateway.settings.tf_serving_address,
        "models": state.models,
    }
    return jsonify(body), 200 if state.ready else 503


@bp.get("/metrics")
def prometheus_metrics() -> Response:
    """Prometheus text format: HTTP requests, and prediction stage latencies per model."""
    body, content_type = metrics.exposition()
    return Response(body, content_type=content_type)


def _route() -> str:
    return request.url_rule.rule if request.url_rule is not None else "<unmatched>"


def install_request_metrics(app: Flask) -> None:
    """Count and time every HTTP request by route template (not raw path: bounded label values)."""

    @app.before_request
    def _start_timer() -> None:
        request.environ["gateway.start"] = time.perf_counter()

    @app.after_request
    def _record(response: Response) -> Response:
        start = request.environ.get("gateway.start")
        route = _route()
        metrics.HTTP_REQUESTS.labels(
            route=route, method=request.method, status=str(response.status_code)
        ).inc()
        if start is not None:
            metrics.HTTP_LATENCY.labels(route=route, method=request.method).observe(
                time.perf_counter() - start
            )
        return response
