"""Browser hardening on every response, pages without inline code (so the CSP needs no
'unsafe-inline'), and metric labels that made-up methods and paths cannot multiply."""

from __future__ import annotations

import re

import pytest
from flask import Flask

from tests.web.helpers import solid
from web.http.security_headers import CONTENT_SECURITY_POLICY

INLINE_SCRIPT = re.compile(r"<script(?![^>]*\bsrc=)[^>]*>", re.IGNORECASE)
INLINE_STYLE = re.compile(r"<style\b|\sstyle=", re.IGNORECASE)
PATHS = (
    "/",
    "/results",
    "/login",
    "/docs",
    "/swagger.json",
    "/api/v1/models/shapes/labels",
    "/healthz",
    "/no/such/page",
    "/api/v1/nope",
    "/assets/style.css",
)


@pytest.mark.parametrize("path", PATHS)
def test_every_response_carries_the_headers(offline_app: Flask, path: str) -> None:
    response = offline_app.test_client().get(path)
    headers = response.headers
    assert headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
    assert "unsafe-inline" not in CONTENT_SECURITY_POLICY and "unsafe-eval" not in CONTENT_SECURITY_POLICY
    assert "frame-ancestors 'none'" in CONTENT_SECURITY_POLICY
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["X-Frame-Options"] == "DENY"
    assert headers["Referrer-Policy"] == "same-origin"


def test_pages_have_no_inline_script_or_style(offline_app: Flask) -> None:
    client = offline_app.test_client()
    store = offline_app.extensions["gateway"].store
    detections = {
        "model": {"name": "shapes", "version": 1},
        "image": {"width": 64, "height": 48},
        "detections": [
            {
                "label": "circle",
                "class_id": 1,
                "score": 0.9,
                "box": {"xmin": 1, "ymin": 2, "xmax": 30, "ymax": 40},
            }
        ],
        "timings_ms": {"total": 1.0},
    }
    classes = {
        "model": {"name": "digits", "version": 1},
        "image": {"width": 64, "height": 48},
        "classes": [{"label": "7", "class_id": 7, "score": 0.9}],
        "timings_ms": {"total": 1.0},
    }
    ids = [store.save(solid(64, 48), "jpg", solid(64, 48), "jpg", p) for p in (detections, classes)]
    pages = {
        path: client.get(path)
        for path in ("/", "/results", "/live", "/docs", "/no/such", *(f"/results/{i}" for i in ids))
    }
    for path, response in pages.items():
        html = response.get_data(as_text=True)
        assert "<html" in html.lower(), path
        assert not INLINE_SCRIPT.search(html), (path, INLINE_SCRIPT.search(html).group(0))
        assert not INLINE_STYLE.search(html), (path, INLINE_STYLE.search(html).group(0))
    assert "<meter" in pages[f"/results/{ids[0]}"].get_data(as_text=True)


def test_stored_files_keep_their_stricter_policy(offline_app: Flask) -> None:
    store = offline_app.extensions["gateway"].store
    prediction = {
        "model": {"name": "shapes", "version": 1},
        "image": {"width": 8, "height": 8},
        "detections": [],
        "timings_ms": {},
    }
    result_id = store.save(solid(8, 8), "jpg", solid(8, 8), "jpg", prediction)
    response = offline_app.test_client().get(f"/results/{result_id}/original")
    assert response.headers["Content-Security-Policy"] == "default-src 'none'"
    assert "private" in response.headers["Cache-Control"]


def _request_series(client) -> list[str]:
    """The label sets of gateway_http_requests_total (without their values)."""
    text = client.get("/metrics").get_data(as_text=True)
    prefix = "gateway_http_requests_total{"
    return [line.rsplit(" ", 1)[0] for line in text.splitlines() if line.startswith(prefix)]


def test_made_up_methods_and_paths_do_not_create_metric_labels(offline_app: Flask) -> None:
    client = offline_app.test_client()

    def made_up_requests(start: int) -> None:
        for i in range(start, start + 30):
            client.open(f"/random/path/{i}", method=f"BREW{i}")
            client.get(f"/another/{i}")

    made_up_requests(0)
    series = _request_series(client)
    methods = {re.search(r'method="([^"]*)"', line).group(1) for line in series}
    routes = {re.search(r'route="([^"]*)"', line).group(1) for line in series}
    assert not any(m.startswith("BREW") for m in methods) and "<other>" in methods
    assert not any(r.startswith(("/random", "/another")) for r in routes) and "<unmatched>" in routes
    made_up_requests(30)  # 60 more new methods and paths: not one new series for them

    def collapsed(lines: list[str]) -> set[str]:
        return {line for line in lines if "<unmatched>" in line or "<other>" in line}

    assert collapsed(_request_series(client)) == collapsed(series)
