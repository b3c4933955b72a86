"""Evaluate jobs over the real path: a COCO set (and a class-folder set) zipped in the test, posted to
the jobs API, predicted by a real `python -m web.worker` over gRPC, and the report held against
pycocotools' COCOeval run here on the job's own coco_results.json."""

from __future__ import annotations

import contextlib
import io
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from tests.support.signature_models import BOXES
from tests.web.helpers import solid
from tests.web.jobs.queue_helpers import Workers
from tests.web.jobs.test_jobs_api import (
    API,
    make_client,
    post_job,
    start_worker,
    wait_ended,
    zip_of,
)
from tests.web.test_api_schema import Documented
from web.jobs.evaluate.dataset import Category
from web.jobs.evaluate.matching import match_categories

W, H = 160, 120
PICTURES = 6
# The dataset's own ids and spellings, in another order than the model's label map (1 circle, 2 square,
# 3 triangle): names meet case-insensitively; "hexagon" meets nothing and must stay out of the metrics.
CATEGORIES = [
    {"id": 7, "name": "Triangle"},
    {"id": 3, "name": "CIRCLE"},
    {"id": 5, "name": "square"},
    {"id": 9, "name": "hexagon"},
]
MATCHED = {7: "triangle", 3: "circle", 5: "square"}


def _pixels(row: int) -> list[float]:
    """The model's detection `row` as a COCO box [x, y, w, h] in a W x H picture."""
    ymin, xmin, ymax, xmax = BOXES[row]
    return [xmin * W, ymin * H, (xmax - xmin) * W, (ymax - ymin) * H]


def _ellipse(box: list[float], points: int = 24) -> list[list[float]]:
    """A polygon inscribed in the box (the models' masks are discs in their boxes)."""
    x, y, w, h = box
    cx, cy = x + w / 2, y + h / 2
    ring = []
    for k in range(points):
        angle = 2 * math.pi * k / points
        ring += [cx + 0.48 * w * math.cos(angle), cy + 0.48 * h * math.sin(angle)]
    return [ring]


def coco_set() -> tuple[dict[str, Any], dict[str, bytes]]:
    """A COCO dataset whose answers are known: circles where the model finds them, squares found on
    even pictures and moved away on odd ones, two triangles, a hexagon no label names."""
    images, annotations = [], []

    def add(image_id: int, category: int, box: list[float]) -> None:
        annotations.append(
            {
                "id": len(annotations) + 1,
                "image_id": image_id,
                "category_id": category,
                "bbox": box,
                "area": box[2] * box[3],
                "iscrowd": 0,
                "segmentation": _ellipse(box),
            }
        )

    for i in range(PICTURES):
        image_id = 40 + 3 * i  # not 1..n: the job must keep the dataset's own ids
        images.append({"id": image_id, "file_name": f"{i:02d}.jpg", "width": W, "height": H})
        add(image_id, 3, _pixels(0))
        square = _pixels(1)
        add(image_id, 5, square if i % 2 == 0 else [4.0, 70.0, square[2] * 0.6, 40.0])
        if i < 2:
            add(image_id, 7, _pixels(2))
        add(image_id, 9, [100.0, 4.0, 30.0, 20.0])
    dataset = {"images": images, "annotations": annotations, "categories": CATEGORIES}
    # Bright pictures: the model's first (circle) score is the picture's brightness, above 0.5.
    pictures = {f"images/{i:02d}.jpg": solid(W, H, (205, 200, 195)) for i in range(PICTURES)}
    return dataset, pictures


def coco_zip(dataset: dict[str, Any], pictures: dict[str, bytes], name: str) -> bytes:
    return zip_of({name: json.dumps(dataset).encode(), **pictures})


def cocoeval(
    truth_path: Path, results: list[dict[str, Any]], iou_type: str, category_ids: list[int]
) -> COCOeval:
    with contextlib.redirect_stdout(io.StringIO()):
        truth = COCO(str(truth_path))
        if iou_type == "segm":
            results = [{k: v for k, v in r.items() if k != "bbox"} for r in results]
        found = truth.loadRes(results)
        evaluation = COCOeval(truth, found, iou_type)
        evaluation.params.catIds = category_ids
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    return evaluation


def _zoo() -> dict[str, Any]:
    """The test set with categories no label names, at ids the model does not have."""
    dataset, _ = coco_set()
    names = dict(zip((7, 3, 5, 9), ("zebra", "okapi", "gnu", "yak"), strict=True))
    return {
        **dataset,
        "categories": [{"id": 100 + c["id"], "name": names[c["id"]]} for c in dataset["categories"]],
        "annotations": [{**a, "category_id": 100 + a["category_id"]} for a in dataset["annotations"]],
    }


NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100")


def _download(client, job: dict[str, Any], name: str) -> bytes:
    answer = client.get(job["results"][name])
    assert answer.status_code == 200, (name, answer.status_code)
    return answer.data


def test_an_evaluate_job_reports_cocoeval_numbers_and_compares_two_models(
    tmp_path: Path, serving, workers: Workers
) -> None:
    client = make_client(tmp_path, serving)
    spec = Documented(client.get("/swagger.json").get_json())
    dataset, pictures = coco_set()
    extra = {"images/not-labelled.jpg": solid(W, H), "readme.txt": b"hello"}
    archive = coco_zip(dataset, {**pictures, **extra}, "annotations/instances_val.json")
    answer = post_job(
        client, archive, model="od_jpeg", kind="evaluate", compare_with="mg_uint8:1", min_score=None
    )
    assert answer.status_code == 202, answer.get_json()
    job = spec.check("POST", API, answer)
    assert job["kind"] == "evaluate" and job["progress"]["total"] == PICTURES
    skipped = {item["file"]: item["reason"] for item in job["skipped"]}
    assert "images/not-labelled.jpg" in skipped and "dataset" in skipped["images/not-labelled.jpg"]
    assert "annotations/instances_val.json" not in skipped  # the dataset itself is not a skipped picture
    # The second model is scored on its own label map too (kept with the job, as the first one's is).
    stored = json.loads((Path(serving["JOBS_FOLDER"]) / job["id"] / "job.json").read_text())
    assert stored["compare"]["labels"] == client.get("/api/v1/models/mg_uint8/labels").get_json()

    start_worker(workers, serving)
    done, _ = wait_ended(client, job["id"])
    assert done["status"] == "succeeded", done["error"]
    spec.check("GET", f"{API}/{job['id']}", client.get(f"{API}/{job['id']}"))
    for name in ("report.json", "report.html", "coco_results.json", "coco_results_compare.json"):
        assert name in done["results"], done["results"]
    report = json.loads(_download(client, done, "report.json"))
    assert report["kind"] == "detection" and report["images"] == PICTURES
    assert report["protocol"]["min_score"] == 0.0 and report["protocol"]["max_detections"] == 100
    assert [m["name"] for m in report["models"]] == ["od_jpeg", "mg_uint8"]

    first = report["models"][0]
    matching = first["matching"]
    assert {m["category_id"]: m["label"] for m in matching["matched"]} == MATCHED
    assert all(m["by"] == "name" for m in matching["matched"])
    assert matching["unmatched_categories"] == [{"id": 9, "name": "hexagon"}]

    truth_path = tmp_path / "truth.json"
    truth_path.write_text(json.dumps(dataset))
    category_ids = sorted(MATCHED)
    for entry, results_file in zip(
        report["models"], ("coco_results.json", "coco_results_compare.json"), strict=True
    ):
        results = json.loads(_download(client, done, results_file))
        assert results and {r["category_id"] for r in results} <= set(MATCHED)
        assert {r["image_id"] for r in results} == {image["id"] for image in dataset["images"]}
        bbox = cocoeval(truth_path, results, "bbox", category_ids)
        assert entry["metrics"]["bbox"] == pytest.approx(dict(zip(NAMES, bbox.stats, strict=False)), abs=1e-6)
        precision = bbox.eval["precision"]
        for k, category in enumerate(bbox.params.catIds):
            row = next(r for r in entry["per_class"] if r["category_id"] == category)
            values = precision[:, :, k, 0, -1]
            assert row["AP"] == pytest.approx(float(np.mean(values[values > -1])), abs=1e-6)
            assert row["AP50"] == pytest.approx(float(np.mean(precision[0, :, k, 0, -1])), abs=1e-6)
        if any("segmentation" in r for r in results):
            segm = cocoeval(truth_path, results, "segm", category_ids)
            assert entry["metrics"]["segm"] == pytest.approx(
                dict(zip(NAMES, segm.stats, strict=False)), abs=1e-6
            )

    # od_jpeg answers masks, so the first model has mask metrics; its masks are discs in the boxes the
    # ground truth's ellipses fill, so they score high but not perfectly.
    assert 0.3 < first["metrics"]["segm"]["AP50"] <= 1.0
    # At the operating score 0.5: six circles and the three squares where the model looks are found;
    # the three moved squares are false positives and misses; the triangles (score 0.3) are missed.
    by_name = {row["name"]: row for row in first["per_class"]}
    assert by_name["CIRCLE"]["true_positives"] == 6 and by_name["CIRCLE"]["AP50"] == pytest.approx(1.0)
    assert (by_name["square"]["true_positives"], by_name["square"]["false_positives"]) == (3, 3)
    assert by_name["Triangle"]["ground_truth"] == 2 and by_name["Triangle"]["true_positives"] == 0
    assert first["counts"] == {
        "ground_truth": 14,
        "true_positives": 9,
        "false_positives": 3,
        "false_negatives": 5,
        "score": 0.5,
    }
    at_half = next(row for row in first["thresholds"] if row["score"] == 0.5)
    assert (at_half["true_positives"], at_half["false_positives"]) == (9, 3)
    assert at_half["precision"] == pytest.approx(9 / 12) and at_half["recall"] == pytest.approx(9 / 14)
    at_zero = first["thresholds"][0]
    assert at_zero["recall"] == pytest.approx(11 / 14)  # the triangles count at score 0
    confusion = first["confusion"]
    assert confusion["labels"][-1] == "background"
    matrix = np.asarray(confusion["matrix"])
    assert matrix.sum() == 9 + 3 + 5  # every pair, false positive and miss once
    assert len(first["pr_curve"]["recall"]) == 101 and set(first["pr_curve"]["per_class"]) == {
        "CIRCLE",
        "square",
        "Triangle",
    }
    histogram = first["score_histogram"]
    assert sum(histogram["true_positives"]) + sum(histogram["false_positives"]) == len(
        json.loads(_download(client, done, "coco_results.json"))
    )
    # The worst pictures: odd pictures have a false square and a missed square, the first two a missed
    # triangle too; each is drawn and downloadable.
    worst = first["worst"]
    assert worst[0]["file"] in ("images/01.jpg",) and worst[0]["misses"] == 2
    for item in worst:
        picture = client.get(f"{API}/{job['id']}/results/{item['picture']}")
        assert picture.status_code == 200 and picture.data[:3] == b"\xff\xd8\xff"

    comparison = report["comparison"]
    assert comparison["models"] == [first["label"], report["models"][1]["label"]]
    ap_delta = report["models"][1]["metrics"]["bbox"]["AP"] - first["metrics"]["bbox"]["AP"]
    assert comparison["deltas"]["bbox"]["AP"] == pytest.approx(ap_delta, abs=1e-6)
    assert {row["name"] for row in comparison["per_class"]} == {"CIRCLE", "square", "Triangle"}
    for row in comparison["disagreements"]:
        assert row["only_first"] + row["only_second"] > 0
        assert client.get(f"{API}/{job['id']}/results/{row['picture']}").status_code == 200
    for name in done["results"]:
        if name.endswith(".png"):
            assert _download(client, done, name)[:8] == b"\x89PNG\r\n\x1a\n"
    html = _download(client, done, "report.html").decode()
    assert "od_jpeg" in html and "mg_uint8" in html
    assert client.get(f"{API}/{job['id']}/results/gallery/../job.json").status_code == 404


