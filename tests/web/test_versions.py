"""A new model version appearing while the gateway runs: answers switch to it without an error."""

from __future__ import annotations

import io
import shutil
import time
from pathlib import Path

from tests.support.model_server import running_model_server
from tests.web.helpers import solid


def test_a_new_version_replaces_the_old_one_without_errors(
    make_app, signature_models: Path, tmp_path: Path
) -> None:
    base = tmp_path / "models" / "od_uint8"
    shutil.copytree(signature_models / "od_uint8" / "1", base / "1")
    shutil.copy(signature_models / "od_uint8" / "label_map.pbtxt", base / "label_map.pbtxt")
    config = tmp_path / "models.config"
    config.write_text(
        'model_config_list { config { name: "od_uint8" base_path: "models/od_uint8" '
        'model_platform: "tensorflow" } }'
    )
    with running_model_server(
        f"--model_config_file={config}", "--file_system_poll_wait_seconds=1"
    ) as address:
        app = make_app(TF_SERVING_ADDRESS=address, MODEL_CONFIG_FILE=config)
        client = app.test_client()

        def ask() -> dict:
            response = client.post(
                "/api/v1/models/od_uint8/predict", data={"image": (io.BytesIO(solid(64, 48)), "a.jpg")}
            )
            assert response.status_code == 200, response.get_json()
            return response.get_json()

        assert ask()["model"]["version"] == 1
        shutil.copytree(base / "1", base / "2")  # the gateway still thinks "latest" is 1 (cached)
        deadline = time.monotonic() + 60
        while True:
            versions = {
                v["version"]: v["state"]
                for v in client.get("/api/v1/models").get_json()["models"][0]["versions"]
            }
            if versions.get(2) == "AVAILABLE" and 1 not in versions or versions.get(1) == "END":
                break
            assert time.monotonic() < deadline, versions
            time.sleep(0.3)
        # Version 1 is gone; the request pinned to it is retried on version 2, no error reaches the client.
        assert ask()["model"]["version"] == 2
        assert client.get("/api/v1/models/od_uint8?version=2").get_json()["version"] == 2
