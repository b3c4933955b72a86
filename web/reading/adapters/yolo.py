"""Ultralytics YOLO SavedModels (`model.export(format="saved_model")`, detect and segment tasks).

Input `images` float32 `[1, 640, 640, 3]`: RGB scaled to 0-1, letterboxed (aspect ratio kept,
padded evenly with grey 114). Two output layouts:

* raw (`yolo`): `output_0` [B, 4 + nc, N] (e.g. [1, 84, 8400]): per candidate cx, cy, w, h in input
  pixels, then nc class scores already through the sigmoid. **No NMS in the graph**: the gateway
  runs it (numpy, class-aware, IoU 0.7 by default like Ultralytics' predict).
* `nms=True` (`yolo_nms`): `output_0` [B, K, 6] (K = max_det, 300): x1, y1, x2, y2 in input pixels,
  score, class index; zero rows after the last detection.

Segment models add the prototype masks, a rank-4 output [B, 160, 160, 32] (NHWC; channels-first is
recognized too), and 32 mask coefficients per candidate after the class scores (raw: [B, 4 + nc +
32, N]; nms: [B, K, 6 + 32]). Class indices are 0-based; label maps start at 1.
"""

from __future__ import annotations

import numpy as np

from web.domain import Box, Detection, Mask
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
from web.reading.adapters.frames import Frame, xywh_center_to_xyxy
from web.reading.adapters.nms import MAX_CANDIDATES, non_max_suppression
from web.reading.adapters.postprocess import (
    activate,
    best_rows,
    make_detections,
    require_probabilities,
    sample_mask,
)
from web.reading.label_maps import LabelMap
from web.reading.model_settings import ModelSettings
from web.reading.signatures import ImageInput, ModelSignature, TensorSpec

DEFAULT_IOU = 0.7  # Ultralytics' predict default
NMS_COLUMNS = 6  # x1, y1, x2, y2, score, class


def _split_outputs(signature: ModelSignature) -> tuple[TensorSpec, TensorSpec | None]:
    """The detections output (rank 3) and the prototype masks (rank 4, segment models), by rank."""
    specs = list(signature.outputs.values())
    detections = [s for s in specs if s.rank == 3 and s.is_float]
    protos = [s for s in specs if s.rank == 4 and s.is_float]
    if len(detections) != 1 or len(protos) > 1 or len(specs) != len(detections) + len(protos):
        raise NotRecognized(
            "a YOLO export has one float [batch, rows, columns] output (plus, for segment models, one "
            f"[batch, h, w, 32] prototype-mask output); this signature has {signature.describe_outputs()}"
        )
    return detections[0], (protos[0] if protos else None)


def _proto_layout(protos: TensorSpec | None) -> dict:
    if protos is None:
        return {"protos": None, "mask_dim": 0, "channels_last": True}
    _, d1, _, d3 = protos.shape
    channels_last = d3 != -1 and (d1 == -1 or d3 <= d1)
    mask_dim = d3 if channels_last else d1
    if mask_dim <= 0:
        raise NotRecognized(f"cannot tell the mask coefficients of prototype output {protos.describe()}")
    return {"protos": protos.key, "mask_dim": mask_dim, "channels_last": channels_last}


class _YoloBase(ModelAdapter):
    class_offset = 1  # class indices are 0-based; label maps start at 1

    def check_input(self, image_input: ImageInput, settings: ModelSettings) -> None:
        needs_tensor_input(image_input, self.family)

    def default_preprocessing(self, image_input: ImageInput) -> Preprocessing:
        return Preprocessing(
            resize="letterbox" if image_input.fixed_size else "none", pixel_range="0-1", pad_value=114
        )

    @staticmethod
    def _masks(
        reading: ModelReading,
        outputs: dict[str, np.ndarray],
        index: int,
        coefficients: np.ndarray,
        upload: np.ndarray,
        frame: Frame,
    ) -> list[Mask | None] | None:
        """Masks of the kept detections: sigmoid(coefficients @ prototypes), sampled inside each box."""
        details = reading.layout.details
        if details["protos"] is None:
            return None
        protos = np.asarray(outputs[details["protos"]][index], dtype=np.float32)
        if not details["channels_last"]:
            protos = np.moveaxis(protos, 0, -1)
        proto_h, proto_w, mask_dim = protos.shape
        if coefficients.shape[1] != mask_dim:
            raise ModelServerError(
                f"model '{reading.model}' sent {coefficients.shape[1]} mask coefficients "
                f"for {mask_dim} prototype masks"
            )
        # Upload pixel -> input pixel (frame) -> prototype pixel (prototypes cover the whole input).
        kx, ky = proto_w / frame.input_width, proto_h / frame.input_height
        scale = (frame.scale_x * kx, frame.scale_y * ky)
        offset = (frame.offset_x * kx, frame.offset_y * ky)
        flat = protos.reshape(-1, mask_dim)
        masks: list[Mask | None] = []
        for coeffs, box in zip(coefficients, upload, strict=True):
            probabilities = activate(flat @ coeffs.astype(np.float32), "sigmoid").reshape(proto_h, proto_w)
            masks.append(
                sample_mask(probabilities, Box(*map(float, box)), (frame.height, frame.width), scale, offset)
            )
        return masks

    @staticmethod
    def _to_input_pixels(reading: ModelReading, xyxy: np.ndarray, frame: Frame) -> np.ndarray:
        if reading.settings.box_coordinates == "normalized":  # e.g. a TFLite-style export
            return frame.normalized_to_input(xyxy)
        return xyxy


