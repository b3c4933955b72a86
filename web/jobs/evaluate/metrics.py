"""The numbers of an evaluation: pycocotools' COCOeval for detectors, plain counts for classifiers.

Detection metrics are COCOeval's own (`stats`, and its `precision` array for per-class AP and the
precision-recall curves), never a re-implementation. What COCOeval does not give (true and false
positives at an operating score, the precision/recall/F1 table behind the threshold slider, score
histograms, the worst pictures) is read off COCOeval's own matches at IoU 0.5 (`evalImgs`), so it
agrees with its AP50 by construction. The confusion matrix needs class-agnostic matching, which
COCOeval has no notion of: detections at the operating score take, best first, the unmatched ground
truth they overlap most (IoU >= 0.5, pycocotools' `iou`), whatever its class.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from web.jobs.evaluate.dataset import Dataset
from web.jobs.evaluate.matching import Matching
from web.pipeline.compare import pair_boxes

STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100")
MATCH_IOU = 0.5
THRESHOLD_STEPS = 101  # 0.00, 0.01, ..., 1.00
HISTOGRAM_BINS = 20
WORST = 12  # pictures in each gallery
BACKGROUND = "background"
OTHER = "other label"  # a classifier's top class that meets no category


@dataclass
class PictureMarks:
    """What a gallery picture shows: boxes as (xmin, ymin, xmax, ymax, label, kind, score)."""

    file: str
    marks: list[tuple[float, float, float, float, str, str, float | None]] = field(default_factory=list)


@dataclass
class ModelEvaluation:
    """One model's report entry, its COCO results, and the pictures its gallery should draw."""

    entry: dict[str, Any]
    results: list[dict[str, Any]] = field(default_factory=list)
    gallery: list[PictureMarks] = field(default_factory=list)
    found: dict[str, list[tuple[int, list[float], float]]] = field(default_factory=dict)  # file -> kept dets


def _quiet(call: Any, *args: Any) -> Any:
    """pycocotools prints its progress; a worker's log is not the place for it."""
    with contextlib.redirect_stdout(io.StringIO()):
        return call(*args)


def _number(value: float) -> float | None:
    """A COCOeval value for JSON: -1 (no ground truth for it) stays -1 in `stats`, None elsewhere."""
    return None if value < 0 else round(float(value), 6)


def _xywh(box: Mapping[str, Any], width: int, height: int) -> list[float]:
    x0 = min(max(float(box["xmin"]), 0.0), width)
    y0 = min(max(float(box["ymin"]), 0.0), height)
    x1 = min(max(float(box["xmax"]), 0.0), width)
    y1 = min(max(float(box["ymax"]), 0.0), height)
    return [round(x0, 3), round(y0, 3), round(max(x1 - x0, 0.0), 3), round(max(y1 - y0, 0.0), 3)]


def _category(matching: Matching, detection: Mapping[str, Any]) -> int | None:
    """The dataset category of a detection or class: by the label it carries, else by its class id."""
    found = matching.category_of_label(str(detection["label"])) if "label" in detection else None
    if found is None:
        found = matching.category_of(int(detection.get("class_id", -1)))
    return found


# -- detection -----------------------------------------------------------------------------------


def coco_results(
    dataset: Dataset, predictions: Mapping[str, Mapping[str, Any]], matching: Matching
) -> list[dict[str, Any]]:
    """COCO's results format (image_id, category_id, bbox, score, segmentation when masked), dataset ids;
    detections of labels that meet no category are left out."""
    image_ids = {image["file_name"]: image["id"] for image in dataset.images}
    results: list[dict[str, Any]] = []
    for file, prediction in predictions.items():
        width, height = int(prediction["image"]["width"]), int(prediction["image"]["height"])
        for detection in prediction.get("detections") or ():
            category = _category(matching, detection)
            if category is None:
                continue
            result = {
                "image_id": image_ids[file],
                "category_id": category,
                "bbox": _xywh(detection["box"], width, height),
                "score": float(detection["score"]),
            }
            if detection.get("mask"):
                result["segmentation"] = {
                    "size": list(detection["mask"]["size"]),
                    "counts": detection["mask"]["counts"],
                }
            results.append(result)
    return results


