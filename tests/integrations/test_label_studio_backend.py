"""The Label Studio ML backend's parts: the labeling config, label mapping, regions, fetching pictures
(allow-list, link-local and metadata addresses, Label Studio's two kinds of key), access, and the
protocol's answers. A small local HTTP server plays Label Studio's file and token endpoints here; the
real Label Studio is tests/integrations/test_label_studio_live.py."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from flask import Flask
from PIL import Image, ImageDraw

from demo.synthetic import encode_jpeg, generate_image
from tests.support.model_server import REPO_ROOT
from web.domain import Box, Detection, Mask, Prediction
from web.errors import SourceNotAllowed, SourceUnavailable
from web.integrations.label_studio.label_config import LabelConfig, LabelConfigError, LabelMatcher
from web.integrations.label_studio.pictures import PictureFetcher, check_address, is_jwt
from web.integrations.label_studio.regions import mask_polygon, prediction_result
from web.jobs.exporters.label_studio import brush_rle_to_mask

KEY = "backend-test-key-0123456789"
CONFIG = """<View>
  <Image name="img" value="$picture"/>
  <RectangleLabels name="boxes" toName="img">
    <Label value="circle"/><Label value="Box" alias="sq" predicted_values="square,cube"/>
  </RectangleLabels>
  <PolygonLabels name="outline" toName="img"><Label value="CIRCLE"/></PolygonLabels>
  <BrushLabels name="paint" toName="img"><Label value="Circle"/><Label value="tri"/></BrushLabels>
  <Choices name="kind" toName="img"><Choice value="seven"/></Choices>
  <TextArea name="note" toName="img"/>
