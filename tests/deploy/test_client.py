"""The command-line client (`python -m web.client`) against the running stack.

The stack is the local model server with the demo models (root fixture `demo_model_server`, a
subprocess speaking TF Serving's gRPC API) and the gateway served over real HTTP on a loopback
port. The client runs as a subprocess, exactly as a user runs it, and what it prints or saves is
compared with what the REST API itself answers for the same files.
"""

from __future__ import annotations

import io
import json
import os
import pty
import select
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from werkzeug.serving import make_server

from demo.synthetic import encode_jpeg, generate_image
from tests.support.model_server import REPO_ROOT, free_port
from web.client import encode_multipart

MODEL = "shapes"
CLIENT_TIMEOUT_S = 180
READY_TIMEOUT_S = 60.0
API_KEY = "client-test-key"


@dataclass(frozen=True)
class Gateway:
    url: str
    seen: list[dict[str, str]] = field(default_factory=list)  # every POST the gateway received


def recording(app, seen: list[dict[str, str]]):
    """Wrap a WSGI app so each POST's path, query and upload headers are kept in `seen`."""
    inner = app.wsgi_app

    def wsgi(environ, start_response):
        if environ["REQUEST_METHOD"] == "POST":
            seen.append({
                "path": environ["PATH_INFO"],
                "query": environ.get("QUERY_STRING", ""),
                "content_type": environ.get("CONTENT_TYPE", ""),
                "disposition": environ.get("HTTP_CONTENT_DISPOSITION", ""),
            })
        return inner(environ, start_response)

    app.wsgi_app = wsgi
    return app


def serve(app: object) -> tuple[str, object, threading.Thread]:
    server = make_server("127.0.0.1", 0, app, threaded=True)  # type: ignore[arg-type]
    thread = threading.Thread(target=server.serve_forever, name="client-test-gateway", daemon=True)
    thread.start()
    return f"http://127.0.0.1:{server.server_port}", server, thread


def wait_ready(url: str) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    last = ""
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=5) as response:
                if response.status == 200:
                    return
        except urllib.error.HTTPError as exc:
            last = exc.read().decode(errors="replace")
        except OSError as exc:
            last = str(exc)
        time.sleep(0.5)
    raise AssertionError(f"gateway at {url} not ready within {READY_TIMEOUT_S:.0f}s: {last}")


