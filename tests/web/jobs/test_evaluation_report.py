"""The evaluate finisher on made-up answers, in-process: the report's edge cases that a served model
rarely produces on purpose. A compared model that never predicts a category is scored on it (AP 0,
not left out), models scoring different category sets still give a report, and category names with
markup or matplotlib's `$` come through as text."""

from __future__ import annotations

import io
import json
import types
from pathlib import Path

import pytest
from PIL import Image

from web.jobs.archives import ArchiveError
from web.jobs.evaluate.dataset import _categories
from web.jobs.evaluate.finisher import finish_evaluation
from web.jobs.kinds import Assembly

ODD = "$\\alpha_$ </script><b>x"  # mathtext that does not parse, and markup
CATEGORIES = [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}, {"id": 3, "name": ODD}]


def jpeg(width: int = 200, height: int = 100) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (90, 120, 150)).save(out, format="JPEG")
    return out.getvalue()


def detection(label: str, class_id: int, box: tuple[float, ...], score: float) -> dict:
    return {
        "label": label,
        "class_id": class_id,
        "score": score,
        "box": dict(zip(("xmin", "ymin", "xmax", "ymax"), box, strict=True)),
    }


def answer(detections: list[dict], name: str, version: int) -> dict:
    return {
        "model": {"name": name, "version": version},
        "image": {"width": 200, "height": 100},
        "detections": detections,
    }


class Pictures:
    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files

    def read(self, name: str) -> bytes:
        return self.files[name]


def finish(tmp_path: Path, lines: list[dict], compare: dict | None) -> dict:
    images = [{"id": i, "file_name": f"p{i}.jpg", "width": 200, "height": 100} for i in (1, 2)]
    annotations = [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 50, 50], "area": 2500, "iscrowd": 0},
        {"id": 2, "image_id": 2, "category_id": 2, "bbox": [20, 20, 40, 40], "area": 1600, "iscrowd": 0},
        {"id": 3, "image_id": 1, "category_id": 3, "bbox": [100, 10, 50, 50], "area": 2500, "iscrowd": 0},
    ]
    dataset = {
        "format": "coco",
        "file": "set.json",
        "categories": CATEGORIES,
        "images": images,
        "annotations": annotations,
        "labels": {},
        "missing": [],
    }
    (tmp_path / "dataset.json").write_text(json.dumps(dataset))
    job = types.SimpleNamespace(
        model={"name": "a", "version": 1},
        compare=compare,
        labels={1: "cat", 2: "dog", 3: ODD},
        evaluation={"operating_score": 0.333},
        options={},
    )
    folder = tmp_path / "results"
    folder.mkdir()
    pictures = Pictures({"p1.jpg": jpeg(), "p2.jpg": jpeg()})
    assembly = Assembly(
        job=job,
        folder=folder,
        read_lines=lambda: iter(lines),
        stopped=lambda: False,
        archive=lambda: pictures,
    )
    written = finish_evaluation(assembly)
    assert {"report.json", "report.html", "coco_results.json"} <= set(written)
    return json.loads((folder / "report.json").read_text())


def test_a_compared_model_is_scored_on_every_category_its_label_map_has(tmp_path: Path) -> None:
    cat, odd, dog = (10, 10, 60, 60), (100, 10, 150, 60), (20, 20, 60, 60)
    lines = [
        {
            "file": "p1.jpg",
            "prediction": answer([detection("cat", 1, cat, 0.9), detection(ODD, 3, odd, 0.8)], "a", 1),
            "compare": answer([detection("cat", 1, cat, 0.9)], "b", 2),
        },
        {
            "file": "p2.jpg",
            "prediction": answer([detection("dog", 2, dog, 0.7)], "a", 1),
            "compare": answer([], "b", 2),  # b never answers "dog": its label map still has it
        },
    ]
    report = finish(tmp_path, lines, {"name": "b", "version": 2, "labels": {"1": "cat", "2": "dog"}})
    first, second = report["models"]
    assert first["metrics"]["bbox"]["AP"] == pytest.approx(1.0)
    assert [c["name"] for c in second["matching"]["unmatched_categories"]] == [ODD]  # b has no such label
    scored = {row["name"]: row["AP"] for row in second["per_class"]}
    assert scored == {"cat": pytest.approx(1.0), "dog": pytest.approx(0.0)}  # dog counts, with AP 0
    assert second["metrics"]["bbox"]["AP"] == pytest.approx(0.5)
    # The operating score is not a step of the threshold table: the nearest step is shown.
    html = (tmp_path / "results" / "report.html").read_text()
    assert "not scored" in html  # the odd category under b
    assert "</script><b>" not in html and "&lt;/script&gt;&lt;b&gt;x" in html
    assert html.count("data:image/png;base64,") == len(report["plots"]) >= 8
    assert html.count("data:image/jpeg;base64,") == len(first["worst"]) + len(second["worst"]) + len(
        [row for row in report["comparison"]["disagreements"] if row["picture"]]
    )


@pytest.mark.parametrize(
    "categories",
    [
        [{"id": 1, "name": "Cat"}, {"id": 2, "name": "cat"}],
        [{"id": 1, "name": "dog"}, {"id": 2, "name": "dog "}],
    ],
)
def test_categories_need_names_of_their_own(categories: list[dict]) -> None:
    with pytest.raises(ArchiveError, match="give every category its own name"):
        _categories("set.json", categories)