class YoloAdapter(_YoloBase):
    family = "yolo"
    title = "Ultralytics YOLO, raw output (NMS in the gateway)"

    def recognize(self, signature: ModelSignature) -> Layout:
        detections, protos = _split_outputs(signature)
        rows, candidates = detections.dim(1), detections.dim(2)
        if rows != -1 and rows < 5:
            raise NotRecognized(f"{detections.describe()} has fewer than 4 box rows + 1 class")
        if candidates != -1 and rows != -1 and candidates <= rows:
            raise NotRecognized(
                f"{detections.describe()} has fewer candidates ({candidates}) than rows ({rows}), "
                "which is the nms=True layout"
            )
        details = {"detections": detections.key, **_proto_layout(protos)}
        kind = "segmentation" if protos is not None else "detection"
        return Layout(kind, tuple(signature.outputs), details)

    def decode(
        self,
        reading: ModelReading,
        outputs: dict[str, np.ndarray],
        index: int,
        frame: Frame,
        options: PredictOptions,
        labels: LabelMap,
    ) -> list[Detection]:
        details = reading.layout.details
        prediction = np.asarray(outputs[details["detections"]][index], dtype=np.float32)  # [4 + nc + nm, N]
        num_classes = prediction.shape[0] - 4 - details["mask_dim"]
        if num_classes < 1:
            raise ModelServerError(
                f"model '{reading.model}' answered {prediction.shape[0]} rows per candidate: too few for "
                f"4 box rows, classes and {details['mask_dim']} mask coefficients"
            )
        class_scores = prediction[4 : 4 + num_classes].T
        activation = reading.settings.score_activation or "none"
        class_scores = activate(class_scores, activation) if activation != "none" else class_scores
        require_probabilities(class_scores, reading.model, details["detections"], reading.settings_path)
        class_ids = np.argmax(class_scores, axis=1)
        scores = class_scores[np.arange(len(class_ids)), class_ids]
        candidates = best_rows(scores, options.min_score, MAX_CANDIDATES)
        xyxy = self._to_input_pixels(reading, xywh_center_to_xyxy(prediction[:4, candidates].T), frame)
        keep = non_max_suppression(
            xyxy,
            scores[candidates],
            class_ids[candidates],
            iou_threshold=_iou(options, reading),
            class_agnostic=bool(reading.settings.class_agnostic_nms),
            max_keep=options.max_detections,
        )
        chosen = candidates[keep]
        upload = frame.to_upload(xyxy[keep])
        coefficients = prediction[4 + num_classes :, chosen].T
        masks = self._masks(reading, outputs, index, coefficients, upload, frame)
        return make_detections(upload, scores[chosen], class_ids[chosen], labels, reading.class_offset, masks)


class YoloNmsAdapter(_YoloBase):
    family = "yolo_nms"
    title = "Ultralytics YOLO exported with nms=True (or an end-to-end head)"

    def recognize(self, signature: ModelSignature) -> Layout:
        detections, protos = _split_outputs(signature)
        layout = _proto_layout(protos)
        columns = NMS_COLUMNS + layout["mask_dim"]
        rows = detections.dim(1)
        if detections.dim(2) != columns:
            raise NotRecognized(f"{detections.describe()} does not have {columns} columns per detection")
        if rows != -1 and rows <= columns:
            raise NotRecognized(f"{detections.describe()} has no more detection rows than columns")
        kind = "segmentation" if protos is not None else "detection"
        return Layout(kind, tuple(signature.outputs), {"detections": detections.key, **layout})

    def decode(
        self,
        reading: ModelReading,
        outputs: dict[str, np.ndarray],
        index: int,
        frame: Frame,
        options: PredictOptions,
        labels: LabelMap,
    ) -> list[Detection]:
        details = reading.layout.details
        rows = np.asarray(outputs[details["detections"]][index], dtype=np.float64)  # [K, 6 + nm]
        scores = rows[:, 4]
        activation = reading.settings.score_activation or "none"
        scores = activate(scores, activation) if activation != "none" else scores
        used = np.any(rows[:, :6] != 0, axis=1)  # zero rows pad the answer
        require_probabilities(scores[used], reading.model, details["detections"], reading.settings_path)
        keep = best_rows(scores, options.min_score, options.max_detections, used)
        xyxy = self._to_input_pixels(reading, rows[keep, :4], frame)
        upload = frame.to_upload(xyxy)
        class_ids = np.rint(rows[keep, 5]).astype(np.int64)
        masks = self._masks(reading, outputs, index, rows[keep, 6:], upload, frame)
        return make_detections(upload, scores[keep], class_ids, labels, reading.class_offset, masks)


def _iou(options: PredictOptions, reading: ModelReading) -> float:
    if options.iou_threshold is not None:
        return options.iou_threshold
    return reading.settings.iou_threshold or DEFAULT_IOU
