"""Small helpers shared by the gateway tests (real images, the app's result folders)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
from flask import Flask
from PIL import Image


def encode(image: Image.Image | np.ndarray, fmt: str = "JPEG", **params: Any) -> bytes:
    """Bytes of a Pillow image (or uint8 array) in `fmt`."""
    if not isinstance(image, Image.Image):
        image = Image.fromarray(image)
    buf = io.BytesIO()
    image.save(buf, format=fmt, **params)
    return buf.getvalue()


def solid(width: int, height: int, color: tuple[int, int, int] = (200, 200, 200), fmt: str = "JPEG") -> bytes:
    return encode(Image.new("RGB", (width, height), color), fmt)


def result_files(app: Flask) -> list[Path]:
    """Every non-hidden file left in the app's result folders."""
    settings = app.extensions["gateway"].settings
    found = []
    for folder in (Path(settings.upload_folder), Path(settings.output_folder)):
        if folder.exists():
            found.extend(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))
    return found
