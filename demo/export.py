"""Export the trained demo detector as two TF Serving models with the TF OD API TF2 signature.

* `shapes`: `serving_default(input_tensor: uint8 [1, -1, -1, 3])`, like the OD API's
  `--input_type image_tensor`.
* `shapes_jpeg`: `serving_default(input_tensor: string [-1])`, encoded JPEG/PNG bytes decoded in
  the graph, each picture on its own (a batch of differently sized pictures works), like
  `--input_type encoded_image_string_tensor`.

Outputs (B = batch): detection_boxes [B,100,4] normalized [ymin,xmin,ymax,xmax] of the original
picture, detection_scores [B,100], detection_classes [B,100] (float, 1-based), num_detections [B]
and detection_masks [B,100,33,33] box-relative probabilities, padded with zeros past
num_detections. Beside each model: label_map.pbtxt; in each version: assets.extra warmup records.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np
import tensorflow as tf

from demo.model import INPUT_SIZE, ServingNet, TrainableNet, decode_detections, preprocess_image
from demo.synthetic import CLASSES, encode_jpeg, generate_image

TENSOR_MODEL = "shapes"
JPEG_MODEL = "shapes_jpeg"
CLASSIFIER_MODEL = "digits"  # exported by demo/classifier.py
MODEL_NAMES = (TENSOR_MODEL, JPEG_MODEL)
SERVED_MODELS = (*MODEL_NAMES, CLASSIFIER_MODEL)
SIGNATURE = "serving_default"
WARMUP_FILE = "tf_serving_warmup_requests"


def serving_module(net: ServingNet, model_name: str) -> tf.Module:
    """A module holding the folded network and one serving function for `model_name`."""
    root = tf.Module(name=model_name)
    root.net = net

    def detect(images: tf.Tensor, content_sizes: tf.Tensor) -> dict[str, tf.Tensor]:
        heatmap, regression, segmentation = net(images)
        return decode_detections(heatmap, regression, segmentation, content_sizes)

    if model_name == JPEG_MODEL:
        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="input_tensor")])
        def detect_encoded(input_tensor: tf.Tensor) -> dict[str, tf.Tensor]:
            def prepare(data: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
                image = tf.io.decode_image(data, channels=3, dtype=tf.uint8, expand_animations=False)
                image.set_shape([None, None, 3])
                return preprocess_image(image)

            images, sizes = tf.map_fn(prepare, input_tensor, fn_output_signature=(
                tf.TensorSpec([INPUT_SIZE, INPUT_SIZE, 3], tf.float32), tf.TensorSpec([2], tf.float32)))
            return detect(images, sizes)

        root.serve = detect_encoded
    else:
        @tf.function(input_signature=[tf.TensorSpec([1, None, None, 3], tf.uint8, name="input_tensor")])
        def detect_tensor(input_tensor: tf.Tensor) -> dict[str, tf.Tensor]:
            image, size = preprocess_image(input_tensor[0])
            return detect(image[None], size[None])

        root.serve = detect_tensor
    return root


def label_map_text() -> str:
    """TF OD API StringIntLabelMap text proto for the demo classes."""
    items = [f'item {{\n  id: {i + 1}\n  name: "{name}"\n  display_name: "{name.capitalize()}"\n}}\n'
             for i, name in enumerate(CLASSES)]
    return "".join(items)


def models_config_text(names: tuple[str, ...] = SERVED_MODELS) -> str:
    """ModelServerConfig text proto; base paths are relative to the config file's folder."""
    entries = "".join(
        f'  config {{\n    name: "{name}"\n    base_path: "models/{name}"\n'
        f'    model_platform: "tensorflow"\n  }}\n'
        for name in names)
    return f"model_config_list {{\n{entries}}}\n"


def _warmup_input(model_name: str) -> tf.Tensor:
    """A small real picture (a generated one, deterministic) in the model's input format."""
    image, _ = generate_image(np.random.default_rng(20240501), width=160, height=120, min_shapes=3,
                              max_shapes=3)
    if model_name == JPEG_MODEL:
        return tf.constant([encode_jpeg(image)], dtype=tf.string)
    return tf.constant(image[None], dtype=tf.uint8)


def write_warmup(version_dir: Path, model_name: str) -> Path:
    """assets.extra/tf_serving_warmup_requests: TFRecord of PredictionLog with one PredictRequest."""
    from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

    request = predict_pb2.PredictRequest(
        model_spec=model_pb2.ModelSpec(name=model_name, signature_name=SIGNATURE))
    request.inputs["input_tensor"].CopyFrom(tf.make_tensor_proto(_warmup_input(model_name)))
    log = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
    path = version_dir / "assets.extra" / WARMUP_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        writer.write(log.SerializeToString())
    return path


def _replace_dir(source: Path, target: Path) -> None:
    """Swap a freshly written version folder in (rename, so readers never see half a model)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    old = target.parent / f".{target.name}.old"
    if old.exists():
        shutil.rmtree(old)
    if target.exists():
        target.rename(old)
    shutil.move(str(source), str(target))
    if old.exists():
        shutil.rmtree(old)


def folder_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def export_models(net: TrainableNet, models_dir: Path, scratch_dir: Path, version: int = 1,
                  log=print) -> dict[str, Path]:
    """Write both SavedModels (+ warmups, label maps) and models.config beside models_dir;
    returns the version folders. Each is staged in scratch_dir (same file system) first."""
    serving_net = ServingNet(net.folded())
    out: dict[str, Path] = {}
    scratch_dir.mkdir(parents=True, exist_ok=True)
    for name in MODEL_NAMES:
        module = serving_module(serving_net, name)
        with tempfile.TemporaryDirectory(dir=scratch_dir) as scratch:
            staged = Path(scratch) / str(version)
            signatures = {SIGNATURE: module.serve.get_concrete_function()}
            tf.saved_model.save(module, str(staged), signatures=signatures)
            write_warmup(staged, name)
            target = models_dir / name / str(version)
            _replace_dir(staged, target)
        (models_dir / name / "label_map.pbtxt").write_text(label_map_text())
        log(f"export: {name} -> {target} ({folder_size(target) / 1e6:.2f} MB)")
        out[name] = target
    (models_dir.parent / "models.config").write_text(models_config_text())
    log(f"export: wrote {models_dir.parent / 'models.config'}")
    return out
