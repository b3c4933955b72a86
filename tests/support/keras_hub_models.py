"""KerasHub's own models with random weights, exported for serving both ways, and KerasHub's own answers.

    python -m tests.support.keras_hub_models OUT_DIR

Run it as a subprocess (it imports TensorFlow and KerasHub; the pytest process must not). It builds
a small RetinaNet and a small D-FINE (`keras_hub.models.*ObjectDetector`, 128x128 input, 3 classes)
and a small `ImageClassifier`, each with its image converter and seeded random weights, and writes:

* ``OUT_DIR/<name>/1``: the SavedModels. Each detector is exported twice from the same weights, as a
  KerasHub user writes a serving function with the decoder (`model.export()` writes only the raw
  heads): ``<detector>_in_model`` runs the converter inside it
  (``decode_predictions(detector(converter(images)), images)``), ``<detector>_gateway`` takes
  converted pixels (``decode_predictions(detector(images), images)``). The classifier is
  `model.export()` itself: the forward pass, its preprocessor outside.
* ``OUT_DIR/settings/<name>/gateway.toml``: what each export needs said (a MODELS_DIR), see SETTINGS.
* ``OUT_DIR/pictures/<picture>.png`` and ``OUT_DIR/expected.json``: for every model and picture,
  what KerasHub's own ``predict`` answers (converter, model, decoder) with the boxes mapped back
  from the converter's output to the picture: the reference the gateway must agree with.
* ``OUT_DIR/models.config``.

Random heads score everything alike, so some are rescaled to spread the scores (see `_spread`);
the pictures are smooth (blurred shapes on a gradient) so that the gateway's resize and the
converter's give nearly the same pixels.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

SIZE = 128  # every model's input is SIZE x SIZE
CLASSES = 3
CLASSIFIER_CLASSES = 5
MAX_DETECTIONS = 40
TOP = 10  # KerasHub's best boxes the tests compare
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# name -> (width, height): the input size itself (no resize anywhere), wider and smaller, taller and larger.
PICTURES = {"square": (SIZE, SIZE), "wide": (320, 160), "tall": (150, 260)}
# model -> (architecture, where the converter runs)
MODELS = {
    "retinanet_in_model": ("retinanet", "in_model"),
    "retinanet_gateway": ("retinanet", "gateway"),
    "d_fine_in_model": ("d_fine", "in_model"),
    "d_fine_gateway": ("d_fine", "gateway"),
    "image_classifier": ("classifier", "gateway"),
}
# The converters: RetinaNet's pads to the aspect ratio and normalizes with ImageNet mean/std (as its
# presets do), D-FINE's crops (KerasHub's default) and scales to 0-1, the classifier's crops and
# normalizes. What gateway.toml says for each export:
IMAGENET = f"mean = {list(IMAGENET_MEAN)}\nstd = {list(IMAGENET_STD)}\n"
SETTINGS = {
    "retinanet_in_model": 'preprocessing = "in_model"\n',
    "retinanet_gateway": 'preprocessing = "gateway"\n',
    "d_fine_in_model": 'preprocessing = "in_model"\nresize = "crop"\n',
    "d_fine_gateway": 'pixel_range = "0-1"\nresize = "crop"\n',
    # ImageClassifier answers logits (activation=None, KerasHub's default).
    "image_classifier": f'pixel_range = "0-1"\n{IMAGENET}resize = "crop"\nscore_activation = "softmax"\n',
}
RESIZE = {"retinanet": "pad", "d_fine": "crop", "classifier": "crop"}


def picture(width: int, height: int, seed: int):  # pragma: no cover - runs in the builder subprocess
    """A smooth synthetic picture: a colour gradient with a few blurred ellipses and rectangles."""
    import numpy as np
    from PIL import Image, ImageDraw, ImageFilter

    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack(
        [40 + 120 * x / width, 60 + 100 * y / height, 160 - 80 * (x + y) / (width + height)], axis=-1
    )
    image = Image.fromarray(base.astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(5):
        x0, x1 = sorted(rng.uniform(0, width, 2))
        y0, y1 = sorted(rng.uniform(0, height, 2))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
        shape((x0, y0, max(x1, x0 + width / 6), max(y1, y0 + height / 6)), fill=colour)
    return image.filter(ImageFilter.GaussianBlur(radius=max(width, height) / 60))


def to_picture(boxes_yxyx, width: int, height: int, mode: str):  # pragma: no cover - builder subprocess
    """Boxes in pixels of the converter's SIZE x SIZE output -> [xmin, ymin, xmax, ymax] in the picture,
    undoing `keras.layers.Resizing` (pad_to_aspect_ratio pads the picture evenly to the input's aspect
    ratio, crop_to_aspect_ratio cuts it evenly, then either resizes to the input)."""
    import numpy as np

    boxes = np.asarray(boxes_yxyx, dtype=np.float64).reshape(-1, 4)[:, [1, 0, 3, 2]]
    window = max(width, height) if mode == "pad" else min(width, height)  # the input is square
    start_x, start_y = int((window - width) / 2), int((window - height) / 2)
    scale = window / SIZE
    out = boxes * scale - [start_x, start_y, start_x, start_y]
    return np.clip(out, 0, [width, height, width, height])


def _spread(weights, std: float, seed: int) -> None:  # pragma: no cover - builder subprocess
    """Redraw a head's kernel with standard deviation `std`: random heads score everything alike."""
    import numpy as np

    rng = np.random.default_rng(seed)
    weights.assign(rng.normal(0.0, std, weights.shape).astype(np.float32))


