"""What masks cost the gateway: 20 instances on a 640x480 picture, reframed, RLE-encoded, as JSON.

This is the work tutorials do with nested lists of floats. Here it runs the gateway's own pure
functions (the TF OD API adapter's decode -> `Prediction.to_dict` -> `json.dumps`) on outputs shaped
like the demo models' (100 slots, 33x33 box-relative mask probabilities, 20 of them real), so
the figure is the gateway's cost alone, to set against the model's own time from the same run.
"""

from __future__ import annotations

import json
import statistics
import time

import numpy as np

from web.domain import Prediction
from web.options import PredictOptions
from web.reading.adapters import ModelReading, read_model
from web.reading.adapters.frames import Frame
from web.reading.label_maps import LabelMap
from web.reading.model_settings import ModelSettings
from web.reading.signatures import ModelSignature, TensorSpec, find_image_input
from web.serving.protos.tensorflow.core.framework import types_pb2

WIDTH, HEIGHT = 640, 480
INSTANCES = 20
SLOTS = 100
MASK_SIDE = 33


def demo_like_outputs(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """OD API outputs for INSTANCES objects on a 5x4 grid, each with a disc-shaped soft mask."""
    boxes = np.zeros((1, SLOTS, 4), np.float32)
    cols, rows = 5, 4
    for i in range(INSTANCES):
        r, c = divmod(i, cols)
        ymin, xmin = (r + 0.1) / rows, (c + 0.1) / cols
        boxes[0, i] = (ymin, xmin, ymin + 0.8 / rows, xmin + 0.8 / cols)
    scores = np.zeros((1, SLOTS), np.float32)
    scores[0, :INSTANCES] = np.sort(rng.uniform(0.6, 0.99, INSTANCES))[::-1]
    classes = np.zeros((1, SLOTS), np.float32)
    classes[0, :INSTANCES] = rng.integers(1, 4, INSTANCES)
    yy, xx = np.mgrid[0:MASK_SIDE, 0:MASK_SIDE] / (MASK_SIDE - 1) - 0.5
    disc = 1.0 / (1.0 + np.exp(40 * (np.hypot(yy, xx) - 0.4)))
    masks = np.zeros((1, SLOTS, MASK_SIDE, MASK_SIDE), np.float32)
    masks[0, :INSTANCES] = disc + rng.normal(0, 0.05, (INSTANCES, MASK_SIDE, MASK_SIDE))
    return {"detection_boxes": boxes, "detection_scores": scores, "detection_classes": classes,
            "num_detections": np.array([float(INSTANCES)], np.float32), "detection_masks": masks}


def demo_like_reading() -> ModelReading:
    """How the gateway reads the demo models' signature (TF OD API, masks)."""
    f32 = types_pb2.DT_FLOAT
    outputs = {
        "detection_boxes": TensorSpec("detection_boxes", f32, (1, SLOTS, 4)),
        "detection_scores": TensorSpec("detection_scores", f32, (1, SLOTS)),
        "detection_classes": TensorSpec("detection_classes", f32, (1, SLOTS)),
        "num_detections": TensorSpec("num_detections", f32, (1,)),
        "detection_masks": TensorSpec("detection_masks", f32, (1, SLOTS, MASK_SIDE, MASK_SIDE)),
    }
    inputs = {"input_tensor": TensorSpec("input_tensor", types_pb2.DT_UINT8, (1, -1, -1, 3))}
    image_input, _ = find_image_input(inputs, ("input_tensor",))
    signature = ModelSignature("bench", 1, "serving_default", inputs, outputs, ("input_tensor",), image_input)
    return read_model(signature, ModelSettings(), "gateway.toml")


def measure(iterations: int = 200) -> dict:
    """Median and p95 milliseconds of post-processing + RLE + JSON for INSTANCES masks."""
    outputs = demo_like_outputs(np.random.default_rng(0))
    labels = LabelMap({1: "circle", 2: "square", 3: "triangle"})
    reading = demo_like_reading()
    frame = Frame.identity(WIDTH, HEIGHT)
    options = PredictOptions(min_score=0.5, max_detections=100)
    samples, size = [], 0
    for _ in range(iterations + 5):
        start = time.perf_counter()
        detections = reading.adapter.decode(reading, outputs, 0, frame, options, labels)
        prediction = Prediction("bench", 1, WIDTH, HEIGHT, detections, None, {})
        body = json.dumps(prediction.to_dict())
        samples.append((time.perf_counter() - start) * 1000)
        size = len(body)
    samples = sorted(samples[5:])
    assert len(detections) == INSTANCES and all(d.mask is not None for d in detections)
    return {"instances": INSTANCES, "image": f"{WIDTH}x{HEIGHT}", "iterations": iterations,
            "p50_ms": round(statistics.median(samples), 2),
            "p95_ms": round(samples[int(0.95 * (len(samples) - 1))], 2), "json_bytes": size}
