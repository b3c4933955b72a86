"""`gunicorn "web:create_app()"` with several workers: each opens its own gRPC channel after the fork."""

from __future__ import annotations

from pathlib import Path

import requests

from tests.support.gunicorn_gateway import running_gateway
from tests.web.helpers import solid


def test_gunicorn_workers_serve_predictions(
    convention_server: str, convention_models: Path, tmp_path: Path
) -> None:
    settings = {
        "TF_SERVING_ADDRESS": convention_server,
        "MODEL_CONFIG_FILE": convention_models / "models.config",
    }
    with running_gateway(tmp_path, workers=2, threads=1, **settings) as base:
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
