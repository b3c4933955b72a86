"""The repository explains itself: nothing in it points at documents outside it, and its layers
import one way only (no circles in `web`, nothing from `web` in `tf_server`)."""

from __future__ import annotations

import ast
import subprocess
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
TEXT_SUFFIXES = {".py", ".md", ".html", ".css", ".js", ".txt", ".toml", ".yaml", ".yml", ".config", ""}
OUTSIDE = ("DESIGN.md", "../shared", "shared/seeds")


def tracked_text_files() -> list[Path]:
    listed = subprocess.run(["git", "ls-files"], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    files = [REPO_ROOT / line for line in listed.stdout.splitlines()]
    return [f for f in files if f.is_file() and f.suffix in TEXT_SUFFIXES and "protos" not in f.parts]


def test_no_file_points_outside_the_repository() -> None:
    files = tracked_text_files()
    assert len(files) > 50
    offenders = [
        f"{path.relative_to(REPO_ROOT)}: {needle}"
        for path in files
        if path != Path(__file__).resolve()
        for needle in OUTSIDE
        if needle in path.read_text(errors="replace")
    ]
    assert offenders == []


def test_the_architecture_notes_name_every_adapter_module() -> None:
    notes = (REPO_ROOT / "docs" / "architecture.md").read_text()
    folder = REPO_ROOT / "web" / "reading" / "adapters"
    modules = sorted(p.name for p in folder.glob("*.py") if p.name != "__init__.py")
    assert [m for m in modules if f"`{m}`" not in notes and f"adapters/{m}" not in notes] == []


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO_ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, package: str) -> set[str]:
    """The modules of `package` that `path` imports anywhere (module level or inside functions);
    `from a import b` counts as importing `a.b` when that is a module, else `a`."""
    tree = ast.parse(path.read_text(), str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in found if name == package or name.startswith(package + ".")}


def python_files(folder: str) -> list[Path]:
    return [p for p in (REPO_ROOT / folder).rglob("*.py") if "protos" not in p.parts]


def test_the_gateway_has_no_import_circle() -> None:
    files = python_files("web")
    modules = {module_name(p): p for p in files}
    graph = {
        name: {m for m in imports_of(path, "web") if m in modules and m != name}
        for name, path in modules.items()
    }
    # A package's __init__ importing its own modules is how packages work, not a circle.
    for name in graph:
        graph[name] = {m for m in graph[name] if not m.startswith(name + ".")}
    circles: list[list[str]] = []
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                circles.append(trail[trail.index(target):] + [target])
            elif target not in state:
                visit(target, trail + [target])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert circles == []


def test_tf_server_stands_alone() -> None:
    offenders = {
        str(path.relative_to(REPO_ROOT)): sorted(imports_of(path, "web") | imports_of(path, "demo"))
        for path in python_files("tf_server")
    }
    assert {path: found for path, found in offenders.items() if found} == {}


# The gateway's layers, lowest first: a module imports only from its own layer or below.
LAYERS = (
    # web.jobs.config: the job settings, stdlib only, part of web.settings
    (
        *("web.settings", "web.jobs.config", "web.errors", "web.options"),
        *("web.domain", "web.metrics", "web.storage"),
    ),
    ("web.serving",),
    ("web.reading",),
    ("web.pipeline",),
    ("web.gateway",),
    ("web.jobs",),
    ("web.http",),
    ("web", "web.client", "web.worker"),
)


def layer_of(module: str) -> int:
    ranks = [
        (len(prefix), rank)
        for rank, prefixes in enumerate(LAYERS)
        for prefix in prefixes
        if module == prefix or module.startswith(prefix + ".")
    ]
    return max(ranks)[1]


def test_the_gateway_layers_import_downwards_only() -> None:
    modules = {module_name(p): p for p in python_files("web")}
    upward = sorted(
        f"{name} imports {target}"
        for name, path in modules.items()
        for target in imports_of(path, "web")
        if target in modules and target != "web" and layer_of(target) > layer_of(name)  # `from web import x`
    )
    assert upward == []
    # the command-line client runs on the standard library and the stdlib-only declarations
    used = {m for m in imports_of(REPO_ROOT / "web" / "client.py", "web") if m in modules}
    assert used == {"web.options"}
