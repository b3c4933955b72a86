"""Fixtures for the gateway tests: convention SavedModels served over real gRPC, and app factories.

The convention models (tests/support/convention_models.py) are built by a TensorFlow subprocess
once and cached under build/ keyed by the builder's source, then served by the local model server
(`python -m tf_server`) in another subprocess: the pytest process itself never imports TensorFlow.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.support.model_server import REPO_ROOT, free_port, running_model_server

BUILDER = REPO_ROOT / "tests" / "support" / "convention_models.py"
CACHE_ROOT = REPO_ROOT / "build" / "test-convention-models"


def _build_convention_models() -> Path:
    digest = hashlib.sha256(BUILDER.read_bytes()).hexdigest()[:16]
    target = CACHE_ROOT / digest
    if (target / "models.config").is_file():
        return target
    CACHE_ROOT.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".building-", dir=CACHE_ROOT))
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    try:
        result = subprocess.run(
            [sys.executable, "-m", "tests.support.convention_models", str(staging / "models")],
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        if result.returncode != 0:
            pytest.fail(f"building the convention models failed:\n{result.stderr[-4000:]}")
        try:
            (staging / "models").rename(target)
        except OSError:  # another run finished first: use theirs
            if not (target / "models.config").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


@pytest.fixture(scope="session")
def convention_models() -> Path:
    """Folder with one SavedModel per input/output convention and their models.config."""
    return _build_convention_models()


@pytest.fixture(scope="session")
def convention_server(convention_models: Path) -> Iterator[str]:
    """Address of the local model server serving every convention model."""
    flags = (
        f"--model_config_file={convention_models / 'models.config'}",
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
def convention_app(make_app: AppFactory, convention_server: str, convention_models: Path) -> Flask:
    config = convention_models / "models.config"
    return make_app(TF_SERVING_ADDRESS=convention_server, MODEL_CONFIG_FILE=config)


@pytest.fixture()
def convention_client(convention_app: Flask) -> FlaskClient:
    return convention_app.test_client()


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
