"""The training set: generated pictures, already resized into the network's square input, with
the per-image boxes, classes and soft per-class segmentation targets at the output stride.

Built once (a few minutes) and cached as one .npz under build/demo/, so training epochs cost
only the network. Pictures go through a JPEG round trip and the same in-graph resize the exported
model uses, so training sees exactly what serving will see.
"""

from __future__ import annotations

import io
import multiprocessing
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from demo.synthetic import generate_image

# Mirrors model.py (kept here as literals so the workers need not import TensorFlow).
INPUT_SIZE = 256
STRIDE = 4
OUTPUT_SIZE = INPUT_SIZE // STRIDE
NUM_CLASSES = 3
MAX_OBJECTS = 8
# Picture sizes of the training set: mostly 4:3 like the demo pictures, some square and wide
# (dihedral augmentation turns these into portrait ones too).
TRAIN_SIZES: tuple[tuple[int, int], ...] = ((640, 480), (640, 480), (640, 480), (512, 512), (640, 360))


@dataclass
class TrainingSet:
    """Arrays of N training pictures in the network's input frame."""

    images: np.ndarray  # uint8 [N, S, S, 3], padding filled with 128
    segmentation: np.ndarray  # uint8 [N, S/4, S/4, C], soft visible-mask coverage 0..255
    boxes: np.ndarray  # float32 [N, MAX_OBJECTS, 4] xmin, ymin, xmax, ymax in input pixels
    classes: np.ndarray  # int32 [N, MAX_OBJECTS] 1-based, 0 = no object

    def __len__(self) -> int:
        return len(self.images)

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, images=self.images, segmentation=self.segmentation, boxes=self.boxes,
                 classes=self.classes)

    @classmethod
    def load(cls, path: Path) -> TrainingSet:
        with np.load(path) as data:
            return cls(data["images"], data["segmentation"], data["boxes"], data["classes"])


def content_size(height: int, width: int) -> tuple[int, int]:
    """Same rule as model.resized_size (round half to even, like tf.round)."""
    scale = INPUT_SIZE / max(height, width)
    return (int(np.clip(np.round(height * scale), 1, INPUT_SIZE)),
            int(np.clip(np.round(width * scale), 1, INPUT_SIZE)))


