"""Every result file, read back with the reader its ecosystem uses.

The records have the gateway's prediction JSON shape, masks encoded by pycocotools as the gateway
does, so a reader that accepts them accepts a real job's results.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from pycocotools import mask as coco_mask
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from web.jobs.exporters import RESULT_FILES, ExportSet, Omitted, remove_temporaries, write_exports
from web.jobs.exporters.label_studio import ControlNames, brush_rle_to_mask, label_config

LABELS = {1: "circle", 2: "square", 3: "triangle"}


def ellipse_mask(height: int, width: int, box: tuple[float, float, float, float]) -> np.ndarray:
    yy, xx = np.mgrid[0:height, 0:width] + 0.5
    x0, y0, x1, y1 = box
    inside = ((xx - (x0 + x1) / 2) / ((x1 - x0) / 2)) ** 2 + ((yy - (y0 + y1) / 2) / ((y1 - y0) / 2)) ** 2
    return inside <= 1


def rle(mask: np.ndarray) -> dict[str, Any]:
    """The gateway's mask JSON: pycocotools' RLE of the picture-sized mask, counts as text."""
    encoded = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(s) for s in encoded["size"]], "counts": encoded["counts"].decode()}


def detection(class_id: int, score: float, box: tuple[float, float, float, float], mask=None, label=None):
    det = {
        "label": label or LABELS[class_id],
        "class_id": class_id,
        "score": score,
        "box": dict(zip(("xmin", "ymin", "xmax", "ymax"), box, strict=True)),
    }
    if mask is not None:
        det["mask"] = rle(mask)
    return det


def record(file: str, width: int, height: int, dets: list[dict], model: str = "shapes") -> dict[str, Any]:
    return {
        "model": {"name": model, "version": 1},
        "image": {"width": width, "height": height},
        "detections": dets,
        "timings_ms": {"decode": 1.0, "predict": 2.0, "postprocess": 0.5, "total": 3.5},
        "file": file,
    }


BOX_A = (40.0, 30.5, 300.25, 200.0)
BOX_B = (350.0, 220.0, 600.0, 470.0)
MASK_A = ellipse_mask(480, 640, BOX_A)
MASK_B = ellipse_mask(480, 640, BOX_B)
RECORDS = [
    record(
        "a/one.jpg",
        640,
        480,
        [detection(1, 0.97, BOX_A, MASK_A), detection(2, 0.61, BOX_B, MASK_B)],
    ),
    record("b/two.png", 320, 240, [detection(7, 0.8, (10.0, 20.0, 330.0, 100.0), label="class 7")]),
    record("c/nothing.jpg", 100, 80, []),
]
CLASSIFIER = {
    "model": {"name": "flowers", "version": 2},
    "image": {"width": 64, "height": 48},
    "classes": [
        {"label": "rose", "class_id": 3, "score": 0.9},
        {"label": "tulip", "class_id": 1, "score": 0.05},
    ],
    "file": "x/flower.jpg",
}


@pytest.fixture()
def exported(tmp_path: Path) -> dict[str, Path]:
    return write_exports(iter(RECORDS), tmp_path / "results", LABELS)


def test_every_result_file_is_written_and_nothing_else(exported: dict[str, Path], tmp_path: Path) -> None:
    assert list(exported) == list(RESULT_FILES)
    assert sorted(p.name for p in (tmp_path / "results").iterdir()) == sorted(RESULT_FILES)  # no temp files


def test_predictions_jsonl_is_each_record_as_answered(exported: dict[str, Path]) -> None:
    lines = exported["predictions.jsonl"].read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in lines] == RECORDS


def test_coco_json_loads_in_pycocotools_with_masks_intact(exported: dict[str, Path]) -> None:
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(exported["coco.json"]))
    assert [(c["id"], c["name"]) for c in coco.loadCats(coco.getCatIds())] == [
        (1, "circle"), (2, "square"), (3, "triangle"), (7, "class 7"),
    ]  # fmt: skip
    images = {img["file_name"]: img for img in coco.loadImgs(coco.getImgIds())}
    assert {name: (img["width"], img["height"]) for name, img in images.items()} == {
        "a/one.jpg": (640, 480), "b/two.png": (320, 240), "c/nothing.jpg": (100, 80),
    }  # fmt: skip
    assert coco.getAnnIds(imgIds=[images["c/nothing.jpg"]["id"]]) == []
    one = coco.loadAnns(coco.getAnnIds(imgIds=[images["a/one.jpg"]["id"]]))
    assert [a["category_id"] for a in one] == [1, 2]
    for ann, box, mask in zip(one, (BOX_A, BOX_B), (MASK_A, MASK_B), strict=True):
        x0, y0, x1, y1 = box
        assert ann["bbox"] == pytest.approx([x0, y0, x1 - x0, y1 - y0])
        assert ann["iscrowd"] == 0
        np.testing.assert_array_equal(coco.annToMask(ann).astype(bool), mask)
        assert ann["area"] == mask.sum()
    (two,) = coco.loadAnns(coco.getAnnIds(imgIds=[images["b/two.png"]["id"]]))
    assert two["bbox"] == pytest.approx([10.0, 20.0, 310.0, 80.0])  # clamped into the 320-wide picture
    assert two["segmentation"] == [] and two["score"] == 0.8

    # The annotations double as COCO results: loadRes accepts them and COCOeval scores them perfectly.
    results = [
        {k: a[k] for k in ("image_id", "category_id", "segmentation", "score")}
        for a in coco.loadAnns(coco.getAnnIds())
        if a["segmentation"]
    ]
    with contextlib.redirect_stdout(io.StringIO()):
        found = coco.loadRes(results)
        evaluation = COCOeval(coco, found, "segm")
        evaluation.params.imgIds = [images["a/one.jpg"]["id"]]
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    assert evaluation.stats[0] == pytest.approx(1.0)
    for ann in found.loadAnns(found.getAnnIds()):
        np.testing.assert_array_equal(
            found.annToMask(ann).astype(bool), MASK_A if ann["category_id"] == 1 else MASK_B
        )


def ultralytics_label_path(image_path: str) -> str:
    """Ultralytics' img2label_paths: /images/ -> /labels/ (last occurrence), suffix -> .txt."""
    sa, sb = f"{os.sep}images{os.sep}", f"{os.sep}labels{os.sep}"
    return sb.join(image_path.rsplit(sa, 1)).rsplit(".", 1)[0] + ".txt"