def evaluate_detections(
    dataset: Dataset,
    predictions: Mapping[str, Mapping[str, Any]],
    matching: Matching,
    operating_score: float,
) -> ModelEvaluation:
    """COCOeval (bbox, and segm when the model answers masks and the ground truth has them) plus the
    counts and curves of the report; `predictions` maps each evaluated picture's path to its JSON."""
    sizes = {file: (int(p["image"]["width"]), int(p["image"]["height"])) for file, p in predictions.items()}
    truth = COCO()
    truth.dataset = dataset.coco_ground_truth(sizes)
    _quiet(truth.createIndex)
    image_ids = [image["id"] for image in dataset.images if image["file_name"] in predictions]
    results = coco_results(dataset, predictions, matching)
    category_ids = matching.category_ids

    bbox_eval = _run(
        truth,
        [{k: v for k, v in r.items() if k != "segmentation"} for r in results],
        "bbox",
        image_ids,
        category_ids,
    )
    metrics = {"bbox": _stats(bbox_eval)}
    masked = [r for r in results if "segmentation" in r]
    if masked and dataset.annotations and all("segmentation" in a for a in dataset.annotations):
        segm = [{k: v for k, v in r.items() if k != "bbox"} for r in masked]
        metrics["segm"] = _stats(_run(truth, segm, "segm", image_ids, category_ids))

    names = {c.id: c.name for c in dataset.categories}
    matches = _matches(bbox_eval)
    entry: dict[str, Any] = {
        "metrics": metrics,
        "per_class": _per_class(bbox_eval, names, matches, operating_score),
        "counts": _counts(matches, operating_score),
        "pr_curve": _pr_curve(bbox_eval, names),
        "thresholds": _thresholds(matches),
        "confusion": _confusion(truth, bbox_eval, names, image_ids, category_ids, operating_score),
        "score_histogram": _histogram(matches),
    }
    worst, gallery = _worst(truth, bbox_eval, matches, operating_score, names)
    entry["worst"] = worst
    found = _kept(bbox_eval, operating_score)
    return ModelEvaluation(entry, results, gallery, {truth.imgs[i]["file_name"]: v for i, v in found.items()})


def _run(
    truth: COCO, results: list[dict[str, Any]], iou_type: str, image_ids: list, category_ids: list[int]
) -> COCOeval:
    if results:
        found = _quiet(truth.loadRes, results)
    else:  # loadRes cannot take an empty list; no detection at all is AP 0, not an error
        found = COCO()
        found.dataset = {
            "images": truth.dataset["images"],
            "categories": truth.dataset["categories"],
            "annotations": [],
        }
        _quiet(found.createIndex)
    evaluation = COCOeval(truth, found, iou_type)
    evaluation.params.imgIds = list(image_ids)
    evaluation.params.catIds = list(category_ids)
    _quiet(evaluation.evaluate)
    _quiet(evaluation.accumulate)
    _quiet(evaluation.summarize)
    return evaluation


def _stats(evaluation: COCOeval) -> dict[str, float]:
    return {name: round(float(value), 6) for name, value in zip(STAT_NAMES, evaluation.stats, strict=False)}


@dataclass
class _Matches:
    """COCOeval's matches at IoU 0.5, area "all", up to maxDets[-1] per picture and class."""

    scores: np.ndarray  # per counted detection
    hits: np.ndarray  # bool: matched a ground truth
    categories: np.ndarray  # category id per detection
    ground_truth: dict[int, int]  # category id -> counted ground truth


