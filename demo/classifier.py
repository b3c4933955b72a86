"""The demo classifier: a small Keras CNN that reads one digit per picture, exported with Keras 3's
own `model.export()` (the signature people get: `keras_tensor` float32 [-1, 32, 32, 3] ->
`output_0` softmax [-1, 10]) and served as `digits`.

It is trained on synthetic digits (`demo/digits.py`) stretched to 32x32 and scaled to
0-1; the model folder carries a gateway.toml saying so (`pixel_range = "0-1"`), a labels.txt
(`0`..`9`, so class index d is the label map's id d + 1) and warm-up records. Evaluation runs the
EXPORTED model on held-out pictures prepared by the gateway's own functions (JPEG upload ->
decode -> stretch -> scale), so the reported accuracy is what users get through the gateway.
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf

from demo.digits import CLASSES, generate_digit, training_arrays
from demo.synthetic import encode_jpeg

MODEL_NAME = "digits"
INPUT_SIDE = 32
SETTINGS_TEXT = """\
# How the gateway feeds the demo digit classifier (see docs/architecture.md, "Per-model settings").
# It was trained on pictures stretched to its 32x32 input, RGB scaled to 0-1.
resize = "stretch"
pixel_range = "0-1"
top_k = 3
"""


@dataclass(frozen=True)
class ClassifierConfig:
    train_count: int = 24_000
    eval_count: int = 2_000
    epochs: int = 8
    batch_size: int = 64
    learning_rate: float = 3e-3
    seed: int = 7
    eval_seed: int = 99_991


def build_network() -> tf.keras.Model:
    """73 k parameters: three blocks of two 3x3 convolutions with batch norm, global pooling,
    a softmax head."""
    keras = tf.keras
    inputs = keras.Input(shape=(INPUT_SIDE, INPUT_SIDE, 3))
    x = inputs
    for filters in (16, 32, 64):
        x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
        x = keras.layers.BatchNormalization()(x)
        x = keras.layers.ReLU()(x)
        x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
        x = keras.layers.BatchNormalization()(x)
        x = keras.layers.ReLU()(x)
        x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dropout(0.2)(x)
    outputs = keras.layers.Dense(len(CLASSES), activation="softmax")(x)
    return keras.Model(inputs, outputs, name="digits")


def train_classifier(config: ClassifierConfig, log=print) -> tf.keras.Model:
    keras = tf.keras
    keras.utils.set_random_seed(config.seed)
    tf.config.experimental.enable_op_determinism()
    start = time.monotonic()
    images, labels = training_arrays(np.random.default_rng(config.seed), config.train_count, INPUT_SIDE)
    log(f"classifier: {len(images)} training pictures in {time.monotonic() - start:.0f}s")
    model = build_network()
    steps = config.epochs * (len(images) // config.batch_size)
    schedule = keras.optimizers.schedules.CosineDecay(config.learning_rate, steps)
    model.compile(
        optimizer=keras.optimizers.Adam(schedule),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    start = time.monotonic()
    model.fit(
        images.astype(np.float32) / 255.0,
        labels,
        batch_size=config.batch_size,
        epochs=config.epochs,
        shuffle=True,
        verbose=2,
    )
    log(f"classifier: trained {config.epochs} epochs in {time.monotonic() - start:.0f}s "
        f"({model.count_params()} parameters)")
    return model


def _input_key(version_dir: Path) -> str:
    signature = tf.saved_model.load(str(version_dir)).signatures["serving_default"]
    (key,) = signature.structured_input_signature[1]
    return key


def write_warmup(version_dir: Path) -> Path:
    """assets.extra/tf_serving_warmup_requests: one PredictRequest with a real digit picture."""
    from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

    images, _ = training_arrays(np.random.default_rng(1234), 1, INPUT_SIDE)
    request = predict_pb2.PredictRequest(
        model_spec=model_pb2.ModelSpec(name=MODEL_NAME, signature_name="serving_default")
    )
    request.inputs[_input_key(version_dir)].CopyFrom(tf.make_tensor_proto(images.astype(np.float32) / 255.0))
    log = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
    path = version_dir / "assets.extra" / "tf_serving_warmup_requests"
    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        writer.write(log.SerializeToString())
    return path


def export_classifier(model: tf.keras.Model, models_dir: Path, scratch_dir: Path, version: int = 1,
                      log=print) -> Path:
    """`model.export()` into models_dir/digits/<version> (staged, then renamed in), with warm-up
    records, labels.txt and gateway.toml beside it."""
    from demo.export import _replace_dir, folder_size

    scratch_dir.mkdir(parents=True, exist_ok=True)
    target = models_dir / MODEL_NAME / str(version)
    with tempfile.TemporaryDirectory(dir=scratch_dir) as scratch:
        staged = Path(scratch) / str(version)
        model.export(str(staged), format="tf_saved_model", verbose=False)
        write_warmup(staged)
        _replace_dir(staged, target)
    (models_dir / MODEL_NAME / "labels.txt").write_text("\n".join(CLASSES) + "\n")
    (models_dir / MODEL_NAME / "gateway.toml").write_text(SETTINGS_TEXT)
    log(f"classifier: {MODEL_NAME} -> {target} ({folder_size(target) / 1e6:.2f} MB)")
    return target


def evaluate_classifier(models_dir: Path, config: ClassifierConfig, log=print) -> dict:
    """Top-1 accuracy of the exported model on held-out JPEGs, prepared the way the gateway does."""
    from web.pipeline.images import inspect_image
    from web.pipeline.inputs import plan_input, tensor_input
    from web.reading.adapters import read_model
    from web.reading.model_settings import parse_model_settings

    version_dir = models_dir / MODEL_NAME / "1"
    signature = tf.saved_model.load(str(version_dir)).signatures["serving_default"]
    key = _input_key(version_dir)
    settings = parse_model_settings((models_dir / MODEL_NAME / "gateway.toml").read_text())
    reading = read_model(_gateway_signature(key, signature.structured_input_signature[1][key]), settings,
                         "gateway.toml")
    assert reading.family == "classifier", reading.problem
    rng = np.random.default_rng(config.eval_seed)
    correct, confusion = 0, np.zeros((10, 10), np.int64)
    start = time.monotonic()
    for i in range(config.eval_count):
        picture = generate_digit(rng, digit=i % 10, height=int(rng.integers(48, 400)))
        upload = encode_jpeg(picture.image)
        info = inspect_image(upload, max_pixels=10**8)
        frame = plan_input(info, reading.image_input, reading.preprocessing, None)
        tensor = tensor_input(upload, info, frame, reading.image_input, reading.preprocessing)
        probabilities = signature(**{key: tf.constant(tensor[None])})["output_0"].numpy()[0]
        predicted = int(np.argmax(probabilities))
        confusion[picture.digit, predicted] += 1
        correct += predicted == picture.digit
    accuracy = correct / config.eval_count
    log(f"classifier: held-out top-1 accuracy {accuracy:.4f} on {config.eval_count} pictures "
        f"({time.monotonic() - start:.0f}s)")
    return {"model": MODEL_NAME, "top1_accuracy": round(accuracy, 4), "pictures": config.eval_count,
            "confusion": confusion.tolist(), "config": asdict(config)}


def _gateway_signature(key: str, spec: tf.TensorSpec):
    """The exported signature as the gateway sees it through GetModelMetadata."""
    from web.reading.signatures import ModelSignature, TensorSpec, find_image_input
    from web.serving.protos.tensorflow.core.framework import types_pb2

    shape = tuple(-1 if d is None else d for d in spec.shape)
    inputs = {key: TensorSpec(key, types_pb2.DT_FLOAT, shape)}
    image_input, problem = find_image_input(inputs, (key,))
    outputs = {"output_0": TensorSpec("output_0", types_pb2.DT_FLOAT, (-1, len(CLASSES)))}
    return ModelSignature(MODEL_NAME, 1, "serving_default", inputs, outputs, (key,), image_input, problem)


def run(models_dir: Path, work_dir: Path, config: ClassifierConfig, log=print) -> dict:
    """Train, export and evaluate; writes work_dir/classifier.json and returns it."""
    start = time.monotonic()
    model = train_classifier(config, log=log)
    export_classifier(model, models_dir, scratch_dir=work_dir, log=log)
    report = evaluate_classifier(models_dir, config, log=log)
    report["seconds"] = round(time.monotonic() - start)
    path = work_dir / "classifier.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2))
    log(f"classifier: wrote {path}")
    return report