@pytest.fixture(scope="module")
def stack(demo_model_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Gateway]]:
    """Two gateways on the same model server: an open one and one that requires an API key."""
    from web import create_app

    gateways: dict[str, Gateway] = {}
    running = []
    for name, extra in (
        ("open", {}),
        ("keyed", {"API_KEYS": API_KEY, "SECRET_KEY": "client-test-session-secret"}),
    ):
        root = tmp_path_factory.mktemp(f"client_gateway_{name}")
        app = create_app(
            {
                "TF_SERVING_ADDRESS": demo_model_server,
                "MODEL_CONFIG_FILE": str(REPO_ROOT / "tf_server" / "models.config"),
                "UPLOAD_FOLDER": str(root / "upload_folder"),
                "OUTPUT_FOLDER": str(root / "output"),
                **extra,
            }
        )
        seen: list[dict[str, str]] = []
        url, server, thread = serve(recording(app, seen))
        running.append((server, thread))
        gateways[name] = Gateway(url, seen)
    try:
        wait_ready(gateways["open"].url)
        yield gateways
    finally:
        for server, thread in running:
            server.shutdown()  # type: ignore[attr-defined]
            thread.join(timeout=10)
            server.server_close()  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def gateway(stack: dict[str, Gateway]) -> Gateway:
    return stack["open"]


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Three synthetic photos of different sizes, saved as JPEG files."""
    folder = tmp_path_factory.mktemp("client_images")
    rng = np.random.default_rng(20240611)
    paths = []
    for index, (width, height) in enumerate([(640, 480), (480, 360), (320, 400)]):
        pixels, _ = generate_image(rng, width=width, height=height, min_shapes=2, max_shapes=4)
        path = folder / f"photo_{index}.jpg"
        path.write_bytes(encode_jpeg(pixels))
        paths.append(path)
    return paths


def run_client(*args: str | Path, timeout: float = CLIENT_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    env.pop("GATEWAY_URL", None)
    env.pop("GATEWAY_API_KEY", None)
    return subprocess.run(
        [sys.executable, "-m", "web.client", *map(str, args)],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def api_post(url: str, path: Path, action: str = "predict", query: str = "") -> tuple[int, bytes]:
    """POST one image straight to the REST API, to compare the client's output with."""
    body, content_type = encode_multipart([("image", path.name, path.read_bytes())])
    request = urllib.request.Request(
        f"{url}/api/v1/models/{MODEL}/{action}" + (f"?{query}" if query else ""),
        data=body,
        headers={"Content-Type": content_type},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def labels(url: str) -> set[str]:
    with urllib.request.urlopen(f"{url}/api/v1/models/{MODEL}/labels", timeout=30) as response:
        return set(json.loads(response.read()).values())


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_json_output_is_what_the_api_answers_for_each_image(gateway: Gateway, images: list[Path]) -> None:
    proc = run_client(*images, "--model", MODEL, "--url", gateway.url, "--json")
    assert proc.returncode == 0, proc.stderr
    records = json_lines(proc.stdout)
    assert [record["file"] for record in records] == [str(path) for path in images]
    for path, record in zip(images, records, strict=True):
        with Image.open(path) as picture:
            assert record["image"] == {"width": picture.width, "height": picture.height}
        assert record["model"]["name"] == MODEL
        status, body = api_post(gateway.url, path)
        assert status == 200
        direct = json.loads(body)["detections"]
        assert [(d["label"], d["class_id"]) for d in record["detections"]] == [
            (d["label"], d["class_id"]) for d in direct
        ], f"{path.name}: the client's detections differ from the API's"
        for got, expected in zip(record["detections"], direct, strict=True):
            assert got["score"] == pytest.approx(expected["score"], abs=1e-3)
            for side in ("xmin", "ymin", "xmax", "ymax"):
                assert got["box"][side] == pytest.approx(expected["box"][side], abs=0.5)
    assert any(record["detections"] for record in records), "the demo model should find some shapes"


def test_summary_names_each_image_and_its_detections(gateway: Gateway, images: list[Path]) -> None:
    proc = run_client(*images, "--model", MODEL, "--url", gateway.url, "--min-score", "0.3")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == len(images)
    known = labels(gateway.url)
    for path, line in zip(images, lines, strict=True):
        assert line.startswith(f"{path}: ")
        status, body = api_post(gateway.url, path, query="min_score=0.3")
        assert status == 200
        expected = json.loads(body)["detections"]
        assert {detection["label"] for detection in expected} <= known
        if expected:
            assert f"{len(expected)} detection" in line
            for detection in expected[:3]:
                assert f"{detection['label']} " in line
        else:
            assert "no detections" in line
    assert "\r" not in proc.stderr, "no progress bar when stderr is not a terminal"


def test_out_saves_a_drawn_picture_per_image(gateway: Gateway, images: list[Path], tmp_path: Path) -> None:
    out = tmp_path / "drawn"
    proc = run_client(*images, "--model", MODEL, "--url", gateway.url, "--out", out)
    assert proc.returncode == 0, proc.stderr
    for path in images:
        saved = out / f"{path.stem}_detections.jpg"
        assert saved.is_file(), proc.stdout
        assert f"-> {saved}" in proc.stdout
        with Image.open(saved) as drawn, Image.open(path) as original:
            assert drawn.format == "JPEG"
            assert drawn.size == original.size
            drawn_pixels = np.asarray(drawn.convert("RGB"), dtype=np.float32)
        # The client saves what the API renders for the same file.
        status, rendered = api_post(gateway.url, path, action="predict_image")
        assert status == 200
        with Image.open(io.BytesIO(rendered)) as expected:
            expected_pixels = np.asarray(expected.convert("RGB"), dtype=np.float32)
        assert expected_pixels.shape == drawn_pixels.shape
        assert np.abs(drawn_pixels - expected_pixels).mean() < 1.0


def test_out_makes_one_request_per_image_with_the_image_as_the_body(
    gateway: Gateway, images: list[Path], tmp_path: Path
) -> None:
    """One inference per image: the JSON and the drawn picture come from the same /predict call, and
    the photo is the body itself (no multipart to parse), named in Content-Disposition."""
    gateway.seen.clear()
    proc = run_client(*images, "--model", MODEL, "--url", gateway.url, "--out", tmp_path / "once", "--json")
    assert proc.returncode == 0, proc.stderr
    assert [(r["path"], r["query"]) for r in gateway.seen] == [
        (f"/api/v1/models/{MODEL}/predict", "picture=jpeg")] * len(images)
    assert [r["content_type"] for r in gateway.seen] == ["image/jpeg"] * len(images)
    assert [r["disposition"] for r in gateway.seen] == [f'inline; filename="{p.name}"' for p in images]
    records = json_lines(proc.stdout)
    assert all("picture" not in record and Path(record["saved"]).is_file() for record in records)

    gateway.seen.clear()
    label_map = tmp_path / "labels.txt"
    label_map.write_text("circle\nsquare\ntriangle\n")
    proc = run_client(images[0], "--model", MODEL, "--url", gateway.url, "--label-map", label_map)
    assert proc.returncode == 0, proc.stderr
    assert len(gateway.seen) == 1 and gateway.seen[0]["content_type"].startswith("multipart/form-data")
    assert gateway.seen[0]["query"] == ""


def test_out_as_png_and_duplicate_stems(gateway: Gateway, images: list[Path], tmp_path: Path) -> None:
    twin_dir = tmp_path / "elsewhere"
    twin_dir.mkdir()
    twin = twin_dir / images[0].name
    twin.write_bytes(images[1].read_bytes())
    out = tmp_path / "png"
    proc = run_client(
        images[0], twin, "--model", MODEL, "--url", gateway.url, "--out", out, "--format", "png"
    )
    assert proc.returncode == 0, proc.stderr
    first, second = out / f"{images[0].stem}_detections.png", out / f"{images[0].stem}_detections-2.png"
    for saved, source in ((first, images[0]), (second, twin)):
        with Image.open(saved) as drawn, Image.open(source) as original:
            assert drawn.format == "PNG" and drawn.size == original.size


def test_missing_file_is_reported_and_the_others_still_processed(
    gateway: Gateway, images: list[Path], tmp_path: Path
) -> None:
    missing = tmp_path / "not_there.jpg"
    proc = run_client(images[0], missing, images[1], "--model", MODEL, "--url", gateway.url)
    assert proc.returncode == 1
    assert str(missing) in proc.stderr and "cannot read" in proc.stderr
    assert [line.split(": ")[0] for line in proc.stdout.splitlines()] == [str(images[0]), str(images[1])]
    assert "1 of 3 image(s) failed" in proc.stderr


def test_rejected_image_shows_the_servers_error_message(
    gateway: Gateway, images: list[Path], tmp_path: Path
) -> None:
    not_an_image = tmp_path / "notes.jpg"
    not_an_image.write_text("this is text, not a JPEG\n")
    status, body = api_post(gateway.url, not_an_image)
    assert 400 <= status < 500
    message = json.loads(body)["error"]["message"]
    proc = run_client(not_an_image, images[0], "--model", MODEL, "--url", gateway.url)
    assert proc.returncode == 1
    assert message in proc.stderr
    assert proc.stdout.startswith(f"{images[0]}: ")


def test_json_mode_reports_errors_as_json_lines(gateway: Gateway, images: list[Path], tmp_path: Path) -> None:
    missing = tmp_path / "gone.png"
    proc = run_client(missing, images[0], "--model", MODEL, "--url", gateway.url, "--json")
    assert proc.returncode == 1
    first, second = json_lines(proc.stdout)
    assert first["file"] == str(missing) and "cannot read" in first["error"]["message"]
    assert second["file"] == str(images[0]) and "detections" in second


def test_unknown_model_stops_with_the_servers_message(gateway: Gateway, images: list[Path]) -> None:
    body, content_type = encode_multipart([("image", images[0].name, images[0].read_bytes())])
    request = urllib.request.Request(
        f"{gateway.url}/api/v1/models/no_such_model/predict",
        data=body,
        headers={"Content-Type": content_type},
        method="POST",
    )
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=60)
    assert caught.value.code == 404
    message = json.loads(caught.value.read())["error"]["message"]
    proc = run_client(*images, "--model", "no_such_model", "--url", gateway.url)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert proc.stdout == ""