def _image_evaluations(evaluation: COCOeval) -> list[dict[str, Any]]:
    """evalImgs of area range "all" (COCOeval lists them per category, area range, image)."""
    images = len(evaluation.params.imgIds)
    areas = len(evaluation.params.areaRng)
    out = []
    for k in range(len(evaluation.params.catIds)):
        start = k * areas * images
        out.extend(e for e in evaluation.evalImgs[start : start + images] if e is not None)
    return out


def _matches(evaluation: COCOeval) -> _Matches:
    t = int(np.argmin(np.abs(evaluation.params.iouThrs - MATCH_IOU)))
    scores, hits, categories = [], [], []
    ground_truth: dict[int, int] = dict.fromkeys(evaluation.params.catIds, 0)
    for image in _image_evaluations(evaluation):
        counted = ~np.asarray(image["dtIgnore"], dtype=bool).reshape(len(evaluation.params.iouThrs), -1)[t]
        matched = np.asarray(image["dtMatches"]).reshape(len(evaluation.params.iouThrs), -1)[t] > 0
        image_scores = np.asarray(image["dtScores"], dtype=float)
        scores.extend(image_scores[counted])
        hits.extend(matched[counted])
        categories.extend([image["category_id"]] * int(counted.sum()))
        ground_truth[image["category_id"]] += int(
            np.count_nonzero(~np.asarray(image["gtIgnore"], dtype=bool))
        )
    return _Matches(
        np.asarray(scores, float), np.asarray(hits, bool), np.asarray(categories, int), ground_truth
    )


def _tp_fp(matches: _Matches, score: float, category: int | None = None) -> tuple[int, int]:
    keep = matches.scores >= score
    if category is not None:
        keep &= matches.categories == category
    return int(np.count_nonzero(matches.hits & keep)), int(np.count_nonzero(~matches.hits & keep))


def _counts(matches: _Matches, score: float) -> dict[str, Any]:
    tp, fp = _tp_fp(matches, score)
    total = sum(matches.ground_truth.values())
    return {
        "ground_truth": total,
        "true_positives": tp,
        "false_positives": fp,
        "false_negatives": total - tp,
        "score": score,
    }


def _per_class(
    evaluation: COCOeval, names: Mapping[int, str], matches: _Matches, score: float
) -> list[dict[str, Any]]:
    precision = evaluation.eval["precision"]  # [T, R, K, A, M]
    rows = []
    for k, category in enumerate(evaluation.params.catIds):
        values = precision[:, :, k, 0, -1]
        ap = float(np.mean(values[values > -1])) if np.any(values > -1) else -1.0
        at50 = precision[0, :, k, 0, -1]
        ap50 = float(np.mean(at50[at50 > -1])) if np.any(at50 > -1) else -1.0
        tp, fp = _tp_fp(matches, score, category)
        total = matches.ground_truth.get(category, 0)
        rows.append(
            {
                "category_id": int(category),
                "name": names[category],
                "AP": _number(ap),
                "AP50": _number(ap50),
                "ground_truth": total,
                "true_positives": tp,
                "false_positives": fp,
                "false_negatives": total - tp,
            }
        )
    return rows


def _pr_curve(evaluation: COCOeval, names: Mapping[int, str]) -> dict[str, Any]:
    precision = evaluation.eval["precision"][0, :, :, 0, -1]  # [R, K] at IoU 0.5
    per_class = {
        names[category]: [_number(v) for v in precision[:, k]]
        for k, category in enumerate(evaluation.params.catIds)
    }
    mean = []
    for row in precision:
        defined = row[row > -1]
        mean.append(round(float(defined.mean()), 6) if defined.size else None)
    return {
        "recall": [round(float(r), 2) for r in evaluation.params.recThrs],
        "all": mean,
        "per_class": per_class,
    }