def test_yolo_zip_follows_the_ultralytics_layout(exported: dict[str, Path], tmp_path: Path) -> None:
    dataset = tmp_path / "dataset"
    with zipfile.ZipFile(exported["yolo.zip"]) as zf:
        zf.extractall(dataset)
    data = yaml.safe_load((dataset / "data.yaml").read_text())
    assert data["names"] == {0: "circle", 1: "square", 2: "triangle", 3: "class 7"}
    assert data["nc"] == 4 and data["train"] == "images"
    by_file = {r["file"]: r for r in RECORDS}
    for file, rec in by_file.items():
        label_file = Path(ultralytics_label_path(str(dataset / "images" / file)))
        assert label_file.is_file(), label_file
        rows = [line.split() for line in label_file.read_text().splitlines()]
        assert len(rows) == len(rec["detections"])
        width, height = rec["image"]["width"], rec["image"]["height"]
        for row, det in zip(rows, rec["detections"], strict=True):
            assert len(row) == 5
            index, cx, cy, w, h = int(row[0]), *map(float, row[1:])
            assert data["names"][index] == det["label"]
            assert all(0 <= v <= 1 for v in (cx, cy, w, h))
            box = det["box"]
            xmax = min(box["xmax"], width)
            assert (cx - w / 2) * width == pytest.approx(box["xmin"], abs=1e-3)
            assert (cx + w / 2) * width == pytest.approx(xmax, abs=1e-3)
            assert (cy - h / 2) * height == pytest.approx(box["ymin"], abs=1e-3)
            assert (cy + h / 2) * height == pytest.approx(box["ymax"], abs=1e-3)
    assert (dataset / "labels" / "c" / "nothing.txt").read_text() == ""  # a background picture


