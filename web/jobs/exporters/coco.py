"""`coco.json`: the predictions as a COCO detection dataset (CVAT, FiftyOne, Roboflow, pycocotools).

COCO puts images, annotations and categories in one JSON object, but a writer must not hold a
thousand pictures' annotations: images and annotations are spooled to two temporary files as records
come, and the object is assembled from them at the end, once the categories are known.

Conventions: image ids count from 1 in record order; category ids are the model's class ids (its label
map, plus any id a detection names that the map lacks); `bbox` is [x, y, width, height] in pixels,
clamped into the picture; `area` is the mask's pixel count when there is a mask, else the box's;
`segmentation` is the gateway's COCO RLE (the picture-sized mask), or [] for a box; `score` is kept
on each annotation (FiftyOne reads it as the confidence) and `iscrowd` is 0.
"""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path
from typing import IO, Any

from pycocotools import mask as coco_mask

from web.jobs.exporters import base
from web.jobs.exporters.base import AtomicFile, Exporter, LabelMap, Record, box_of, detections, image_size


class _Spool:
    """A hidden temporary file of comma-separated JSON values, copied into the result at the end."""

    def __init__(self, folder: Path, tag: str) -> None:
        self.path = folder / f".coco.json.{uuid.uuid4().hex}.{tag}.tmp"
        self.stream: IO[str] = open(self.path, "w+", encoding="utf-8")  # removed by close
        self.count = 0

    def add(self, value: Any) -> None:
        if self.count:
            self.stream.write(",")
        self.stream.write(json.dumps(value, ensure_ascii=False, separators=(",", ":")))
        self.count += 1

    def copy_to(self, out: IO[str]) -> None:
        self.stream.flush()
        self.stream.seek(0)
        shutil.copyfileobj(self.stream, out)

    def close(self) -> None:
        self.stream.close()
        self.path.unlink(missing_ok=True)


class CocoExporter(Exporter):
    """COCO detection results as a dataset: images, categories, annotations with bbox, score, RLE."""

    file_name = "coco.json"

    def __init__(self, folder: Path, labels: LabelMap, description: str = "") -> None:
        super().__init__(folder, labels)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.description = description
        self._images = _Spool(self.folder, "images")
        self._annotations = _Spool(self.folder, "annotations")
        self._extra: dict[int, str] = {}  # class ids the label map lacks -> the detection's label

    def add(self, record: Record) -> None:
        width, height = image_size(record)
        if not self.description:
            self.description = f"predictions of {base.model_version(record)}"
        image_id = self._images.count + 1
        self._images.add({"id": image_id, "file_name": record["file"], "width": width, "height": height})
        for det in detections(record):
            class_id = int(det["class_id"])
            if class_id not in self.labels:
                self._extra.setdefault(class_id, str(det["label"]))
            box = box_of(det, width, height)
            bbox = [box.xmin, box.ymin, box.width, box.height]
            mask = det.get("mask")
            if mask:
                rle = {"size": [int(s) for s in mask["size"]], "counts": str(mask["counts"])}
                area = float(coco_mask.area({"size": rle["size"], "counts": rle["counts"].encode()}))
                segmentation: Any = rle
            else:
                area, segmentation = box.width * box.height, []
            self._annotations.add(
                {
                    "id": self._annotations.count + 1,
                    "image_id": image_id,
                    "category_id": class_id,
                    "bbox": bbox,
                    "area": area,
                    "score": float(det["score"]),
                    "iscrowd": 0,
                    "segmentation": segmentation,
                }
            )

    def categories(self) -> list[dict[str, Any]]:
        names = {**self._extra, **self.labels}
        return [{"id": cid, "name": names[cid], "supercategory": ""} for cid in sorted(names)]

    def _finish(self) -> Path:
        result = AtomicFile(self.folder / self.file_name)
        try:
            out = result.stream
            info = {"description": self.description, "version": "1.0"}
            out.write('{"info":' + json.dumps(info, ensure_ascii=False) + ',"licenses":[],"categories":')
            out.write(json.dumps(self.categories(), ensure_ascii=False, separators=(",", ":")))
            out.write(',"images":[')
            self._images.copy_to(out)
            out.write('],"annotations":[')
            self._annotations.copy_to(out)
            out.write("]}\n")
            path = result.commit()
        except BaseException:
            result.abort()
            raise
        finally:
            self._discard()
        return path

    def _discard(self) -> None:
        self._images.close()
        self._annotations.close()
