"""Build one small SavedModel per model family, in that family's exact export signature.

    python -m tests.support.family_models OUT_DIR

Run it as a subprocess (it imports TensorFlow; the pytest process must not). It writes
``OUT_DIR/<name>/1`` for every model in MODELS, label maps and gateway.toml files beside some of
them, and ``OUT_DIR/models.config``.

Every detector *looks* at what it receives instead of answering constants, so the tests see the
whole path (EXIF, resize mode, padding, pixel scaling, colour order, box frames) and not just the
decoding. Each one first undoes its family's pixel convention to get an RGB picture in 0-1, then:

* the **bright box**: the box around pixels brighter than 0.6 (the test pictures draw one bright
  rectangle on a dark background), with score = the mean brightness inside it, which must come out
  as the drawn grey level (220/255) only if the gateway scaled and normalized the pixels right;
* the **content box** (letterboxing families): the box around pixels that are not the family's
  padding value, which must map back to the whole upload;
* a few fixed rows that test NMS, padding rows and class-id offsets.

The constants are plain Python so the tests import them without TensorFlow.
"""

from __future__ import annotations

import sys
from pathlib import Path

BRIGHT = 0.6  # pixels above this (0-1, any channel) belong to the bright rectangle
YOLO_PAD = 114 / 255
KERAS_HUB_SIZE = 320
YOLO_SIZE = 320
YOLO_CLASSES = 3
YOLO_CANDIDATES = 2100  # 40x40 + 20x20 + 10x10 cells of a 320x320 input
YOLO_PROTO = 80  # prototype masks cover the input at 1/4 resolution
YOLO_MASK_DIM = 32
YOLO_NMS_ROWS = 300
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLASSIFIER_SIZE = 64
CLASSIFIER_LABELS = ("red", "green", "blue")

# Fixed rows, in input pixels [xmin, ymin, xmax, ymax] of a 320x320 input:
# two boxes of class 1 overlapping by IoU 0.82 (NMS keeps the first), one of class 2 over them
# (kept: NMS is class-aware), and one far away of class 1.
NMS_ROWS = (
    ((20.0, 20.0, 120.0, 120.0), 1, 0.90),
    ((25.0, 25.0, 125.0, 125.0), 1, 0.80),
    ((22.0, 22.0, 118.0, 122.0), 2, 0.85),
    ((200.0, 200.0, 300.0, 260.0), 1, 0.70),
)
KERAS_FIXED_ROW = ((40.0, 60.0, 200.0, 100.0), 2, 0.75)  # xyxy in input pixels, label 2 (0-based)
DETECTION_LABELS = ("circle", "square", "triangle")
LABEL_MAP = "".join(f'item {{ id: {i + 1} name: "{name}" }}\n' for i, name in enumerate(DETECTION_LABELS))

MODELS = (
    "od_tf1",  # TF1 OD API: `inputs` uint8 [-1, -1, -1, 3]
    "od_tf1_encoded",  # TF1 OD API encoded_image_string_tensor: `inputs` string [-1], 33x33 masks
    "od_float",  # TF2 OD API float_image_tensor: `input_tensor` float32 [1, -1, -1, 3], pixels 0-255
    "model_garden",  # `inputs` uint8 [1, -1, -1, 3], image_info, pixel boxes, 28x28 masks
    "keras_hub",  # `images` float32 [1, 320, 320, 3]; boxes/confidence/labels/num_detections; gateway.toml
    # says preprocessing = "gateway" (0-1, ImageNet mean/std)
    "yolo",  # `images` float32 [1, 320, 320, 3]; output_0 [1, 4 + 3, 2100]
    "yolo_seg",  # same + 32 mask coefficients; output_1 prototypes [1, 80, 80, 32]
    "yolo_nms",  # `images` float32 [1, 320, 320, 3]; output_0 [1, 300, 6]; names in metadata.yaml
    "yolo_pose",  # like yolo with 17x3 keypoint rows ([1, 56, 2100]); metadata.yaml says task: pose
    "classifier_keras",  # `keras_tensor` float32 [-1, 64, 64, 3] ImageNet mean/std; output_0 softmax [-1, 3]
    "classifier_logits",  # `keras_tensor` uint8 [-1, 64, 64, 3]; output_0 raw logits [-1, 3]
    "classifier_yolo",  # `images` float32 [1, 64, 64, 3] 0-1, centre crop (from metadata.yaml: task
    # classify, names); output_0 softmax [1, 3]
    "ambiguous",  # both TF OD API and KerasHub outputs: two families could read it
    "unknown",  # a pose-style heatmap output: no family reads it
)

