"""The demo detector: a small CenterNet-style network with a per-class segmentation head.

Why this design: it must train on two CPU cores in minutes and export with only stock TensorFlow
ops, so it has no anchors and no custom NMS: per-class centre heatmaps (peaks found with a 3x3
max-pool), box size and sub-cell offset regression at the peaks, and a per-class segmentation
map from which each detection's 33x33 box-relative mask is cut with `crop_and_resize`.

Every picture is resized inside the graph (keeping its aspect ratio, longer side INPUT_SIZE,
padded to a square like the OD API's keep_aspect_ratio_resizer), so any input size works and a
4000x3000 photo costs little more than the resize. The same `preprocess_image` is used to build
the training set, so training and serving see identical pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import tensorflow as tf

from demo.synthetic import CLASSES

INPUT_SIZE = 256  # the network's square input
STRIDE = 4  # output maps are INPUT_SIZE / STRIDE cells wide
OUTPUT_SIZE = INPUT_SIZE // STRIDE
NUM_CLASSES = len(CLASSES)
MAX_DETECTIONS = 100  # like the OD API's max_total_detections
MASK_SIZE = 33  # box-relative mask resolution
SCORE_FLOOR = 0.05  # detections below this are padding (num_detections counts the rest)
BN_EPSILON = 1e-3
HEATMAP_PRIOR_BIAS = -2.19  # sigmoid(-2.19) ~ 0.1, CenterNet's initialisation


@dataclass(frozen=True)
class ConvSpec:
    """One convolution of the network."""

    cin: int
    cout: int
    kernel: int = 3
    stride: int = 1
    batch_norm: bool = True  # False for the final 1x1 head layers (plain bias, no activation)
    relu: bool = True


def _layer_specs() -> dict[str, ConvSpec]:
    """The topology's convolutions by name; `forward` wires them together."""
    return {
        "stem1": ConvSpec(3, 24, stride=2),  # 1/2
        "stem2": ConvSpec(24, 32, stride=2),  # 1/4
        "c4": ConvSpec(32, 32),
        "c8a": ConvSpec(32, 48, stride=2),  # 1/8
        "c8b": ConvSpec(48, 48),
        "c16a": ConvSpec(48, 64, stride=2),  # 1/16
        "c16b": ConvSpec(64, 64),
        "c32a": ConvSpec(64, 96, stride=2),  # 1/32: enough context for the biggest shapes
        "c32b": ConvSpec(96, 96),
        "lat16": ConvSpec(96, 64, kernel=1),  # top-down path (FPN style) back to 1/4
        "td16": ConvSpec(64, 64),
        "lat8": ConvSpec(64, 48, kernel=1),
        "td8": ConvSpec(48, 48),
        "lat4": ConvSpec(48, 32, kernel=1),
        "td4": ConvSpec(32, 48),
        "hm1": ConvSpec(48, 32),
        "hm2": ConvSpec(32, NUM_CLASSES, kernel=1, batch_norm=False, relu=False),
        "reg1": ConvSpec(48, 32),
        "reg2": ConvSpec(32, 4, kernel=1, batch_norm=False, relu=False),  # w, h (cells), dx, dy
        "seg1": ConvSpec(48, 32),
        "seg2": ConvSpec(32, NUM_CLASSES, kernel=1, batch_norm=False, relu=False),
    }


LAYERS = _layer_specs()


def _upsample2(x: tf.Tensor) -> tf.Tensor:
    shape = tf.shape(x)
    return tf.image.resize(x, [shape[1] * 2, shape[2] * 2], method="nearest")


