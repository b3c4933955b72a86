"""Fixtures for the browser tests: the real stack (model server + gateway over HTTP) and Chromium.

The gateway runs in a real HTTP server (Werkzeug, threaded) on a free loopback port, in front of
the local model server started by the root `demo_model_server` fixture; the browser is Debian's
Chromium driven by Playwright (never a browser Playwright downloads).
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from werkzeug.serving import make_server

from tests.support.model_server import REPO_ROOT
from tests.web.jobs.queue_helpers import Workers

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
SCREENSHOT_DIR = REPO_ROOT / "build" / "screenshots"


def chromium_executable() -> str | None:
    """$CHROMIUM, else Debian's chromium (`make test` installs it)."""
    candidate = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    return candidate if Path(candidate).is_file() else None


@dataclass(frozen=True)
class RunningGateway:
    """The gateway served over real HTTP, and the folders it stores results in."""

    url: str
    upload_folder: Path
    output_folder: Path


def demo_config(demo_model_server: str, root: Path, **extra: str) -> dict[str, str]:
    """A gateway's settings for the demo models, its folders under `root`, plus `extra`."""
    return {
        "TF_SERVING_ADDRESS": demo_model_server,
        "MODEL_CONFIG_FILE": str(REPO_ROOT / "tf_server" / "models.config"),
        "UPLOAD_FOLDER": str(root / "upload_folder"),
        "OUTPUT_FOLDER": str(root / "output"),
        **extra,
    }


@contextmanager
def serving_app(app: Any) -> Iterator[str]:
    """`app` served over real HTTP (Werkzeug, threaded) on a loopback port; yields its base URL."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="gateway-http", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(timeout=10)
        server.server_close()


def sign_in(page: Any, base: str, path: str, key: str) -> None:
    """Open `path` on a gateway with API keys: sent to sign in, signed in with `key`, back on `path`."""
    page.goto(f"{base}{path}")
    assert "/login?next=" in page.url
    page.fill("#key", key)
    page.click("#sign-in")
    page.wait_for_url(f"{base}{path}")


@pytest.fixture(scope="module")
def gateway(demo_model_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    from web import create_app

    root = tmp_path_factory.mktemp("browser_gateway")
    with serving_app(create_app(demo_config(demo_model_server, root))) as url:
        yield RunningGateway(url, root / "upload_folder", root / "output")


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    executable = chromium_executable()
    # `make test` installs Debian's chromium, so a missing browser fails the run rather than hiding it.
    assert executable is not None, "Chromium is not installed: `make test` installs it (or set $CHROMIUM)"
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS, timeout=60_000)
        try:
            yield chromium
        finally:
            chromium.close()


@dataclass
class BrowserPage:
    """A Playwright page plus every URL it requested (to check that nothing leaves loopback)."""

    page: Any
    requested_urls: list[str] = field(default_factory=list)


@pytest.fixture()
def browser_page(browser) -> Iterator[BrowserPage]:
    context = browser.new_context(viewport={"width": 1280, "height": 900}, device_scale_factor=1)
    context.set_default_timeout(60_000)
    tab = BrowserPage(context.new_page())
    tab.page.on("request", lambda request: tab.requested_urls.append(request.url))
    try:
        yield tab
    finally:
        context.close()


# The jobs pages' tests (jobs, evaluation reports, video jobs): a keyed gateway and real workers.
JOBS_KEY = "jobs-browser-key"


@pytest.fixture()
def serving(demo_model_server: str, tmp_path: Path) -> dict[str, str]:
    return {
        "TF_SERVING_ADDRESS": demo_model_server,
        "MODEL_CONFIG_FILE": str(REPO_ROOT / "tf_server" / "models.config"),
        "JOBS_FOLDER": str(tmp_path / "jobs"),
        "JOB_QUEUE_POLL_S": "0.1",
        "JOB_CHUNK_SIZE": "3",
    }


@pytest.fixture()
def keyed_gateway(serving: dict[str, str], tmp_path: Path) -> Iterator[str]:
    from web import create_app

    config = demo_config(
        serving["TF_SERVING_ADDRESS"],
        tmp_path,
        **serving,
        API_KEYS=JOBS_KEY,
        SECRET_KEY="jobs-browser-session-secret",
    )
    with serving_app(create_app(config)) as url:
        yield url


@pytest.fixture()
def workers(tmp_path: Path) -> Iterator[Workers]:
    pool = Workers(tmp_path)
    yield pool
    pool.stop_all()
