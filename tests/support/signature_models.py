"""Build tiny SavedModels with the input and output signature layouts the gateway must handle.

    python -m tests.support.signature_models OUT_DIR

Run it as a subprocess (it imports TensorFlow; the pytest process must not). It writes one
SavedModel per layout under ``OUT_DIR/<name>/1``, label maps beside some of them, and
``OUT_DIR/models.config`` listing them all (relative base paths, as TF Serving resolves them).

Every model answers with fixed boxes given in *normalized* coordinates of the image it received
(``BOXES`` below), so a test can compute where they must land in the uploaded picture whatever
the model saw (a downsized copy, a fixed-size copy, pixels of a resized input plus image_info).
The first detection's score is the mean pixel value / 255 of what the model received, so the
tests also see that the pixels (or encoded bytes) arrived intact and in order. The constants
are plain Python so the tests can import them without TensorFlow.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Normalized [ymin, xmin, ymax, xmax] per detection row; the score of row 0 is the image brightness.
BOXES = (
    (0.10, 0.20, 0.50, 0.60),
    (0.50, 0.50, 0.90, 0.95),
    (0.05, 0.05, 0.20, 0.20),
    (0.00, 0.00, 1.00, 1.00),  # padding rows past num_detections: must be ignored
    (0.00, 0.00, 1.00, 1.00),
)
SCORES_AFTER_FIRST = (0.6, 0.3, 0.99, 0.99)
CLASSES = (1, 2, 3, 1, 1)
NUM_DETECTIONS = 3
OD_MASK_SIZE = 33
MG_MASK_SIZE = 28
MG_INPUT_SIDE = 320
MG_OFFSET = (5.0, 7.0)  # (y, x) crop offset reported in image_info; the gateway must undo it
FIXED_SIZE = (300, 200)  # (width, height) of the fixed-size float model
CLASSIFIER_SIZE = 64
CLASSIFIER_LABELS = ("red", "green", "blue")

LABEL_MAP_PBTXT = """\
# Detection classes of the signature models (display_name wins over name).
item { id: 1 name: "circle" }
item { id: 2 name: "sq" display_name: "square" }
item { id: 3 name: "triangle" frequency: FREQUENT keypoints { id: 0 label: "apex" } }
"""

# name -> (input description, output description); the test checks each layout end to end.
MODELS = (
    "od_uint8",  # uint8 [1, -1, -1, 3] "input_tensor"; TF OD API outputs, no masks
    "od_jpeg",  # string [-1] "encoded_image_string_tensor"; TF OD API outputs + 33x33 masks
    "mg_uint8",  # uint8 [1, -1, -1, 3] "inputs"; Model Garden: pixel boxes, image_info, int classes, masks
    "mg_bytes",  # string [1] "image_bytes"; Model Garden outputs, no masks
    "fixed_float",  # float32 [1, 200, 300, 3] "input_tensor"; TF OD API outputs
    "classifier",  # float32 [-1, 64, 64, 3] "input_1" 0-255 (preprocessing = "in_model" in gateway.toml);
    # "probabilities" [B, 3]; labels.txt beside it
    "classifier_named",  # uint8 [1, -1, -1, 3] "image"; "scores" [1, 3] logits (declared in gateway.toml)
    # and "classes" [1, 3] strings
    "two_inputs",  # two required inputs: the gateway must refuse it with a clear message
)


def disc_mask(size: int) -> list[list[float]]:
    """A centred disc as box-relative mask probabilities (0.9 inside, 0.1 outside)."""
    centre = (size - 1) / 2.0
    radius = size / 2.0
    return [
        [0.9 if (x - centre) ** 2 + (y - centre) ** 2 <= radius**2 else 0.1 for x in range(size)]
        for y in range(size)
    ]


def build(out: Path) -> None:  # pragma: no cover - runs in a subprocess with TensorFlow
    import tensorflow as tf

    boxes = tf.constant(BOXES, tf.float32)  # [N, 4]
    rest = tf.constant(SCORES_AFTER_FIRST, tf.float32)
    n_rows = len(BOXES)

    def brightness(image: tf.Tensor) -> tf.Tensor:
        return tf.reduce_mean(tf.cast(image, tf.float32)) / 255.0

    def od_outputs(bright: tf.Tensor, masks: bool) -> dict[str, tf.Tensor]:
        """TF OD API outputs for a batch of brightness values [B]."""
        batch = tf.shape(bright)[0]
        scores = tf.concat([bright[:, None], tf.tile(rest[None], [batch, 1])], axis=1)
        out = {
            "detection_boxes": tf.tile(boxes[None], [batch, 1, 1]),
            "detection_scores": scores,
            "detection_classes": tf.tile(tf.constant([CLASSES], tf.float32), [batch, 1]),
            "num_detections": tf.fill([batch], float(NUM_DETECTIONS)),
            # Something a real export has and the gateway does not read (skipped via output_filter).
            "raw_detection_scores": tf.zeros([batch, 1000, 4]),
        }
        if masks:
            disc = tf.constant(disc_mask(OD_MASK_SIZE), tf.float32)
            out["detection_masks"] = tf.tile(disc[None, None], [batch, n_rows, 1, 1])
        return out

    def mg_outputs(image: tf.Tensor, masks: bool) -> dict[str, tf.Tensor]:
        """Model Garden outputs for one decoded image [H, W, 3] (batch of 1)."""
        shape = tf.cast(tf.shape(image)[:2], tf.float32)
        scale = MG_INPUT_SIDE / tf.reduce_max(shape)
        scaled = shape * scale
        offset = tf.constant(MG_OFFSET, tf.float32)
        pixel = boxes * tf.concat([scaled, scaled], 0) - tf.concat([offset, offset], 0)
        scores = tf.concat([[brightness(image)], rest], axis=0)
        side = tf.constant([MG_INPUT_SIDE] * 2, tf.float32)
        info = tf.stack([shape, side, tf.stack([scale, scale]), offset])
        out = {
            "detection_boxes": pixel[None],
            "detection_scores": scores[None],
            "detection_classes": tf.constant([CLASSES], tf.int32),
            "num_detections": tf.constant([NUM_DETECTIONS], tf.int32),
            "image_info": info[None],
        }
        if masks:
            disc = tf.constant(disc_mask(MG_MASK_SIZE), tf.float32)
            out["detection_masks"] = tf.tile(disc[None, None], [1, n_rows, 1, 1])
        return out

    def decode(encoded: tf.Tensor) -> tf.Tensor:
        return tf.io.decode_image(encoded, channels=3, expand_animations=False)

    class OdUint8(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([1, None, None, 3], tf.uint8, name="input_tensor")])
        def serve(self, input_tensor):
            return od_outputs(tf.reshape(brightness(input_tensor), [1]), masks=False)

    class OdJpeg(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="encoded_image_string_tensor")])
        def serve(self, encoded_image_string_tensor):
            bright = tf.map_fn(
                lambda s: brightness(decode(s)), encoded_image_string_tensor, fn_output_signature=tf.float32
            )
            return od_outputs(bright, masks=True)

    class MgUint8(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([1, None, None, 3], tf.uint8, name="inputs")])
        def serve(self, inputs):
            return mg_outputs(inputs[0], masks=True)

    class MgBytes(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([1], tf.string, name="image_bytes")])
        def serve(self, image_bytes):
            return mg_outputs(decode(image_bytes[0]), masks=False)

    class FixedFloat(tf.Module):
        spec = tf.TensorSpec([1, FIXED_SIZE[1], FIXED_SIZE[0], 3], tf.float32, name="input_tensor")

        @tf.function(input_signature=[spec])
        def serve(self, input_tensor):
            return od_outputs(tf.reshape(brightness(input_tensor), [1]), masks=False)

    def colour_logits(images: tf.Tensor) -> tf.Tensor:
        means = tf.reduce_mean(tf.cast(images, tf.float32), axis=[1, 2]) / 255.0  # [B, 3]
        return means * 8.0

    class Classifier(tf.Module):
        @tf.function(
            input_signature=[
                tf.TensorSpec([None, CLASSIFIER_SIZE, CLASSIFIER_SIZE, 3], tf.float32, name="input_1")
            ]
        )
        def serve(self, input_1):
            return {"probabilities": tf.nn.softmax(colour_logits(input_1))}

    class ClassifierNamed(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([1, None, None, 3], tf.uint8, name="image")])
        def serve(self, image):
            logits = colour_logits(image)  # raw logits: gateway.toml says so
            names = tf.constant([[name.encode() for name in CLASSIFIER_LABELS]])
            return {"scores": logits, "classes": names}

    class TwoInputs(tf.Module):
        @tf.function(
            input_signature=[
                tf.TensorSpec([1, None, None, 3], tf.uint8, name="image"),
                tf.TensorSpec([1], tf.float32, name="threshold"),
            ]
        )
        def serve(self, image, threshold):
            return od_outputs(tf.reshape(brightness(image), [1]) * threshold, masks=False)

    modules = {
        "od_uint8": OdUint8(),
        "od_jpeg": OdJpeg(),
        "mg_uint8": MgUint8(),
        "mg_bytes": MgBytes(),
        "fixed_float": FixedFloat(),
        "classifier": Classifier(),
        "classifier_named": ClassifierNamed(),
        "two_inputs": TwoInputs(),
    }
    assert tuple(modules) == MODELS
    out.mkdir(parents=True, exist_ok=True)
    config = ["model_config_list {"]
    for name, module in modules.items():
        tf.saved_model.save(module, str(out / name / "1"), signatures={"serving_default": module.serve})
        labels = ' version_labels { key: "stable" value: 1 }' if name == "od_uint8" else ""
        entry = f'name: "{name}" base_path: "{name}" model_platform: "tensorflow"{labels}'
        config.append(f"  config {{ {entry} }}")
    config.append("}")
    for name in ("od_uint8", "od_jpeg", "mg_uint8", "mg_bytes", "fixed_float"):
        (out / name / "label_map.pbtxt").write_text(LABEL_MAP_PBTXT)
    (out / "classifier" / "labels.txt").write_text("\n".join(CLASSIFIER_LABELS) + "\n")
    # Its scores are logits under a name that does not say so: the settings file declares it.
    (out / "classifier_named" / "gateway.toml").write_text('score_activation = "softmax"\n')
    # A float input: only gateway.toml can say the model takes 0-255 pixels and converts them itself.
    (out / "classifier" / "gateway.toml").write_text('preprocessing = "in_model"\n')
    (out / "models.config").write_text("\n".join(config) + "\n")


if __name__ == "__main__":  # pragma: no cover
    if len(sys.argv) != 2:
        sys.exit("usage: python -m tests.support.signature_models OUT_DIR")
    build(Path(sys.argv[1]))
