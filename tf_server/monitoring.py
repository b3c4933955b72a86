"""``--monitoring_config_file`` and the Prometheus metrics TF Serving exports, with its names and format.

The config is TF Serving's ``MonitoringConfig`` text proto (``prometheus_config { enable: true path:
"..." }``, default path ``/monitoring/prometheus/metrics``); a file that does not parse stops the
server with TF Serving's ``Invalid protobuf file: '<path>'``. The page is served on the REST port,
as upstream, so it only exists with ``--rest_api_port``.

Metrics, named and labelled as TF Serving's ``servables/tensorflow/util.cc`` defines them and written
the way its ``PrometheusExporter`` writes them (``/`` becomes ``:``, so names start with ``:``; only
``# TYPE`` lines; 34 buckets ``le`` = 10 us * 1.8^i and ``+Inf``; values in microseconds):

* ``:tensorflow:serving:request_count{model_name, status}``: counter of requests by status code name
  (``OK``, ``NOT_FOUND`` ...). gRPC counts Predict, Classify and Regress (not metadata, status or
  MultiInference, as upstream); REST counts every request under ``/v1/``.
* ``:tensorflow:serving:request_latency{model_name, API, entrypoint}``: histogram of successful
  requests' wall time. ``API`` is ``Predict``/``Classify``/``Regress`` with ``entrypoint="GRPC"``,
  and the REST method (``predict``, ``classify``, ``regress``; empty for GET status and metadata)
  with ``entrypoint="REST"``, as TF Serving labels them.

Label values have backslash, double quote and line feed escaped, as the text format requires.
The series stay bounded whatever clients send: once ``ServingMetrics.bind_models`` has told it which
models are configured (``RestApi`` does), a request for any other name (a typo, a made-up or URL-
encoded name, a model not served) is counted under the fixed ``model_name=""``, the label the REST
requests that name no model (malformed paths, ``/v1/models``) have too; no served model can have
that name. TF Serving labels its ``request_count`` with the requested name as sent, but only for
requests that reach a model's handler; the one fixed label keeps the failures countable without a
series per name.

The values live in a prometheus-client ``CollectorRegistry`` of their own (``ServingMetrics.registry``,
for ``prometheus_client.generate_latest`` or tests). That library's own text format would rename the
counter (``..._total`` plus ``..._created`` series) and format buckets differently, so the HTTP page
is written here in TF Serving's format instead.
"""

from __future__ import annotations

import bisect
import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message, message_factory, text_format
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from tf_server.errors import ServingError

log = logging.getLogger("tf_server")

PROMETHEUS_PATH = "/monitoring/prometheus/metrics"  # PrometheusExporter::kPrometheusPath
REQUEST_COUNT = ":tensorflow:serving:request_count"
REQUEST_LATENCY = ":tensorflow:serving:request_latency"
UNKNOWN_MODEL = ""  # the model_name of requests for no model, or for one that is not configured


def _exponential_buckets(scale: float, growth: float, count: int) -> tuple[float, ...]:
    limits, bound = [], scale
    for _ in range(count):
        limits.append(bound)
        bound *= growth  # as TensorFlow computes them, so values on a boundary land where TF's do
    return tuple(limits)


# monitoring::Buckets::Exponential(10, 1.8, 33); TensorFlow appends a last bucket up to DBL_MAX (+Inf).
LATENCY_BUCKETS = _exponential_buckets(10.0, 1.8, 33)
# gRPC APIs whose requests TF Serving's PredictionServiceImpl counts and times.
_GRPC_COUNTED = frozenset({"Predict", "Classify", "Regress"})

_PROTO_FILE = "tensorflow_serving/config/monitoring_config.proto"
_FIELD = descriptor_pb2.FieldDescriptorProto
_OPTIONAL = _FIELD.LABEL_OPTIONAL


