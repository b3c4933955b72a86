"""Build the SavedModels of the TF Serving conformance tests: TF1 graphs (as TF Serving's own test data
is) next to a TF2 equivalent, and a TF1-era Object Detection API detector.

    python -m tests.support.tf1_models OUT_DIR

Run it as a subprocess (it imports TensorFlow; the pytest process must not). It writes

* ``half_plus_two_tf1/00000123``: a TF1 graph (``tf.compat.v1``, ``SavedModelBuilder``) built the way
  TF Serving's ``servables/tensorflow/testdata/saved_model_half_plus_two.py`` builds
  ``saved_model_half_plus_two_cpu``: variables a=0.5, b=2, c=3 (and a2, c2 for ``y3``), serialized
  tf.Examples parsed with ``parse_example`` (features ``x`` and ``x2``, ``x2`` defaulting to 0), and
  the signatures ``serving_default`` (predict ``x`` -> ``y``, both [-1, 1]), ``classify_x_to_y``,
  ``regress_x_to_y``, ``regress_x_to_y2`` (y2 = 0.5x + 3) and ``regress_x2_to_y3`` (a float input);
  an asset ``foo.txt`` and a main op assigning its name to a variable, as upstream does;
* ``half_plus_three_tf1/00000123``: like upstream's ``saved_model_half_plus_three`` (a TensorFlow
  1.0 export: y = 0.5x + 3): graph producer 21, a ``tf_example`` placeholder whose shape attribute is
  the legacy ``shape {}`` (unknown at that producer, a scalar to later readers, which is why
  ``tf.saved_model.load`` refuses it with "Shape must be rank 1 but is rank 0 for ParseExample"),
  the v1 ``ParseExample`` op, ref variables, a ``legacy_init_op``, and signatures keyed as that
  exporter keyed them: ``serving_default`` (predict) and ``tensorflow/serving/regress``; ours also
  has ``tensorflow/serving/classify`` (scores = y);
* ``half_plus_two_tf2/00000123``: upstream's native TF2 ``HalfPlusTwoModel`` (``tf.Module`` +
  ``tf.saved_model.save``) with the same signature names, its predict input declared [-1, 1];
* ``od_api_tf1/1`` and ``od_api_tf1/label_map.pbtxt``: a detector exported the TF1 Object Detection
  API way (``export_inference_graph.py``): ``serving_default``, predict, input ``inputs`` = the
  uint8 placeholder ``image_tensor`` [-1, -1, -1, 3], outputs ``detection_boxes`` [-1, 5, 4],
  ``detection_scores`` / ``detection_classes`` [-1, 5] (float, 1-based) and ``num_detections`` [-1];
* ``models.config`` listing the four (relative base paths).

The detector answers the fixed boxes ``OD_BOXES`` (normalized, of the image it received); the score of
row 0 is the mean of the image's *first* (red) channel / 255, so a test sees that the pixels arrived,
in RGB order. The constants are plain Python so the tests import them without TensorFlow.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

VERSION = 123  # TF Serving's test models live in 00000123
VERSION_DIR = "00000123"
MODELS = ("half_plus_two_tf1", "half_plus_three_tf1", "half_plus_two_tf2", "od_api_tf1")
OD_MODEL = "od_api_tf1"
OD_VERSION = 1

# Signatures of half_plus_two (TF1 and TF2) and half_plus_three, by the API they serve (the TF1 graphs
# store these method names; tf.saved_model.save stores tensorflow/serving/predict for all of them).
HALF_PLUS_TWO_SIGNATURES = {
    "serving_default": "tensorflow/serving/predict",
    "classify_x_to_y": "tensorflow/serving/classify",
    "regress_x_to_y": "tensorflow/serving/regress",
    "regress_x_to_y2": "tensorflow/serving/regress",
    "regress_x2_to_y3": "tensorflow/serving/regress",
}
HALF_PLUS_TWO_TF2_SIGNATURES = {  # upstream's TF2 model also has classify_x2_to_y3
    **HALF_PLUS_TWO_SIGNATURES,
    "classify_x2_to_y3": "tensorflow/serving/classify",
}
HALF_PLUS_THREE_SIGNATURES = {
    "serving_default": "tensorflow/serving/predict",
    "tensorflow/serving/regress": "tensorflow/serving/regress",
    "tensorflow/serving/classify": "tensorflow/serving/classify",
}
LEGACY_PRODUCER = 21  # GraphDef version of TensorFlow 1.0's exports

# The detector: normalized [ymin, xmin, ymax, xmax] rows; rows past OD_NUM_DETECTIONS are padding.
OD_BOXES = (
    (0.10, 0.20, 0.50, 0.60),
    (0.50, 0.50, 0.90, 0.95),
    (0.05, 0.05, 0.25, 0.30),
    (0.00, 0.00, 1.00, 1.00),
    (0.00, 0.00, 1.00, 1.00),
)
OD_SCORES_AFTER_FIRST = (0.8, 0.7, 0.99, 0.99)  # row 0 scores the red channel's mean / 255
OD_CLASSES = (1, 2, 3, 1, 1)
OD_NUM_DETECTIONS = 3
# As the TF1 model zoo's mscoco_label_map.pbtxt writes them: display_name is what people read.
OD_LABELS = {1: "person", 2: "bicycle", 3: "car"}
OD_LABEL_MAP_PBTXT = """\
item {
  name: "/m/01g317"
  id: 1
  display_name: "person"
}
item {
  name: "/m/0199g"
  id: 2
  display_name: "bicycle"
}
item {
  name: "/m/0k4j"
  id: 3
  display_name: "car"
}
"""


def build(out: Path) -> None:  # pragma: no cover - runs in a subprocess with TensorFlow
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")  # the v1 APIs' deprecation notices
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="tf1_assets_") as scratch:
        _half_plus_two_tf1(tf, out / "half_plus_two_tf1" / VERSION_DIR, Path(scratch))
        _half_plus_three_tf1(tf, out / "half_plus_three_tf1" / VERSION_DIR, Path(scratch))
    _half_plus_two_tf2(tf, out / "half_plus_two_tf2" / VERSION_DIR)
    _od_api_tf1(tf, out / OD_MODEL / str(OD_VERSION))
    (out / OD_MODEL / "label_map.pbtxt").write_text(OD_LABEL_MAP_PBTXT)
    entries = "".join(
        f'  config {{ name: "{name}" base_path: "{name}" model_platform: "tensorflow" }}\n' for name in MODELS
    )
    (out / "models.config").write_text("model_config_list {\n" + entries + "}\n")


# -- helpers (TensorFlow passed in: this module must import without it) ---------------------------


def _feature_spec(v1):  # pragma: no cover
    """tf.Examples carry "x" and "x2" (x2 defaults to 0), as upstream's _get_feature_spec says."""
    return {
        "x": v1.FixedLenFeature([1], dtype=v1.float32),
        "x2": v1.FixedLenFeature([1], dtype=v1.float32, default_value=[0.0]),
    }