def _thresholds(matches: _Matches) -> list[dict[str, Any]]:
    total = sum(matches.ground_truth.values())
    rows = []
    for step in range(THRESHOLD_STEPS):
        score = step / (THRESHOLD_STEPS - 1)
        tp, fp = _tp_fp(matches, score)
        precision = tp / (tp + fp) if tp + fp else None
        recall = tp / total if total else None
        f1 = 2 * precision * recall / (precision + recall) if precision and recall else 0.0
        rows.append(
            {
                "score": round(score, 2),
                "precision": None if precision is None else round(precision, 6),
                "recall": None if recall is None else round(recall, 6),
                "f1": round(f1, 6),
                "true_positives": tp,
                "false_positives": fp,
            }
        )
    return rows


def _histogram(matches: _Matches) -> dict[str, Any]:
    edges = np.linspace(0.0, 1.0, HISTOGRAM_BINS + 1)
    scores = np.clip(matches.scores, 0.0, 1.0)
    hits, _ = np.histogram(scores[matches.hits], edges)
    misses, _ = np.histogram(scores[~matches.hits], edges)
    return {
        "edges": [round(float(e), 2) for e in edges],
        "true_positives": hits.tolist(),
        "false_positives": misses.tolist(),
    }


def _confusion(
    truth: COCO,
    evaluation: COCOeval,
    names: Mapping[int, str],
    image_ids: Sequence[Any],
    category_ids: Sequence[int],
    score: float,
) -> dict[str, Any]:
    index = {category: i for i, category in enumerate(category_ids)}
    size = len(category_ids) + 1  # + background
    matrix = np.zeros((size, size), dtype=int)
    found = evaluation.cocoDt
    for image_id in image_ids:
        gts = [
            a for a in truth.imgToAnns.get(image_id, ()) if not a.get("iscrowd") and a["category_id"] in index
        ]
        dts = sorted(
            (
                d
                for d in found.imgToAnns.get(image_id, ())
                if d["score"] >= score and d["category_id"] in index
            ),
            key=lambda d: -d["score"],
        )
        taken = np.zeros(len(gts), dtype=bool)
        if gts and dts:
            ious = mask_utils.iou([d["bbox"] for d in dts], [g["bbox"] for g in gts], [0] * len(gts))
        for d, detection in enumerate(dts):
            best = -1
            if gts:
                overlaps = np.where(taken, -1.0, np.asarray(ious[d]))
                best = int(np.argmax(overlaps))
                if overlaps[best] < MATCH_IOU:
                    best = -1
            if best >= 0:
                taken[best] = True
                matrix[index[gts[best]["category_id"]], index[detection["category_id"]]] += 1
            else:
                matrix[-1, index[detection["category_id"]]] += 1
        for g, annotation in enumerate(gts):
            if not taken[g]:
                matrix[index[annotation["category_id"]], -1] += 1
    return {"labels": [names[c] for c in category_ids] + [BACKGROUND], "matrix": matrix.tolist()}


def _kept(evaluation: COCOeval, score: float) -> dict[Any, list[tuple[int, list[float], float]]]:
    """Per image, the detections at the operating score: (category, [x, y, w, h], score)."""
    found: dict[Any, list[tuple[int, list[float], float]]] = {}
    for image_id in evaluation.params.imgIds:
        found[image_id] = [
            (d["category_id"], d["bbox"], d["score"])
            for d in evaluation.cocoDt.imgToAnns.get(image_id, ())
            if d["score"] >= score and d["category_id"] in evaluation.params.catIds
        ]
    return found


