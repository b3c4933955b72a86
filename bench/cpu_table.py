"""CPU per request of the gateway's workers, split into the gateway's own stages.

Two readings before and after N sequential requests of one workload:

* the CPU time of every gunicorn worker process (utime + stime from /proc/<pid>/stat: all of its
  threads, live and ended, so gunicorn's and gRPC's own threads and the allocator count too);
* the gateway's Prometheus counter ``gateway_stage_cpu_seconds_total{model,stage}`` from /metrics
  (summed over workers in multiprocess mode): the thread CPU time (``time.thread_time``) the
  request's own thread spent in each stage.

Per request: each stage's delta / N, "other" = the workers' total delta / N minus the stages
(what no stage sees: gunicorn, Flask's routing, gRPC's threads, the allocator). Stage names are
whatever labels the gateway uses. A gateway without the counter yields total only (other = total).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

STAGE_CPU_METRIC = "gateway_stage_cpu_seconds_total"
# Stages in request order when the gateway uses these names; any other label is listed after them.
STAGE_ORDER = ("read", "parse", "validate", "decode", "resize", "preprocess", "request", "predict",
               "postprocess", "respond", "serialize", "render", "encode")
# A label the gateway may add for the whole request: shown apart, never added to the stages.
WHOLE_REQUEST_STAGES = ("total",)

_SAMPLE = re.compile(
    r"^(?P<name>[A-Za-z_:][A-Za-z0-9_:]*)(?:\{(?P<labels>.*)\})?\s+(?P<value>\S+)(?:\s+\S+)?$")
_LABEL = re.compile(r'\s*([A-Za-z_][A-Za-z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*,?')


def _unescape(value: str) -> str:
    return re.sub(r"\\(.)", lambda m: {"n": "\n"}.get(m.group(1), m.group(1)), value)


def parse_samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    """Every sample of metric `name` in a Prometheus text exposition: (labels, value)."""
    samples = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or not line.startswith(name):
            continue
        match = _SAMPLE.match(line)
        if match is None or match.group("name") != name:
            continue
        labels = {key: _unescape(value) for key, value in _LABEL.findall(match.group("labels") or "")}
        try:
            value = float(match.group("value"))
        except ValueError:
            continue
        samples.append((labels, value))
    return samples


def stage_cpu_s(text: str, model: str, metric: str = STAGE_CPU_METRIC) -> dict[str, float] | None:
    """{stage: CPU seconds so far} of `model` from a /metrics page; None when the metric is absent."""
    samples = parse_samples(text, metric)
    if not samples:
        return None
    stages: dict[str, float] = {}
    for labels, value in samples:
        if labels.get("model") == model and "stage" in labels:
            stages[labels["stage"]] = stages.get(labels["stage"], 0.0) + value
    return stages


def order_stages(names: set[str] | list[str]) -> list[str]:
    known = [s for s in STAGE_ORDER if s in names]
    return known + sorted(set(names) - set(known))


@dataclass
class CpuBreakdown:
    """CPU milliseconds per request of one workload (a column of the table)."""

    requests: int
    total_ms: float
    stages_ms: dict[str, float] | None  # None: the gateway has no stage counter
    whole_request_ms: dict[str, float] = field(default_factory=dict)  # e.g. a "total" stage label

    @property
    def other_ms(self) -> float:
        return self.total_ms - sum((self.stages_ms or {}).values())

    def to_dict(self) -> dict:
        return {"requests": self.requests, "total_ms": round(self.total_ms, 3),
                "stages_ms": None if self.stages_ms is None else
                {k: round(v, 3) for k, v in self.stages_ms.items()},
                "other_ms": round(self.other_ms, 3),
                "whole_request_stage_ms": {k: round(v, 3) for k, v in self.whole_request_ms.items()}}


def breakdown(requests: int, workers_before: dict[int, float], workers_after: dict[int, float],
              stages_before: dict[str, float] | None,
              stages_after: dict[str, float] | None) -> CpuBreakdown:
    """The per-request figures from the two readings (worker CPU seconds by pid, stage counters).

    Workers are matched by pid: one that is not in both readings (restarted) is left out, and the
    caller reports the change. A stage that first appears after the run counts from zero.
    """
    if requests <= 0:
        raise ValueError("requests must be positive")
    common = workers_before.keys() & workers_after.keys()
    total_s = sum(workers_after[pid] - workers_before[pid] for pid in common)
    stages_ms: dict[str, float] | None = None
    whole: dict[str, float] = {}
    if stages_after is not None:
        before = stages_before or {}
        stages_ms = {}
        for stage in order_stages(set(stages_after)):
            delta_ms = (stages_after[stage] - before.get(stage, 0.0)) * 1000.0 / requests
            if stage in WHOLE_REQUEST_STAGES:
                whole[stage] = delta_ms
            else:
                stages_ms[stage] = delta_ms
    return CpuBreakdown(requests, total_s * 1000.0 / requests, stages_ms, whole)


def top_phases(column: dict, count: int = 3) -> str:
    """The largest parts of a column ("other 1.4, decode 1.1, predict 0.6"): where a miss comes from."""
    parts = dict(column.get("stages_ms") or {})
    parts["other"] = column.get("other_ms", 0.0)
    ranked = sorted(parts.items(), key=lambda item: item[1], reverse=True)[:count]
    return ", ".join(f"{name} {value:.2f}" for name, value in ranked)
