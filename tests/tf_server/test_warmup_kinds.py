"""Warmup replays every request kind TF Serving replays (``saved_model_warmup.cc``): Predict,
Classify, Regress and MultiInference records load the version; a SessionRun record fails the load
with "Unsupported log_type for warmup", as upstream."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.support.built_models import build_models
from tests.support.model_server import REPO_ROOT, free_port, model_server_process
from tests.support.tf1_models import VERSION, VERSION_DIR
from tests.tf_server.grpc_client import serving_client, tensor_proto, to_ndarray

# Writes assets.extra/tf_serving_warmup_requests with one PredictionLog per kind named in argv[2]
# (a TensorFlow subprocess: the pytest process never imports TensorFlow).
WRITE_RECORDS = r"""
import sys
import tensorflow as tf
from tensorflow.core.example import example_pb2
from tensorflow_serving.apis import prediction_log_pb2

path, kinds = sys.argv[1], sys.argv[2].split(",")
example = example_pb2.Example()
example.features.feature["x"].float_list.value.append(2.0)
with tf.io.TFRecordWriter(path) as writer:
    for kind in kinds:
        log = prediction_log_pb2.PredictionLog()
        if kind == "predict":
            log.predict_log.request.inputs["x"].CopyFrom(tf.make_tensor_proto([[2.0]], dtype=tf.float32))
        elif kind in ("classify", "regress"):
            request = getattr(log, kind + "_log").request
            request.model_spec.signature_name = kind + "_x_to_y"
            request.input.example_list.examples.add().CopyFrom(example)
        elif kind == "multi_inference":
            request = log.multi_inference_log.request
            for task_kind in ("classify", "regress"):
                task = request.tasks.add(method_name="tensorflow/serving/" + task_kind)
                task.model_spec.name = "hp"
                task.model_spec.signature_name = task_kind + "_x_to_y"
            request.input.example_list.examples.add().CopyFrom(example)
        elif kind == "session_run":
            log.session_run_log.SetInParent()
        writer.write(log.SerializeToString())
"""


def model_with_warmup(tmp_path: Path, kinds: str) -> Path:
    """A copy of half_plus_two (TF1) whose version carries warmup records of `kinds`."""
    source = build_models("tests.support.tf1_models", "test-tf1-models") / "half_plus_two_tf1" / VERSION_DIR
    base = tmp_path / "hp"
    version = base / VERSION_DIR
    shutil.copytree(source, version)
    records = version / "assets.extra" / "tf_serving_warmup_requests"
    records.parent.mkdir(exist_ok=True)
    subprocess.run(
        [sys.executable, "-c", WRITE_RECORDS, str(records), kinds],
        check=True,
        timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    return base


def test_classify_regress_and_multi_inference_records_are_replayed(tmp_path: Path) -> None:
    base = model_with_warmup(tmp_path, "predict,classify,regress,multi_inference")
    flags = ("--model_name=hp", f"--model_base_path={base}", "--enable_model_warmup=true")
    with model_server_process(*flags, log_dir=tmp_path) as server, serving_client(server.address) as client:
        assert client.status("hp") == {VERSION: "AVAILABLE"}
        response = client.predict("hp", {"x": tensor_proto(np.array([[4.0]], np.float32))})
        assert to_ndarray(response.outputs["y"]).tolist() == [[4.0]]
        log = server.log()
    assert "Number of warmup records read: 4." in log


@pytest.mark.parametrize("kinds", ["session_run", "predict,session_run"])
def test_a_session_run_record_fails_the_load(tmp_path: Path, kinds: str) -> None:
    base = model_with_warmup(tmp_path, kinds)
    result = subprocess.run(
        [sys.executable, "-m", "tf_server", f"--port={free_port()}", "--host=127.0.0.1", "--model_name=hp",
         f"--model_base_path={base}", "--max_num_load_retries=0"],  # fmt: skip
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    assert result.returncode != 0
    assert "Unsupported log_type for warmup: session_run_log" in result.stderr