def _worst(
    truth: COCO, evaluation: COCOeval, matches: _Matches, score: float, names: Mapping[int, str]
) -> tuple[list[dict[str, Any]], list[PictureMarks]]:
    """The pictures with the most false positives plus misses at the operating score, and their marks."""
    t = int(np.argmin(np.abs(evaluation.params.iouThrs - MATCH_IOU)))
    iou_count = len(evaluation.params.iouThrs)
    per_image: dict[Any, dict[str, Any]] = {}
    for image in _image_evaluations(evaluation):
        state = per_image.setdefault(image["image_id"], {"false_positives": 0, "misses": 0, "marks": []})
        dt_matches = np.asarray(image["dtMatches"]).reshape(iou_count, -1)[t]
        dt_ignore = np.asarray(image["dtIgnore"], dtype=bool).reshape(iou_count, -1)[t]
        gt_ignore = np.asarray(image["gtIgnore"], dtype=bool)
        scores = dict(zip(image["dtIds"], image["dtScores"], strict=True))
        found_by = {}
        for d, dt_id in enumerate(image["dtIds"]):
            if dt_ignore[d] or scores[dt_id] < score:
                continue
            annotation = evaluation.cocoDt.anns[dt_id]
            hit = dt_matches[d] > 0
            if hit:
                found_by[int(dt_matches[d])] = dt_id  # dtMatches holds the matched ground truth's id
            else:
                state["false_positives"] += 1
            kind = "hit" if hit else "false_positive"
            state["marks"].append(
                _mark(annotation["bbox"], names[annotation["category_id"]], kind, scores[dt_id])
            )
        for g, gt_id in enumerate(image["gtIds"]):
            annotation = truth.anns[gt_id]
            found = gt_id in found_by  # matched by a detection at the operating score
            if not gt_ignore[g] and not found:
                state["misses"] += 1
            kind = "truth" if found or gt_ignore[g] else "miss"
            state["marks"].insert(0, _mark(annotation["bbox"], names[annotation["category_id"]], kind, None))
    ranked = sorted(
        (item for item in per_image.items() if item[1]["false_positives"] + item[1]["misses"] > 0),
        key=lambda item: (
            -(item[1]["false_positives"] + item[1]["misses"]),
            truth.imgs[item[0]]["file_name"],
        ),
    )[:WORST]
    listed, gallery = [], []
    for number, (image_id, state) in enumerate(ranked, 1):
        file = truth.imgs[image_id]["file_name"]
        listed.append(
            {
                "file": file,
                "false_positives": state["false_positives"],
                "misses": state["misses"],
                "picture": None,  # set by the finisher once drawn
                "number": number,
            }
        )
        gallery.append(PictureMarks(file, state["marks"]))
    return listed, gallery


def _mark(box: Sequence[float], label: str, kind: str, score: float | None) -> tuple:
    x, y, w, h = (float(v) for v in box)
    return (x, y, x + w, y + h, label, kind, None if score is None else float(score))


# -- comparison ----------------------------------------------------------------------------------


def disagreements(
    first: Mapping[str, list[tuple[int, list[float], float]]],
    second: Mapping[str, list[tuple[int, list[float], float]]],
) -> list[dict[str, Any]]:
    """Per picture, the detections (at the operating score) only one model has: same class, IoU >= 0.5,
    one-to-one, best scores first; the pictures where they disagree most come first."""
    rows = []
    for file in sorted(set(first) & set(second)):
        a, b = _unpaired(first[file], second[file])
        if a or b:
            rows.append(
                {"file": file, "only_first": len(a), "only_second": len(b), "_first": a, "_second": b}
            )
    rows.sort(key=lambda row: (-(row["only_first"] + row["only_second"]), row["file"]))
    return rows[:WORST]


def _unpaired(a: list, b: list) -> tuple[list, list]:
    """The detections (category, [x, y, w, h], score) of each model that the other has no pair for."""

    def items(found: list) -> list:
        return [(category, (x, y, x + w, y + h), score) for category, (x, y, w, h), score in found]

    pairing = pair_boxes(items(a), items(b), MATCH_IOU)
    return [a[i] for i in pairing.only_first], [b[j] for j in pairing.only_second]


