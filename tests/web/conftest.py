"""Fixtures for the gateway tests: signature-layout SavedModels served over real gRPC, and app factories.

The signature models (tests/support/signature_models.py) are built by a TensorFlow subprocess
once and cached under build/ (tests/support/built_models.py), then served by the local model server
(`python -m tf_server`) in another subprocess: the pytest process itself never imports TensorFlow.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.support.built_models import build_models
from tests.support.model_server import free_port, running_model_server


@pytest.fixture(scope="session")
def signature_models() -> Path:
    """Folder with one SavedModel per input/output signature layout and their models.config."""
    return build_models("tests.support.signature_models", "test-signature-models")


@pytest.fixture(scope="session")
def signature_server(signature_models: Path) -> Iterator[str]:
    """Address of the local model server serving every signature model."""
    flags = (
        f"--model_config_file={signature_models / 'models.config'}",
        # od_uint8 has a version label: like tensorflow_model_server, labels of loading models need this.
        "--allow_version_labels_for_unavailable_models=true",
    )
    with running_model_server(*flags) as address:
        yield address


AppFactory = Callable[..., Flask]


@pytest.fixture()
def make_app(tmp_path: Path) -> AppFactory:
    """create_app with result folders in tmp_path; keyword overrides use the env var names."""
    from web import create_app

    def factory(**overrides: Any) -> Flask:
        config = {
            "UPLOAD_FOLDER": str(tmp_path / "upload_folder"),
            "OUTPUT_FOLDER": str(tmp_path / "output"),
            **{k: str(v) for k, v in overrides.items()},
        }
        app = create_app(config)
        app.config["TESTING"] = True
        return app

    return factory


@pytest.fixture()
def signature_app(make_app: AppFactory, signature_server: str, signature_models: Path) -> Flask:
    config = signature_models / "models.config"
    return make_app(TF_SERVING_ADDRESS=signature_server, MODEL_CONFIG_FILE=config)


@pytest.fixture()
def signature_client(signature_app: Flask) -> FlaskClient:
    return signature_app.test_client()


OFFLINE_CONFIG = """
model_config_list {
  config { name: "shapes" base_path: "models/shapes" model_platform: "tensorflow" }
  config { name: "other" base_path: "/nowhere/other" model_platform: "tensorflow" }
}
"""


@pytest.fixture()
def offline_app(make_app: AppFactory, tmp_path: Path) -> Flask:
    """An app whose model server is down (nothing listens on its port); `shapes` has a stored label map."""
    config = tmp_path / "config" / "models.config"
    (config.parent / "models" / "shapes").mkdir(parents=True)
    config.write_text(OFFLINE_CONFIG)
    (config.parent / "models" / "shapes" / "label_map.pbtxt").write_text(
        'item { id: 1 name: "circle" }\nitem { id: 2 name: "square" }\nitem { id: 3 name: "triangle" }\n'
    )
    return make_app(TF_SERVING_ADDRESS=f"127.0.0.1:{free_port()}", MODEL_CONFIG_FILE=config, GRPC_TIMEOUT_S=3)