def _scale(weights, factor: float) -> None:  # pragma: no cover - builder subprocess
    """Scale a head's kernel: random RetinaNet logits are large enough to score the best boxes alike
    near 1.0, and its random box deltas so large that every box collapses to a line at the border."""
    weights.assign(weights.numpy() * factor)


def build(out: Path) -> None:  # pragma: no cover - runs in a subprocess with TensorFlow
    import os

    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    import keras
    import keras_hub
    import numpy as np
    import tensorflow as tf
    from keras_hub.src.layers.modeling.non_max_supression import NonMaxSuppression
    from keras_hub.src.models.d_fine.d_fine_backbone import DFineBackbone
    from keras_hub.src.models.hgnetv2.hgnetv2_backbone import HGNetV2Backbone

    keras.utils.set_random_seed(7)
    shape = (SIZE, SIZE, 3)
    imagenet_scale = [1 / (255 * s) for s in IMAGENET_STD]
    imagenet_offset = [-m / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD, strict=True)]

    def decoder():
        return NonMaxSuppression(
            bounding_box_format="yxyx",
            from_logits=True,
            confidence_threshold=0.0,
            max_detections=MAX_DETECTIONS,
        )

    def resnet():
        return keras_hub.models.ResNetBackbone(
            input_conv_filters=[64],
            input_conv_kernel_sizes=[7],
            stackwise_num_filters=[64, 32, 32, 32],
            stackwise_num_blocks=[1, 1, 1, 1],
            stackwise_num_strides=[1, 2, 2, 2],
            block_type="basic_block",
            image_shape=shape,
        )

    retinanet_converter = keras_hub.layers.RetinaNetImageConverter(
        image_size=(SIZE, SIZE),
        scale=imagenet_scale,
        offset=imagenet_offset,
        crop_to_aspect_ratio=False,
        pad_to_aspect_ratio=True,
    )
    retinanet = keras_hub.models.RetinaNetObjectDetector(
        backbone=keras_hub.models.RetinaNetBackbone(
            image_encoder=resnet(), min_level=4, max_level=5, use_p5=False, image_shape=shape
        ),
        num_classes=CLASSES,
        pre_logits_num_conv_layers=1,
        preprocessor=keras_hub.models.RetinaNetObjectDetectorPreprocessor(image_converter=retinanet_converter),
        prediction_decoder=decoder(),
    )
    _scale(retinanet.get_layer("classification_head").weights[-2], 1 / 2)
    box_kernel, box_bias = retinanet.get_layer("box_head").weights[-2:]
    _scale(box_kernel, 1 / 30)  # boxes near their anchors, not collapsed
    _scale(box_bias, 0.0)  # initialised like the class logits' (the -4.6 of a 0.01 prior): boxes of width 0

    d_fine_converter = keras_hub.layers.DFineImageConverter(
        image_size=(SIZE, SIZE), scale=1 / 255, crop_to_aspect_ratio=True
    )
    hgnet = HGNetV2Backbone(
        stem_channels=[3, 16, 16],
        stackwise_stage_filters=[
            [16, 16, 32, 1, 1, 3],
            [32, 16, 64, 1, 1, 3],
            [64, 32, 64, 1, 1, 3],
            [64, 32, 64, 1, 1, 3],
        ],
        apply_downsample=[False, True, True, True],
        use_lightweight_conv_block=[False, False, True, True],
        depths=[1, 1, 1, 1],
        hidden_sizes=[32, 64, 64, 64],
        embedding_size=16,
        use_learnable_affine_block=True,
        hidden_act="relu",
        image_shape=shape,
        out_features=["stage3", "stage4"],
    )
    d_fine = keras_hub.models.DFineObjectDetector(
        backbone=DFineBackbone(
            backbone=hgnet,
            decoder_in_channels=[32, 32],
            encoder_hidden_dim=32,
            num_denoising=0,
            num_labels=CLASSES,
            hidden_dim=32,
            learn_initial_query=False,
            num_queries=MAX_DETECTIONS,
            anchor_image_size=(SIZE, SIZE),
            feat_strides=[16, 32],
            num_feature_levels=2,
            encoder_in_channels=[64, 64],
            encode_proj_layers=[1],
            num_attention_heads=4,
            encoder_ffn_dim=64,
            num_encoder_layers=1,
            hidden_expansion=0.34,
            depth_multiplier=0.5,
            eval_idx=-1,
            num_decoder_layers=2,
            decoder_attention_heads=4,
            decoder_ffn_dim=64,
            decoder_n_points=[2, 2],
            lqe_hidden_dim=16,
            num_lqe_layers=2,
            out_features=["stage3", "stage4"],
            image_shape=shape,
        ),
        num_classes=CLASSES,
        preprocessor=keras_hub.models.DFineObjectDetectorPreprocessor(image_converter=d_fine_converter),
        prediction_decoder=decoder(),
    )
    scoring = ("class_embed", "enc_score_head")
    heads = [w for w in d_fine.weights if w.path.endswith("kernel") and any(k in w.path for k in scoring)]
    for seed, weights in enumerate(heads):  # the query selection and the class scores, each its own
        _spread(weights, 0.3, 10 + seed)

    classifier_converter = keras_hub.layers.ResNetImageConverter(
        image_size=(SIZE, SIZE), scale=imagenet_scale, offset=imagenet_offset, crop_to_aspect_ratio=True
    )
    classifier = keras_hub.models.ImageClassifier(
        backbone=resnet(),
        num_classes=CLASSIFIER_CLASSES,
        preprocessor=keras_hub.models.ResNetImageClassifierPreprocessor(image_converter=classifier_converter),
    )
    _spread(classifier.output_dense.kernel, 4.0, 3)

    def serving_function(detector, converter):
        """What `ObjectDetector.predict` does, as one function: converter (or not), model, decoder."""

        def serve(images):
            converted = images if converter is None else converter(images)
            return detector.decode_predictions(detector(converted, training=False), images)

        return serve

    detectors = {"retinanet": (retinanet, retinanet_converter), "d_fine": (d_fine, d_fine_converter)}
    out.mkdir(parents=True, exist_ok=True)
    for name, (architecture, where) in MODELS.items():
        target = out / name / "1"
        if architecture == "classifier":
            classifier.export(str(target), verbose=False)
            continue
        detector, converter = detectors[architecture]
        archive = keras.export.ExportArchive()
        archive.track(detector)
        archive.add_endpoint(
            "serving_default",
            serving_function(detector, converter if where == "in_model" else None),
            input_signature=[tf.TensorSpec([1, *shape], tf.float32, name="images")],
        )
        archive.write_out(str(target), verbose=False)

    (out / "pictures").mkdir()
    arrays = {}
    for seed, (key, (width, height)) in enumerate(PICTURES.items()):
        image = picture(width, height, seed)
        image.save(out / "pictures" / f"{key}.png")
        arrays[key] = np.asarray(image, dtype=np.float32)[np.newaxis]

    expected: dict = {}
    for name, (architecture, _) in MODELS.items():
        expected[name] = {}
        for key, pixels in arrays.items():
            height, width = pixels.shape[1:3]
            if architecture == "classifier":
                scores = np.asarray(classifier.predict(pixels, verbose=0))[0]
                expected[name][key] = {"probabilities": [float(v) for v in scores]}
                continue
            answer = detectors[architecture][0].predict(pixels, verbose=0)
            count = int(answer["num_detections"][0])
            boxes = to_picture(answer["boxes"][0][:count], width, height, RESIZE[architecture])
            expected[name][key] = {
                "detections": [
                    {"box": [float(v) for v in box], "score": float(score), "class_id": int(label)}
                    for box, score, label in zip(
                        boxes, answer["confidence"][0][:count], answer["labels"][0][:count], strict=True
                    )
                ]
            }
    (out / "expected.json").write_text(json.dumps(expected, indent=1))
    for name, text in SETTINGS.items():
        (out / "settings" / name).mkdir(parents=True)
        (out / "settings" / name / "gateway.toml").write_text(text)
    entries = "".join(
        f'  config {{ name: "{name}" base_path: "{name}" model_platform: "tensorflow" }}\n'
        for name in MODELS
    )
    (out / "models.config").write_text(f"model_config_list {{\n{entries}}}\n")


if __name__ == "__main__":  # pragma: no cover
    build(Path(sys.argv[1]))
