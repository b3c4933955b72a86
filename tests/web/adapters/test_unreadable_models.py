"""Signatures the gateway must not guess at: one two families could read, one no family knows.
They are listed with a `problem` naming the candidates and the setting that decides, never answer
200, and gateway.toml's `family` settles them."""

from __future__ import annotations

import requests

from tests.support.forms import browser_session
from tests.web.adapters.endpoints import FamilyGateway, check_bright_box, post_to_app, scene

IMAGE = scene(640, 400, (100, 60, 300, 260))


def test_a_signature_two_families_could_read_is_refused_on_every_path(family_gateway: FamilyGateway) -> None:
    detail = family_gateway.detail("ambiguous")
    assert detail["kind"] == "unknown" and detail["family"] is None
    assert detail["candidates"] == ["tf_od_api", "keras_hub"]
    problem = detail["problem"]
    assert 'set family = "tf_od_api" or family = "keras_hub" in' in problem
    assert problem.endswith("ambiguous/gateway.toml")
    for endpoint in ("predict", "predict_image", "predict_batch"):
        response = family_gateway.post("ambiguous", endpoint, [("a.png", IMAGE)])
        assert response.status_code == 422, endpoint
        assert (
            response.json()["error"]["message"]
            == f"model 'ambiguous' cannot be used through the gateway: {problem}"
        )
    session, token = browser_session(family_gateway.url)
    form = session.post(
        f"{family_gateway.url}/",
        data={"model": "ambiguous", "csrf_token": token},
        files={"image": ("a.png", IMAGE)},
        timeout=60,
    )
    assert form.status_code == 422 and "more than one model family" in form.text, form.text[-3000:]
    listed = {
        m["name"]: m for m in requests.get(f"{family_gateway.url}/api/v1/models", timeout=60).json()["models"]
    }
    assert listed["ambiguous"]["kind"] == "unknown" and listed["unknown"]["kind"] == "unknown"


def test_a_signature_no_family_knows_is_refused_naming_every_family(family_gateway: FamilyGateway) -> None:
    detail = family_gateway.detail("unknown")
    problem = detail["problem"]
    assert problem.startswith("no model family recognizes this signature")
    assert "heatmaps float32 [1,64,48,17]" in problem
    for family in ("tf_od_api", "model_garden", "keras_hub", "yolo", "yolo_nms", "classifier"):
        assert f"{family}: " in problem
    assert detail["candidates"] == []
    response = family_gateway.predict("unknown", IMAGE)
    assert response.status_code == 422 and "no model family recognizes" in response.json()["error"]["message"]


def post(client, model: str, query: str = ""):
    return post_to_app(client, model, IMAGE, query)


def test_family_in_gateway_toml_settles_an_ambiguous_signature(settings_app) -> None:
    client, write = settings_app
    write("ambiguous", 'family = "keras_hub"\n')
    unsettled = post(client, "ambiguous")  # a KerasHub detector: whether it converts pixels is open
    assert unsettled.status_code == 422
    assert 'preprocessing = "gateway"' in unsettled.get_json()["error"]["message"]
    write("ambiguous", 'family = "keras_hub"\npreprocessing = "gateway"\n')
    response = post(client, "ambiguous")
    assert response.status_code == 200, response.get_json()
    check_bright_box(response.get_json(), (100, 60, 300, 260), "circle")
    detail = client.get("/api/v1/models/ambiguous").get_json()
    assert detail["family"] == "keras_hub" and detail["problem"] is None
    assert detail["settings"]["values"] == {"family": "keras_hub", "preprocessing": "gateway"}


def test_a_family_that_does_not_fit_is_explained(settings_app) -> None:
    client, write = settings_app
    write("unknown", 'family = "yolo"\n')
    message = post(client, "unknown").get_json()["error"]["message"]
    assert 'sets family = "yolo", but this signature is not one' in message
    assert "one float [batch, rows, columns] output" in message
