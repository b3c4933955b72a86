"""The committed demo models: layout, sizes, label maps, models.config, and (in a subprocess, so
this pytest process never loads TensorFlow) the exact serving signatures, the warmup records and
a real prediction on a generated picture."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from google.protobuf import text_format

REPO_ROOT = Path(__file__).resolve().parents[2]
MODELS_DIR = REPO_ROOT / "tf_server" / "models"
MODEL_NAMES = ("shapes", "shapes_jpeg")
SERVED = (*MODEL_NAMES, "digits")
MAX_MODEL_BYTES = 20 * 1024 * 1024

@pytest.mark.parametrize("name", SERVED)
def test_model_folder_layout_and_size(name: str) -> None:
    version = MODELS_DIR / name / "1"
    assert (version / "variables" / "variables.index").is_file()
    assert (version / "assets.extra" / "tf_serving_warmup_requests").is_file()
    size = sum(p.stat().st_size for p in version.rglob("*") if p.is_file())
    assert size <= MAX_MODEL_BYTES, f"{name} is {size / 1e6:.1f} MB"


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_label_map_lists_the_three_classes(name: str) -> None:
    text = (MODELS_DIR / name / "label_map.pbtxt").read_text()
    items = re.findall(r'item\s*\{\s*id:\s*(\d+)\s*name:\s*"([^"]+)"', text)
    assert items == [("1", "circle"), ("2", "square"), ("3", "triangle")]


def test_digits_has_its_labels_and_the_settings_it_was_trained_with() -> None:
    from web.reading.label_maps import load_label_map
    from web.reading.model_settings import load_model_settings

    assert load_label_map(MODELS_DIR / "digits" / "labels.txt").names == {i + 1: str(i) for i in range(10)}
    settings = load_model_settings(MODELS_DIR / "digits" / "gateway.toml")
    assert (settings.pixel_range, settings.resize, settings.family) == ("0-1", "stretch", None)


def test_models_config_lists_every_demo_model_with_relative_paths() -> None:
    from web.serving.protos.tensorflow_serving.config import model_server_config_pb2

    config = text_format.Parse((REPO_ROOT / "tf_server" / "models.config").read_text(),
                               model_server_config_pb2.ModelServerConfig())
    entries = {c.name: c for c in config.model_config_list.config}
    assert set(entries) == set(SERVED)
    for name, entry in entries.items():
        assert entry.base_path == f"models/{name}" and entry.model_platform == "tensorflow"
        assert (REPO_ROOT / "tf_server" / entry.base_path / "1" / "saved_model.pb").is_file()


INSPECT = textwrap.dedent("""
    import json, sys
    import numpy as np
    import tensorflow as tf
    from tensorflow.core.protobuf import saved_model_pb2
    from tensorflow_serving.apis import prediction_log_pb2
    from demo.synthetic import encode_jpeg, generate_image

    root = sys.argv[1]
    report = {}
    for name in ("shapes", "shapes_jpeg"):
        folder = f"{root}/{name}/1"
        saved = saved_model_pb2.SavedModel()
        with open(f"{folder}/saved_model.pb", "rb") as f:
            saved.ParseFromString(f.read())
        graph = saved.meta_graphs[0]
        sig = graph.signature_def["serving_default"]
        def describe(tensors):
            return {k: [tf.dtypes.as_dtype(v.dtype).name, [d.size for d in v.tensor_shape.dim]]
                    for k, v in tensors.items()}
        ops = {n.op for n in graph.graph_def.node}
        for function in graph.graph_def.library.function:
            ops |= {n.op for n in function.node_def}
        logs = []
        for record in tf.data.TFRecordDataset(f"{folder}/assets.extra/tf_serving_warmup_requests"):
            log = prediction_log_pb2.PredictionLog.FromString(record.numpy())
            logs.append(log.predict_log.request)
        model = tf.saved_model.load(folder).signatures["serving_default"]
        warm = model(input_tensor=tf.make_ndarray(logs[0].inputs["input_tensor"]))
        image, shapes = generate_image(np.random.default_rng(2024), 640, 480, min_shapes=3, max_shapes=3)
        if name == "shapes_jpeg":
            out = model(input_tensor=tf.constant([encode_jpeg(image)]))
        else:
            out = model(input_tensor=tf.constant(image[None]))
        out = {k: v.numpy() for k, v in out.items()}
        count = int(out["num_detections"][0])
        report[name] = {
            "tags": list(graph.meta_info_def.tags),
            "signatures": [k for k in graph.signature_def if not k.startswith("__")],
            "inputs": describe(sig.inputs), "outputs": describe(sig.outputs),
            "py_ops": sorted(op for op in ops if "Py" in op),
            "warmup": [{"model": r.model_spec.name, "signature": r.model_spec.signature_name,
                        "inputs": list(r.inputs)} for r in logs],
            "warmup_outputs": {k: list(v.shape) for k, v in warm.items()},
            "truth": [[s.class_id, [s.box[1] / 480, s.box[0] / 640, s.box[3] / 480, s.box[2] / 640]]
                      for s in shapes],
            "found": [[float(c), b.tolist(), float(s)] for c, b, s in zip(
                out["detection_classes"][0][:count], out["detection_boxes"][0][:count],
                out["detection_scores"][0][:count])],
            "scores_after_count": float(np.abs(out["detection_scores"][0][count:]).sum()),
            "masks_range": [float(out["detection_masks"].min()), float(out["detection_masks"].max())],
        }
    print(json.dumps(report))
""")


@pytest.fixture(scope="module")
def inspected() -> dict:
    env = {"TF_CPP_MIN_LOG_LEVEL": "3", "PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO_ROOT)}
    done = subprocess.run([sys.executable, "-c", INSPECT, str(MODELS_DIR)], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _iou(a: list[float], b: list[float]) -> float:
    inter = max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


@pytest.mark.parametrize("name, input_spec", [
    ("shapes", ["uint8", [1, -1, -1, 3]]),
    ("shapes_jpeg", ["string", [-1]]),
])
def test_signature_matches_the_od_api(inspected: dict, name: str, input_spec: list) -> None:
    model = inspected[name]
    batch = 1 if name == "shapes" else -1
    assert model["tags"] == ["serve"] and model["signatures"] == ["serving_default"]
    assert model["inputs"] == {"input_tensor": input_spec}
    assert model["outputs"] == {
        "detection_boxes": ["float32", [batch, 100, 4]],
        "detection_scores": ["float32", [batch, 100]],
        "detection_classes": ["float32", [batch, 100]],
        "num_detections": ["float32", [batch]],
        "detection_masks": ["float32", [batch, 100, 33, 33]],
    }
    assert model["py_ops"] == []


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_warmup_record_is_a_valid_request(inspected: dict, name: str) -> None:
    model = inspected[name]
    assert model["warmup"] == [{"model": name, "signature": "serving_default", "inputs": ["input_tensor"]}]
    assert model["warmup_outputs"]["detection_boxes"] == [1, 100, 4]


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_model_finds_the_shapes_of_a_generated_picture(inspected: dict, name: str) -> None:
    model = inspected[name]
    assert model["scores_after_count"] == 0.0
    assert 0.0 <= model["masks_range"][0] and model["masks_range"][1] <= 1.0
    confident = [f for f in model["found"] if f[2] >= 0.5]
    for class_id, box in model["truth"]:
        matched = any(int(c) == class_id and _iou(b, box) >= 0.5 for c, b, _ in confident)
        assert matched, (class_id, box, confident)
