"""`yolo.zip`: labels in the Ultralytics layout, ready to sit beside the pictures for training.

Ultralytics finds a picture's labels by replacing `images/` with `labels/` in its path and the suffix
with `.txt`, so the zip holds `labels/<path in the archive without suffix>.txt` (folders kept): unzip
it next to an `images/` folder holding the archive's pictures. Each line is `class cx cy w h`,
normalised to the picture, with 0-based class indices into `names` in `data.yaml`: the label map's
ids in increasing order, then any id it lacks in the order detections first name it (so indices never
change mid-job). A picture without detections gets an empty file (a background picture, as
Ultralytics counts it). Boxes only: masks stay in coco.json and label_studio.json.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from web.jobs.exporters.base import LabelMap, Record, ZipExporter, box_of, detections, image_size, stem_path


class YoloExporter(ZipExporter):
    file_name = "yolo.zip"

    def __init__(self, folder: Path, labels: LabelMap) -> None:
        super().__init__(folder, labels)
        self._names: dict[int, str] = {cid: self.labels[cid] for cid in sorted(self.labels)}
        self._index = {cid: i for i, cid in enumerate(self._names)}

    def class_index(self, class_id: int, label: str) -> int:
        if class_id not in self._index:
            self._index[class_id] = len(self._index)
            self._names[class_id] = label
        return self._index[class_id]

    def add(self, record: Record) -> None:
        member = f"labels/{stem_path(record['file'])}.txt"
        if not self._claim(member, record["file"]):
            return
        width, height = image_size(record)
        lines = []
        for det in detections(record):
            box = box_of(det, width, height)
            index = self.class_index(int(det["class_id"]), str(det["label"]))
            cx, cy = (box.xmin + box.xmax) / 2 / width, (box.ymin + box.ymax) / 2 / height
            lines.append(f"{index} {cx:.6f} {cy:.6f} {box.width / width:.6f} {box.height / height:.6f}\n")
        self._write(member, "".join(lines))

    def _write_last(self) -> None:
        data = {
            "path": ".",
            "train": "images",
            "val": "images",
            "nc": len(self._names),
            "names": {i: name for i, name in enumerate(self._names.values())},
        }
        self._write("data.yaml", yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
