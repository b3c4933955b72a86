"""Debian's nginx (installed by `make test`) running the stack's own proxy config in front of a
gateway the test started: deploy/nginx/templates/gateway.conf.template, filled in the way the
official nginx image fills it, on a free loopback port."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import requests

from tests.support.model_server import REPO_ROOT, free_port
from tools.processes import log_tail, stop_process

TEMPLATE = REPO_ROOT / "deploy" / "nginx" / "templates" / "gateway.conf.template"
MAIN_CONF = """\
{user}worker_processes 1;
pid {root}/nginx.pid;
error_log {root}/error.log warn;
events {{ worker_connections 512; }}
http {{
    access_log off;
    client_body_temp_path {root}/body;
    proxy_temp_path {root}/proxy;
    fastcgi_temp_path {root}/fastcgi;
    uwsgi_temp_path {root}/uwsgi;
    scgi_temp_path {root}/scgi;
    include {root}/conf.d/*.conf;
}}
"""


def executable() -> str:
    """Debian's nginx; missing is a failure, not a skip (`make test` installs it)."""
    path = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").is_file() else None)
    assert path, "nginx is not installed: `make test` installs Debian's nginx"
    return path


def render(template: str, variables: dict[str, str]) -> str:
    """What the official image's envsubst step does: ${NAME} for the variables it is given only
    (nginx's own $variables stay)."""
    return re.sub(r"\$\{(\w+)\}", lambda m: variables.get(m.group(1), m.group(0)), template)


def write_config(root: Path, upstream: str, port: int, body_size: str = "17m") -> Path:
    """A main config including the rendered template (listening on 127.0.0.1:`port`)."""
    (root / "conf.d").mkdir(parents=True, exist_ok=True)
    conf = render(TEMPLATE.read_text(), {"GATEWAY_UPSTREAM": upstream, "CLIENT_MAX_BODY_SIZE": body_size})
    conf = re.sub(r"^(\s*)listen \d+;", rf"\1listen 127.0.0.1:{port};", conf, flags=re.MULTILINE)
    (root / "conf.d" / "gateway.conf").write_text(conf)
    main = root / "nginx.conf"
    user = "user root;\n" if os.geteuid() == 0 else ""
    main.write_text(MAIN_CONF.format(root=root, user=user))
    return main


def check_config(main: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [executable(), "-t", "-c", str(main), "-p", str(main.parent)],
        capture_output=True,
        text=True,
        timeout=30,
    )


@contextmanager
def running_nginx(root: Path, upstream: str) -> Iterator[str]:
    """Yield the base URL of nginx proxying to `upstream` (host:port) with the stack's config."""
    port = free_port()
    main = write_config(root, upstream, port)
    proc = subprocess.Popen(
        [executable(), "-c", str(main), "-p", str(root), "-g", "daemon off;"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            assert proc.poll() is None, f"nginx exited:\n{log_tail(root / 'error.log')}"
            try:
                requests.get(f"{url}/healthz", timeout=2)
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline, f"nginx did not start:\n{log_tail(root / 'error.log')}"
                time.sleep(0.1)
        yield url
    finally:
        stop_process(proc, 10)
