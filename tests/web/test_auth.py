"""API_KEYS protect the whole app: keys for programs, a sign-in page and a signed session for
browsers, METRICS_TOKEN for scrapers, CSRF tokens and same-origin checks on every form."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
from flask import Flask

from tests.support.forms import flask_csrf_token
from tests.support.model_server import REPO_ROOT
from tests.web.helpers import solid

KEYS = "key-one, key-two"
SECRET = "a-long-random-session-signing-secret"
METRICS = "scraper-token-123"
LOGIN_NEXT = re.compile(r"/login\?next=")


@pytest.fixture()
def keyed(make_app, offline_app: Flask) -> Flask:
    """Keys on, the model server down (access control never needs it)."""
    config = offline_app.extensions["gateway"].settings.model_config_file
    return make_app(MODEL_CONFIG_FILE=config, API_KEYS=KEYS, SECRET_KEY=SECRET, METRICS_TOKEN=METRICS)


@pytest.fixture()
def keyed_live(make_app, demo_model_server: str) -> Flask:
    """Keys on, in front of the demo models."""
    return make_app(
        TF_SERVING_ADDRESS=demo_model_server,
        MODEL_CONFIG_FILE=REPO_ROOT / "tf_server" / "models.config",
        API_KEYS=KEYS,
        SECRET_KEY=SECRET,
    )


def sign_in(client, key: str = "key-two", next_path: str = "/") -> object:
    token = flask_csrf_token(client, "/login")
    return client.post("/login", data={"key": key, "next": next_path, "csrf_token": token})


def upload_form(client, headers: dict | None = None, **fields):
    data = {"model": "shapes", "min_score": "0.5", "image": (io.BytesIO(solid(160, 120)), "p.jpg"), **fields}
    return client.post("/", data=data, content_type="multipart/form-data", headers=headers or {})


HTML_PAGES = ("/", "/results", "/results/20260101T000000000000Z-0123456789abcdef")
API_ROUTES = (
    "/api/v1/models",
    "/api/v1/models/shapes",
    "/api/v1/models/shapes/labels",
    "/swagger.json",
    "/docs",
)


def test_without_a_key_only_health_readiness_and_sign_in_answer(keyed: Flask) -> None:
    client = keyed.test_client()
    assert client.get("/healthz").status_code == 200
    ready = client.get("/readyz")
    assert ready.status_code == 503 and ready.get_json() == {"status": "not ready"}  # no internals
    assert client.get("/login").status_code == 200
    assert client.get("/assets/style.css").status_code == 200
    for path in HTML_PAGES:
        response = client.get(path)
        assert response.status_code == 303 and LOGIN_NEXT.search(response.headers["Location"]), path
    for path in (*API_ROUTES, "/metrics", "/results/x.json"):
        response = client.get(path)
        assert response.status_code == 401, path
        if path != "/docs":
            assert response.get_json()["error"]["code"] == 401, path
    form = upload_form(client, csrf_token=flask_csrf_token(client, "/login"))
    assert form.status_code == 401 and 'id="sign-in-link"' in form.get_data(as_text=True)
    predict = client.post("/api/v1/models/shapes/predict", data={"image": (io.BytesIO(solid(8, 8)), "a.jpg")})
    assert predict.status_code == 401 and predict.headers["WWW-Authenticate"].startswith("Bearer")


OPEN_ENDPOINTS = {"health.healthz", "health.readyz", "auth.login", "views.static", "restx_doc.static"}
# A value for each URL variable the app's routes use, so every rule can be called.
SAMPLE_ARGS = {"model": "shapes", "result_id": "20260101T000000000000Z-0123456789abcdef",
               "filename": "style.css", "version": "1", "label": "stable"}


def test_every_route_of_the_app_needs_a_key(keyed: Flask) -> None:
    """Walks the URL map itself, so a route added later is covered without editing this test."""
    client = keyed.test_client()
    checked = 0
    for rule in keyed.url_map.iter_rules():
        if rule.endpoint in OPEN_ENDPOINTS:
            continue
        path = rule.build({arg: SAMPLE_ARGS.get(arg, "x") for arg in rule.arguments}, append_unknown=False)[1]
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            response = client.open(path, method=method)
            denied = response.status_code in (401, 403) or (
                response.status_code == 303 and LOGIN_NEXT.search(response.headers["Location"])
            )
            assert denied, f"{method} {path} ({rule.endpoint}) answered {response.status_code} without a key"
            checked += 1
    assert checked >= 15  # the API, the pages, the stored files, metrics, docs


@pytest.mark.parametrize("header", ["Authorization", "X-API-Key"])
def test_a_key_opens_every_route(keyed: Flask, header: str) -> None:
    client = keyed.test_client()
    value = "Bearer key-one" if header == "Authorization" else "key-one"
    for path in ("/api/v1/models/shapes/labels", "/swagger.json", "/docs", "/metrics", "/results"):
        assert client.get(path, headers={header: value}).status_code == 200, path
    ready = client.get("/readyz", headers={header: value}).get_json()
    assert "model_server" in ready and "reason" in ready
    wrong = client.get("/api/v1/models/shapes/labels", headers={header: value.replace("one", "three")})
    assert wrong.status_code == 401 and "not valid" in wrong.get_json()["error"]["message"]


def test_the_metrics_token_opens_metrics_only(keyed: Flask) -> None:
    client = keyed.test_client()
    bearer = {"Authorization": f"Bearer {METRICS}"}
    assert client.get("/metrics", headers=bearer).status_code == 200
    assert client.get("/api/v1/models/shapes/labels", headers=bearer).status_code == 401
    assert client.get("/results", headers=bearer).status_code == 401


def test_signing_in_sets_a_hardened_cookie_and_opens_the_pages(keyed: Flask) -> None:
    client = keyed.test_client()
    wrong = sign_in(client, key="key-three")
    assert wrong.status_code == 401 and 'id="login-error"' in wrong.get_data(as_text=True)
    response = sign_in(client, next_path="/results")
    assert response.status_code == 303 and response.headers["Location"] == "/results"
    cookie = next(c for c in response.headers.getlist("Set-Cookie") if c.startswith("gateway="))
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" not in cookie
    assert "key-two" not in cookie  # a fingerprint is stored, never the key
    for path in ("/", "/results", "/api/v1/models/shapes/labels", "/docs", "/swagger.json", "/metrics"):
        assert client.get(path).status_code == 200, path
    # Reading the API works from the session; changing anything through it takes a key header.
    predict = client.post("/api/v1/models/shapes/predict", data={"image": (io.BytesIO(solid(8, 8)), "a.jpg")})
    assert predict.status_code == 401 and "takes a key" in predict.get_json()["error"]["message"]
    # Signing out ends it.
    out = client.post("/logout", data={"csrf_token": flask_csrf_token(client)})
    assert out.status_code == 303 and out.headers["Location"] == "/login"
    assert client.get("/results").status_code == 303


def test_the_cookie_is_secure_behind_an_https_proxy(make_app, offline_app: Flask) -> None:
    config = offline_app.extensions["gateway"].settings.model_config_file
    app = make_app(MODEL_CONFIG_FILE=config, API_KEYS=KEYS, SECRET_KEY=SECRET, TRUSTED_PROXIES=1)
    client = app.test_client()
    https = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "gateway.example"}
    page = client.get("/login", headers=https)
    assert "Secure" in page.headers["Set-Cookie"]  # the CSRF cookie
    token = client.get_cookie("gateway_csrf").value
    response = client.post("/login", data={"key": "key-one", "csrf_token": token}, headers=https)
    session_cookie = next(c for c in response.headers.getlist("Set-Cookie") if c.startswith("gateway="))
    assert "Secure" in session_cookie


def test_revoking_a_key_ends_its_sessions(make_app, offline_app: Flask) -> None:
    config = offline_app.extensions["gateway"].settings.model_config_file
    first = make_app(MODEL_CONFIG_FILE=config, API_KEYS=KEYS, SECRET_KEY=SECRET)
    client = first.test_client()
    sign_in(client, key="key-two")
    cookie = client.get_cookie("gateway").value
    assert client.get("/results").status_code == 200
    second = make_app(MODEL_CONFIG_FILE=config, API_KEYS="key-one", SECRET_KEY=SECRET).test_client()
    second.set_cookie("gateway", cookie)
    assert second.get("/results").status_code == 303


@pytest.mark.parametrize("target", ["//evil.example/x", "https://evil.example/", "/\\evil.example"])
def test_sign_in_never_redirects_off_site(keyed: Flask, target: str) -> None:
    response = sign_in(keyed.test_client(), next_path=target)
    assert response.status_code == 303 and response.headers["Location"] == "/"


def test_the_form_works_after_sign_in_and_refuses_cross_site_posts(keyed_live: Flask, tmp_path: Path) -> None:
    client = keyed_live.test_client()
    sign_in(client)
    token = flask_csrf_token(client, "/")
    stored = upload_form(client, csrf_token=token)
    assert stored.status_code == 303, stored.get_data(as_text=True)[-500:]
    result = stored.headers["Location"]
    assert client.get(result).status_code == 200
    original = client.get(f"{result}/original")
    assert (
        "private" in original.headers["Cache-Control"] and "public" not in original.headers["Cache-Control"]
    )
    # Another site's page posting the same form (the browser sends its Origin): refused.
    evil = upload_form(client, csrf_token=token, headers={"Origin": "https://evil.example"})
    assert evil.status_code == 403 and "another site" in evil.get_data(as_text=True)
    assert upload_form(client).status_code == 403  # no token
    assert upload_form(client, csrf_token="x" * 43).status_code == 403  # not this browser's token
    folder = Path(keyed_live.extensions["gateway"].settings.upload_folder)
    assert len(list(folder.iterdir())) == 1  # only the first, signed-in, same-site upload was stored


def test_keys_off_the_form_still_needs_its_token(offline_app: Flask) -> None:
    client = offline_app.test_client()
    assert upload_form(client).status_code == 403
    cross = upload_form(
        client, csrf_token=flask_csrf_token(client), headers={"Origin": "http://evil.example"}
    )
    assert cross.status_code == 403
    same = upload_form(client, csrf_token=flask_csrf_token(client), headers={"Origin": "http://localhost"})
    assert same.status_code == 503  # accepted; the model server is down in this app
