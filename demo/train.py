"""Training loop for the demo detector (plain TF: GradientTape and a small Adam).

Why hand-written: the network is a tf.Module of tf.Variables so it exports with nothing but
stock ops; a few lines of Adam avoid mixing Keras 3 optimizer state into that module.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf

from demo.dataset import MAX_OBJECTS, TrainingSet, make_batch
from demo.model import INPUT_SIZE, NUM_CLASSES, OUTPUT_SIZE, TrainableNet


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 2000
    batch_size: int = 16
    learning_rate: float = 2e-3
    warmup_steps: int = 100
    size_weight: float = 0.1
    offset_weight: float = 1.0
    seg_weight: float = 1.0
    seed: int = 0


class Adam(tf.Module):
    """Adam with bias correction; the learning rate is passed per step (schedule lives outside)."""

    def __init__(self, variables: list[tf.Variable], beta1: float = 0.9, beta2: float = 0.999,
                 epsilon: float = 1e-7) -> None:
        super().__init__(name="adam")
        self.params = variables
        self.m = [tf.Variable(tf.zeros_like(v), trainable=False) for v in variables]
        self.v = [tf.Variable(tf.zeros_like(v), trainable=False) for v in variables]
        self.step = tf.Variable(0.0, trainable=False)
        self.beta1, self.beta2, self.epsilon = beta1, beta2, epsilon

    def apply(self, grads: list[tf.Tensor], lr: tf.Tensor) -> None:
        self.step.assign_add(1.0)
        correction = tf.sqrt(1 - self.beta2 ** self.step) / (1 - self.beta1 ** self.step)
        for var, grad, m, v in zip(self.params, grads, self.m, self.v, strict=True):
            m.assign(self.beta1 * m + (1 - self.beta1) * grad)
            v.assign(self.beta2 * v + (1 - self.beta2) * tf.square(grad))
            var.assign_sub(lr * correction * m / (tf.sqrt(v) + self.epsilon))


def focal_loss(logits: tf.Tensor, target: tf.Tensor) -> tf.Tensor:
    """CenterNet's penalty-reduced focal loss, summed (normalise by the object count)."""
    pred = tf.sigmoid(logits)
    log_p = tf.math.log_sigmoid(logits)
    log_not_p = tf.math.log_sigmoid(-logits)
    positive = tf.cast(target >= 1.0, tf.float32)
    pos = log_p * tf.square(1 - pred) * positive
    neg = log_not_p * tf.square(pred) * tf.pow(1 - target, 4) * (1 - positive)
    return -tf.reduce_sum(pos + neg)


def segmentation_loss(logits: tf.Tensor, target: tf.Tensor) -> tf.Tensor:
    """Scaled mean BCE plus soft Dice per picture and class. Objects cover a few percent of the
    map, so a plain mean BCE is dominated by background and learns only blurry blobs; Dice
    rewards the overlap itself (absent classes are handled by the BCE term)."""
    bce = tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(target, logits))
    prob = tf.sigmoid(logits)
    overlap = tf.reduce_sum(prob * target, axis=[1, 2])
    total = tf.reduce_sum(prob + target, axis=[1, 2])
    present = tf.cast(tf.reduce_sum(target, axis=[1, 2]) > 0, tf.float32)
    dice = 1 - (2 * overlap + 1) / (total + 1)
    dice = tf.reduce_sum(dice * present) / tf.maximum(tf.reduce_sum(present), 1.0)
    return 10.0 * bce + dice


