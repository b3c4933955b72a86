"""A real Label Studio for tests: its PyPI package in its own virtualenv (.venv-label-studio/, made once
and reused: Django and its pins stay out of the project's .venv), started on a free loopback port with a
temporary data folder, its user and legacy token created by `label-studio start` itself."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import requests

from tests.support.model_server import REPO_ROOT, free_port
from tools.processes import log_tail, stop_process

VERSION = "1.23.2"
VENV = REPO_ROOT / ".venv-label-studio"
START_TIMEOUT_S = 180.0
USER = "annotator@example.com"
PASSWORD = "annotator-password-1"
TOKEN = "0123456789abcdef0123456789abcdef01234567"  # a legacy token (40 hex digits, as Label Studio's)


def label_studio_executable() -> Path:
    """bin/label-studio of the test virtualenv, installed (about a minute) when missing or outdated."""
    marker = VENV / f".installed-{VERSION}"
    executable = VENV / "bin" / "label-studio"
    if not marker.exists() or not executable.exists():
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(VENV)], check=True, timeout=120)
        done = subprocess.run(
            [str(VENV / "bin" / "python"), "-m", "pip", "install", "--quiet", f"label-studio=={VERSION}"],
            capture_output=True,
            text=True,
            timeout=900,
            env=dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1"),
        )
        assert done.returncode == 0, f"installing label-studio=={VERSION} failed:\n{done.stderr[-4000:]}"
        marker.touch()
    return executable


@dataclass
class LabelStudio:
    """A running Label Studio and an API session as its user (the legacy token)."""

    url: str
    token: str
    session: requests.Session = field(default_factory=requests.Session)

    def __post_init__(self) -> None:
        self.session.headers["Authorization"] = f"Token {self.token}"

    def api(self, method: str, path: str, **kwargs) -> requests.Response:
        response = self.session.request(method, self.url + path, timeout=kwargs.pop("timeout", 120), **kwargs)
        assert response.ok, f"{method} {path}: {response.status_code} {response.text[:2000]}"
        return response

    def create_project(self, title: str, label_config: str) -> int:
        return self.api("POST", "/api/projects", json={"title": title, "label_config": label_config}).json()[
            "id"
        ]

    def upload(self, project: int, files: list[tuple[str, bytes]]) -> None:
        parts = [(name, (name, data, "image/jpeg")) for name, data in files]  # one form field per file
        self.api("POST", f"/api/projects/{project}/import", files=parts)

    def tasks(self, project: int) -> list[dict]:
        return self.api("GET", "/api/tasks", params={"project": project, "page_size": 100}).json()["tasks"]

    def connect_model(self, project: int, url: str, user: str, password: str) -> dict:
        body = {
            "url": url, "project": project, "title": "gateway", "auth_method": "BASIC_AUTH",
            "basic_auth_user": user, "basic_auth_pass": password, "is_interactive": False,
        }  # fmt: skip
        return self.api("POST", "/api/ml", json=body).json()

    def retrieve_predictions(self, project: int) -> dict:
        body = {"selectedItems": {"all": True, "excluded": []}}
        params = {"id": "retrieve_tasks_predictions", "project": project}
        return self.api("POST", "/api/dm/actions", params=params, json=body).json()

    def predictions(self, project: int) -> dict[int, list[dict]]:
        """Task id -> its stored predictions."""
        found = self.api("GET", "/api/predictions", params={"project": project}).json()
        by_task: dict[int, list[dict]] = {}
        for prediction in found:
            by_task.setdefault(prediction["task"], []).append(prediction)
        return by_task

    def personal_access_token(self) -> str:
        """A new personal access token (a JWT refresh token) of the user."""
        return self.api("POST", "/api/token/").json()["token"]


@contextmanager
def running_label_studio(folder: Path) -> Iterator[LabelStudio]:
    """Label Studio on 127.0.0.1, its data under `folder`; ML backends (and their webhook) on loopback
    allowed (its SSRF guards refuse local addresses by default), legacy tokens enabled."""
    executable = label_studio_executable()
    port = free_port()
    folder.mkdir(parents=True, exist_ok=True)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(folder / "home"),
        "LABEL_STUDIO_BASE_DATA_DIR": str(folder / "data"),
        "ML_BLOCK_LOCAL_IP": "false",
        "SSRF_PROTECTION_ENABLED": "false",  # else the ML backend's webhook on loopback is refused
        "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
        "LANG": "C.UTF-8",
    }
    command = [
        str(executable), "start", "--no-browser", "--host", f"http://127.0.0.1:{port}",
        "--internal-host", "127.0.0.1", "--port", str(port), "--data-dir", str(folder / "data"),
        "--username", USER, "--password", PASSWORD, "--user-token", TOKEN, "--enable-legacy-api-token",
    ]  # fmt: skip
    log_path = folder / "label-studio.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            assert process.poll() is None, f"label-studio exited:\n{log_tail(log_path)}"
            try:
                if requests.get(f"{base}/health", timeout=2).ok:
                    break
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline, f"label-studio did not come up:\n{log_tail(log_path)}"
            time.sleep(0.5)
        yield LabelStudio(base, TOKEN)
    finally:
        stop_process(process, 30)