# gateway.toml files shipped beside some models (the rest run on their family's defaults).
SETTINGS = {
    # The signature cannot tell whether a KerasHub export runs its image converter; this one does not.
    "keras_hub": 'preprocessing = "gateway"\n',
    "classifier_keras": 'pixel_range = "0-1"\nmean = [0.485, 0.456, 0.406]\nstd = [0.229, 0.224, 0.225]\n',
}
# Ultralytics' metadata.yaml, as its exporter writes it into the *_saved_model folder (version 1 here).
ULTRALYTICS_METADATA = """\
description: Ultralytics YOLO11n model trained on shapes.yaml
author: Ultralytics
date: '2026-11-30T12:00:00.000000'
version: 8.4.0
license: AGPL-3.0 License (https://ultralytics.com/license)
docs: https://docs.ultralytics.com
stride: 32
task: {task}
batch: 1
imgsz:
- {size}
- {size}
names:
{names}
args:
  batch: 1
  half: false
  int8: false
  nms: {nms}
channels: 3
end2end: false
"""
METADATA = {
    "yolo_nms": ("detect", YOLO_SIZE, DETECTION_LABELS, "true"),
    "yolo_pose": ("pose", YOLO_SIZE, ("person",), "false"),
    "classifier_yolo": ("classify", CLASSIFIER_SIZE, CLASSIFIER_LABELS, "false"),
}
WITHOUT_LABEL_FILES = ("yolo_nms", "yolo_pose", "classifier_yolo")  # their names come from metadata.yaml