</View>"""


# -- the labeling config ---------------------------------------------------------------------------------


def test_the_config_names_its_picture_and_controls() -> None:
    config = LabelConfig.parse(CONFIG)
    assert (config.image_name, config.data_key) == ("img", "picture")
    assert [(c.tag, c.name, c.to_name) for c in config.controls] == [
        ("rectanglelabels", "boxes", "img"),
        ("polygonlabels", "outline", "img"),
        ("brushlabels", "paint", "img"),
        ("choices", "kind", "img"),
    ]
    box = config.controls[0].labels[1]
    assert (box.value, box.alias, box.predicted_values) == ("Box", "sq", ("square", "cube"))


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("", "label_config is missing"),
        ("<View><Image", "not well-formed"),
        ('<View><Text name="t" value="$text"/></View>', "no <Image"),
        ('<View><Image name="i" value="$image"/><TextArea name="n" toName="i"/></View>', "RectangleLabels"),
        ('<View><Image name="i" value="image"/><Choices name="c" toName="i"/></View>', 'value="$<key>"'),
        ('<!DOCTYPE v [<!ENTITY a "aaaa">]><View><Image name="i" value="$i"/></View>', "DOCTYPE"),
        ('<!DOCTYPE v SYSTEM "file:///etc/passwd"><View/>', "DOCTYPE"),
    ],
)
def test_a_config_the_gateway_cannot_use_is_refused_with_what_to_fix(text: str, says: str) -> None:
    with pytest.raises(LabelConfigError) as caught:
        LabelConfig.parse(text)
    assert says in caught.value.message and caught.value.status == 400


def test_entity_expansion_is_never_attempted() -> None:
    bomb = (
        '<!DOCTYPE l [<!ENTITY a "' + "x" * 100 + '"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;">]><View>&b;</View>'
    )
    with pytest.raises(LabelConfigError, match="DOCTYPE"):
        LabelConfig.parse(bomb)


def test_labels_match_by_name_ignoring_case_then_alias_predicted_values_and_the_mapping() -> None:
    config = LabelConfig.parse(CONFIG)
    boxes, outline, paint, kind = config.controls
    plain = LabelMatcher()
    assert plain.match("Circle", boxes) == "circle" and plain.match("circle", outline) == "CIRCLE"
    assert plain.match("SQ", boxes) == "Box" and plain.match("Cube", boxes) == "Box"
    assert plain.match("Triangle", boxes) is None  # no counterpart: dropped
    mapped = LabelMatcher.of([("Triangle", "TRI"), ("Circle", "Box")])
    assert mapped.match("triangle", paint) == "tri"
    assert mapped.match("Circle", boxes) == "Box"  # the mapping wins over the same name
    assert mapped.match("Circle", paint) == "Circle"  # where its target is missing, the name still counts


# -- regions ------------------------------------------------------------------------------------------


def disc_mask(size: tuple[int, int], cx: int, cy: int, r: int) -> Mask:
    yy, xx = np.mgrid[: size[0], : size[1]]
    full = (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r
    top, left = cy - r, cx - r
    return Mask(size, top, left, full[top : cy + r + 1, left : cx + r + 1])


def test_detections_become_rectangles_polygons_and_brushes_under_the_projects_names() -> None:
    mask = disc_mask((100, 200), 50, 40, 20)
    prediction = Prediction(
        "shapes", 3, 200, 100,
        [Detection(1, "Circle", 0.9, Box(30, 20, 71, 61), mask), Detection(3, "Triangle", 0.8, Box(0, 0, 9, 9))],  # noqa: E501
    )  # fmt: skip
    config = LabelConfig.parse(CONFIG)
    out = prediction_result(prediction, config, LabelMatcher.of([("Triangle", "tri")]))
    # "tri" is only a brush label and the triangle has no mask: it has no region, nor a part in the score
    assert out["model_version"] == "shapes:v3" and out["score"] == pytest.approx(0.9)
    by_type = {(r["type"], r["from_name"]): r for r in out["result"]}
    rect = by_type[("rectanglelabels", "boxes")]
    assert rect["value"]["rectanglelabels"] == ["circle"] and rect["to_name"] == "img"
    assert rect["value"]["x"] == pytest.approx(15.0) and rect["value"]["width"] == pytest.approx(20.5)
    assert (rect["original_width"], rect["original_height"], rect["image_rotation"]) == (200, 100, 0)
    brushes = [r for r in out["result"] if r["type"] == "brushlabels"]
    assert [b["value"]["brushlabels"] for b in brushes] == [["Circle"]]  # the triangle has no mask
    assert np.array_equal(brush_rle_to_mask(brushes[0]["value"]["rle"], 100, 200), mask.full())
    polygon = by_type[("polygonlabels", "outline")]
    assert polygon["value"]["polygonlabels"] == ["CIRCLE"] and polygon["value"]["closed"]
    drawn = Image.new("1", (200, 100))
    points = [(x * 2, y) for x, y in polygon["value"]["points"]]  # percent -> pixels
    ImageDraw.Draw(drawn).polygon(points, fill=1)
    assert ((np.array(drawn) & mask.full()).sum() / (np.array(drawn) | mask.full()).sum()) > 0.9
    assert len(out["result"]) == 3


def test_a_mask_outline_is_its_largest_part_at_the_pixel_edges() -> None:
    patch = np.zeros((10, 30), bool)
    patch[2:8, 2:12] = True  # a 10 x 6 block
    patch[4:5, 20:22] = True  # a speck, ignored
    outline = mask_polygon(Mask((50, 60), 5, 7, patch))
    xs, ys = [p[0] for p in outline], [p[1] for p in outline]
    assert (min(xs), max(xs), min(ys), max(ys)) == pytest.approx((9.0, 19.0, 7.0, 13.0), abs=0.51)
    assert len(outline) <= 8


def test_a_classifier_answers_the_best_class_it_can_name() -> None:
    from web.domain import Classification

    prediction = Prediction(
        "digits", 1, 28, 28, classes=[Classification(9, "nine", 0.7), Classification(8, "Seven", 0.2)]
    )
    out = prediction_result(prediction, LabelConfig.parse(CONFIG), LabelMatcher())
    assert [(r["type"], r["value"]) for r in out["result"]] == [("choices", {"choices": ["seven"]})]


# -- fetching pictures ------------------------------------------------------------------------------------

PICTURE = encode_jpeg(np.full((8, 8, 3), 200, np.uint8))
REFRESH = "eyJhbGciOiJIUzI1NiJ9.eyJ0b2tlbl90eXBlIjoicmVmcmVzaCJ9.c2lnbmF0dXJl"


def access_token(exp: float, n: int) -> str:
    payload = base64.urlsafe_b64encode(json.dumps({"exp": exp, "n": n}).encode()).decode().rstrip("=")
    return f"eyJhbGciOiJIUzI1NiJ9.{payload}.c2ln"


class FakeLabelStudio(BaseHTTPRequestHandler):
    """Label Studio's /data/upload and /api/token/refresh, as far as the gateway uses them."""

    legacy = "0123456789abcdef0123"
    issued: list[str] = []
    refreshes = 0
    lifetime = 3600.0
    revoked: set[str] = set()

    def log_message(self, *args: object) -> None:
        pass

    def _send(self, status: int, body: bytes = b"", headers: dict | None = None) -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        cls = type(self)
        if self.path == "/api/token/refresh":
            self._send(301, headers={"Location": "/api/token/refresh/"})  # Django's APPEND_SLASH
            return
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if self.path != "/api/token/refresh/" or body.get("refresh") != REFRESH:
            self._send(401, b'{"detail": "Token is invalid"}')
            return
        cls.refreshes += 1
        token = access_token(time.time() + cls.lifetime, cls.refreshes)
        cls.issued.append(token)
        self._send(200, json.dumps({"access": token}).encode(), {"Content-Type": "application/json"})

    def do_GET(self) -> None:
        cls = type(self)
        auth = self.headers.get("Authorization", "")
        ok = auth == f"Token {cls.legacy}" or (
            auth.startswith("Bearer ") and auth[7:] in cls.issued and auth[7:] not in cls.revoked
        )
        if self.path.startswith("/redirect-away"):
            self._send(302, headers={"Location": "http://example.com/x.jpg"})
        elif self.path.startswith("/redirect-here"):
            self._send(302, headers={"Location": "/data/upload/1/a.jpg"})
        elif self.path.startswith("/big"):
            self._send(200, b"x" * 5000)
        elif not ok:
            self._send(401, b'{"detail": "Authentication credentials were not provided."}')
        else:
            self._send(200, PICTURE, {"Content-Type": "image/jpeg"})