def _monitoring_config_class() -> type[message.Message]:
    """``tensorflow.serving.MonitoringConfig``: the tensorflow-serving-api wheel does not ship
    ``monitoring_config_pb2``, so the (two-message) file is declared here with upstream's names,
    numbers and types, which is all the text format depends on."""
    pool = descriptor_pool.Default()
    try:
        pool.FindFileByName(_PROTO_FILE)
    except KeyError:
        proto = descriptor_pb2.FileDescriptorProto(
            name=_PROTO_FILE, package="tensorflow.serving", syntax="proto3"
        )
        prometheus = proto.message_type.add(name="PrometheusConfig")
        prometheus.field.add(
            name="enable", number=1, type=_FIELD.TYPE_BOOL, label=_OPTIONAL, json_name="enable"
        )
        prometheus.field.add(
            name="path", number=2, type=_FIELD.TYPE_STRING, label=_OPTIONAL, json_name="path"
        )
        config = proto.message_type.add(name="MonitoringConfig")
        config.field.add(
            name="prometheus_config",
            number=1,
            type=_FIELD.TYPE_MESSAGE,
            label=_OPTIONAL,
            type_name=".tensorflow.serving.PrometheusConfig",
            json_name="prometheusConfig",
        )
        pool.Add(proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("tensorflow.serving.MonitoringConfig"))


MonitoringConfig = _monitoring_config_class()


@dataclass(frozen=True)
class PrometheusSettings:
    """What ``prometheus_config`` asks for."""

    enable: bool = False
    path: str = PROMETHEUS_PATH


def parse_monitoring_config(text: str, source: str = "<monitoring config>") -> PrometheusSettings:
    """Parse MonitoringConfig text; raise ServingError(INVALID_ARGUMENT) with TF Serving's message."""
    config = MonitoringConfig()
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as error:
        # TF Serving's protobuf logs the parser's complaint, then fails with the short message.
        log.error("Error parsing text-format tensorflow.serving.MonitoringConfig: %s", error)
        raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, f"Invalid protobuf file: '{source}'") from None
    prometheus = config.prometheus_config
    return PrometheusSettings(enable=prometheus.enable, path=prometheus.path or PROMETHEUS_PATH)


def read_monitoring_config(path: str | Path) -> PrometheusSettings:
    """``ParseProtoTextFile<MonitoringConfig>``: a missing file is NOT_FOUND, as TensorFlow reports it."""
    try:
        text = Path(path).read_text()
    except OSError as error:
        code = grpc.StatusCode.NOT_FOUND if isinstance(error, FileNotFoundError) else grpc.StatusCode.UNKNOWN
        raise ServingError(code, f"{path}; {error.strerror}") from None
    return parse_monitoring_config(text, str(path))


def _g(value: float) -> str:
    """``absl::StrCat(double)``: six significant digits, like printf's %g."""
    return f"{value:g}"


