"""The repository explains itself: nothing in it points at documents outside it."""

from __future__ import annotations

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
    modules = sorted(p.name for p in (REPO_ROOT / "web" / "adapters").glob("*.py") if p.name != "__init__.py")
    assert [m for m in modules if f"`{m}`" not in notes and f"adapters/{m}" not in notes] == []
