"""Read the compose files the way Docker Compose does, without a Docker engine.

``docker-compose config`` validates a file against the Compose schema, interpolates variables and
prints the resolved configuration. The tests run it (Debian's Python docker-compose 1.29, which
`make test` installs, or a Compose v2 binary of that name) and inspect the result as plain data.

Compose 1.x prints YAML only. PyYAML is not a project dependency, but it is one of docker-compose
1.x's own dependencies, so the interpreter named in that script's ``#!`` line can convert the
YAML to JSON for us.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from functools import cache
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
GPU_FILE = "docker-compose.yaml"
CPU_FILE = "docker-compose.cpu.yaml"
# Variables the compose files interpolate; cleared so the checks see the committed defaults.
INTERPOLATED = (
    "TF_SERVING_VERSION",
    "TF_GPU_MEMORY_FRACTION",
    "WEB_CONCURRENCY",
    "WEB_PORT",
    "NGINX_VERSION",
    "CLIENT_MAX_BODY_SIZE",
    "API_KEYS",
    "MAX_CONTENT_LENGTH",
    "MAX_IMAGE_PIXELS",
    "MAX_INPUT_SIDE",
    "GRPC_TIMEOUT_S",
    "RESULTS_MAX_COUNT",
    "RESULTS_MAX_BYTES",
    "JOB_CLIENT_MAX_BODY_SIZE",
    "REDIS_VERSION",
    "WORKER_REPLICAS",
    "MAX_JOB_UPLOAD_BYTES",
    "MAX_JOB_PICTURES",
    "JOBS_DISK_BUDGET_BYTES",
    "JOB_RETENTION_S",
    "JOB_CHUNK_SIZE",
    "JOB_WORKER_THREADS",
    "JOB_PICTURES_IN_FLIGHT",
)
TIMEOUT_S = 120


class ComposeError(AssertionError):
    """docker-compose is missing or rejected a file; the message says which and why."""


def executable() -> str:
    """Path of ``docker-compose``; missing is a failure, not a skip (`make test` installs it)."""
    path = shutil.which("docker-compose")
    if path is None:
        raise ComposeError(
            "docker-compose is not installed. `make test` installs Debian's package "
            "(sudo apt-get install docker-compose); the static checks of the stack need it."
        )
    return path


@cache
def major_version() -> int:
    proc = subprocess.run(
        [executable(), "version", "--short"], capture_output=True, text=True, timeout=TIMEOUT_S
    )
    if proc.returncode != 0:
        raise ComposeError(f"`docker-compose version --short` failed:\n{proc.stderr}")
    return int(proc.stdout.strip().lstrip("v").split(".")[0])


def run_config(*files: str, extra: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    """``docker-compose -f FILE... config`` in the repository root with no .env and a clean environment."""
    env = {k: v for k, v in os.environ.items() if k not in INTERPOLATED and not k.startswith("COMPOSE_")}
    with tempfile.NamedTemporaryFile("w", suffix=".env") as env_file:
        args = [executable(), "--env-file", env_file.name]
        for name in files:
            args += ["-f", name]
        args += ["config", *extra]
        return subprocess.run(args, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)


def _yaml_to_data(text: str) -> Any:
    try:
        import yaml  # type: ignore[import-untyped]
    except ImportError:
        pass
    else:
        return yaml.safe_load(text)
    first_line = Path(executable()).read_bytes().split(b"\n", 1)[0].decode(errors="replace")
    if not first_line.startswith("#!") or "python" not in first_line:
        raise ComposeError(f"cannot parse docker-compose's YAML: no PyYAML and {executable()} is not Python")
    interpreter = first_line[2:].strip().split()
    proc = subprocess.run(
        [*interpreter, "-c", "import json, sys, yaml; json.dump(yaml.safe_load(sys.stdin), sys.stdout)"],
        input=text,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )
    if proc.returncode != 0:
        raise ComposeError(f"converting docker-compose's YAML to JSON failed:\n{proc.stderr}")
    return json.loads(proc.stdout)


@cache
def resolved(*files: str) -> dict[str, Any]:
    """The configuration docker-compose resolves from ``files``, as plain data."""
    v2 = major_version() >= 2
    proc = run_config(*files, extra=("--format", "json") if v2 else ())
    if proc.returncode != 0:
        raise ComposeError(f"docker-compose rejected {' + '.join(files)}:\n{proc.stderr.strip()}")
    data = json.loads(proc.stdout) if v2 else _yaml_to_data(proc.stdout)
    if not isinstance(data, dict) or "services" not in data:
        raise ComposeError(f"unexpected `docker-compose config` output for {files}: {proc.stdout[:500]}")
    return data


def bind_mounts(service: dict[str, Any]) -> list[tuple[Path, str, bool]]:
    """``(host source, container target, read_only)`` of a service's bind mounts (1.x and v2 forms)."""
    mounts: list[tuple[Path, str, bool]] = []
    for volume in service.get("volumes", []):
        if isinstance(volume, str):
            parts = volume.split(":")
            source, target = parts[0], parts[1]
            mode = parts[2] if len(parts) > 2 else "rw"
            if source.startswith(("/", ".")):
                mounts.append((Path(source), target, "ro" in mode.split(",")))
        elif volume.get("type") == "bind":
            mounts.append((Path(volume["source"]), volume["target"], bool(volume.get("read_only"))))
    return mounts


def named_volumes(service: dict[str, Any]) -> dict[str, str]:
    """``{container target: volume name}`` of a service's named volumes."""
    found: dict[str, str] = {}
    for volume in service.get("volumes", []):
        if isinstance(volume, str):
            parts = volume.split(":")
            if not parts[0].startswith(("/", ".")) and len(parts) > 1:
                found[parts[1]] = parts[0]
        elif volume.get("type") == "volume":
            found[volume["target"]] = volume["source"]
    return found


def host_path(service: dict[str, Any], container_path: str) -> Path | None:
    """Where ``container_path`` lives on the host through the service's bind mounts (longest match)."""
    best: tuple[int, Path] | None = None
    for source, target, _ in bind_mounts(service):
        target = target.rstrip("/")
        if container_path == target or container_path.startswith(target + "/"):
            rest = container_path[len(target) :].lstrip("/")
            if best is None or len(target) > best[0]:
                best = (len(target), source / rest if rest else source)
    return best[1] if best else None


def published_ports(service: dict[str, Any]) -> list[tuple[int, int]]:
    """``(published, target)`` pairs, whatever form docker-compose printed them in."""
    pairs: list[tuple[int, int]] = []
    for port in service.get("ports", []):
        if isinstance(port, dict):
            pairs.append((int(port["published"]), int(port["target"])))
        else:
            published, _, target = str(port).rpartition(":")
            pairs.append((int(published.rpartition(":")[2]), int(target.split("/")[0])))
    return pairs


def flags(command: list[str] | str) -> dict[str, str]:
    """``{"--name": "value"}`` from a ``--name=value`` command line."""
    parts = command.split() if isinstance(command, str) else command
    found: dict[str, str] = {}
    for part in parts:
        name, sep, value = part.partition("=")
        if name.startswith("--"):
            found[name] = value if sep else "true"
    return found


def environment(service: dict[str, Any]) -> dict[str, str]:
    """The variables a service sets; ones passed through from an unset host variable are left out."""
    env = service.get("environment", {}) or {}
    if isinstance(env, list):
        env = dict(item.partition("=")[::2] if "=" in item else (item, None) for item in env)
    return {key: str(value) for key, value in env.items() if value is not None}