def test_gateway_down_names_the_url_and_fails(images: list[Path]) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    proc = run_client(*images, "--model", MODEL, "--url", url, timeout=60)
    assert proc.returncode == 2
    assert url in proc.stderr and "cannot reach the gateway" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_api_key_is_sent_when_the_gateway_requires_one(stack: dict[str, Gateway], images: list[Path]) -> None:
    keyed = stack["keyed"].url
    refused = run_client(images[0], "--model", MODEL, "--url", keyed)
    assert refused.returncode == 2 and "HTTP 401" in refused.stderr
    accepted = run_client(images[0], "--model", MODEL, "--url", keyed, "--api-key", API_KEY, "--json")
    assert accepted.returncode == 0, accepted.stderr
    assert json_lines(accepted.stdout)[0]["model"]["name"] == MODEL


def test_progress_bar_on_a_terminal(gateway: Gateway, images: list[Path]) -> None:
    """With stderr on a terminal (a pseudo-terminal here) and several images, a bar is drawn."""
    master, slave = pty.openpty()
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "COLUMNS": "100"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "web.client", *map(str, images), "--model", MODEL, "--url", gateway.url],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=slave,
        text=True,
    )
    os.close(slave)
    chunks: list[bytes] = []
    deadline = time.monotonic() + CLIENT_TIMEOUT_S
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 1.0)
            if ready:
                try:
                    data = os.read(master, 4096)
                except OSError:  # EIO: the child closed its end
                    break
                if not data:
                    break
                chunks.append(data)
            elif proc.poll() is not None:
                break
        stdout, _ = proc.communicate(timeout=30)
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    terminal = b"".join(chunks).decode(errors="replace")
    assert proc.returncode == 0, terminal
    assert f"{len(images)}/{len(images)}" in terminal and "#" in terminal and "\r" in terminal
    assert len(stdout.splitlines()) == len(images)
    assert "\r" not in stdout, "the bar goes to stderr only"
