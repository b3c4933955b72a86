"""The local model server for tests: see tools/local_model_server.py (shared with `make bench`)."""

from pathlib import Path

from tools.local_model_server import (  # noqa: F401 - re-exported for the test suites
    ModelServerStartError,
    ServerProcess,
    model_server_process,
    running_model_server,
)
from tools.processes import free_port  # noqa: F401

REPO_ROOT = Path(__file__).resolve().parents[2]