@pytest.fixture()
def fake_label_studio() -> Iterator[str]:
    FakeLabelStudio.issued, FakeLabelStudio.refreshes, FakeLabelStudio.revoked = [], 0, set()
    FakeLabelStudio.lifetime = 3600.0
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeLabelStudio)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_label_studio_urls_are_fetched_with_a_legacy_token(fake_label_studio: str) -> None:
    fetcher = PictureFetcher(fake_label_studio, FakeLabelStudio.legacy)
    assert fetcher.fetch("/data/upload/1/a.jpg") == PICTURE  # relative to LABEL_STUDIO_URL
    assert fetcher.fetch(f"{fake_label_studio}/data/local-files/?d=pics/a.jpg") == PICTURE
    assert fetcher.fetch("/redirect-here") == PICTURE  # same host: followed
    with pytest.raises(SourceUnavailable, match="401.*LABEL_STUDIO_API_KEY"):
        PictureFetcher(fake_label_studio, "wrong-token-123").fetch("/data/upload/1/a.jpg")
    assert "0123456789abcdef0123" not in repr(fetcher)


def test_a_personal_access_token_is_exchanged_and_renewed(fake_label_studio: str) -> None:
    assert is_jwt(REFRESH) and not is_jwt(FakeLabelStudio.legacy)
    fetcher = PictureFetcher(fake_label_studio, REFRESH)
    assert fetcher.fetch("/data/upload/1/a.jpg") == PICTURE
    assert fetcher.fetch("/data/upload/1/b.jpg") == PICTURE
    assert FakeLabelStudio.refreshes == 1  # one access token while it is valid
    FakeLabelStudio.revoked.add(FakeLabelStudio.issued[-1])  # Label Studio answers 401: refreshed once
    assert fetcher.fetch("/data/upload/1/c.jpg") == PICTURE
    assert FakeLabelStudio.refreshes == 2
    FakeLabelStudio.lifetime = 5.0  # expires within the margin: renewed before it is sent
    fetcher._access = None
    fetcher.fetch("/data/upload/1/d.jpg")
    fetcher.fetch("/data/upload/1/e.jpg")
    assert FakeLabelStudio.refreshes == 4
    with pytest.raises(SourceUnavailable, match="personal access token"):
        PictureFetcher(fake_label_studio, REFRESH.replace("c2ln", "bm9w")).fetch("/data/upload/1/a.jpg")


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://169.254.1.1/x.jpg",
        "http://[fe80::1]/x.jpg",
        "http://[::ffff:169.254.169.254]/x.jpg",
        "http://0.0.0.0/x.jpg",
    ],
)
def test_link_local_and_metadata_addresses_are_refused_even_when_allowed(url: str) -> None:
    hosts = ("169.254.169.254", "169.254.1.1", "fe80::1", "::ffff:169.254.169.254", "0.0.0.0")
    with pytest.raises(SourceNotAllowed, match="link-local, metadata or reserved"):
        PictureFetcher(None, allowed_hosts=hosts).fetch(url)


