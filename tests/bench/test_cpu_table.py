"""bench.cpu_table: the stage counter read from /metrics, and CPU per request from two readings."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Counter, generate_latest

from bench import cpu_table

DATA = Path(__file__).parent / "data"


def test_reads_a_real_gateway_metrics_page() -> None:
    page = (DATA / "gateway_metrics.txt").read_text()
    stages = cpu_table.stage_cpu_s(page, "shapes_jpeg")
    assert stages is not None
    assert set(stages) >= {"read", "validate", "decode", "predict", "postprocess", "respond"}
    assert all(value >= 0 for value in stages.values())
    assert cpu_table.stage_cpu_s(page, "no_such_model") == {}  # the metric is there, not for it


def test_a_page_without_the_counter_is_none_not_an_error() -> None:
    registry = CollectorRegistry()
    Counter("gateway_model_requests", "other", ["model", "outcome"], registry=registry).labels(
        "shapes", "ok").inc()
    assert cpu_table.stage_cpu_s(generate_latest(registry).decode(), "shapes") is None
    assert cpu_table.stage_cpu_s("", "shapes") is None


def test_prometheus_client_exposition_any_label_order_and_escapes() -> None:
    registry = CollectorRegistry()
    counter = Counter("gateway_stage_cpu_seconds", "doc", ["stage", "model"], registry=registry)
    counter.labels(stage="decode", model="shapes").inc(1.25)
    counter.labels(stage="predict", model="shapes").inc(0.5)
    counter.labels(stage="decode", model='we"ird\\name').inc(3.0)
    counter.labels(stage="decode", model="shapes_jpeg").inc(7.0)
    page = generate_latest(registry).decode()
    assert cpu_table.stage_cpu_s(page, "shapes") == {"decode": 1.25, "predict": 0.5}
    assert cpu_table.stage_cpu_s(page, 'we"ird\\name') == {"decode": 3.0}
    # the _created samples of the same family are not the counter
    assert all(name == "gateway_stage_cpu_seconds_total"
               for name in {line.split("{")[0] for line in page.splitlines()
                            if line.startswith("gateway_stage_cpu_seconds_total")})


def test_breakdown_per_request() -> None:
    # two workers used 0.70 s for 200 requests; the stage counter grew by 0.12 / 0.20 / 0.08 s
    before = {101: 10.00, 102: 4.00}
    after = {101: 10.50, 102: 4.20}
    stages_before = {"decode": 1.00, "predict": 2.00, "render": 5.0}
    stages_after = {"decode": 1.12, "predict": 2.20, "render": 5.0, "postprocess": 0.08}
    figures = cpu_table.breakdown(200, before, after, stages_before, stages_after)
    assert figures.total_ms == pytest.approx(3.5)
    assert figures.stages_ms == pytest.approx(
        {"decode": 0.6, "predict": 1.0, "postprocess": 0.4, "render": 0.0})
    assert list(figures.stages_ms) == ["decode", "predict", "postprocess", "render"]  # request order
    assert figures.other_ms == pytest.approx(1.5)
    assert figures.to_dict()["other_ms"] == 1.5


def test_without_the_counter_other_is_the_total() -> None:
    figures = cpu_table.breakdown(20, {1: 1.0}, {1: 1.06}, None, None)
    assert figures.stages_ms is None
    assert figures.total_ms == pytest.approx(3.0)
    assert figures.other_ms == pytest.approx(3.0)
    assert figures.to_dict()["stages_ms"] is None


def test_a_restarted_worker_is_left_out() -> None:
    figures = cpu_table.breakdown(10, {1: 1.0, 2: 5.0}, {1: 1.02, 3: 0.5}, None, None)
    assert figures.total_ms == pytest.approx(2.0)


def test_a_total_stage_label_is_not_added_to_the_stages() -> None:
    figures = cpu_table.breakdown(10, {1: 0.0}, {1: 0.05}, {}, {"decode": 0.01, "total": 0.04})
    assert figures.stages_ms == pytest.approx({"decode": 1.0})
    assert figures.whole_request_ms == pytest.approx({"total": 4.0})
    assert figures.other_ms == pytest.approx(4.0)


def test_no_requests_is_refused() -> None:
    with pytest.raises(ValueError):
        cpu_table.breakdown(0, {}, {}, None, None)


def test_top_phases_names_the_largest_parts() -> None:
    column = {"stages_ms": {"decode": 1.1, "predict": 0.6, "read": 0.1}, "other_ms": 1.4}
    assert cpu_table.top_phases(column) == "other 1.40, decode 1.10, predict 0.60"
    assert cpu_table.top_phases({"stages_ms": None, "other_ms": 2.0}) == "other 2.00"
