"""KerasHub object detectors (`RetinaNetObjectDetector`, `DFineObjectDetector`, ...) exported with
their decoder: what `ObjectDetector.predict` returns, as a serving signature.

Signature: `images` float32 `[B, H, W, 3]` (usually a fixed size, e.g. 800x800 or 640x640); outputs
`boxes` [B, N, 4] in the detector's `bounding_box_format` (yxyx by default) in pixels of that input,
`confidence` [B, N] (already through the sigmoid), `labels` [B, N] int 0-based class indices,
`num_detections` [B]; unused slots hold -1.

`model.export()` writes only the forward pass (raw `bbox_regression` / `cls_logits` heads, no
decoder), so every export with this signature comes from a hand-written serving function
(`keras.export.ExportArchive`), and nothing in it says whether that function runs the image
converter (its scale and offset) or takes converted pixels. Read the wrong way, pixels are
normalized twice or never and the boxes are other boxes, so such a model is refused until
gateway.toml says `preprocessing = "in_model"` (the gateway sends 0-255 pixels) or `"gateway"`
(RetinaNet's converter: 0-1 pixels, ImageNet mean/std; for another converter, `pixel_range` and
`mean`/`std` instead, e.g. D-FINE's `pixel_range = "0-1"` alone). Either way the gateway does the
converter's resize, which the signature cannot tell either: the family default keeps the aspect
ratio and pads with 0 (`pad_to_aspect_ratio=True`); a converter that crops (`crop_to_aspect_ratio`,
KerasHub's default) wants `resize = "crop"`, one that does neither `resize = "stretch"`.
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

    def conversion_choices(self, image_input: ImageInput) -> tuple[str, str, str]:
        return (
            'preprocessing = "in_model"',
            'preprocessing = "gateway"',
            'With "gateway" the gateway scales pixels to 0-1 and applies ImageNet mean/std (RetinaNet\'s '
            "converter); for a converter with another scale and offset set pixel_range (and mean, std) "
            'instead, e.g. pixel_range = "0-1" alone for D-FINE\'s. Either way the gateway does the '
            "converter's resize: it keeps the aspect ratio and pads with 0 (pad_to_aspect_ratio); a "
            'converter that crops (crop_to_aspect_ratio, KerasHub\'s default) wants resize = "crop" too.',
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