def _make_sample(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One picture (JPEG round trip, original size), its stride-4 seg target, boxes, classes."""
    rng = np.random.default_rng(seed)
    width, height = TRAIN_SIZES[int(rng.integers(len(TRAIN_SIZES)))]
    image, shapes = generate_image(rng, width, height, min_shapes=1, max_shapes=6)
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=int(rng.integers(70, 96)))
    image = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
    nh, nw = content_size(height, width)
    sy, sx = nh / height, nw / width
    seg = np.zeros((INPUT_SIZE, INPUT_SIZE, NUM_CLASSES), np.float32)
    boxes = np.zeros((MAX_OBJECTS, 4), np.float32)
    classes = np.zeros((MAX_OBJECTS,), np.int32)
    for i, shape in enumerate(shapes[:MAX_OBJECTS]):
        coverage = Image.fromarray(shape.mask.astype(np.float32), mode="F")
        small = coverage.resize((nw, nh), Image.Resampling.BOX)
        channel = shape.class_id - 1
        seg[:nh, :nw, channel] = np.maximum(seg[:nh, :nw, channel], np.asarray(small))
        xmin, ymin, xmax, ymax = shape.box
        boxes[i] = (xmin * sx, ymin * sy, xmax * sx, ymax * sy)
        classes[i] = shape.class_id
    seg = seg.reshape(OUTPUT_SIZE, STRIDE, OUTPUT_SIZE, STRIDE, NUM_CLASSES).mean(axis=(1, 3))
    return image, np.round(seg * 255).astype(np.uint8), boxes, classes


def build_training_set(count: int, seed: int, workers: int = 2, log=print) -> TrainingSet:
    """Generate `count` training pictures (in `workers` processes) and resize them with the
    exported model's own preprocessing."""
    import tensorflow as tf

    from demo.model import preprocess_image

    resize = tf.function(preprocess_image, input_signature=[tf.TensorSpec([None, None, 3], tf.uint8)])
    images = np.empty((count, INPUT_SIZE, INPUT_SIZE, 3), np.uint8)
    segmentation = np.empty((count, OUTPUT_SIZE, OUTPUT_SIZE, NUM_CLASSES), np.uint8)
    boxes = np.empty((count, MAX_OBJECTS, 4), np.float32)
    classes = np.empty((count, MAX_OBJECTS), np.int32)
    seeds = [seed * 1_000_003 + i for i in range(count)]
    start = time.monotonic()
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        for i, (image, seg, box, cls) in enumerate(pool.imap(_make_sample, seeds, chunksize=16)):
            padded, _ = resize(image)
            images[i] = np.clip(np.round((padded.numpy() + 1.0) * 127.5), 0, 255).astype(np.uint8)
            segmentation[i], boxes[i], classes[i] = seg, box, cls
            if (i + 1) % 500 == 0 or i + 1 == count:
                elapsed = time.monotonic() - start
                log(f"generate: {i + 1}/{count} pictures, {elapsed:.0f}s elapsed, "
                    f"ETA {elapsed / (i + 1) * (count - i - 1):.0f}s")
    return TrainingSet(images, segmentation, boxes, classes)


# ---------------------------------------------------------------------------------------------
# Augmentation and CenterNet targets (numpy, per batch)


def gaussian_radius(height: float, width: float, min_overlap: float = 0.7) -> float:
    """CenterNet's radius: how far a corner may move and still overlap the box by min_overlap."""
    a1, b1 = 1.0, height + width
    c1 = width * height * (1 - min_overlap) / (1 + min_overlap)
    r1 = (b1 + np.sqrt(b1 ** 2 - 4 * a1 * c1)) / 2
    a2, b2 = 4.0, 2 * (height + width)
    c2 = (1 - min_overlap) * width * height
    r2 = (b2 + np.sqrt(b2 ** 2 - 4 * a2 * c2)) / 2
    a3, b3 = 4 * min_overlap, -2 * min_overlap * (height + width)
    c3 = (min_overlap - 1) * width * height
    r3 = (b3 + np.sqrt(b3 ** 2 - 4 * a3 * c3)) / 2
    return float(min(r1, r2, r3))


def _dihedral(image: np.ndarray, seg: np.ndarray, boxes: np.ndarray, op: int):
    """One of the 8 flips/rotations of the square input (shapes are rotation-invariant)."""
    size = float(INPUT_SIZE)
    boxes = boxes.copy()
    if op & 1:  # transpose
        image, seg = image.transpose(1, 0, 2), seg.transpose(1, 0, 2)
        boxes = boxes[:, [1, 0, 3, 2]]
    if op & 2:  # horizontal flip
        image, seg = image[:, ::-1], seg[:, ::-1]
        boxes[:, [0, 2]] = size - boxes[:, [2, 0]]
    if op & 4:  # vertical flip
        image, seg = image[::-1], seg[::-1]
        boxes[:, [1, 3]] = size - boxes[:, [3, 1]]
    return image, seg, boxes


def make_batch(data: TrainingSet, indices: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """An augmented batch with CenterNet targets: heatmap, regression at object centres, seg."""
    n = len(indices)
    images = np.empty((n, INPUT_SIZE, INPUT_SIZE, 3), np.float32)
    seg = np.empty((n, OUTPUT_SIZE, OUTPUT_SIZE, NUM_CLASSES), np.float32)
    heatmap = np.zeros((n, OUTPUT_SIZE, OUTPUT_SIZE, NUM_CLASSES), np.float32)
    centres = np.zeros((n, MAX_OBJECTS), np.int32)
    regression = np.zeros((n, MAX_OBJECTS, 4), np.float32)
    present = np.zeros((n, MAX_OBJECTS), np.float32)
    grid = np.arange(OUTPUT_SIZE, dtype=np.float32)
    for b, index in enumerate(indices):
        image, sg, boxes = _dihedral(data.images[index], data.segmentation[index], data.boxes[index],
                                     int(rng.integers(8)))
        image = image[..., rng.permutation(3)].astype(np.float32)
        gain = rng.uniform(0.75, 1.25)
        image = (image - 128.0) * gain + 128.0 + rng.uniform(-25, 25)
        images[b] = np.clip(image, 0, 255) / 127.5 - 1.0
        seg[b] = sg.astype(np.float32) / 255.0
        for k in range(MAX_OBJECTS):
            cls = int(data.classes[index, k])
            if cls == 0:
                continue
            xmin, ymin, xmax, ymax = boxes[k] / STRIDE
            w, h = xmax - xmin, ymax - ymin
            cx, cy = (xmin + xmax) / 2, (ymin + ymax) / 2
            ix = min(int(cx), OUTPUT_SIZE - 1)
            iy = min(int(cy), OUTPUT_SIZE - 1)
            sigma = (2 * max(0.0, int(gaussian_radius(h, w))) + 1) / 6
            g = np.exp(-((grid[None, :] - ix) ** 2 + (grid[:, None] - iy) ** 2) / (2 * sigma * sigma))
            heatmap[b, :, :, cls - 1] = np.maximum(heatmap[b, :, :, cls - 1], g)
            centres[b, k] = iy * OUTPUT_SIZE + ix
            regression[b, k] = (w, h, cx - ix, cy - iy)
            present[b, k] = 1.0
    return {"images": images, "heatmap": heatmap, "segmentation": seg, "centres": centres,
            "regression": regression, "present": present}
