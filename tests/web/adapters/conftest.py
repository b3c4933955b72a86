"""Fixtures for the model-family tests: every family's test model served by the local model server
and the gateway under gunicorn in front of it, all over real HTTP and real gRPC."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.built_models import build_models
from tests.support.gunicorn_gateway import running_gateway
from tests.support.model_server import running_model_server
from tests.web.adapters.endpoints import FamilyGateway


@pytest.fixture(scope="session")
def family_models() -> Path:
    """Folder with one SavedModel per family (tests/support/family_models.py) and its models.config."""
    return build_models("tests.support.family_models", "test-family-models")


@pytest.fixture(scope="session")
def family_server(family_models: Path) -> Iterator[str]:
    with running_model_server(f"--model_config_file={family_models / 'models.config'}") as address:
        yield address


@pytest.fixture(scope="session")
def family_gateway(
    family_server: str, family_models: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[FamilyGateway]:
    """gunicorn (2 workers) serving the gateway in front of the family models."""
    folder = tmp_path_factory.mktemp("family_gateway")
    settings = {"TF_SERVING_ADDRESS": family_server, "MODEL_CONFIG_FILE": family_models / "models.config"}
    with running_gateway(folder, workers=2, threads=4, **settings) as url:
        yield FamilyGateway(url)


@pytest.fixture()
def settings_app(make_app, family_server: str, family_models: Path, tmp_path: Path):
    """A test-client app in front of the family models whose MODELS_DIR holds gateway.toml files the
    test writes with `write(model, text)` (each write gets a new mtime, so it is re-read)."""
    folder = tmp_path / "settings"

    def write(model: str, text: str) -> Path:
        path = folder / model / "gateway.toml"
        path.parent.mkdir(parents=True, exist_ok=True)
        previous = path.stat().st_mtime_ns if path.exists() else 0
        path.write_text(text)
        os.utime(path, ns=(previous + 10**9, previous + 10**9))
        return path

    app = make_app(
        TF_SERVING_ADDRESS=family_server,
        MODEL_CONFIG_FILE=family_models / "models.config",
        MODELS_DIR=folder,
        CONFIG_RECHECK_S=0,  # every write is seen by the next request
    )
    return app.test_client(), write