def _signature(v1, method: str, inputs: dict, outputs: dict):  # pragma: no cover
    info = v1.saved_model.utils.build_tensor_info
    return v1.saved_model.signature_def_utils.build_signature_def(
        {key: info(t) for key, t in inputs.items()}, {key: info(t) for key, t in outputs.items()}, method
    )


def _asset(v1, scratch: Path):  # pragma: no cover
    """Upstream's _create_asset_file: an asset file in ASSET_FILEPATHS and an op assigning its name
    to a (non-saved) variable, run by the main op at load."""
    source = scratch / "foo.txt"
    source.write_text("asset-file-contents")
    filepath = v1.constant(str(source))
    v1.add_to_collection(v1.GraphKeys.ASSET_FILEPATHS, filepath)
    filename = v1.Variable(
        "foo.txt", name="filename_tensor", trainable=False, collections=[], use_resource=False
    )
    return filename.assign("foo.txt")


def _half_plus_two_tf1(tf, export_dir: Path, scratch: Path) -> None:  # pragma: no cover
    v1 = tf.compat.v1
    predict, classify, regress = (
        v1.saved_model.signature_constants.PREDICT_METHOD_NAME,
        v1.saved_model.signature_constants.CLASSIFY_METHOD_NAME,
        v1.saved_model.signature_constants.REGRESS_METHOD_NAME,
    )
    builder = v1.saved_model.builder.SavedModelBuilder(str(export_dir))
    with v1.Session(graph=tf.Graph()) as sess:
        with tf.device("/cpu:0"):
            a = v1.Variable(0.5, name="a", use_resource=False)
            b = v1.Variable(2.0, name="b", use_resource=False)
            c = v1.Variable(3.0, name="c", use_resource=False)
            serialized = v1.placeholder(tf.string, name="tf_example", shape=[None])
            example = v1.parse_example(serialized, _feature_spec(v1))
            x = tf.identity(example["x"], name="x")
            y = tf.identity(tf.add(tf.multiply(a, x), b), name="y")
            y2 = tf.identity(tf.add(tf.multiply(a, x), c), name="y2")
            x2 = tf.identity(example["x2"], name="x2")
            # Separate variables for the x2 path, as upstream has them.
            a2 = v1.Variable(0.5, name="a2", use_resource=False)
            c2 = v1.Variable(3.0, name="c2", use_resource=False)
            y3 = tf.identity(tf.add(tf.multiply(a2, x2), c2), name="y3")
        assign_filename = _asset(v1, scratch)
        signatures = {
            "regress_x_to_y": _signature(v1, regress, {"inputs": serialized}, {"outputs": y}),
            "regress_x_to_y2": _signature(v1, regress, {"inputs": serialized}, {"outputs": y2}),
            "regress_x2_to_y3": _signature(v1, regress, {"inputs": x2}, {"outputs": y3}),
            "classify_x_to_y": _signature(v1, classify, {"inputs": serialized}, {"scores": y}),
            "serving_default": _signature(v1, predict, {"x": x}, {"y": y}),
        }
        sess.run(v1.global_variables_initializer())
        builder.add_meta_graph_and_variables(
            sess,
            [v1.saved_model.tag_constants.SERVING],
            signature_def_map=signatures,
            assets_collection=v1.get_collection(v1.GraphKeys.ASSET_FILEPATHS),
            main_op=tf.group(assign_filename),
        )
    builder.save()


