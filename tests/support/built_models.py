"""Test SavedModels built by a TensorFlow subprocess once and cached under build/, keyed by the
builder's source, so the pytest process never imports TensorFlow and reruns cost nothing."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.support.model_server import REPO_ROOT

CACHE_ROOT = REPO_ROOT / "build"


def build_models(module: str, cache_name: str) -> Path:
    """Run `python -m <module> OUT` (a builder in tests/support) unless its output for the current
    source is cached; returns the folder holding the models and their models.config."""
    source = REPO_ROOT / (module.replace(".", "/") + ".py")
    digest = hashlib.sha256(source.read_bytes()).hexdigest()[:16]
    root = CACHE_ROOT / cache_name
    target = root / digest
    if (target / "models.config").is_file():
        return target
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".building-", dir=root))
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    try:
        result = subprocess.run(
            [sys.executable, "-m", module, str(staging / "models")],
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        if result.returncode != 0:
            pytest.fail(f"building the test models ({module}) failed:\n{result.stderr[-4000:]}")
        try:
            (staging / "models").rename(target)
        except OSError:  # another run finished first: use theirs
            if not (target / "models.config").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