def test_other_hosts_schemes_and_redirects_away_are_refused(fake_label_studio: str) -> None:
    fetcher = PictureFetcher(fake_label_studio, FakeLabelStudio.legacy, max_bytes=1000)
    with pytest.raises(
        SourceNotAllowed, match="does not fetch pictures from example.com: allowed hosts are 127"
    ):
        fetcher.fetch("http://example.com/a.jpg")
    with pytest.raises(SourceNotAllowed, match="http"):
        fetcher.fetch("file:///etc/passwd")
    with pytest.raises(SourceNotAllowed, match="cloud storage"):
        fetcher.fetch("s3://bucket/a.jpg")
    with pytest.raises(SourceNotAllowed, match="redirects to another host"):
        fetcher.fetch("/redirect-away")
    with pytest.raises(SourceNotAllowed, match="MAX_CONTENT_LENGTH"):
        fetcher.fetch("/big")
    with pytest.raises(SourceNotAllowed, match="LABEL_STUDIO_URL"):
        PictureFetcher(None).fetch("/data/upload/1/a.jpg")
    check_address("127.0.0.1")  # loopback and private networks are where Label Studio often lives


def test_an_allowed_host_gets_no_label_studio_key(fake_label_studio: str) -> None:
    # the same server under another name: allowed, but not Label Studio, so no key is sent (401)
    other = fake_label_studio.replace("127.0.0.1", "localhost")
    fetcher = PictureFetcher(other.replace("localhost", "127.0.0.1"), FakeLabelStudio.legacy,
                             allowed_hosts=("localhost",))  # fmt: skip
    with pytest.raises(SourceUnavailable, match="401"):
        fetcher.fetch(f"{other}/data/upload/1/a.jpg")


def test_data_uris_are_decoded_within_the_size_limit() -> None:
    fetcher = PictureFetcher(None, max_bytes=len(PICTURE))
    assert fetcher.fetch("data:image/jpeg;base64," + base64.b64encode(PICTURE).decode()) == PICTURE
    with pytest.raises(SourceNotAllowed, match="base64"):
        fetcher.fetch("data:image/jpeg;base64,@@@")
    with pytest.raises(SourceNotAllowed, match="MAX_CONTENT_LENGTH"):
        PictureFetcher(None, max_bytes=10).fetch(
            "data:image/jpeg;base64," + base64.b64encode(PICTURE).decode()
        )


# -- the protocol, and who may use it -----------------------------------------------------------------------


@pytest.fixture()
def app(demo_model_server: str, tmp_path: Path) -> Flask:
    from web import create_app

    app = create_app({
        "TF_SERVING_ADDRESS": demo_model_server,
        "MODEL_CONFIG_FILE": str(REPO_ROOT / "tf_server" / "models.config"),
        "UPLOAD_FOLDER": str(tmp_path / "u"), "OUTPUT_FOLDER": str(tmp_path / "o"), "API_KEYS": KEY,
        "SECRET_KEY": "a-long-random-session-signing-secret", "LABEL_STUDIO_LABEL_MAP": "Triangle:tri",
    })  # fmt: skip
    app.config["TESTING"] = True
    return app


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def test_without_a_key_the_backend_answers_401_asking_for_basic_auth(app: Flask) -> None:
    client = app.test_client()
    for method, path in (("get", "/label-studio/shapes/health"), ("post", "/label-studio/shapes/predict")):
        response = getattr(client, method)(path, json={})
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"] == 'Basic realm="label-studio"'
        assert "basic auth" in response.json["error"]["message"]
    assert client.get("/label-studio/shapes/health", headers=basic("ls", "wrong")).status_code == 401
    assert client.get("/api/v1/models", headers=basic("ls", KEY)).status_code == 401  # Basic is for here only
    hook = client.post("/label-studio/shapes/webhook", json={"action": "START_TRAINING"},
                       headers=basic("a", KEY))  # fmt: skip
    assert hook.status_code == 201 and "nothing to train" in hook.json["detail"]


def test_basic_bearer_and_x_api_key_are_accepted(app: Flask) -> None:
    client = app.test_client()
    for headers in (basic("anyone", KEY), {"Authorization": f"Bearer {KEY}"}, {"X-API-Key": KEY}):
        answer = client.get("/label-studio/shapes/health", headers=headers)
        assert answer.status_code == 200, answer.json
        assert answer.json == {"status": "UP", "model_class": "TFDetectionGateway", "model": "shapes"}
    setup = client.post(
        "/label-studio/shapes/setup", json={"project": "1.1", "schema": CONFIG}, headers=basic("a", KEY)
    )
    assert setup.json == {"model_version": "shapes:v1"}
    bad = client.post("/label-studio/shapes/setup", json={"schema": "<View/>"}, headers=basic("a", KEY))
    assert bad.status_code == 400 and "<Image" in bad.json["error"]["message"]
    assert client.get("/label-studio/nope/health", headers=basic("a", KEY)).status_code == 404


