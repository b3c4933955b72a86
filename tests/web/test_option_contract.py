"""One declaration per request option: /swagger.json documents the bounds the server enforces, the
HTML form shows the same limits and defaults, and the command-line client checks the same values.

Each surface is asked as a client would ask it (the spec over HTTP, the form's HTML, the server
with real requests, the CLI's own argument check), and the bounds found are compared with each
other, not with a copy of the table.
"""

from __future__ import annotations

import io
from html.parser import HTMLParser
from typing import Any

import pytest
from flask import Flask

from tests.web.helpers import solid
from web import client as cli

PREDICT_ENDPOINTS = ("predict", "predict_image", "predict_batch")
NUMERIC = ("min_score", "max_detections", "iou_threshold", "version")


def swagger_params(app: Flask) -> dict[str, dict[str, dict[str, Any]]]:
    spec = app.test_client().get("/swagger.json").get_json()
    return {
        endpoint: {p["name"]: p for p in spec["paths"][f"/models/{{model}}/{endpoint}"]["post"]["parameters"]}
        for endpoint in PREDICT_ENDPOINTS
    }


def edges(param: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(values just inside the documented bounds, values just outside), as query text."""
    step = 1 if param["type"] == "integer" else 0.001
    inside, outside = [], []
    if "minimum" in param:
        low = param["minimum"]
        if param.get("exclusiveMinimum"):
            inside.append(low + step)
            outside.append(low)
        else:
            inside.append(low)
            outside.append(low - step)
    if "maximum" in param:
        inside.append(param["maximum"])
        outside.append(param["maximum"] + step)
    return [f"{v:g}" for v in inside], [f"{v:g}" for v in outside]


def test_every_numeric_option_is_documented_with_its_bounds(offline_app: Flask) -> None:
    for endpoint, params in swagger_params(offline_app).items():
        for name in NUMERIC:
            param = params[name]
            assert param["in"] == "query" and param["type"] in ("number", "integer"), (endpoint, param)
            assert "minimum" in param, (endpoint, name)
            assert name == "version" or "maximum" in param, (endpoint, name)
            assert "0..1" not in param["description"] and "1..1000" not in param["description"]
        assert params["min_score"]["default"] == 0.5 and params["max_detections"]["default"] == 100
        assert params["store"] == {**params["store"], "type": "boolean", "default": False}
    params = swagger_params(offline_app)
    assert params["predict"]["picture"]["enum"] == ["jpeg", "png"]
    assert params["predict_image"]["format"]["enum"] == ["jpeg", "png"]
    assert params["predict_image"]["format"]["default"] == "jpeg"


@pytest.mark.parametrize("name", NUMERIC)
def test_the_server_enforces_exactly_the_documented_bounds(offline_app: Flask, name: str) -> None:
    """Values at the documented bounds pass the option check (the request then fails on the model
    server, which is down: 503); values just outside are a 400 naming the option."""
    inside, outside = edges(swagger_params(offline_app)["predict"][name])
    client = offline_app.test_client()

    def ask(value: str):
        data = {"image": (io.BytesIO(solid(32, 24)), "a.jpg")}
        return client.post(f"/api/v1/models/shapes/predict?{name}={value}", data=data)

    for value in inside:
        answer = ask(value)
        assert answer.status_code == 503, (value, answer.get_json())
    for value in outside:
        answer = ask(value)
        assert answer.status_code == 400 and name in answer.get_json()["error"]["message"], value


class _Inputs(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.inputs: dict[str, dict[str, str | None]] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "input" and found.get("name"):
            self.inputs[str(found["name"])] = found


def test_the_form_shows_the_documented_limits_and_defaults(offline_app: Flask) -> None:
    parser = _Inputs()
    parser.feed(offline_app.test_client().get("/").get_data(as_text=True))
    params = swagger_params(offline_app)["predict"]
    for name in NUMERIC:
        field, param = parser.inputs[name], params[name]
        low = param["minimum"] + (float(field["step"]) if param.get("exclusiveMinimum") else 0)
        assert float(field["min"]) == pytest.approx(low), name
        assert field.get("max") is None if "maximum" not in param else float(field["max"]) == param["maximum"]
        assert (field["value"] or None) == (None if "default" not in param else f"{param['default']:g}"), name


@pytest.mark.parametrize("name", NUMERIC)
def test_the_command_line_client_checks_the_documented_bounds(offline_app: Flask, name: str) -> None:
    inside, outside = edges(swagger_params(offline_app)["predict"][name])
    flag = "--" + name.replace("_", "-")

    def problem(value: str) -> str | None:
        return cli.option_problem(cli.build_parser().parse_args(["x.jpg", "--model", "m", flag, value]))

    assert [problem(v) for v in inside] == [None] * len(inside)
    assert all(problem(v) and flag in problem(v) for v in outside), outside
