"""Static checks of the `web` image: small, non-root, complete, and without a TensorFlow runtime.

No Docker engine here, so the Dockerfile is read as text: its COPY sources must exist and survive
.dockerignore, it must install requirements/web.txt only, and every module the gateway package
imports must come from the standard library, the package itself or requirements/web.txt, which
is exactly what the image holds.
"""

from __future__ import annotations

import ast
import contextlib
import fnmatch
import importlib.metadata
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.deploy.compose import REPO_ROOT
from tests.support.model_server import free_port

DOCKERFILE = REPO_ROOT / "Dockerfile"
DOCKERIGNORE = REPO_ROOT / ".dockerignore"
WEB_REQUIREMENTS = REPO_ROOT / "requirements" / "web.txt"
REQUIREMENT_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def instructions() -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` with continuation lines joined and comments dropped."""
    lines: list[str] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        lines.append(pending + stripped)
        pending = ""
    parsed = []
    for line in lines:
        keyword, _, args = line.partition(" ")
        parsed.append((keyword.upper(), args.strip()))
    return parsed


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def web_requirements() -> set[str]:
    names = set()
    for line in WEB_REQUIREMENTS.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        assert not line.startswith("-"), f"requirements/web.txt must not include other files/options: {line}"
        match = REQUIREMENT_NAME.match(line)
        assert match, f"cannot read requirement {line!r}"
        names.add(normalize(match.group(1)))
    return names


def test_requirements_web_has_no_tensorflow() -> None:
    names = web_requirements()
    assert names, "requirements/web.txt is empty"
    assert not {name for name in names if name.startswith("tensorflow") or name in ("tf-nightly", "keras")}


def test_dockerfile_installs_only_requirements_web_and_no_tensorflow() -> None:
    runs = [args for keyword, args in instructions() if keyword == "RUN"]
    installs = [args for args in runs if "pip install" in args or "pip3 install" in args]
    assert installs, "the Dockerfile installs no Python packages"
    for args in installs:
        assert "requirements/web.txt" in args, f"pip must install from requirements/web.txt only: {args}"
        assert "--only-binary=:all:" in args, "wheels only, so no compiler is needed in the image"
        assert "tensorflow" not in args.lower(), f"no TensorFlow in the web image: {args}"
    for keyword, args in instructions():
        assert "tensorflow" not in args.lower() or keyword == "ENV", f"{keyword} {args} mentions TensorFlow"


def test_dockerfile_uses_a_pinned_slim_python_and_a_non_root_user() -> None:
    steps = instructions()
    bases = [args for keyword, args in steps if keyword == "FROM"]
    assert len(bases) == 1
    assert re.match(r"^python:\d+\.\d+\.\d+-slim(-\w+)?(@sha256:[0-9a-f]{64})?$", bases[0]), bases[0]
    users = [(index, args) for index, (keyword, args) in enumerate(steps) if keyword == "USER"]
    assert users, "the image must switch to a non-root user"
    last_user_index, user = users[-1]
    assert user not in ("root", "0") and not user.startswith(("root:", "0:"))
    cmd_index = max(index for index, (keyword, _) in enumerate(steps) if keyword in ("CMD", "ENTRYPOINT"))
    assert last_user_index < cmd_index


def test_dockerfile_runs_gunicorn_with_several_workers_and_threads() -> None:
    steps = instructions()
    cmd = [args for keyword, args in steps if keyword == "CMD"][-1]
    assert cmd.startswith("[") and "gunicorn" in cmd and "web:create_app()" in cmd, cmd
    env_text = " ".join(args for keyword, args in steps if keyword == "ENV")
    workers = re.search(r"WEB_CONCURRENCY=(\d+)", env_text)
    threads = re.search(r"--threads=(\d+)", env_text)
    assert workers and int(workers.group(1)) > 1, "several gunicorn workers"
    assert threads and int(threads.group(1)) > 1, "several threads per worker"
    assert "--preload" not in env_text + cmd, "workers must open their gRPC channels after the fork"


def copy_sources() -> list[str]:
    sources = []
    for keyword, args in instructions():
        if keyword in ("COPY", "ADD"):
            parts = [part for part in args.split() if not part.startswith("--")]
            assert keyword == "COPY", "use COPY, not ADD"
            sources.extend(parts[:-1])
    return sources


def ignored(relative: str) -> bool:
    """Docker's .dockerignore rule: the last matching pattern wins, ``!`` re-includes."""
    result = False
    for line in DOCKERIGNORE.read_text().splitlines():
        pattern = line.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").strip("/")
        candidates = [relative] + [str(parent) for parent in Path(relative).parents if str(parent) != "."]
        if any(fnmatch.fnmatch(candidate, pattern.replace("**/", "*")) for candidate in candidates):
            result = not negate
    return result


def test_every_copy_source_exists_and_survives_dockerignore() -> None:
    sources = copy_sources()
    assert sources, "the Dockerfile copies nothing"
    for source in sources:
        path = REPO_ROOT / source
        assert path.exists(), f"COPY {source}: not in the repository"
        files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
        kept = [f for f in files if not ignored(str(f.relative_to(REPO_ROOT)))]
        assert kept, f"COPY {source}: .dockerignore leaves nothing of it in the build context"
    assert ignored("tf_server/models.config") and ignored(".venv/bin/python"), "keep the context small"
    assert not ignored("web/__init__.py") and ignored("web/__pycache__/x.pyc")


def imported_top_levels(where: Path) -> dict[str, str]:
    """``{top-level module: first file importing it}`` for absolute imports in a file or folder."""
    found: dict[str, str] = {}
    for path in [where] if where.is_file() else sorted(where.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                found.setdefault(name.split(".")[0], str(path.relative_to(REPO_ROOT)))
    return found


def installed_with(names: set[str]) -> set[str]:
    """``names`` plus their dependencies (extras left out), as pip installs them into the image."""
    closure: set[str] = set()
    todo = list(names)
    while todo:
        name = todo.pop()
        if name in closure:
            continue
        closure.add(name)
        try:
            requires = importlib.metadata.distribution(name).requires or []
        except importlib.metadata.PackageNotFoundError:
            continue
        for requirement in requires:
            if "extra ==" in requirement.replace('"', "").replace("'", ""):
                continue
            match = REQUIREMENT_NAME.match(requirement)
            if match:
                todo.append(normalize(match.group(1)))
    return closure


def test_the_gateway_imports_only_what_the_image_installs() -> None:
    """Everything web/ imports is stdlib, web itself, or installed by requirements/web.txt."""
    assert (REPO_ROOT / "web" / "__init__.py").is_file(), "web/ is not a package yet"
    wanted = installed_with(web_requirements())
    assert not {name for name in wanted if name.startswith("tensorflow")}, "TensorFlow pulled in indirectly"
    providers = importlib.metadata.packages_distributions()
    problems = []
    for module, where in sorted(imported_top_levels(REPO_ROOT / "web").items()):
        if module in sys.stdlib_module_names or module == "web" or module == "__future__":
            continue
        dists = {normalize(dist) for dist in providers.get(module, [])}
        if not dists & wanted:
            problems.append(
                f"{module} (imported by {where}; provided by {sorted(dists) or 'nothing installed'})"
            )
    assert not problems, "not installed in the web image: " + "; ".join(problems)


@pytest.mark.parametrize("module", ["tensorflow", "tensorflow_serving", "keras", "tf_server"])
def test_the_gateway_never_imports_the_model_server_side(module: str) -> None:
    imports = imported_top_levels(REPO_ROOT / "web")
    assert module not in imports, f"{imports.get(module)} imports {module}, which the web image lacks"


def test_the_command_line_client_needs_only_the_standard_library() -> None:
    """`python -m web.client` loads the standard library and the gateway's stdlib-only declarations
    (web.options, web.errors), nothing installed: it runs on any Python 3.11."""
    imports = imported_top_levels(REPO_ROOT / "web" / "client.py")
    assert set(imports) <= set(sys.stdlib_module_names) | {"__future__", "web"}, sorted(imports)
    # -S: without site-packages at all, so anything installed it tried to import would fail here.
    run = subprocess.run(
        [sys.executable, "-S", "-m", "web.client", "--help"], cwd=REPO_ROOT, capture_output=True, text=True
    )
    assert run.returncode == 0 and "--max-detections" in run.stdout, run.stderr


def dockerfile_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for keyword, args in instructions():
        if keyword == "ENV":
            for item in shlex.split(args):
                key, _, value = item.partition("=")
                env[key] = value
    return env


def stage_build_context(app_dir: Path) -> None:
    """Copy what the Dockerfile's COPY lines take from the (.dockerignore-filtered) context."""
    for keyword, args in instructions():
        if keyword != "COPY":
            continue
        *sources, dest = [part for part in args.split() if not part.startswith("--")]
        for source in sources:
            path = REPO_ROOT / source
            files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
            for file in files:
                relative = str(file.relative_to(REPO_ROOT))
                if ignored(relative):
                    continue
                if path.is_dir():
                    target = app_dir / dest / file.relative_to(path)
                elif dest.endswith("/"):  # Docker: `COPY file dir/` keeps the name
                    target = app_dir / dest / file.name
                else:  # `COPY file path` names the target file
                    target = app_dir / dest
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(file, target)


def test_image_command_serves_the_gateway_from_the_copied_files_only(tmp_path: Path) -> None:
    """Run the Dockerfile's CMD with its ENV in a folder holding only what COPY puts in the image.

    No Docker engine here, so this is the closest check that the image starts: the gateway must
    import and serve from those files alone (gunicorn from the project's virtualenv stands in for
    the image's pip install), never touching the rest of the repository.
    """
    app_dir = tmp_path / "app"
    stage_build_context(app_dir)
    assert (app_dir / "web" / "__init__.py").is_file()
    cmd = json.loads([args for keyword, args in instructions() if keyword == "CMD"][-1])
    port = free_port()
    env = {
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}/usr/bin:/bin",
        "HOME": str(tmp_path),
        "LANG": "C.UTF-8",
        **dockerfile_env(),
    }
    env["GUNICORN_CMD_ARGS"] = re.sub(r"--bind=\S+", f"--bind=127.0.0.1:{port}", env["GUNICORN_CMD_ARGS"])
    env["PROMETHEUS_MULTIPROC_DIR"] = str(tmp_path / "prometheus")
    env.update(
        WEB_CONCURRENCY="2",
        TF_SERVING_ADDRESS=f"127.0.0.1:{free_port()}",  # nobody listens: /readyz must say so
        MODEL_CONFIG_FILE=str(REPO_ROOT / "tf_server" / "models.docker.config"),
        MODELS_DIR=str(tmp_path / "models"),
        UPLOAD_FOLDER=str(tmp_path / "upload_folder"),
        OUTPUT_FOLDER=str(tmp_path / "output"),
        GRPC_TIMEOUT_S="2",
    )
    log = tmp_path / "gunicorn.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            cmd, cwd=app_dir, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, (
                f"the image's command exited with {proc.returncode}:\n{log.read_text()}"
            )
            try:
                with urllib.request.urlopen(f"{base}/healthz", timeout=5) as response:
                    assert response.status == 200
                    break
            except OSError:
                assert time.monotonic() < deadline, f"no answer on {base}/healthz:\n{log.read_text()}"
                time.sleep(0.5)
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(f"{base}/readyz", timeout=30)
        assert caught.value.code == 503
        with urllib.request.urlopen(f"{base}/metrics", timeout=10) as response:
            assert response.status == 200
        assert any((tmp_path / "prometheus").iterdir()), "workers should write multiprocess metrics"
        loaded = subprocess.run(
            ["sh", "-c", f"cat /proc/{proc.pid}/maps /proc/$(pgrep -P {proc.pid} | head -1)/maps"],
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout
        assert "tensorflow" not in loaded.lower(), "a gateway process loaded TensorFlow"
    finally:
        with contextlib.suppress(ProcessLookupError):  # already gone when it failed to start
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