def test_predict_answers_one_prediction_per_task_in_order(app: Flask) -> None:
    client = app.test_client()
    image, _ = generate_image(np.random.default_rng(5), min_shapes=2, max_shapes=3)
    uri = "data:image/jpeg;base64," + base64.b64encode(encode_jpeg(image)).decode()
    tasks = [
        {"id": 1, "data": {"picture": uri}},
        {"id": 2, "data": {"picture": "http://169.254.169.254/latest/meta-data/"}},
        {"id": 3, "data": {"other": uri}},
        {
            "id": 4,
            "data": {"picture": "data:image/png;base64," + base64.b64encode(b"not a picture").decode()},
        },
        {"id": 5, "data": {"picture": uri}},
    ]
    answer = client.post("/label-studio/shapes/predict", json={"tasks": tasks, "label_config": CONFIG},
                         headers=basic("ls", KEY))  # fmt: skip
    assert answer.status_code == 200
    results = answer.json["results"]
    assert len(results) == 5
    assert results[0]["model_version"] == "shapes:v1" and results[0]["result"]
    assert results[0] == results[4]
    for failed, says in ((1, "169.254.169.254"), (2, 'data["picture"]'), (3, "")):
        assert results[failed]["result"] == [] and results[failed]["model_version"] == "shapes:v1:failed"
        assert says in results[failed]["error"]
    kinds = {r["type"] for r in results[0]["result"]}
    assert kinds <= {"rectanglelabels", "polygonlabels", "brushlabels"}


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ("not json", "JSON object"),
        ({"label_config": CONFIG}, '"tasks" must be a list'),
        ({"tasks": [1, 2]}, '"tasks" must be a list'),
        ({"tasks": [{"data": {}}]}, "label_config is missing"),
        ({"tasks": [{"data": {}}], "label_config": "<View>"}, "not well-formed"),
    ],
)
def test_a_bad_predict_body_is_a_400_that_says_what_to_fix(app: Flask, body: object, says: str) -> None:
    client = app.test_client()
    kwargs = {"data": body} if isinstance(body, str) else {"json": body}
    answer = client.post("/label-studio/shapes/predict", headers=basic("ls", KEY), **kwargs)
    assert answer.status_code == 400 and says in answer.json["error"]["message"]
    assert client.post("/label-studio/shapes/predict?label_map=oops", headers=basic("ls", KEY),
                       json={"tasks": [], "label_config": CONFIG}).status_code == 400  # fmt: skip


def test_too_many_tasks_points_to_a_job(app: Flask) -> None:
    tasks = [{"data": {"picture": "x"}}] * 201
    body = {"tasks": tasks, "label_config": CONFIG}
    answer = app.test_client().post("/label-studio/shapes/predict", json=body, headers=basic("ls", KEY))
    assert answer.status_code == 413 and "label_studio.json" in answer.json["error"]["message"]


def test_label_studio_settings_are_checked_and_the_key_never_shown() -> None:
    from web.settings import Settings, SettingsError

    settings = Settings.load({}, {
        "LABEL_STUDIO_URL": "http://ls:8080/", "LABEL_STUDIO_API_KEY": "secret-token-1",
        "LABEL_STUDIO_ALLOWED_HOSTS": "Pics.Example.com, cdn", "LABEL_STUDIO_LABEL_MAP": "Triangle:tri, x:y",
    })  # fmt: skip
    assert settings.label_studio_url == "http://ls:8080"
    assert settings.label_studio_allowed_hosts == ("pics.example.com", "cdn")
    assert settings.label_studio_label_map == (("Triangle", "tri"), ("x", "y"))
    assert "secret-token-1" not in repr(settings)
    with pytest.raises(SettingsError, match="LABEL_STUDIO_URL"):
        Settings.load({}, {"LABEL_STUDIO_URL": "ftp://ls"})
    with pytest.raises(SettingsError, match="LABEL_STUDIO_LABEL_MAP"):
        Settings.load({}, {"LABEL_STUDIO_LABEL_MAP": "Triangle"})