def test_voc_zip_has_one_annotation_per_picture(exported: dict[str, Path]) -> None:
    with zipfile.ZipFile(exported["voc.zip"]) as zf:
        names = sorted(zf.namelist())
        assert names == [
            "Annotations/a/one.xml", "Annotations/b/two.xml", "Annotations/c/nothing.xml",
            "ImageSets/Main/default.txt",
        ]  # fmt: skip
        assert zf.read("ImageSets/Main/default.txt").decode().split() == ["a/one", "b/two", "c/nothing"]
        root = ET.fromstring(zf.read("Annotations/a/one.xml"))
        two = ET.fromstring(zf.read("Annotations/b/two.xml"))
        nothing = ET.fromstring(zf.read("Annotations/c/nothing.xml"))
    assert root.tag == "annotation"
    assert root.findtext("folder") == "a" and root.findtext("filename") == "one.jpg"
    assert [root.findtext(f"size/{k}") for k in ("width", "height", "depth")] == ["640", "480", "3"]
    assert root.findtext("segmented") == "0"
    objects = root.findall("object")
    assert [o.findtext("name") for o in objects] == ["circle", "square"]
    for obj, box in zip(objects, (BOX_A, BOX_B), strict=True):
        assert [obj.findtext(k) for k in ("pose", "truncated", "difficult")] == ["Unspecified", "0", "0"]
        corners = [int(obj.findtext(f"bndbox/{k}")) for k in ("xmin", "ymin", "xmax", "ymax")]
        assert corners == [round(v) for v in box]
    assert [int(two.findtext(f"object/bndbox/{k}")) for k in ("xmin", "xmax")] == [10, 320]  # clamped
    assert nothing.findall("object") == []


def test_label_studio_tasks_match_the_import_schema_and_masks_round_trip(exported: dict[str, Path]) -> None:
    tasks = json.loads(exported["label_studio.json"].read_text(encoding="utf-8"))
    assert [t["data"]["image"] for t in tasks] == ["a/one.jpg", "b/two.png", "c/nothing.jpg"]
    config = ET.fromstring(label_config(LABELS.values(), masks=True))
    controls = {c.get("name"): c for c in config if c.get("toName")}
    names = ControlNames()
    (prediction,) = tasks[0]["predictions"]
    assert prediction["model_version"] == "shapes:1"
    assert prediction["score"] == pytest.approx((0.97 + 0.61) / 2)
    results = prediction["result"]
    assert [r["type"] for r in results] == ["rectanglelabels", "brushlabels"] * 2
    for result in results:
        assert set(result) >= {
            "id",
            "from_name",
            "to_name",
            "type",
            "value",
            "original_width",
            "original_height",
        }
        assert result["to_name"] == names.image == config.find("Image").get("name")
        control = controls[result["from_name"]]
        assert control.tag.lower() == result["type"]  # RectangleLabels <-> rectanglelabels
        labels = {label.get("value") for label in control}
        assert set(result["value"][result["type"]]) <= labels
        assert (result["original_width"], result["original_height"]) == (640, 480)
    for rect, box in zip(results[::2], (BOX_A, BOX_B), strict=True):
        value = rect["value"]
        x0, y0, x1, y1 = box
        assert value["x"] == pytest.approx(100 * x0 / 640) and value["y"] == pytest.approx(100 * y0 / 480)
        assert value["width"] == pytest.approx(100 * (x1 - x0) / 640)
        assert value["height"] == pytest.approx(100 * (y1 - y0) / 480)
    for brush, mask in zip(results[1::2], (MASK_A, MASK_B), strict=True):
        assert brush["value"]["format"] == "rle"
        np.testing.assert_array_equal(brush_rle_to_mask(brush["value"]["rle"], 480, 640), mask)
    assert tasks[2]["predictions"][0]["result"] == [] and tasks[2]["predictions"][0]["score"] == 0.0
    assert tasks[1]["predictions"][0]["result"][0]["value"]["width"] == pytest.approx(100 * 310 / 320)


