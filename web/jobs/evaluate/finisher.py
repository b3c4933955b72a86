"""The end of an evaluate job: every model scored, the gallery drawn, the report written.

The job's dataset was checked and kept as `dataset.json` when it was created (`prepare.Preparer`); the
chunks predicted as a predict job's do (each picture with both models when comparing). Then
`finish_evaluation` (the runner's finisher for kind "evaluate") scores every model with COCOeval
(`metrics`), draws the gallery pictures, the plots and the report, and writes `report.json`,
`report.html`, `coco_results.json` (and `coco_results_compare.json`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from web.jobs.archives import EntryError
from web.jobs.evaluate.dataset import Dataset
from web.jobs.evaluate.gallery import Mark, draw_picture, draw_side_by_side
from web.jobs.evaluate.matching import match_categories, nothing_matches
from web.jobs.evaluate.metrics import (
    ModelEvaluation,
    deltas,
    disagreements,
    evaluate_classes,
    evaluate_detections,
    per_class_deltas,
)
from web.jobs.evaluate.plots import write_plots
from web.jobs.evaluate.prepare import DATASET_FILE
from web.jobs.evaluate.report_html import HTML_FILE, write_report_html
from web.jobs.kinds import Assembly, JobError, Stopped
from web.jobs.store import GALLERY, write_atomic

REPORT_FILE = "report.json"
RESULTS_FILE, COMPARE_RESULTS_FILE = "coco_results.json", "coco_results_compare.json"


def _json_bytes(data: Any) -> bytes:
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _seen_labels(predictions: Mapping[str, Mapping[str, Any]], known: Mapping[int, str]) -> dict[int, str]:
    """Every (class id, label) the model's answers named, then the label map's other names.

    The answers come first: their class ids are the ones predictions carry, while a label map counts
    from 1 and some families answer from 0 (the adapter's class offset), so a label map entry joins
    only where neither its id nor its name was seen (a class the model never answered still counts
    as one of its labels, for the report's unmatched list)."""
    labels: dict[int, str] = {}
    for prediction in predictions.values():
        for item in (*(prediction.get("detections") or ()), *(prediction.get("classes") or ())):
            if "class_id" in item and "label" in item:
                labels.setdefault(int(item["class_id"]), str(item["label"]))
    names = {label.strip().casefold() for label in labels.values()}
    for class_id, label in known.items():
        if class_id not in labels and label.strip().casefold() not in names:
            labels[class_id] = label
    return labels


def _version(predictions: Mapping[str, Mapping[str, Any]], asked: int | None) -> int | None:
    for prediction in predictions.values():
        return (prediction.get("model") or {}).get("version", asked)
    return asked


def finish_evaluation(assembly: Assembly) -> dict[str, Path]:
    """The finisher of evaluate jobs: report.json, report.html, COCO results, plots and gallery."""

    job, folder = assembly.job, assembly.folder
    dataset = Dataset.from_json(json.loads((assembly.job_folder / DATASET_FILE).read_text(encoding="utf-8")))
    first: dict[str, dict[str, Any]] = {}
    second: dict[str, dict[str, Any]] = {}
    for count, line in enumerate(assembly.lines()):
        if count % 64 == 0 and assembly.stopped():
            raise Stopped
        if "prediction" in line:
            first[line["file"]] = line["prediction"]
            if "compare" in line:
                second[line["file"]] = line["compare"]
    if not first:
        raise JobError("no picture of the dataset could be predicted: see `skipped` for why")

    score = float(job.evaluation.get("operating_score", 0.5))
    runs = [(job.model, first, job.labels)]
    if job.compare:
        known = {int(k): str(v) for k, v in (job.compare.get("labels") or {}).items()}
        runs.append((job.compare, second, known))
    evaluations: list[ModelEvaluation] = []
    entries: list[dict[str, Any]] = []
    for model, predictions, known in runs:
        labels = _seen_labels(predictions, known)
        matching = match_categories(dataset.categories, labels)
        if not matching.matched:
            raise JobError(nothing_matches(dataset.categories, labels, model["name"]))
        answers_classes = any("classes" in p for p in predictions.values())
        if dataset.kind == "detection" and answers_classes:
            raise JobError(f"{model['name']} answers classes, not boxes: evaluate it on one folder per class")
        if dataset.kind == "classification" and not answers_classes:
            raise JobError(f"{model['name']} answers boxes: evaluate a detector on a COCO dataset")
        if dataset.kind == "detection":
            evaluation = evaluate_detections(dataset, predictions, matching, score)
        else:
            evaluation = evaluate_classes(dataset, predictions, matching)
        version = _version(predictions, model.get("version"))
        entry = {
            "name": model["name"],
            "version": version,
            "label": f"{model['name']}:v{version}" if version is not None else model["name"],
            "matching": matching.to_json(),
            **evaluation.entry,
        }
        evaluations.append(evaluation)
        entries.append(entry)
        if assembly.stopped():
            raise Stopped
        if version is not None and model is job.model:
            assembly.model_version = int(version)

    archive = None
    gallery = folder / GALLERY
    gallery.mkdir(parents=True, exist_ok=True)

    def picture(file: str) -> bytes | None:
        nonlocal archive
        if assembly.archive is None:
            return None
        if archive is None:
            archive = assembly.archive()
        try:
            return archive.read(file)
        except (EntryError, KeyError):
            return None

    for m, (evaluation, entry) in enumerate(zip(evaluations, entries, strict=True)):
        for item, marks in zip(entry["worst"], evaluation.gallery, strict=True):
            data = picture(item["file"])
            if data is None:
                continue
            name = f"worst-{m}-{item.pop('number'):02d}.jpg"
            drawn = [
                Mark(box=tuple(mark[:4]), label=mark[4], kind=mark[5], score=mark[6]) for mark in marks.marks
            ]
            write_atomic(gallery / name, draw_picture(data, drawn), fsync=False)
            item["picture"] = f"{GALLERY}/{name}"
        for item in entry["worst"]:
            item.pop("number", None)

    comparison = None
    if len(entries) == 2:
        a, b = entries
        comparison = {
            "models": [a["label"], b["label"]],
            "deltas": deltas(a["metrics"], b["metrics"]),
            "per_class": per_class_deltas(
                a["per_class"], b["per_class"], "AP" if dataset.kind == "detection" else "recall"
            ),
            "disagreements": [],
        }
        if dataset.kind == "detection":
            names = {c.id: c.name for c in dataset.categories}
            for number, row in enumerate(disagreements(evaluations[0].found, evaluations[1].found), 1):
                only_a, only_b = row.pop("_first"), row.pop("_second")
                data = picture(row["file"])
                row["picture"] = None
                if data is not None:
                    left = _marks(evaluations[0].found[row["file"]], only_a, names)
                    right = _marks(evaluations[1].found[row["file"]], only_b, names)
                    name = f"disagree-{number:02d}.jpg"
                    write_atomic(
                        gallery / name,
                        draw_side_by_side(data, left, right, (a["label"], b["label"])),
                        fsync=False,
                    )
                    row["picture"] = f"{GALLERY}/{name}"
                comparison["disagreements"].append(row)

    report = {
        "kind": dataset.kind,
        "images": len(first),
        "dataset": dataset.summary(),
        "protocol": {
            "min_score": float(job.options.get("min_score", 0.0)),
            "max_detections": int(job.options.get("max_detections", 100)),
            "operating_score": score,
            "iou_types": sorted({t for e in entries for t in e["metrics"]})
            if dataset.kind == "detection"
            else [],
        },
        "models": entries,
        "comparison": comparison,
    }
    written: dict[str, Path] = {}
    if dataset.kind == "detection":
        write_atomic(folder / RESULTS_FILE, _json_bytes(evaluations[0].results))
        written[RESULTS_FILE] = folder / RESULTS_FILE
        if len(evaluations) == 2:
            write_atomic(folder / COMPARE_RESULTS_FILE, _json_bytes(evaluations[1].results))
            written[COMPARE_RESULTS_FILE] = folder / COMPARE_RESULTS_FILE
    if assembly.stopped():
        raise Stopped
    plots = write_plots(report, folder)
    report["plots"] = list(plots)  # in the order a reader takes them: one model's, the other's, the deltas
    written.update(plots)
    write_atomic(folder / REPORT_FILE, _json_bytes(report))
    written[REPORT_FILE] = folder / REPORT_FILE
    written[HTML_FILE] = write_report_html(report, folder, plots)
    return {name: written[name] for name in sorted(written)}


def _marks(kept: list, alone: list, names: Mapping[int, str]) -> list[Mark]:
    """A model's detections for the side-by-side picture; the ones the other model lacks are "only"."""
    lonely = {(c, tuple(b), s) for c, b, s in alone}
    out = []
    for category, box, score in kept:
        x, y, w, h = box
        kind = "only" if (category, tuple(box), score) in lonely else "hit"
        out.append(
            Mark(box=(x, y, x + w, y + h), label=names.get(category, str(category)), kind=kind, score=score)
        )
    return out
