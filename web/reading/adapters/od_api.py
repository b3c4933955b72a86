"""TF Object Detection API exports, TF2 (`exporter_main_v2.py`) and TF1 (`export_inference_graph.py`).

Signature: one image input (TF2 `input_tensor`, TF1 `inputs`/`image_tensor`: uint8 `[1|-1, -1, -1,
3]`, float32 0-255 for `float_image_tensor`, or encoded JPEG/PNG strings `[-1]` for
`encoded_image_string_tensor`) and the outputs `detection_boxes` [B, N, 4] normalized
`[ymin, xmin, ymax, xmax]` of the input, `detection_scores` [B, N], `detection_classes` [B, N]
1-based floats, `num_detections` [B], optionally `detection_masks` [B, N, h, w] box-relative
probabilities (Mask R-CNN). Rows past `num_detections` are padding.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from web.domain import Box, Detection, Mask
from web.errors import ModelServerError
from web.options import PredictOptions
from web.reading.adapters.base import Layout, ModelAdapter, ModelReading, NotRecognized
from web.reading.adapters.frames import Frame
from web.reading.adapters.postprocess import best_rows, make_detections, reframe_mask, require_probabilities
from web.reading.label_maps import LabelMap
from web.reading.signatures import ModelSignature

BOXES, SCORES, CLASSES = "detection_boxes", "detection_scores", "detection_classes"
NUM, MASKS = "num_detections", "detection_masks"
DETECTION_OUTPUTS = (BOXES, SCORES, CLASSES)


@dataclass(frozen=True)
class Rows:
    """The detection rows kept for one image, best first: their indices and values as exported."""

    indices: np.ndarray
    yxyx: np.ndarray  # [N, 4] boxes as the model wrote them
    scores: np.ndarray
    class_ids: np.ndarray


def recognize_detection_outputs(signature: ModelSignature) -> Layout:
    """The `detection_*` outputs both the OD API and Model Garden write, checked by dtype and rank."""
    outputs = signature.outputs
    missing = [key for key in DETECTION_OUTPUTS if key not in outputs]
    if missing:
        raise NotRecognized(f"no {', '.join(missing)} output{'s' if len(missing) > 1 else ''}")
    boxes = outputs[BOXES]
    if not boxes.is_float or boxes.rank not in (2, 3) or boxes.dim(-1) not in (4, -1):
        raise NotRecognized(f"detection_boxes must be float [batch, N, 4], not {boxes.describe()}")
    for key in (SCORES, CLASSES):
        spec = outputs[key]
        if spec.rank is not None and spec.rank != boxes.rank - 1:
            raise NotRecognized(f"{key} must be [batch, N] like detection_boxes, not {spec.describe()}")
    read = [BOXES, SCORES, CLASSES]
    if NUM in outputs:
        read.append(NUM)
    masks = outputs.get(MASKS)
    if masks is not None:
        if masks.rank is not None and masks.rank != boxes.rank + 1:
            raise NotRecognized(f"detection_masks must be [batch, N, height, width], not {masks.describe()}")
        read.append(MASKS)
    kind = "segmentation" if masks is not None else "detection"
    return Layout(kind, tuple(read), {"batched": boxes.rank == 3})


def item(outputs: dict[str, np.ndarray], key: str, index: int, batched: bool) -> np.ndarray:
    """Batch item `index` of an output (the whole output when the signature has no batch dimension)."""
    value = np.asarray(outputs[key])
    return value[index] if batched else value


def select_rows(
    reading: ModelReading, outputs: dict[str, np.ndarray], index: int, options: PredictOptions
) -> Rows:
    """The rows of image `index` up to num_detections that reach min_score, best first."""
    batched = reading.layout.details["batched"]
    missing = [key for key in DETECTION_OUTPUTS if key not in outputs]
    if missing:
        raise ModelServerError(f"model '{reading.model}' did not return {', '.join(missing)}")
    boxes = item(outputs, BOXES, index, batched).astype(np.float64).reshape(-1, 4)
    scores = item(outputs, SCORES, index, batched).astype(np.float64).reshape(-1)
    classes = item(outputs, CLASSES, index, batched).reshape(-1)
    count = min(len(boxes), len(scores), len(classes))
    if NUM in outputs:
        num = np.asarray(outputs[NUM]).reshape(-1)
        count = min(count, max(0, int(num[index] if batched and num.size > index else num[0])))
    require_probabilities(scores[:count], reading.model, SCORES, reading.settings_path)
    keep = best_rows(scores[:count], options.min_score, options.max_detections)
    class_ids = np.rint(classes[keep].astype(np.float64)).astype(np.int64)
    return Rows(keep, boxes[keep], scores[keep], class_ids)


def box_relative_masks(
    reading: ModelReading,
    outputs: dict[str, np.ndarray],
    index: int,
    rows: Rows,
    upload: np.ndarray,
    frame: Frame,
) -> list[Mask | None] | None:
    """The kept rows' box-relative masks reframed into the upload (None without a masks output)."""
    if MASKS not in outputs:
        return None
    masks = item(outputs, MASKS, index, reading.layout.details["batched"])
    size = (frame.height, frame.width)
    return [
        reframe_mask(masks[row], Box(*map(float, box)), size)
        for row, box in zip(rows.indices, upload, strict=True)
    ]


class OdApiAdapter(ModelAdapter):
    family = "tf_od_api"
    title = "TF Object Detection API (TF2 and TF1 exports)"
    class_offset = 0  # classes are already 1-based label map ids

    def recognize(self, signature: ModelSignature) -> Layout:
        layout = recognize_detection_outputs(signature)
        if "image_info" in signature.outputs:
            raise NotRecognized("it has an image_info output, which Model Garden exports write")
        return layout

    def decode(
        self,
        reading: ModelReading,
        outputs: dict[str, np.ndarray],
        index: int,
        frame: Frame,
        options: PredictOptions,
        labels: LabelMap,
    ) -> list[Detection]:
        rows = select_rows(reading, outputs, index, options)
        xyxy = rows.yxyx[:, [1, 0, 3, 2]]
        if (reading.settings.box_coordinates or "normalized") == "normalized":
            xyxy = frame.normalized_to_input(xyxy)
        upload = frame.to_upload(xyxy)
        masks = box_relative_masks(reading, outputs, index, rows, upload, frame)
        return make_detections(upload, rows.scores, rows.class_ids, labels, reading.class_offset, masks)