def test_predictions_csv_has_a_row_per_detection_and_one_per_empty_picture(exported: dict[str, Path]) -> None:
    with open(exported["predictions.csv"], newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == [
        "file", "label", "class_id", "score", "xmin", "ymin", "xmax", "ymax", "image_width", "image_height",
    ]  # fmt: skip
    assert [(r["file"], r["label"]) for r in rows] == [
        ("a/one.jpg", "circle"), ("a/one.jpg", "square"), ("b/two.png", "class 7"), ("c/nothing.jpg", ""),
    ]  # fmt: skip
    assert [float(rows[0][k]) for k in ("xmin", "ymin", "xmax", "ymax")] == list(BOX_A)
    assert (rows[2]["class_id"], rows[2]["score"], rows[2]["xmax"]) == ("7", "0.8", "330.0")  # as answered
    assert (rows[3]["image_width"], rows[3]["image_height"], rows[3]["xmin"]) == ("100", "80", "")


def test_classifier_records(tmp_path: Path) -> None:
    files = write_exports([CLASSIFIER], tmp_path, {1: "tulip", 3: "rose"})
    with open(files["predictions.csv"], newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["label"], r["score"], r["xmin"]) for r in rows] == [("rose", "0.9", ""), ("tulip", "0.05", "")]
    (task,) = json.loads(files["label_studio.json"].read_text())
    (choice,) = task["predictions"][0]["result"]
    assert (choice["type"], choice["from_name"], choice["value"]) == (
        "choices",
        "choice",
        {"choices": ["rose"]},
    )
    assert task["predictions"][0]["model_version"] == "flowers:2"
    config = ET.fromstring(label_config(["tulip", "rose"], classification=True))
    assert [c.get("value") for c in config.find("Choices")] == ["tulip", "rose"]
    coco = json.loads(files["coco.json"].read_text())
    assert (len(coco["images"]), coco["annotations"]) == (1, [])


def test_same_records_give_the_same_bytes(tmp_path: Path) -> None:
    first = write_exports(RECORDS, tmp_path / "1", LABELS)
    second = write_exports(RECORDS, tmp_path / "2", LABELS)
    for name in RESULT_FILES:
        assert first[name].read_bytes() == second[name].read_bytes(), name


def test_nothing_appears_until_close_and_nothing_stays_after_a_failure(tmp_path: Path) -> None:
    folder = tmp_path / "results"
    exports = ExportSet(folder, LABELS)
    exports.add(RECORDS[0])
    assert all(p.name.startswith(".") for p in folder.iterdir())  # only hidden temporary files so far
    exports.close()
    assert sorted(p.name for p in folder.iterdir()) == sorted(RESULT_FILES)

    failed = tmp_path / "failed"

    def records():
        yield RECORDS[0]
        raise RuntimeError("the worker died")

    with pytest.raises(RuntimeError, match="the worker died"):
        write_exports(records(), failed, LABELS)
    assert list(failed.iterdir()) == []

    # A worker killed outright leaves its temporary files; the next writer clears them and starts over.
    killed = ExportSet(tmp_path / "killed", LABELS)
    killed.add(RECORDS[0])
    left = sorted(p.name for p in (tmp_path / "killed").iterdir())
    assert len(left) == len(RESULT_FILES) + 1  # coco.json: two spools now, its own file only at close
    assert sorted(p.name for p in remove_temporaries(tmp_path / "killed")) == left
    assert list((tmp_path / "killed").iterdir()) == []


def test_two_pictures_with_one_stem_keep_the_first_label_file(tmp_path: Path) -> None:
    records = [record("x/p.jpg", 10, 10, []), record("x/p.png", 10, 10, [detection(1, 0.9, (1, 1, 5, 5))])]
    with ExportSet(tmp_path, LABELS, ["yolo.zip", "voc.zip", "coco.json"]) as exports:
        for rec in records:
            exports.add(rec)
        files = exports.close()
    assert exports.omitted == [
        Omitted("x/p.png", "yolo.zip: same name without suffix as x/p.jpg"),
        Omitted("x/p.png", "voc.zip: same name without suffix as x/p.jpg"),
    ]
    with zipfile.ZipFile(files["yolo.zip"]) as zf:
        assert zf.read("labels/x/p.txt") == b""
    assert len(json.loads(files["coco.json"].read_text())["images"]) == 2  # COCO names pictures in full


def test_options_reach_their_writer_and_unknown_files_are_refused(tmp_path: Path) -> None:
    files = write_exports(
        RECORDS[:1], tmp_path, LABELS, ["label_studio.json"],
        {"label_studio.json": {"image_root": "/data/local-files/?d=job/", "model_version": "v7"}},
    )  # fmt: skip
    (task,) = json.loads(files["label_studio.json"].read_text())
    assert task["data"]["image"] == "/data/local-files/?d=job/a/one.jpg"
    assert task["predictions"][0]["model_version"] == "v7"
    with pytest.raises(ValueError, match="unknown result files"):
        ExportSet(tmp_path, LABELS, ["predictions.xlsx"])
