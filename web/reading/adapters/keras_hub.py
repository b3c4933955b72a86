"""KerasHub object detectors (`RetinaNetObjectDetector`, `DFineObjectDetector`, ...) exported with
their decoder: what `ObjectDetector.predict` returns, as a serving signature.

Signature: `images` float32 `[B, H, W, 3]` (usually a fixed size, e.g. 800x800 or 640x640); outputs
`boxes` [B, N, 4] in the detector's `bounding_box_format` (yxyx by default) in pixels of that input,
`confidence` [B, N] (already through the sigmoid), `labels` [B, N] int 0-based class indices,
`num_detections` [B]; unused slots hold -1. The image converter is not part of such an export, so
the gateway does it: RetinaNet's defaults are the family default (keep the aspect ratio and pad
with 0 to the input, ImageNet mean/std on 0-1 pixels); D-FINE presets crop instead
(`resize = "crop"`, `pixel_range = "0-1"` without mean/std).
"""

from __future__ import annotations

import numpy as np

from web.domain import Detection
from web.errors import ModelServerError
from web.options import PredictOptions
from web.reading.adapters.base import (
    Layout,
    ModelAdapter,
    ModelReading,
    NotRecognized,
    Preprocessing,
    needs_tensor_input,
)
from web.reading.adapters.frames import Frame, to_xyxy
from web.reading.adapters.postprocess import best_rows, make_detections, require_probabilities
from web.reading.label_maps import LabelMap
from web.reading.model_settings import ModelSettings
from web.reading.signatures import ImageInput, ModelSignature

BOXES, CONFIDENCE, LABELS, NUM = "boxes", "confidence", "labels", "num_detections"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class KerasHubAdapter(ModelAdapter):
    family = "keras_hub"
    title = "KerasHub object detectors (exported with their decoder)"
    class_offset = 1  # labels are 0-based; label maps start at 1

    def recognize(self, signature: ModelSignature) -> Layout:
        outputs = signature.outputs
        missing = [key for key in (BOXES, CONFIDENCE, LABELS) if key not in outputs]
        if missing:
            raise NotRecognized(f"no {', '.join(missing)} output{'s' if len(missing) > 1 else ''}")
        boxes, confidence, labels = outputs[BOXES], outputs[CONFIDENCE], outputs[LABELS]
        if not boxes.is_float or boxes.rank != 3 or boxes.dim(-1) not in (4, -1):
            raise NotRecognized(f"boxes must be float [batch, N, 4], not {boxes.describe()}")
        if not confidence.is_float or confidence.rank != 2:
            raise NotRecognized(f"confidence must be float [batch, N], not {confidence.describe()}")
        if labels.rank != 2 or not (labels.is_int or labels.is_float):
            raise NotRecognized(f"labels must be [batch, N] class indices, not {labels.describe()}")
        read = (BOXES, CONFIDENCE, LABELS, *((NUM,) if NUM in outputs else ()))
        return Layout("detection", read)

    def check_input(self, image_input: ImageInput, settings: ModelSettings) -> None:
        needs_tensor_input(image_input, self.family)

    def default_preprocessing(self, image_input: ImageInput) -> Preprocessing:
        return Preprocessing(
            resize="letterbox" if image_input.fixed_size else "none",
            pixel_range="0-1",
            mean=IMAGENET_MEAN,
            std=IMAGENET_STD,
            pad_value=0,
        )

    def decode(
        self,
        reading: ModelReading,
        outputs: dict[str, np.ndarray],
        index: int,
        frame: Frame,
        options: PredictOptions,
        labels: LabelMap,
    ) -> list[Detection]:
        missing = [key for key in (BOXES, CONFIDENCE, LABELS) if key not in outputs]
        if missing:
            raise ModelServerError(f"model '{reading.model}' did not return {', '.join(missing)}")
        boxes = np.asarray(outputs[BOXES][index], dtype=np.float64).reshape(-1, 4)
        scores = np.asarray(outputs[CONFIDENCE][index], dtype=np.float64).reshape(-1)
        classes = np.rint(np.asarray(outputs[LABELS][index], dtype=np.float64)).astype(np.int64).reshape(-1)
        count = min(len(boxes), len(scores), len(classes))
        if NUM in outputs:
            count = min(count, max(0, int(np.asarray(outputs[NUM]).reshape(-1)[index])))
        boxes, scores, classes = boxes[:count], scores[:count], classes[:count]
        valid = (classes >= 0) & (scores >= 0)  # -1 marks an unused slot
        require_probabilities(scores[valid], reading.model, CONFIDENCE, reading.settings_path)
        keep = best_rows(scores, options.min_score, options.max_detections, valid)
        xyxy = to_xyxy(boxes[keep], reading.settings.box_format or "yxyx")
        if reading.settings.box_coordinates == "normalized":
            xyxy = frame.normalized_to_input(xyxy)
        upload = frame.to_upload(xyxy)
        return make_detections(upload, scores[keep], classes[keep], labels, reading.class_offset)
