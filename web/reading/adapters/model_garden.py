"""TF Model Garden vision exports (`official.vision.serving.export_saved_model`): RetinaNet, Mask R-CNN.

Signature: `inputs` uint8 `[B, -1, -1, 3]`, `image_bytes` string `[B]` or `tf_example`; outputs
`detection_boxes` [B, N, 4] `[ymin, xmin, ymax, xmax]` in pixels of the model's own resized image,
`detection_scores`, `detection_classes` (int32 label ids), `num_detections`, optional 28x28
box-relative `detection_masks`, and `image_info` [B, 4, 2] = `[[orig_h, orig_w], [in_h, in_w],
[scale_y, scale_x], [offset_y, offset_x]]`, which maps those pixels back to the image received.
With `export_config.output_normalized_coordinates` the boxes are normalized to that image instead
(`box_coordinates = "normalized"` in gateway.toml).
"""

from __future__ import annotations

import numpy as np

from web.domain import Detection
from web.options import PredictOptions
from web.reading.adapters.base import Layout, ModelAdapter, ModelReading, NotRecognized
from web.reading.adapters.frames import Frame
from web.reading.adapters.od_api import box_relative_masks, recognize_detection_outputs, select_rows
from web.reading.adapters.postprocess import make_detections
from web.reading.label_maps import LabelMap
from web.reading.signatures import ModelSignature

IMAGE_INFO = "image_info"


class ModelGardenAdapter(ModelAdapter):
    family = "model_garden"
    title = "TF Model Garden (official.vision)"
    class_offset = 0

    def recognize(self, signature: ModelSignature) -> Layout:
        info = signature.outputs.get(IMAGE_INFO)
        if info is None:
            raise NotRecognized("no image_info output")
        if not info.is_float or info.rank != 3 or info.dim(1) not in (4, -1) or info.dim(2) not in (2, -1):
            raise NotRecognized(f"image_info must be float [batch, 4, 2], not {info.describe()}")
        layout = recognize_detection_outputs(signature)
        return Layout(layout.kind, (*layout.outputs, IMAGE_INFO), layout.details)

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
        info = np.asarray(outputs[IMAGE_INFO], dtype=np.float64)[index].reshape(4, 2)
        if reading.settings.box_coordinates == "normalized":
            original_h, original_w = info[0]
            sent = rows.yxyx * [original_h, original_w, original_h, original_w]
        else:
            scale_y, scale_x = info[2]
            offset_y, offset_x = info[3]
            sent = (rows.yxyx + [offset_y, offset_x, offset_y, offset_x]) / [
                scale_y or 1.0,
                scale_x or 1.0,
                scale_y or 1.0,
                scale_x or 1.0,
            ]
        upload = frame.to_upload(sent[:, [1, 0, 3, 2]])
        masks = box_relative_masks(reading, outputs, index, rows, upload, frame)
        return make_detections(upload, rows.scores, rows.class_ids, labels, reading.class_offset, masks)
