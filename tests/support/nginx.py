"""Debian's nginx (installed by `make test`) and the stack's own proxy config
(deploy/nginx/templates/gateway.conf.template), filled in the way the official nginx image fills it;
tests/deploy/test_nginx.py runs it in front of gateways the tests start."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from tests.support.model_server import REPO_ROOT

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


def check_config(main: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [executable(), "-t", "-c", str(main), "-p", str(main.parent)],
        capture_output=True,
        text=True,
        timeout=30,
    )