def _half_plus_three_tf1(tf, export_dir: Path, scratch: Path) -> None:  # pragma: no cover
    v1 = tf.compat.v1
    predict, classify, regress = (
        v1.saved_model.signature_constants.PREDICT_METHOD_NAME,
        v1.saved_model.signature_constants.CLASSIFY_METHOD_NAME,
        v1.saved_model.signature_constants.REGRESS_METHOD_NAME,
    )
    builder = v1.saved_model.builder.SavedModelBuilder(str(export_dir))
    with v1.Session(graph=tf.Graph()) as sess:
        a = v1.Variable(0.5, name="a", use_resource=False)
        b = v1.Variable(3.0, name="b", use_resource=False)
        serialized = v1.placeholder(tf.string, name="tf_example")
        # TensorFlow 1.0's parse_example: the v1 op, the required feature "x" without a default.
        parsed = tf.raw_ops.ParseExample(
            serialized=serialized,
            names=tf.constant([], tf.string),
            sparse_keys=[],
            dense_keys=[tf.constant("x")],
            dense_defaults=[tf.constant([], tf.float32)],
            sparse_types=[],
            dense_shapes=[[1]],
        )
        x = tf.identity(parsed[3][0], name="x")
        y = tf.add(tf.multiply(a, x), b, name="y")
        assign_filename = _asset(v1, scratch)
        signatures = {
            "serving_default": _signature(v1, predict, {"x": x}, {"y": y}),
            regress: _signature(v1, regress, {"inputs": serialized}, {"outputs": tf.identity(y)}),
            classify: _signature(v1, classify, {"inputs": serialized}, {"scores": y}),
        }
        sess.run(v1.global_variables_initializer())
        builder.add_meta_graph_and_variables(
            sess,
            [v1.saved_model.tag_constants.SERVING],
            signature_def_map=signatures,
            assets_collection=v1.get_collection(v1.GraphKeys.ASSET_FILEPATHS),
            main_op=tf.group(assign_filename),
        )
    builder.save()
    _make_legacy(tf, export_dir / "saved_model.pb")


def _make_legacy(tf, saved_model_pb: Path) -> None:  # pragma: no cover
    """Rewrite the graph as TensorFlow 1.0 wrote it: producer 21, the placeholder's shape attribute
    ``shape {}`` (that producer's "unknown"), the init op under ``legacy_init_op``."""
    from tensorflow.core.protobuf import saved_model_pb2

    model = saved_model_pb2.SavedModel.FromString(saved_model_pb.read_bytes())
    (graph,) = model.meta_graphs
    graph.meta_info_def.tensorflow_version = "1.0.0-rc2"
    graph.graph_def.versions.producer = LEGACY_PRODUCER
    graph.graph_def.versions.min_consumer = 0
    (placeholder,) = [n for n in graph.graph_def.node if n.name == "tf_example"]
    placeholder.attr["shape"].shape.Clear()  # `shape {}`: no dims, unknown_rank false
    for signature in graph.signature_def.values():  # and the signatures say so too
        for info in signature.inputs.values():
            if info.name == "tf_example:0":
                info.tensor_shape.Clear()
    main_op = graph.collection_def.pop("saved_model_main_op")
    graph.collection_def["legacy_init_op"].CopyFrom(main_op)
    saved_model_pb.write_bytes(model.SerializeToString())