def forward(conv, x: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """The network's wiring. `conv(name, x)` applies layer `name`; returns heatmap logits
    [B,S,S,C], regression [B,S,S,4] and segmentation logits [B,S,S,C] with S = OUTPUT_SIZE."""
    c4 = conv("c4", conv("stem2", conv("stem1", x)))
    c8 = conv("c8b", conv("c8a", c4))
    c16 = conv("c16b", conv("c16a", c8))
    c32 = conv("c32b", conv("c32a", c16))
    t16 = conv("td16", _upsample2(conv("lat16", c32)) + c16)
    t8 = conv("td8", _upsample2(conv("lat8", t16)) + c8)
    t4 = conv("td4", _upsample2(conv("lat4", t8)) + c4)
    heatmap = conv("hm2", conv("hm1", t4))
    regression = conv("reg2", conv("reg1", t4))
    segmentation = conv("seg2", conv("seg1", t4))
    return heatmap, regression, segmentation


def _he_kernel(spec: ConvSpec, seed: int) -> tf.Tensor:
    fan_in = spec.kernel * spec.kernel * spec.cin
    shape = (spec.kernel, spec.kernel, spec.cin, spec.cout)
    return tf.random.stateless_normal(shape, seed=[seed, 7]) * (2.0 / fan_in) ** 0.5


class TrainableNet(tf.Module):
    """The network with batch normalisation, for training. `folded()` gives serving weights."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__(name="shapes_net")
        self.kernels: dict[str, tf.Variable] = {}
        self.biases: dict[str, tf.Variable] = {}
        self.gammas: dict[str, tf.Variable] = {}
        self.betas: dict[str, tf.Variable] = {}
        self.moving_means: dict[str, tf.Variable] = {}
        self.moving_vars: dict[str, tf.Variable] = {}
        for index, (name, spec) in enumerate(LAYERS.items()):
            kernel = _he_kernel(spec, seed * 1000 + index)
            if not spec.batch_norm:
                kernel = kernel * 0.1  # small initial head outputs
            self.kernels[name] = tf.Variable(kernel, name=f"{name}_kernel")
            if spec.batch_norm:
                self.gammas[name] = tf.Variable(tf.ones([spec.cout]), name=f"{name}_gamma")
                self.betas[name] = tf.Variable(tf.zeros([spec.cout]), name=f"{name}_beta")
                self.moving_means[name] = tf.Variable(tf.zeros([spec.cout]), trainable=False,
                                                      name=f"{name}_mean")
                self.moving_vars[name] = tf.Variable(tf.ones([spec.cout]), trainable=False,
                                                     name=f"{name}_var")
            else:
                bias = HEATMAP_PRIOR_BIAS if name == "hm2" else 0.0
                self.biases[name] = tf.Variable(tf.fill([spec.cout], bias), name=f"{name}_bias")

    @property
    def trainable(self) -> list[tf.Variable]:
        return [v for v in self.trainable_variables]

    def __call__(self, x: tf.Tensor, training: bool, momentum: float = 0.95):
        def conv(name: str, inputs: tf.Tensor) -> tf.Tensor:
            spec = LAYERS[name]
            y = tf.nn.conv2d(inputs, self.kernels[name], strides=spec.stride, padding="SAME")
            if spec.batch_norm:
                if training:
                    mean, var = tf.nn.moments(y, axes=[0, 1, 2])
                    self.moving_means[name].assign(momentum * self.moving_means[name] + (1 - momentum) * mean)
                    self.moving_vars[name].assign(momentum * self.moving_vars[name] + (1 - momentum) * var)
                else:
                    mean, var = self.moving_means[name], self.moving_vars[name]
                y = tf.nn.batch_normalization(y, mean, var, self.betas[name], self.gammas[name], BN_EPSILON)
            else:
                y = y + self.biases[name]
            return tf.nn.relu(y) if spec.relu else y

        return forward(conv, x)

    def folded(self) -> dict[str, tuple[tf.Tensor, tf.Tensor]]:
        """Kernels and biases with batch norm folded in: serving needs only conv + bias."""
        out = {}
        for name, spec in LAYERS.items():
            kernel = self.kernels[name]
            if spec.batch_norm:
                scale = self.gammas[name] * tf.math.rsqrt(self.moving_vars[name] + BN_EPSILON)
                out[name] = (kernel * scale, self.betas[name] - self.moving_means[name] * scale)
            else:
                out[name] = (tf.identity(kernel), tf.identity(self.biases[name]))
        return out


class ServingNet(tf.Module):
    """Inference-only network: conv + bias + relu with folded batch norm."""

    def __init__(self, weights: dict[str, tuple[tf.Tensor, tf.Tensor]]) -> None:
        super().__init__(name="shapes_net")
        self.kernels = {name: tf.Variable(k, trainable=False, name=f"{name}_kernel")
                        for name, (k, _) in weights.items()}
        self.biases = {name: tf.Variable(b, trainable=False, name=f"{name}_bias")
                       for name, (_, b) in weights.items()}

    def __call__(self, x: tf.Tensor):
        def conv(name: str, inputs: tf.Tensor) -> tf.Tensor:
            spec = LAYERS[name]
            y = tf.nn.conv2d(inputs, self.kernels[name], strides=spec.stride, padding="SAME")
            y = tf.nn.bias_add(y, self.biases[name])
            return tf.nn.relu(y) if spec.relu else y

        return forward(conv, x)


# ---------------------------------------------------------------------------------------------
# Pre- and post-processing (pure TF, shared by training-set building and the exported graph)


def resized_size(height: tf.Tensor, width: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Size of the picture inside the square input: longer side INPUT_SIZE, aspect kept."""
    h = tf.cast(height, tf.float32)
    w = tf.cast(width, tf.float32)
    scale = INPUT_SIZE / tf.maximum(h, w)
    nh = tf.clip_by_value(tf.cast(tf.round(h * scale), tf.int32), 1, INPUT_SIZE)
    nw = tf.clip_by_value(tf.cast(tf.round(w * scale), tf.int32), 1, INPUT_SIZE)
    return nh, nw


def preprocess_image(image: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """uint8 [H, W, 3] -> float32 [S, S, 3] in [-1, 1] (padding 0) and the content size [2]
    (rows, cols) inside it. Antialiased resize so a huge photo is not aliased."""
    shape = tf.shape(image)
    nh, nw = resized_size(shape[0], shape[1])
    resized = tf.image.resize(tf.cast(image, tf.float32), tf.stack([nh, nw]), method="bilinear",
                              antialias=True)
    normalized = resized / 127.5 - 1.0
    padded = tf.pad(normalized, [[0, INPUT_SIZE - nh], [0, INPUT_SIZE - nw], [0, 0]])
    padded = tf.ensure_shape(padded, [INPUT_SIZE, INPUT_SIZE, 3])
    return padded, tf.cast(tf.stack([nh, nw]), tf.float32)


def decode_detections(heatmap_logits: tf.Tensor, regression: tf.Tensor, seg_logits: tf.Tensor,
                      content_size: tf.Tensor) -> dict[str, tf.Tensor]:
    """Network maps of a batch -> TF OD API style outputs, boxes normalized to each original
    picture. content_size: float32 [B, 2] rows/cols of the picture inside the square input."""
    batch = tf.shape(heatmap_logits)[0]
    size = OUTPUT_SIZE
    heat = tf.sigmoid(heatmap_logits)
    peaks = tf.nn.max_pool2d(heat, ksize=3, strides=1, padding="SAME")
    heat = heat * tf.cast(tf.equal(heat, peaks), tf.float32)
    scores, flat = tf.math.top_k(tf.reshape(heat, [batch, -1]), k=MAX_DETECTIONS, sorted=True)
    classes = flat % NUM_CLASSES
    cell = flat // NUM_CLASSES
    ys = tf.cast(cell // size, tf.float32)
    xs = tf.cast(cell % size, tf.float32)
    reg = tf.gather(tf.reshape(regression, [batch, size * size, 4]), cell, batch_dims=1)
    box_w = tf.nn.relu(reg[..., 0]) * STRIDE
    box_h = tf.nn.relu(reg[..., 1]) * STRIDE
    cx = (xs + reg[..., 2]) * STRIDE
    cy = (ys + reg[..., 3]) * STRIDE
    rows = content_size[:, 0:1]
    cols = content_size[:, 1:2]
    ymin = tf.clip_by_value(cy - box_h / 2, 0.0, rows)
    xmin = tf.clip_by_value(cx - box_w / 2, 0.0, cols)
    ymax = tf.clip_by_value(cy + box_h / 2, 0.0, rows)
    xmax = tf.clip_by_value(cx + box_w / 2, 0.0, cols)

    # Masks: sample the class's segmentation map at 33x33 points spread over the box (pixel
    # centres of a box-relative grid), converted to the map's cell coordinates.
    seg = tf.sigmoid(seg_logits)
    frac_lo = 0.5 / MASK_SIZE
    frac_hi = (MASK_SIZE - 0.5) / MASK_SIZE

    def to_cell(v: tf.Tensor) -> tf.Tensor:
        return (v / STRIDE - 0.5) / (size - 1)

    crop_boxes = tf.stack([
        to_cell(ymin + frac_lo * (ymax - ymin)), to_cell(xmin + frac_lo * (xmax - xmin)),
        to_cell(ymin + frac_hi * (ymax - ymin)), to_cell(xmin + frac_hi * (xmax - xmin)),
    ], axis=-1)
    box_indices = tf.repeat(tf.range(batch), MAX_DETECTIONS)
    crops = tf.image.crop_and_resize(seg, tf.reshape(crop_boxes, [-1, 4]), box_indices,
                                     [MASK_SIZE, MASK_SIZE], method="bilinear")
    crops = tf.reshape(crops, [batch, MAX_DETECTIONS, MASK_SIZE, MASK_SIZE, NUM_CLASSES])
    one_hot = tf.one_hot(classes, NUM_CLASSES, dtype=tf.float32)[:, :, None, None, :]
    masks = tf.reduce_sum(crops * one_hot, axis=-1)

    valid = tf.cast(scores >= SCORE_FLOOR, tf.float32)  # scores are sorted, so a prefix
    boxes = tf.stack([ymin / rows, xmin / cols, ymax / rows, xmax / cols], axis=-1)
    return {
        "detection_boxes": boxes * valid[..., None],
        "detection_scores": scores * valid,
        "detection_classes": (tf.cast(classes, tf.float32) + 1.0) * valid,
        "num_detections": tf.reduce_sum(valid, axis=1),
        "detection_masks": masks * valid[..., None, None],
    }
