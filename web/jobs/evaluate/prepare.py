"""An evaluate job's dataset, read and checked inside `JobStore.create` (the upload's request).

`Preparer` reads the dataset (`dataset.read_dataset`), refuses one that no label of a model can meet
(or the wrong kind of set for the model: boxes for a classifier, folders for a detector), keeps the
normalised ground truth as the job's `dataset.json`, and cuts the picture listing to the dataset's
pictures. Only the dataset and matching modules are imported: the gateway never loads COCOeval.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from web.jobs.archives import Archive, ArchiveError
from web.jobs.evaluate.dataset import read_dataset
from web.jobs.evaluate.matching import match_categories, nothing_matches
from web.jobs.store import write_atomic

DATASET_FILE = "dataset.json"  # in the job's folder, beside input.zip
CLASSIFIER_KINDS = ("classification",)


def _json_bytes(data: Any) -> bytes:
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


@dataclass(frozen=True)
class ModelFacts:
    """What the gateway knows of a model before predicting: its labels (maybe none) and its kind."""

    name: str
    labels: Mapping[int, str]
    kind: str  # detection | segmentation | classification | unknown


@dataclass(frozen=True)
class Preparer:
    """`JobStore.create`'s `prepare` for an evaluate job (see the module docstring)."""

    models: Sequence[ModelFacts]

    def __call__(self, folder: Path, zip_path: Path, listing: Archive) -> Archive:
        dataset, cut = read_dataset(zip_path, listing)
        for model in self.models:
            if model.kind in CLASSIFIER_KINDS and dataset.kind == "detection":
                raise ArchiveError(
                    f"{model.name} is a classifier: evaluate it on one folder of pictures per class, "
                    "not on a COCO detection set"
                )
            if model.kind not in CLASSIFIER_KINDS + ("unknown",) and dataset.kind == "classification":
                raise ArchiveError(
                    f"no COCO annotation file in the zip, and {model.name} is a detector: zip a COCO "
                    "dataset (a .json with images, annotations and categories, and its pictures)"
                )
            if model.labels and not match_categories(dataset.categories, model.labels).matched:
                raise ArchiveError(nothing_matches(dataset.categories, model.labels, model.name))
        write_atomic(folder / DATASET_FILE, _json_bytes(dataset.to_json()))
        return cut
