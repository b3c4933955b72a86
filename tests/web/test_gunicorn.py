"""`gunicorn "web:create_app()"` with several workers: each opens its own gRPC channel after the fork."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import requests

from tests.support.model_server import REPO_ROOT, free_port
from tests.web.helpers import solid


def test_gunicorn_workers_serve_predictions(
    convention_server: str, convention_models: Path, tmp_path: Path
) -> None:
    port = free_port()
    env = dict(
        os.environ,
        TF_SERVING_ADDRESS=convention_server,
        MODEL_CONFIG_FILE=str(convention_models / "models.config"),
        UPLOAD_FOLDER=str(tmp_path / "upload_folder"),
        OUTPUT_FOLDER=str(tmp_path / "output"),
    )
    log = (tmp_path / "gunicorn.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "--workers=2", f"--bind=127.0.0.1:{port}", "web:create_app()"],
        cwd=REPO_ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, (tmp_path / "gunicorn.log").read_text()
            try:
                if requests.get(f"{base}/healthz", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline, "gunicorn did not come up"
            time.sleep(0.2)
        image = solid(320, 240, (100, 100, 100))
        for i in range(8):  # a new connection per request, so both workers get some
            response = requests.post(
                f"{base}/api/v1/models/{('od_uint8', 'od_jpeg')[i % 2]}/predict?min_score=0",
                files={"image": ("grey.jpg", image, "image/jpeg")},
                timeout=30,
            )
            assert response.status_code == 200, response.text
            assert len(response.json()["detections"]) == 3
        assert requests.get(f"{base}/readyz", timeout=10).status_code == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)
        log.close()
