"""Prometheus metrics of the gateway: HTTP requests, and predictions per model and stage.

Under gunicorn with several workers set PROMETHEUS_MULTIPROC_DIR (an empty folder) before start;
`/metrics` then aggregates every worker's numbers (prometheus-client's multiprocess mode).
"""

from __future__ import annotations

import os
import time
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

STAGES = ("decode", "predict", "postprocess", "render", "total")
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

HTTP_REQUESTS = Counter(
    "gateway_http_requests_total",
    "HTTP requests answered, by route, method and status.",
    ["route", "method", "status"],
)
HTTP_LATENCY = Histogram(
    "gateway_http_request_duration_seconds",
    "Time to answer an HTTP request, by route and method.",
    ["route", "method"],
    buckets=_LATENCY_BUCKETS,
)
MODEL_REQUESTS = Counter(
    "gateway_model_requests_total",
    "Prediction requests per model and outcome (ok or the HTTP status).",
    ["model", "outcome"],
)
STAGE_LATENCY = Histogram(
    "gateway_stage_duration_seconds",
    "Time spent per prediction stage (decode, predict, postprocess, render, total), per model.",
    ["model", "stage"],
    buckets=_LATENCY_BUCKETS,
)

STAGE_CPU = Counter(
    "gateway_stage_cpu_seconds",
    "CPU time the request's own thread spent per prediction stage (read, validate, decode, predict, "
    "postprocess, render, store, respond), per model. What is not here (HTTP parsing in gunicorn, gRPC's own "
    "threads, the allocator) is the rest of the workers' process CPU.",
    ["model", "stage"],
)

MODEL_SERVER_CALLS = Counter(
    "gateway_model_server_calls_total",
    "gRPC calls to the model server by method and final status (OK, UNAVAILABLE, DEADLINE_EXCEEDED, ...), "
    "after the channel's own retries.",
    ["method", "code"],
)

DECODE_PIXELS = Gauge(
    "gateway_decode_pixels_in_flight",
    "Pixels this worker holds decoded (or being drawn) right now; MAX_DECODE_PIXELS_IN_FLIGHT bounds it.",
    multiprocess_mode="livesum",
)
DECODE_REFUSALS = Counter(
    "gateway_decode_budget_refusals_total",
    "Requests answered 503 because the decode budget stayed full longer than DECODE_WAIT_S.",
)


_CHILDREN: dict[tuple[Any, tuple[str, ...]], Any] = {}


def child(metric: Any, *values: str) -> Any:
    """`metric.labels(*values)`, remembered: prometheus-client resolves labels on every call (~10 us
    each, a dozen per prediction). Every label value here is bounded (routes, models, stages, codes)."""
    key = (metric, values)
    found = _CHILDREN.get(key)
    if found is None:
        found = _CHILDREN.setdefault(key, metric.labels(*values))
    return found


def observe_timings(model: str, timings_ms: dict[str, float]) -> None:
    """Record a prediction's per-stage timings (milliseconds) in the stage histogram."""
    for stage, value in timings_ms.items():
        child(STAGE_LATENCY, model, stage).observe(value / 1000.0)


class StageClock:
    """Wall and CPU time per stage of one request on one thread: the one clock of the pipeline.

    `lap(stage)` ends the stage that ran since the previous lap (or the start): the CPU this thread
    used is added to `gateway_stage_cpu_seconds_total{model,stage}`, and the wall time is returned in
    milliseconds, for the answer's `timings_ms`. A stage may be lapped several times (once per picture
    of a batch); its CPU adds up. A thread of its own (a background decode) takes a clock of its own,
    since CPU time is per thread. A lap costs three clock reads and one counter increment, a few
    microseconds.
    """

    __slots__ = ("model", "_cpu", "_wall")

    def __init__(self, model: str) -> None:
        self.model = model
        self._cpu = time.thread_time()
        self._wall = time.perf_counter()

    def lap(self, stage: str) -> float:
        cpu, wall = time.thread_time(), time.perf_counter()
        child(STAGE_CPU, self.model, stage).inc(cpu - self._cpu)
        elapsed_ms = (wall - self._wall) * 1000.0
        self._cpu, self._wall = cpu, wall
        return elapsed_ms


def count_model_request(model: str, outcome: str) -> None:
    child(MODEL_REQUESTS, model, outcome).inc()


def exposition(*collectors: Any) -> tuple[bytes, str]:
    """The metrics page body and content type, aggregated over workers in multiprocess mode, plus
    `collectors` read at this scrape (the jobs', from their shared folder)."""
    registry = REGISTRY
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    body = generate_latest(registry)
    if collectors:
        extra = CollectorRegistry(auto_describe=False)
        for collector in collectors:
            extra.register(collector)
        body += generate_latest(extra)
    return body, CONTENT_TYPE_LATEST