def test_a_classifier_is_evaluated_on_class_folders(tmp_path: Path, serving, workers: Workers) -> None:
    colours = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (40, 40, 210)}
    # Folder = truth; the picture's colour is what the model answers. Two pictures sit in the wrong folder.
    content = {
        "red": ["red", "red", "red", "green"],
        "green": ["green", "green"],
        "blue": ["blue", "blue", "red"],
    }
    entries = {
        f"val/{folder}/{i}.jpg": solid(64, 64, colours[colour])
        for folder, shown in content.items()
        for i, colour in enumerate(shown)
    }
    client = make_client(tmp_path, serving)
    answer = post_job(client, zip_of(entries), model="classifier", kind="evaluate", min_score=None)
    assert answer.status_code == 202, answer.get_json()
    start_worker(workers, serving)
    done, _ = wait_ended(client, answer.get_json()["id"])
    assert done["status"] == "succeeded", done["error"]
    report = json.loads(client.get(done["results"]["report.json"]).data)
    assert report["kind"] == "classification" and report["dataset"]["format"] == "imagefolder"
    model = report["models"][0]
    correct = sum(folder == colour for folder, shown in content.items() for colour in shown)
    assert model["metrics"]["top1"] == pytest.approx(correct / len(entries))
    assert model["metrics"]["top5"] == pytest.approx(1.0)  # three classes: the truth is always in the top 5
    labels = model["confusion"]["labels"]
    matrix = model["confusion"]["matrix"]
    assert matrix[labels.index("red")][labels.index("green")] == 1
    assert matrix[labels.index("blue")][labels.index("red")] == 1
    recall = {row["name"]: row["recall"] for row in model["per_class"]}
    assert recall == pytest.approx({"red": 0.75, "green": 1.0, "blue": 2 / 3})
    assert {item["file"] for item in model["worst"]} == {"val/red/3.jpg", "val/blue/2.jpg"}
    assert "coco_results.json" not in done["results"]


