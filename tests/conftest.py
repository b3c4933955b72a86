"""Fixtures shared by every test suite: the local model server serving both demo models."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.model_server import REPO_ROOT, running_model_server

DEMO_MODEL_CONFIG = REPO_ROOT / "tf_server" / "models.config"


@pytest.fixture(scope="session")
def demo_model_server() -> Iterator[str]:
    """Address ("127.0.0.1:PORT") of `python -m tf_server` serving tf_server/models.config."""
    # The demo models are shipped in the repository: missing means broken, never a skip.
    assert DEMO_MODEL_CONFIG.is_file(), f"{DEMO_MODEL_CONFIG} is missing: restore it or run `make demo-model`"
    with running_model_server(f"--model_config_file={DEMO_MODEL_CONFIG}") as address:
        yield address
