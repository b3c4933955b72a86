"""SavedModel warmup: replay ``assets.extra/tf_serving_warmup_requests`` before serving a version.

Same file and rules as TF Serving (``saved_model_warmup_util.cc``): a TFRecord file of
``PredictionLog`` records, at most 1000 of them, each replayed ``num_request_iterations`` times
(default 1) through the normal Predict path; a missing file is fine; a failing record fails the
load, so a version whose warmup breaks never becomes AVAILABLE. Predict, Classify, Regress and
MultiInference records are replayed through the same functions that serve requests.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import tensorflow as tf
from tensorflow_serving.apis import prediction_log_pb2

from tf_server.errors import ServingError
from tf_server.inference import run_classify, run_multi_inference, run_regress
from tf_server.predict import run_predict
from tf_server.servable import LoadError, Servable

log = logging.getLogger("tf_server")

WARMUP_FILE = Path("assets.extra") / "tf_serving_warmup_requests"
MAX_RECORDS = 1000
# PredictionLog's log_type -> what replays its request
REPLAYS = {
    "predict_log": run_predict,
    "classify_log": run_classify,
    "regress_log": run_regress,
    "multi_inference_log": run_multi_inference,
}


def warmup_path(export_dir: Path) -> Path:
    return export_dir / WARMUP_FILE


def _records(path: Path):  # noqa: ANN202 - iterator of bytes
    try:
        for record in tf.data.TFRecordDataset(str(path)):
            yield record.numpy()
    except tf.errors.DataLossError as error:
        raise LoadError(f"{error.message}. Please verify your warmup data is in TFRecord format.") from None


def run_warmup(servable: Servable, iterations: int = 1) -> int:
    """Replay the warmup records of ``servable``; return how many were read (0 without a file)."""
    path = warmup_path(servable.path)
    if not path.is_file():
        log.info("No warmup data file found at %s", path)
        return 0
    iterations = max(iterations, 1)
    log.info("Starting to read warmup data for model at %s with model-warmup-options ", path)
    started = time.perf_counter()
    count = 0
    for record in _records(path):
        count += 1
        if count > MAX_RECORDS:
            raise LoadError(f"Number of warmup records exceeds the maximum ({MAX_RECORDS}) at {path}")
        entry = prediction_log_pb2.PredictionLog()
        try:
            entry.ParseFromString(record)
        except Exception:  # protobuf DecodeError
            raise LoadError(f"Failed to parse warmup record from {path}") from None
        kind = entry.WhichOneof("log_type")
        replay = REPLAYS.get(kind)
        if replay is None:  # session_run_log and empty records, as TF Serving refuses them
            raise LoadError(f"Unsupported log_type for warmup: {kind} (record {count} of {path})")
        request = getattr(entry, kind).request
        for _ in range(iterations):
            try:
                replay(servable, request)
            except ServingError as error:
                raise LoadError(
                    f"warmup record {count} of {path} failed: {error.code.name}: {error.message}"
                ) from None
    elapsed_us = int((time.perf_counter() - started) * 1e6)
    log.info(
        "Finished reading warmup data for model at %s. Number of warmup records read: %d. "
        "Elapsed time (microseconds): %d.",
        path,
        count,
        elapsed_us,
    )
    return count