@pytest.mark.parametrize(
    "model, archive, fields, status, words",
    [
        (
            "od_jpeg",
            coco_zip(_zoo(), coco_set()[1], "set.json"),
            {},
            400,
            "none of the dataset's categories (zebra, okapi, gnu, yak)",
        ),
        ("od_jpeg", zip_of({"a/1.jpg": solid(W, H), "b/2.jpg": solid(W, H)}), {}, 400, "is a detector"),
        ("classifier", coco_zip(*coco_set(), "set.json"), {}, 400, "classifier is a classifier"),
        ("od_jpeg", zip_of({"set.json": b'{"images": [1,', "1.jpg": solid(W, H)}), {}, 400, "not valid JSON"),
        (
            "od_jpeg",
            coco_zip({**coco_set()[0], "categories": []}, coco_set()[1], "set.json"),
            {},
            400,
            "`categories` is empty",
        ),
        (
            "od_jpeg",
            coco_zip(
                {**coco_set()[0], "annotations": [{"image_id": 40, "category_id": 3, "bbox": [1, 2]}]},
                coco_set()[1],
                "set.json",
            ),
            {},
            400,
            "bbox",
        ),
        ("od_jpeg", coco_zip(coco_set()[0], {}, "set.json"), {}, 400, "no pictures"),
        ("od_jpeg", coco_zip(*coco_set(), "set.json"), {"compare_with": "nope"}, 404, "nope"),
        ("od_jpeg", coco_zip(*coco_set(), "set.json"), {"compare_with": "mg_uint8:x"}, 400, "version"),
        ("od_jpeg", coco_zip(*coco_set(), "set.json"), {"operating_score": "2"}, 400, "operating_score"),
        (
            "od_jpeg",
            coco_zip(*coco_set(), "set.json"),
            {"kind": "predict", "compare_with": "mg_uint8"},
            400,
            "kind=evaluate",
        ),
        ("od_jpeg", coco_zip(*coco_set(), "set.json"), {"kind": "video"}, 400, "kind"),
    ],
    ids=[
        "nothing-matches",
        "detector-on-folders",
        "classifier-on-coco",
        "broken-json",
        "no-categories",
        "bad-bbox",
        "pictures-missing",
        "unknown-compare-model",
        "bad-compare-version",
        "bad-operating-score",
        "compare-on-predict-job",
        "video-not-yet",
    ],
)
def test_bad_datasets_are_refused_with_what_to_fix_and_leave_nothing(
    tmp_path: Path, serving, model: str, archive: bytes, fields: dict, status: int, words: str
) -> None:
    client = make_client(tmp_path, serving)
    answer = post_job(client, archive, model=model, **{"kind": "evaluate", "min_score": None, **fields})
    assert answer.status_code == status, answer.get_json()
    body = Documented(client.get("/swagger.json").get_json()).check("POST", API, answer)
    assert words in body["error"]["message"], body["error"]["message"]
    jobs = Path(serving["JOBS_FOLDER"])
    left = [p for p in jobs.rglob("*") if p.is_file() and not p.name.startswith("queue.db")]
    assert left == [], left


def test_categories_meet_labels_by_name_first_then_by_free_ids() -> None:
    labels = {1: "person", 2: "car", 3: "dog", 4: "label 4"}
    categories = [Category(2, "Person"), Category(3, "cat"), Category(4, "bus"), Category(8, "car")]
    matching = match_categories(categories, labels)
    found = {m.category.name: (m.class_id, m.by) for m in matching.matched}
    # Person by name (class 1), car by name (class 2, so category 2's id is not free for anyone else);
    # bus takes class 4 by id; cat's id 3 is "dog", a label no category names... so it is taken by id.
    assert found == {"Person": (1, "name"), "car": (2, "name"), "bus": (4, "id"), "cat": (3, "id")}
    assert matching.unmatched_labels == ()
    # An id whose label is another category's name is not taken by id.
    matching = match_categories([Category(1, "car"), Category(2, "truck")], {1: "truck", 2: "car"})
    assert {m.category.name: m.by for m in matching.matched} == {"car": "name", "truck": "name"}
    matching = match_categories([Category(5, "truck")], {5: "car", 6: "bus"})
    assert [(m.category.name, m.class_id, m.by) for m in matching.matched] == [("truck", 5, "id")]
