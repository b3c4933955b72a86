"""report.html: the evaluation report as one self-contained page, to download, mail or archive.

The page is rendered from the same Jinja macros as the job page (`templates/evaluation_parts.html`),
with the plots and gallery pictures inlined as data: addresses and the stylesheet in the page, so it
opens from a disk or a mail with nothing beside it and runs no script (the job page has the live
threshold slider; this one has the threshold table).
"""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape

from web import REPO_ROOT
from web.jobs.store import write_atomic

TEMPLATES = REPO_ROOT / "templates"
STYLESHEETS = (REPO_ROOT / "web/http/static/style.css", REPO_ROOT / "web/http/static/evaluation.css")
TEMPLATE = "evaluation_report.html"
HTML_FILE = "report.html"

_TYPES = {".png": "image/png", ".jpg": "image/jpeg"}


@lru_cache(maxsize=1)
def _environment() -> Environment:
    return Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(default=True))


def _data_url(path: Path) -> str:
    kind = _TYPES.get(path.suffix, "application/octet-stream")
    return f"data:{kind};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"


def write_report_html(report: Mapping[str, Any], folder: Path, plots: Mapping[str, Path]) -> Path:
    """Render `folder/report.html` from the report and the plot files already written in `folder`."""

    def src(name: str) -> str:
        path = folder / name
        return _data_url(path) if path.is_file() else ""

    stylesheet = "\n".join(p.read_text(encoding="utf-8") for p in STYLESHEETS if p.is_file())
    html = (
        _environment()
        .get_template(TEMPLATE)
        .render(
            report=report,
            plots=list(plots),
            src=src,
            stylesheet=stylesheet,
            job_id=folder.parent.name,
            written=dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M"),
        )
    )
    write_atomic(folder / HTML_FILE, html.encode("utf-8"), fsync=False)
    return folder / HTML_FILE
