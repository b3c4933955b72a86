"""Fixtures for the model-server tests: tiny SavedModels built once per session (in a TF subprocess)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.tf_server.saved_model_builder import TinyModel, build_models

# Versions in the bank: 1 and 2 answer normally (class id = version); 2 carries 3 warmup records;
# 3 has a warmup record that cannot run, so it must never become AVAILABLE.
WARMUP_RECORDS = 3


@pytest.fixture(scope="session")
def model_bank(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``<bank>/tiny/{1,2,3}``: copy versions from here into a test's own base path."""
    bank = tmp_path_factory.mktemp("model_bank")
    build_models(
        [
            TinyModel(bank / "tiny", 1),
            TinyModel(bank / "tiny", 2, warmup_records=WARMUP_RECORDS),
            TinyModel(bank / "tiny", 3, bad_warmup=True),
        ]
    )
    return bank


def install_version(bank: Path, base_path: Path, version: int) -> Path:
    """Copy a bank version into ``base_path`` (non-atomically, as people do)."""
    target = base_path / str(version)
    shutil.copytree(bank / "tiny" / str(version), target)
    return target