def build(out: Path) -> None:  # pragma: no cover - runs in a subprocess with TensorFlow
    import tensorflow as tf

    def bright_box(image: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """[xmin, ymin, xmax, ymax] in pixels of `image` ([H, W, 3], 0-1) around bright pixels, and
        their mean brightness (0 when there are none)."""
        bright = tf.reduce_max(image, axis=-1) > BRIGHT
        return region_box(bright), mean_inside(image, bright)

    def region_box(mask: tf.Tensor) -> tf.Tensor:
        rows = tf.cast(tf.reduce_any(mask, axis=1), tf.int32)
        cols = tf.cast(tf.reduce_any(mask, axis=0), tf.int32)
        height, width = tf.shape(mask)[0], tf.shape(mask)[1]
        ymin = tf.argmax(rows, output_type=tf.int32)
        ymax = height - tf.argmax(tf.reverse(rows, [0]), output_type=tf.int32)
        xmin = tf.argmax(cols, output_type=tf.int32)
        xmax = width - tf.argmax(tf.reverse(cols, [0]), output_type=tf.int32)
        return tf.cast(tf.stack([xmin, ymin, xmax, ymax]), tf.float32)

    def mean_inside(image: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
        weights = tf.cast(mask, tf.float32)[:, :, None]
        total = tf.reduce_sum(weights) * 3.0
        return tf.math.divide_no_nan(tf.reduce_sum(image * weights), total)

    def content_box(image: tf.Tensor, pad: float) -> tf.Tensor:
        """The box around pixels that are not the padding value."""
        return region_box(tf.reduce_max(tf.abs(image - pad), axis=-1) > 0.02)

    def size_of(image: tf.Tensor) -> tf.Tensor:
        return tf.cast(tf.stack([tf.shape(image)[1], tf.shape(image)[0]]), tf.float32)  # (w, h)

    def disc(size: int) -> tf.Tensor:
        centre, radius = (size - 1) / 2.0, size / 2.0
        yy, xx = tf.meshgrid(
            tf.range(size, dtype=tf.float32), tf.range(size, dtype=tf.float32), indexing="ij"
        )
        return tf.where((xx - centre) ** 2 + (yy - centre) ** 2 <= radius**2, 0.9, 0.1)

    # -- TF Object Detection API ------------------------------------------------------------------
    def od_outputs(image01: tf.Tensor, masks: bool) -> dict[str, tf.Tensor]:
        """One image's OD API answer: row 0 the bright box (class 1), row 1 a fixed box (class 2), then
        padding rows past num_detections."""
        box, score = bright_box(image01)
        wh = size_of(image01)
        norm = box / tf.concat([wh, wh], 0)
        yxyx = tf.stack([norm[1], norm[0], norm[3], norm[2]])
        fixed = tf.constant([0.5, 0.5, 0.75, 1.0])
        boxes = tf.stack([yxyx, fixed, tf.ones(4), tf.ones(4)])
        out = {
            "detection_boxes": boxes,
            "detection_scores": tf.stack([score, 0.6, 0.99, 0.99]),
            "detection_classes": tf.constant([1.0, 2.0, 3.0, 3.0]),
            "num_detections": tf.constant(2.0),
            "raw_detection_scores": tf.zeros([10, 4]),
        }
        if masks:
            out["detection_masks"] = tf.tile(disc(33)[None], [4, 1, 1])
        return out

    od_shapes = {
        "detection_boxes": [4, 4],
        "detection_scores": [4],
        "detection_classes": [4],
        "num_detections": [],
        "raw_detection_scores": [10, 4],
        "detection_masks": [4, 33, 33],
    }

    def batched(fn, images, masks=False):
        keys = [k for k in od_shapes if masks or k != "detection_masks"]
        signature = {k: tf.TensorSpec(od_shapes[k], tf.float32) for k in keys}
        return tf.map_fn(fn, images, fn_output_signature=signature)

    class OdTf1(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8, name="image_tensor")])
        def serve(self, inputs):
            return batched(lambda im: od_outputs(tf.cast(im, tf.float32) / 255.0, False), inputs)

    class OdTf1Encoded(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="encoded_image_string_tensor")])
        def serve(self, inputs):
            def one(data):
                image = tf.io.decode_image(data, channels=3, expand_animations=False)
                return od_outputs(tf.cast(image, tf.float32) / 255.0, True)

            return batched(one, inputs, masks=True)

    class OdFloat(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([1, None, None, 3], tf.float32, name="input_tensor")])
        def serve(self, input_tensor):
            return batched(lambda im: od_outputs(im / 255.0, False), input_tensor)

    # -- Model Garden -------------------------------------------------------------------------------
    class ModelGarden(tf.Module):
        """Resizes what it gets so the long side is 256, then reports pixel boxes of that resized
        image with a crop offset, and image_info to undo both."""

        @tf.function(input_signature=[tf.TensorSpec([1, None, None, 3], tf.uint8, name="inputs")])
        def serve(self, inputs):
            image = tf.cast(inputs[0], tf.float32) / 255.0
            box, score = bright_box(image)
            hw = tf.cast(tf.shape(image)[:2], tf.float32)
            scale = 256.0 / tf.reduce_max(hw)
            offset = tf.constant([3.0, 5.0])  # (y, x)
            yxyx = tf.stack([box[1], box[0], box[3], box[2]]) * scale - tf.concat([offset, offset], 0)
            fixed = tf.constant([10.0, 10.0, 50.0, 90.0])
            info = tf.stack([hw, tf.constant([256.0, 256.0]), tf.stack([scale, scale]), offset])
            return {
                "detection_boxes": tf.stack([yxyx, fixed])[None],
                "detection_scores": tf.stack([score, 0.7])[None],
                "detection_classes": tf.constant([[1, 3]], tf.int32),
                "num_detections": tf.constant([2], tf.int32),
                "detection_masks": tf.tile(disc(28)[None, None], [1, 2, 1, 1]),
                "image_info": info[None],
            }

    # -- KerasHub ---------------------------------------------------------------------------------
    def keras_hub_outputs(images: tf.Tensor) -> dict[str, tf.Tensor]:
        image = images[0] * tf.constant(IMAGENET_STD) + tf.constant(IMAGENET_MEAN)  # undo the converter
        box, score = bright_box(image)
        content = content_box(image, 0.0)  # RetinaNet's converter pads with 0
        yxyx = lambda b: tf.stack([b[1], b[0], b[3], b[2]])  # noqa: E731
        (fx0, fy0, fx1, fy1), fixed_label, fixed_score = KERAS_FIXED_ROW
        pad = 100 - 4
        boxes = tf.concat(
            [
                tf.stack([yxyx(box), yxyx(content), tf.constant([fy0, fx0, fy1, fx1]), -tf.ones(4)]),
                -tf.ones([pad, 4]),
            ],
            0,
        )
        confidence = tf.concat([tf.stack([score, 0.95, fixed_score, -1.0]), -tf.ones([pad])], 0)
        labels = tf.concat([tf.constant([0, 1, fixed_label, -1], tf.int32), -tf.ones([pad], tf.int32)], 0)
        return {
            "boxes": boxes[None],
            "confidence": confidence[None],
            "labels": labels[None],
            "num_detections": tf.constant([3], tf.int32),
        }

    class KerasHub(tf.Module):
        spec = tf.TensorSpec([1, KERAS_HUB_SIZE, KERAS_HUB_SIZE, 3], tf.float32, name="images")

        @tf.function(input_signature=[spec])
        def serve(self, images):
            return keras_hub_outputs(images)

    # -- Ultralytics YOLO -------------------------------------------------------------------------
    def yolo_rows(image: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """(boxes [K, 4] xyxy input pixels, class ids [K], scores [K]) of the rows every YOLO model
        answers: the bright box (class 0), the content box (class 2, score 0.95), the NMS rows."""
        box, score = bright_box(image)
        content = content_box(image, YOLO_PAD)
        boxes = tf.concat([tf.stack([box, content]), tf.constant([r[0] for r in NMS_ROWS])], 0)
        classes = tf.constant([0, 2, *[r[1] for r in NMS_ROWS]], tf.int32)
        scores = tf.concat([tf.stack([score, 0.95]), tf.constant([r[2] for r in NMS_ROWS])], 0)
        return boxes, classes, scores

    def yolo_raw(image: tf.Tensor, mask_dim: int) -> tf.Tensor:
        """[4 + nc + mask_dim, N]: rows of yolo_rows as candidates, every other candidate scoring 0."""
        boxes, classes, scores = yolo_rows(image)
        count = tf.shape(boxes)[0]
        cxcywh = tf.concat([(boxes[:, :2] + boxes[:, 2:]) / 2, boxes[:, 2:] - boxes[:, :2]], 1)
        class_scores = tf.one_hot(classes, YOLO_CLASSES) * scores[:, None]
        coefficients = tf.one_hot(tf.zeros([count], tf.int32), mask_dim) if mask_dim else tf.zeros([count, 0])
        rows = tf.concat([cxcywh, class_scores, coefficients], 1)  # [K, C]
        rest = YOLO_CANDIDATES - count
        filler = tf.concat(
            [tf.tile([[160.0, 160.0, 10.0, 10.0]], [rest, 1]), tf.zeros([rest, YOLO_CLASSES + mask_dim])], 1
        )
        return tf.transpose(tf.concat([rows, filler], 0))

    def yolo_protos(image: tf.Tensor) -> tf.Tensor:
        """Prototype masks [80, 80, 32]: channel 0 is +8 where the input is bright, -8 elsewhere."""
        small = tf.image.resize(image[None], [YOLO_PROTO, YOLO_PROTO], method="area")[0]
        first = tf.where(tf.reduce_max(small, axis=-1) > BRIGHT, 8.0, -8.0)
        return tf.concat([first[:, :, None], tf.zeros([YOLO_PROTO, YOLO_PROTO, YOLO_MASK_DIM - 1])], -1)

    yolo_spec = tf.TensorSpec([1, YOLO_SIZE, YOLO_SIZE, 3], tf.float32, name="images")

    class Yolo(tf.Module):
        @tf.function(input_signature=[yolo_spec])
        def serve(self, images):
            return {"output_0": yolo_raw(images[0], 0)[None]}

    class YoloSeg(tf.Module):
        @tf.function(input_signature=[yolo_spec])
        def serve(self, images):
            return {
                "output_0": yolo_raw(images[0], YOLO_MASK_DIM)[None],
                "output_1": yolo_protos(images[0])[None],
            }

    class YoloPose(tf.Module):
        """A pose model's raw rows: box, one class score, 17 keypoints (x, y, visibility)."""

        @tf.function(input_signature=[yolo_spec])
        def serve(self, images):
            raw = yolo_raw(images[0], 0)[:5]  # box rows and the first class as "person"
            keypoints = tf.ones([51, YOLO_CANDIDATES]) * 0.9
            return {"output_0": tf.concat([raw, keypoints], 0)[None]}

    class YoloNms(tf.Module):
        @tf.function(input_signature=[yolo_spec])
        def serve(self, images):
            boxes, classes, scores = yolo_rows(images[0])
            keep = [0, 1, 2, 4, 5]  # what Ultralytics' own NMS keeps of yolo_rows
            rows = tf.concat(
                [
                    tf.gather(boxes, keep),
                    tf.gather(scores, keep)[:, None],
                    tf.cast(tf.gather(classes, keep), tf.float32)[:, None],
                ],
                1,
            )
            return {"output_0": tf.concat([rows, tf.zeros([YOLO_NMS_ROWS - len(keep), 6])], 0)[None]}

    # -- classifiers ------------------------------------------------------------------------------
    def colour_logits(images01: tf.Tensor) -> tf.Tensor:
        return tf.reduce_mean(images01, axis=[1, 2]) * 8.0  # [B, 3]: red, green, blue

    class ClassifierKeras(tf.Module):
        spec = tf.TensorSpec([None, CLASSIFIER_SIZE, CLASSIFIER_SIZE, 3], tf.float32, name="keras_tensor")

        @tf.function(input_signature=[spec])
        def serve(self, keras_tensor):
            images = keras_tensor * tf.constant(IMAGENET_STD) + tf.constant(IMAGENET_MEAN)
            return {"output_0": tf.nn.softmax(colour_logits(images))}

    class ClassifierLogits(tf.Module):
        spec = tf.TensorSpec([None, CLASSIFIER_SIZE, CLASSIFIER_SIZE, 3], tf.uint8, name="keras_tensor")

        @tf.function(input_signature=[spec])
        def serve(self, keras_tensor):
            return {"output_0": colour_logits(tf.cast(keras_tensor, tf.float32) / 255.0)}

    class ClassifierYolo(tf.Module):
        spec = tf.TensorSpec([1, CLASSIFIER_SIZE, CLASSIFIER_SIZE, 3], tf.float32, name="images")

        @tf.function(input_signature=[spec])
        def serve(self, images):
            return {"output_0": tf.nn.softmax(colour_logits(images))}

    # -- signatures no family, or two families, can read alone -------------------------------------
    class Ambiguous(tf.Module):
        @tf.function(
            input_signature=[tf.TensorSpec([1, KERAS_HUB_SIZE, KERAS_HUB_SIZE, 3], tf.float32, name="images")]
        )
        def serve(self, images):
            out = {k: v[None] for k, v in od_outputs(images[0] / 255.0, False).items()}
            out.update(keras_hub_outputs(images))
            return out

    class Unknown(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([1, 256, 192, 3], tf.float32, name="image")])
        def serve(self, image):
            return {"heatmaps": tf.image.resize(image, [64, 48])[:, :, :, :1] * tf.ones([1, 1, 1, 17])}

    modules = {
        "od_tf1": OdTf1(),
        "od_tf1_encoded": OdTf1Encoded(),
        "od_float": OdFloat(),
        "model_garden": ModelGarden(),
        "keras_hub": KerasHub(),
        "yolo": Yolo(),
        "yolo_seg": YoloSeg(),
        "yolo_nms": YoloNms(),
        "yolo_pose": YoloPose(),
        "classifier_keras": ClassifierKeras(),
        "classifier_logits": ClassifierLogits(),
        "classifier_yolo": ClassifierYolo(),
        "ambiguous": Ambiguous(),
        "unknown": Unknown(),
    }
    assert tuple(modules) == MODELS
    # TF1 exports name their signature input `inputs` whatever the placeholder is called.
    input_keys = {"od_tf1": "inputs", "od_tf1_encoded": "inputs"}
    out.mkdir(parents=True, exist_ok=True)
    config = ["model_config_list {"]
    for name, module in modules.items():
        function = module.serve
        if name in input_keys:
            function = _renamed_input(tf, module.serve, input_keys[name])
        tf.saved_model.save(module, str(out / name / "1"), signatures={"serving_default": function})
        config.append(f'  config {{ name: "{name}" base_path: "{name}" model_platform: "tensorflow" }}')
        if name in SETTINGS:
            (out / name / "gateway.toml").write_text(SETTINGS[name])
        if name in METADATA:
            task, size, names, nms = METADATA[name]
            listed = "\n".join(f"  {i}: {label}" for i, label in enumerate(names))
            metadata = ULTRALYTICS_METADATA.format(task=task, size=size, names=listed, nms=nms)
            (out / name / "1" / "metadata.yaml").write_text(metadata)
        if name in WITHOUT_LABEL_FILES:
            continue
        if name.startswith("classifier"):
            (out / name / "labels.txt").write_text("\n".join(CLASSIFIER_LABELS) + "\n")
        else:
            (out / name / "label_map.pbtxt").write_text(LABEL_MAP)
    config.append("}")
    (out / "models.config").write_text("\n".join(config) + "\n")


def _renamed_input(tf, function, key: str):  # pragma: no cover - TensorFlow subprocess
    """A concrete function whose single input is called `key` in the signature."""
    spec = function.input_signature[0]

    @tf.function(input_signature=[tf.TensorSpec(spec.shape, spec.dtype, name=key)])
    def renamed(tensor):
        return function(tensor)

    return renamed.get_concrete_function()


if __name__ == "__main__":  # pragma: no cover
    if len(sys.argv) != 2:
        sys.exit("usage: python -m tests.support.family_models OUT_DIR")
    build(Path(sys.argv[1]))