def learning_rate(step: int, config: TrainConfig) -> float:
    """Linear warm-up, then cosine decay to 2% of the peak."""
    if step < config.warmup_steps:
        return config.learning_rate * (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    return config.learning_rate * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def make_train_step(net: TrainableNet, optimizer: Adam, config: TrainConfig):
    s, c = OUTPUT_SIZE, NUM_CLASSES
    signature = [
        tf.TensorSpec([None, INPUT_SIZE, INPUT_SIZE, 3], tf.float32),
        tf.TensorSpec([None, s, s, c], tf.float32),
        tf.TensorSpec([None, s, s, c], tf.float32),
        tf.TensorSpec([None, MAX_OBJECTS], tf.int32),
        tf.TensorSpec([None, MAX_OBJECTS, 4], tf.float32),
        tf.TensorSpec([None, MAX_OBJECTS], tf.float32),
        tf.TensorSpec([], tf.float32),
    ]

    @tf.function(input_signature=signature, jit_compile=False)
    def step(images, heatmap, segmentation, centres, regression, present, lr):
        with tf.GradientTape() as tape:
            hm_logits, reg, seg_logits = net(images, training=True)
            batch = tf.shape(images)[0]
            num = tf.maximum(tf.reduce_sum(present), 1.0)
            hm_loss = focal_loss(hm_logits, heatmap) / num
            reg_at = tf.gather(tf.reshape(reg, [batch, s * s, 4]), centres, batch_dims=1)
            err = tf.abs(reg_at - regression) * present[..., None]
            size_loss = tf.reduce_sum(err[..., :2]) / num
            offset_loss = tf.reduce_sum(err[..., 2:]) / num
            seg_loss = segmentation_loss(seg_logits, segmentation)
            total = (hm_loss + config.size_weight * size_loss + config.offset_weight * offset_loss
                     + config.seg_weight * seg_loss)
        grads = tape.gradient(total, optimizer.params)
        grads, _ = tf.clip_by_global_norm(grads, 10.0)
        optimizer.apply(grads, lr)
        return tf.stack([total, hm_loss, size_loss, offset_loss, seg_loss])

    return step


def train(data: TrainingSet, config: TrainConfig, checkpoint_dir: Path, log=print) -> TrainableNet:
    """Train from scratch and write a checkpoint of the network to checkpoint_dir."""
    net = TrainableNet(seed=config.seed)
    optimizer = Adam(list(net.trainable_variables))
    step_fn = make_train_step(net, optimizer, config)
    rng = np.random.default_rng(config.seed)
    order = rng.permutation(len(data))
    cursor = 0
    start = time.monotonic()
    running = None
    log(f"train: {len(data)} pictures, {config.steps} steps of {config.batch_size}, "
        f"{sum(int(np.prod(v.shape)) for v in net.trainable_variables)} parameters")
    for step in range(config.steps):
        if cursor + config.batch_size > len(order):
            order, cursor = rng.permutation(len(data)), 0
        batch = make_batch(data, order[cursor:cursor + config.batch_size], rng)
        cursor += config.batch_size
        losses = step_fn(batch["images"], batch["heatmap"], batch["segmentation"], batch["centres"],
                         batch["regression"], batch["present"],
                         tf.constant(learning_rate(step, config), tf.float32)).numpy()
        running = losses if running is None else 0.95 * running + 0.05 * losses
        if (step + 1) % 25 == 0 or step + 1 == config.steps:
            elapsed = time.monotonic() - start
            eta = elapsed / (step + 1) * (config.steps - step - 1)
            log(f"train: step {step + 1}/{config.steps} loss {running[0]:.3f} (heatmap {running[1]:.3f} "
                f"size {running[2]:.2f} offset {running[3]:.3f} seg {running[4]:.4f}) "
                f"lr {learning_rate(step, config):.2e} {elapsed:.0f}s elapsed, ETA {eta:.0f}s")
    seconds = time.monotonic() - start
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    tf.train.Checkpoint(net=net).write(str(checkpoint_dir / "net"))
    info = {"seconds": round(seconds, 1), "pictures": len(data), "config": dataclasses.asdict(config),
            "final_losses": dict(zip(("total", "heatmap", "size", "offset", "seg"),
                                     [round(float(v), 4) for v in running], strict=True))}
    (checkpoint_dir / "train_info.json").write_text(json.dumps(info, indent=2))
    log(f"train: done in {seconds:.0f}s, checkpoint {checkpoint_dir / 'net'}")
    return net


def load_trained(checkpoint_dir: Path) -> TrainableNet:
    net = TrainableNet()
    status = tf.train.Checkpoint(net=net).read(str(checkpoint_dir / "net"))
    status.expect_partial().assert_existing_objects_matched()
    return net