def _half_plus_two_tf2(tf, export_dir: Path) -> None:  # pragma: no cover
    """Upstream's HalfPlusTwoModel (tf2=True), its predict input [-1, 1] instead of [1]."""

    def parse_x(serialized):
        return tf.io.parse_example(serialized, _feature_spec(tf.compat.v1))["x"]

    def examples(name: str):
        return tf.TensorSpec([None], tf.string, name=name)

    class HalfPlusTwo(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = tf.Variable(0.5, name="a")
            self.b = tf.Variable(2.0, name="b")
            self.c = tf.Variable(3.0, name="c")

        def compute(self, x, inc):
            return tf.add(tf.multiply(self.a, x), inc)

        @tf.function(input_signature=[tf.TensorSpec([None, 1], tf.float32, name="x")])
        def predict(self, x):
            return {"y": self.compute(x, self.b)}

        @tf.function(input_signature=[examples("inputs")])
        def regress_xy(self, serialized):
            return {"outputs": self.compute(parse_x(serialized), self.b)}

        @tf.function(input_signature=[examples("inputs")])
        def regress_xy2(self, serialized):
            return {"outputs": self.compute(parse_x(serialized), self.c)}

        @tf.function(input_signature=[tf.TensorSpec([1], tf.float32, name="inputs")])
        def regress_x2y3(self, x2):
            return {"outputs": self.compute(x2, self.c)}

        @tf.function(input_signature=[examples("inputs")])
        def classify_xy(self, serialized):
            return {"scores": self.compute(parse_x(serialized), self.b)}

        @tf.function(input_signature=[tf.TensorSpec([1], tf.float32, name="inputs")])
        def classify_x2y3(self, x2):
            return {"scores": self.compute(x2, self.c)}

    model = HalfPlusTwo()
    signatures = {
        "serving_default": model.predict,
        "regress_x_to_y": model.regress_xy,
        "regress_x_to_y2": model.regress_xy2,
        "regress_x2_to_y3": model.regress_x2y3,
        "classify_x_to_y": model.classify_xy,
        "classify_x2_to_y3": model.classify_x2y3,
    }
    assert set(signatures) == set(HALF_PLUS_TWO_TF2_SIGNATURES)
    tf.saved_model.save(model, str(export_dir), signatures=signatures)


def _od_api_tf1(tf, export_dir: Path) -> None:  # pragma: no cover
    """A frozen TF1 detector graph with the signature export_inference_graph.py writes."""
    v1 = tf.compat.v1
    rows = len(OD_BOXES)
    builder = v1.saved_model.builder.SavedModelBuilder(str(export_dir))
    with v1.Session(graph=tf.Graph()) as sess:
        images = v1.placeholder(tf.uint8, shape=[None, None, None, 3], name="image_tensor")
        batch = tf.shape(images)[0]
        red = tf.reduce_mean(tf.cast(images[:, :, :, 0], tf.float32), axis=[1, 2]) / 255.0  # [B]
        rest = tf.tile(tf.constant([OD_SCORES_AFTER_FIRST], tf.float32), [batch, 1])
        boxes = tf.tile(tf.constant([OD_BOXES], tf.float32), [batch, 1, 1])
        classes = tf.tile(tf.constant([OD_CLASSES], tf.float32), [batch, 1])
        outputs = {
            "detection_boxes": tf.identity(v1.reshape(boxes, [-1, rows, 4]), name="detection_boxes"),
            "detection_scores": tf.identity(
                v1.reshape(tf.concat([red[:, None], rest], axis=1), [-1, rows]), name="detection_scores"
            ),
            "detection_classes": tf.identity(v1.reshape(classes, [-1, rows]), name="detection_classes"),
            "num_detections": tf.identity(tf.fill([batch], float(OD_NUM_DETECTIONS)), name="num_detections"),
        }
        signature = _signature(
            v1, v1.saved_model.signature_constants.PREDICT_METHOD_NAME, {"inputs": images}, outputs
        )
        builder.add_meta_graph_and_variables(
            sess, [v1.saved_model.tag_constants.SERVING], signature_def_map={"serving_default": signature}
        )
    builder.save()


if __name__ == "__main__":  # pragma: no cover
    if len(sys.argv) != 2:
        sys.exit("usage: python -m tests.support.tf1_models OUT_DIR")
    build(Path(sys.argv[1]))
