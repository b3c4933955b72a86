"""Labelled sets for the evaluation tests, made here (nothing is downloaded)."""

from __future__ import annotations

import zipfile
from pathlib import Path

from demo.synthetic import write_coco_dataset


def demo_coco_zip(folder: Path, count: int, seed: int, json_name: str = "annotations.json") -> Path:
    """The demo's kind of labelled set as a zip in `folder`: synthetic photos with exact COCO boxes
    and RLE masks, the json at `json_name`, the pictures under images/."""
    annotations = write_coco_dataset(folder / "set", count, seed)
    path = folder / "labelled.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.write(annotations, json_name)
        for picture in sorted((folder / "set" / "images").iterdir()):
            zf.write(picture, f"images/{picture.name}")
    return path