def _label_text(names: tuple[str, ...], values: tuple[str, ...]) -> str:
    escaped = (value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") for value in values)
    return ",".join(f'{name}="{value}"' for name, value in zip(names, escaped, strict=True))


class _Histogram:
    """One cell of a TensorFlow Sampler: counts per bucket (value < limit, as TF's Histogram counts)."""

    __slots__ = ("counts", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(LATENCY_BUCKETS) + 1)
        self.total = 0.0

    def add(self, value: float) -> None:
        self.counts[bisect.bisect_right(LATENCY_BUCKETS, value)] += 1
        self.total += value

    def cumulative(self) -> list[int]:
        running, out = 0, []
        for count in self.counts:
            running += count
            out.append(running)
        return out


class _Collector(Collector):
    """Hands the metrics to prometheus-client's registry as standard metric families."""

    def __init__(self, metrics: ServingMetrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        counts, latencies = self._metrics.snapshot()
        counter = CounterMetricFamily(
            REQUEST_COUNT, "The total number of requests.", labels=list(ServingMetrics.COUNT_LABELS)
        )
        for labels, value in sorted(counts.items()):
            counter.add_metric(list(labels), value)
        yield counter
        histogram = HistogramMetricFamily(
            REQUEST_LATENCY,
            "Distribution of wall time (in microseconds) for Tensorflow Serving request.",
            labels=list(ServingMetrics.LATENCY_LABELS),
        )
        limits = [*(_g(limit) for limit in LATENCY_BUCKETS), "+Inf"]
        for labels, cell in sorted(latencies.items()):
            histogram.add_metric(list(labels), list(zip(limits, cell.cumulative(), strict=True)), cell.total)
        yield histogram


class ServingMetrics:
    """TF Serving's request metrics, fed by ``ServingCore``'s ``observe`` (gRPC) and by the REST API."""

    COUNT_LABELS = ("model_name", "status")
    LATENCY_LABELS = ("model_name", "API", "entrypoint")

    def __init__(self, path: str = PROMETHEUS_PATH) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, str], int] = {}
        self._latency: dict[tuple[str, str, str], _Histogram] = {}
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Collector(self))
        self._served: Callable[[str], bool] | None = None

    def bind_models(self, served: Callable[[str], bool]) -> None:
        """``served(name)``: whether ``name`` is a configured model; other names are counted as ''."""
        self._served = served

    def _record(self, model: str, api: str, entrypoint: str, code: grpc.StatusCode, seconds: float) -> None:
        if model and self._served is not None:
            try:
                served = self._served(model)
            except RuntimeError:  # the model list changed while it was read (a config reload)
                served = False
            if not served:
                model = UNKNOWN_MODEL
        with self._lock:
            key = (model, code.name)
            self._counts[key] = self._counts.get(key, 0) + 1
            if code == grpc.StatusCode.OK:
                cell = self._latency.get((model, api, entrypoint))
                if cell is None:
                    cell = self._latency[(model, api, entrypoint)] = _Histogram()
                cell.add(float(int(seconds * 1e6)))  # whole microseconds, as Env::NowMicros differences

    def observe(self, model: str, api: str, entrypoint: str, code: grpc.StatusCode, seconds: float) -> None:
        """``ServingCore``'s hook. Counts what TF Serving's gRPC PredictionService counts; REST
        requests are counted once per HTTP request by ``record_rest`` instead (that includes the
        ones refused before the core is reached, such as malformed JSON)."""
        if entrypoint == "GRPC" and api in _GRPC_COUNTED:
            self._record(model, api, entrypoint, code, seconds)

    def record_rest(self, model: str, method: str, code: grpc.StatusCode, seconds: float) -> None:
        """One REST request under ``/v1/`` (``method``: ``predict``/``classify``/``regress`` or '')."""
        self._record(model, method, "REST", code, seconds)

    def snapshot(self) -> tuple[dict[tuple[str, str], int], dict[tuple[str, str, str], _Histogram]]:
        with self._lock:
            latency = {}
            for key, cell in self._latency.items():
                copy = _Histogram()
                copy.counts = list(cell.counts)
                copy.total = cell.total
                latency[key] = copy
            return dict(self._counts), latency

    def page(self) -> str:
        """The text ``PrometheusExporter::GeneratePage`` writes for these metrics."""
        counts, latencies = self.snapshot()
        lines = [f"# TYPE {REQUEST_COUNT} counter"]
        for labels, value in sorted(counts.items()):
            lines.append(f"{REQUEST_COUNT}{{{_label_text(self.COUNT_LABELS, labels)}}} {value}")
        lines.append(f"# TYPE {REQUEST_LATENCY} histogram")
        limits = [*(_g(limit) for limit in LATENCY_BUCKETS), "+Inf"]
        for labels, cell in sorted(latencies.items()):
            label_text = _label_text(self.LATENCY_LABELS, labels)
            cumulative = cell.cumulative()
            for limit, count in zip(limits, cumulative, strict=True):
                lines.append(f'{REQUEST_LATENCY}_bucket{{{label_text},le="{limit}"}} {count}')
            lines.append(f"{REQUEST_LATENCY}_sum{{{label_text}}} {_g(cell.total)}")
            lines.append(f"{REQUEST_LATENCY}_count{{{label_text}}} {cumulative[-1]}")
        return "\n".join(lines) + "\n"