def deltas(first: Mapping[str, Any], second: Mapping[str, Any]) -> dict[str, Any]:
    """second - first for every metric both have (per IoU type for detectors)."""
    out: dict[str, Any] = {}
    for key, value in first.items():
        other = second.get(key)
        if isinstance(value, Mapping) and isinstance(other, Mapping):
            inner = deltas(value, other)
            if inner:
                out[key] = inner
        elif isinstance(value, int | float) and isinstance(other, int | float):
            # COCOeval's -1 (no ground truth in that area range) has no difference
            out[key] = None if value < 0 or other < 0 else round(float(other) - float(value), 6)
    return out


def per_class_deltas(
    first: Sequence[Mapping[str, Any]], second: Sequence[Mapping[str, Any]], key: str
) -> list[dict[str, Any]]:
    """Per category: both models' `key` (AP, or recall for classifiers) and second - first."""
    theirs = {row["name"]: row.get(key) for row in second}
    rows = []
    for row in first:
        mine, other = row.get(key), theirs.get(row["name"])
        delta = None if mine is None or other is None else round(other - mine, 6)
        rows.append({"name": row["name"], "first": mine, "second": other, "delta": delta})
    return rows


# -- classification ------------------------------------------------------------------------------


def evaluate_classes(
    dataset: Dataset, predictions: Mapping[str, Mapping[str, Any]], matching: Matching
) -> ModelEvaluation:
    """Top-1 and top-5 accuracy, per-class precision/recall/F1 and the confusion matrix (rows: truth,
    columns: the top class, plus "other label" for a top class that meets no category)."""
    counted = set(matching.category_ids)
    categories = [c for c in dataset.categories if c.id in counted]
    index = {c.id: i for i, c in enumerate(categories)}
    matrix = np.zeros((len(categories), len(categories) + 1), dtype=int)
    top1 = top5 = total = 0
    wrong: list[dict[str, Any]] = []
    names = {c.id: c.name for c in dataset.categories}
    for file, prediction in predictions.items():
        truth = dataset.labels.get(file)
        if truth is None or truth not in index:
            continue
        total += 1
        ranked = [_category(matching, c) for c in prediction.get("classes") or ()]
        first = ranked[0] if ranked else None
        if first == truth:
            top1 += 1
        if truth in ranked[:5]:
            top5 += 1
        column = index[first] if first in index else len(categories)
        matrix[index[truth], column] += 1
        if first != truth:
            top = (prediction.get("classes") or [{}])[0]
            wrong.append(
                {
                    "file": file,
                    "truth": names[truth],
                    "predicted": names.get(first, str(top.get("label", "")))
                    if first is not None
                    else str(top.get("label", "")),
                    "score": float(top.get("score", 0.0)),
                }
            )
    per_class = []
    for i, category in enumerate(categories):
        support = int(matrix[i].sum())
        predicted = int(matrix[:, i].sum())
        correct = int(matrix[i, i])
        precision = correct / predicted if predicted else None
        recall = correct / support if support else None
        f1 = 2 * precision * recall / (precision + recall) if precision and recall else 0.0
        per_class.append(
            {
                "category_id": category.id,
                "name": category.name,
                "support": support,
                "precision": None if precision is None else round(precision, 6),
                "recall": None if recall is None else round(recall, 6),
                "f1": round(f1, 6),
            }
        )
    wrong.sort(key=lambda item: (-item["score"], item["file"]))
    worst = [{**item, "picture": None, "number": n} for n, item in enumerate(wrong[:WORST], 1)]
    confusion = {"labels": [c.name for c in categories] + [OTHER], "matrix": matrix.tolist()}
    entry = {
        "metrics": {
            "top1": round(top1 / total, 6) if total else 0.0,
            "top5": round(top5 / total, 6) if total else 0.0,
            "confusion_matrix": confusion,  # the contract's place; "confusion" below as for detectors
        },
        "per_class": per_class,
        "counts": {"pictures": total, "top1_correct": top1, "top5_correct": top5},
        "confusion": confusion,
        "worst": worst,
    }
    return ModelEvaluation(entry, gallery=[PictureMarks(item["file"]) for item in worst])
