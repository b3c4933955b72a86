"""Build tiny SavedModels in TF Serving's folder layout for the model-server tests.

Run as a subprocess (``python -m tests.tf_server.saved_model_builder '<json>'``) so TensorFlow never
loads in the pytest process; ``build_models`` does that for tests.

The model ("tiny detector") has the demo models' ``serving_default`` contract: uint8
``input_tensor`` [1,-1,-1,3] in; ``detection_boxes`` [1,100,4], ``detection_scores`` [1,100],
``detection_classes`` [1,100], ``num_detections`` [1], ``detection_masks`` [1,100,33,33] out. One
detection whose class id is the model version, so a response shows which version answered. Two
more outputs make the tests honest about what happened on the server: ``image_size`` (the
input's height and width, so the input really went through) and ``call_count`` (a variable
incremented on every call, so warmup replays are visible in the first real response). A second
signature, ``image_mean`` (float32 ``images`` [-1,-1,-1,3] -> ``mean`` [-1]), exercises
``signature_name``.

Warmup files use TF Serving's format: ``assets.extra/tf_serving_warmup_requests``, a TFRecord of
``PredictionLog`` records. ``--bad-warmup`` writes a record with a wrong input name, which must
keep the version from ever becoming AVAILABLE.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
NUM_BOXES = 100
MASK_SIZE = 33
BOX = (0.1, 0.2, 0.5, 0.6)  # ymin, xmin, ymax, xmax (normalized)
SCORE = 0.9


@dataclass(frozen=True)
class TinyModel:
    """One version folder to write: ``base_path/<version>/``."""

    base_path: Path
    version: int
    warmup_records: int = 0
    bad_warmup: bool = False


def build_models(models: Sequence[TinyModel], timeout: float = 300.0) -> None:
    """Write every version folder in one TensorFlow subprocess (TF loads once)."""
    spec = json.dumps([{**asdict(m), "base_path": str(m.base_path)} for m in models])
    result = subprocess.run(
        [sys.executable, "-m", "tests.tf_server.saved_model_builder", spec],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    if result.returncode != 0:
        raise RuntimeError(f"building SavedModels failed:\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}")


def _export(export_dir: Path, version: int, warmup_records: int, bad_warmup: bool) -> None:
    import tensorflow as tf
    from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

    class TinyDetector(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.version = tf.Variable(float(version), trainable=False, name="version")
            self.calls = tf.Variable(0, dtype=tf.int64, trainable=False, name="calls")

        @tf.function(input_signature=[tf.TensorSpec([1, None, None, 3], tf.uint8, name="input_tensor")])
        def detect(self, input_tensor: tf.Tensor) -> dict[str, tf.Tensor]:
            count = self.calls.assign_add(1)
            one_hot = tf.one_hot([0], NUM_BOXES)  # [1, 100]: the first slot holds the detection
            boxes = one_hot[:, :, None] * tf.constant(BOX)[None, None, :]
            masks = tf.tile(one_hot[:, :, None, None], [1, 1, MASK_SIZE, MASK_SIZE])
            return {
                "detection_boxes": boxes,
                "detection_scores": one_hot * SCORE,
                "detection_classes": one_hot * self.version + (1.0 - one_hot),
                "num_detections": tf.ones([1]),
                "detection_masks": masks,
                "image_size": tf.shape(input_tensor, out_type=tf.int32)[None, 1:3],
                "call_count": tf.reshape(count, [1]),
            }

        @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32, name="images")])
        def mean(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
            return {"mean": tf.reduce_mean(images, axis=[1, 2, 3])}

    module = TinyDetector()
    tf.saved_model.save(
        module,
        str(export_dir),
        signatures={"serving_default": module.detect, "image_mean": module.mean},
    )
    if warmup_records or bad_warmup:
        assets = export_dir / "assets.extra"
        assets.mkdir(parents=True, exist_ok=True)
        with tf.io.TFRecordWriter(str(assets / "tf_serving_warmup_requests")) as writer:
            for index in range(max(warmup_records, 1)):
                request = predict_pb2.PredictRequest(model_spec=model_pb2.ModelSpec(name="tiny"))
                name = "not_an_input" if bad_warmup else "input_tensor"
                image = tf.zeros([1, 8 + index, 8, 3], tf.uint8)
                request.inputs[name].CopyFrom(tf.make_tensor_proto(image.numpy()))
                log = prediction_log_pb2.PredictLog(request=request)
                entry = prediction_log_pb2.PredictionLog(predict_log=log)
                writer.write(entry.SerializeToString())


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("spec", help="JSON list of {base_path, version, warmup_records, bad_warmup}")
    args = parser.parse_args(argv)
    for entry in json.loads(args.spec):
        model = TinyModel(**{**entry, "base_path": Path(entry["base_path"])})
        _export(model.base_path / str(model.version), model.version, model.warmup_records, model.bad_warmup)


if __name__ == "__main__":
    main()
