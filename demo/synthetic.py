"""Synthetic "shapes" photos with exact instance annotations.

Nothing can be downloaded in this project, so the demo detector learns from pictures we draw
ourselves: circles, squares and triangles of several sizes and colours on textured backgrounds,
partly overlapping. Because we draw them, every instance's visible mask is known exactly and the
COCO annotations are perfect. Only numpy, Pillow and pycocotools are used here (no TensorFlow),
so the gateway's tests can import this module cheaply.
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter
from pycocotools import mask as mask_utils

CLASSES: tuple[str, ...] = ("circle", "square", "triangle")  # class ids 1, 2, 3

# Shape size (diameter / side) as a fraction of min(width, height): scale-free, so a 4000x3000
# picture looks like a 640x480 one, only bigger.
MIN_SIZE_FRACTION = 0.09
MAX_SIZE_FRACTION = 0.30
# Every instance keeps at least this share of its own area visible after later shapes are drawn.
MIN_VISIBLE_FRACTION = 0.65
# A shape's colour must differ this much (RGB distance) from the background under it.
MIN_COLOUR_CONTRAST = 90.0
JPEG_QUALITY = 92


@dataclass(frozen=True)
class Shape:
    """One visible instance: what it is, where it is, which pixels show it."""

    class_id: int  # 1-based
    label: str
    box: tuple[float, float, float, float]  # xmin, ymin, xmax, ymax in pixels, of the VISIBLE mask
    mask: np.ndarray  # bool [H, W], visible pixels of this instance


# ---------------------------------------------------------------------------------------------
# Backgrounds


def _random_colour(rng: np.random.Generator) -> np.ndarray:
    return rng.uniform(0, 255, size=3)


def _smooth_noise(rng: np.random.Generator, width: int, height: int, cells: int) -> np.ndarray:
    """Low-frequency noise in [0, 1], float32 [H, W]: a small random grid upsampled bicubically."""
    gw = max(2, cells)
    gh = max(2, round(cells * height / width))
    small = Image.fromarray((rng.random((gh, gw)) * 255).astype(np.uint8), mode="L")
    big = small.resize((width, height), Image.Resampling.BICUBIC)
    return np.asarray(big, dtype=np.float32) / 255.0


def _coordinates(width: int, height: int, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Pixel grids in units of `scale` (min(width, height)) so patterns are resolution-free."""
    ys = (np.arange(height, dtype=np.float32) / scale)[:, None]
    xs = (np.arange(width, dtype=np.float32) / scale)[None, :]
    return xs, ys


def _background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A varied textured background, float32 [H, W, 3] in 0..255."""
    scale = float(min(width, height))
    xs, ys = _coordinates(width, height, scale)
    c1, c2 = _random_colour(rng), _random_colour(rng)
    kind = rng.integers(0, 5)
    if kind == 0:  # linear gradient
        angle = rng.uniform(0, 2 * math.pi)
        t = xs * math.cos(angle) + ys * math.sin(angle)
        t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    elif kind == 1:  # cloudy low-frequency noise
        t = _smooth_noise(rng, width, height, int(rng.integers(3, 12)))
    elif kind == 2:  # stripes
        angle = rng.uniform(0, math.pi)
        freq = rng.uniform(6, 30)
        t = 0.5 + 0.5 * np.sin(2 * math.pi * freq * (xs * math.cos(angle) + ys * math.sin(angle)))
        if rng.random() < 0.5:
            t = (t > 0.5).astype(np.float32)
    elif kind == 3:  # checkerboard
        cell = rng.uniform(0.03, 0.15)
        t = ((np.floor(xs / cell) + np.floor(ys / cell)) % 2).astype(np.float32)
    else:  # marble: sine of distorted coordinates
        warp = _smooth_noise(rng, width, height, int(rng.integers(3, 8)))
        freq = rng.uniform(3, 12)
        t = 0.5 + 0.5 * np.sin(2 * math.pi * (freq * (xs + ys) + 3.0 * warp))
    t = np.broadcast_to(t, (height, width)).astype(np.float32)
    img = c1[None, None, :] * (1.0 - t[..., None]) + c2[None, None, :] * t[..., None]
    # A second, fainter layer of cloudy noise gives every background some texture.
    cloud = _smooth_noise(rng, width, height, int(rng.integers(8, 30))) - 0.5
    img = img + cloud[..., None] * rng.uniform(10, 50) * rng.choice([-1.0, 1.0], size=3)
    return img.astype(np.float32)


# ---------------------------------------------------------------------------------------------
# Shapes


def _polygon_points(class_id: int, cx: float, cy: float, size: float, angle: float,
                    rng: np.random.Generator) -> list[tuple[float, float]]:
    if class_id == 2:  # square of side `size`
        radius = size / math.sqrt(2.0)
        angles = [angle + math.pi / 4 + k * math.pi / 2 for k in range(4)]
    else:  # triangle: roughly equilateral, circumradius chosen so its side is about `size`*1.1
        radius = size * 1.1 / math.sqrt(3.0)
        angles = [angle + k * 2 * math.pi / 3 + rng.uniform(-0.15, 0.15) for k in range(3)]
    return [(cx + radius * math.cos(a), cy + radius * math.sin(a)) for a in angles]


def _draw_mask(class_id: int, cx: float, cy: float, size: float, angle: float, width: int, height: int,
               rng: np.random.Generator) -> np.ndarray:
    canvas = Image.new("1", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    if class_id == 1:
        r = size / 2.0
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=1)
    else:
        draw.polygon(_polygon_points(class_id, cx, cy, size, angle, rng), fill=1)
    return np.asarray(canvas, dtype=bool)


def _fill(rng: np.random.Generator, colour: np.ndarray, width: int, height: int,
          cx: float, cy: float, size: float) -> np.ndarray:
    """A shape's paint: flat, or with a gentle shading gradient, float32 [H, W, 3]."""
    if rng.random() < 0.5:
        return np.broadcast_to(colour, (height, width, 3))
    angle = rng.uniform(0, 2 * math.pi)
    xs = (np.arange(width, dtype=np.float32)[None, :] - cx) / size
    ys = (np.arange(height, dtype=np.float32)[:, None] - cy) / size
    t = np.clip(xs * math.cos(angle) + ys * math.sin(angle), -0.7, 0.7)
    return colour[None, None, :] * (1.0 + rng.uniform(0.1, 0.35) * t[..., None])


def _bounding_box(mask: np.ndarray) -> tuple[float, float, float, float]:
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1)


def generate_image(rng: np.random.Generator, width: int = 640, height: int = 480,
                   min_shapes: int = 1, max_shapes: int = 6) -> tuple[np.ndarray, list[Shape]]:
    """uint8 [H, W, 3] RGB image and its shapes.

    Shape sizes scale with min(width, height) so a 4000x3000 image looks like a 640x480 one,
    only bigger. Shapes are drawn one over the other; a placement is rejected when it would hide
    too much of an earlier shape, so every instance keeps most of itself visible.
    """
    image = _background(rng, width, height)
    scale = float(min(width, height))
    wanted = int(rng.integers(min_shapes, max_shapes + 1))
    full_areas: list[int] = []
    visible: list[np.ndarray] = []
    class_ids: list[int] = []
    attempts = 0
    while len(class_ids) < wanted and attempts < wanted * 20:
        attempts += 1
        class_id = int(rng.integers(1, len(CLASSES) + 1))
        size = scale * rng.uniform(MIN_SIZE_FRACTION, MAX_SIZE_FRACTION)
        half = size * 0.65  # keeps rotated squares and triangles inside the picture
        if width <= 2 * half or height <= 2 * half:
            continue
        cx = rng.uniform(half, width - half)
        cy = rng.uniform(half, height - half)
        angle = rng.uniform(0, 2 * math.pi)
        mask = _draw_mask(class_id, cx, cy, size, angle, width, height, rng)
        area = int(mask.sum())
        if area < 16:
            continue
        pairs = zip(visible, full_areas, strict=True)
        if any((vis & ~mask).sum() < MIN_VISIBLE_FRACTION * full for vis, full in pairs):
            continue
        under = image[mask].mean(axis=0)
        colour = _random_colour(rng)
        for _ in range(20):
            if np.linalg.norm(colour - under) >= MIN_COLOUR_CONTRAST:
                break
            colour = _random_colour(rng)
        paint = _fill(rng, colour, width, height, cx, cy, size)
        image[mask] = paint[mask]
        visible = [vis & ~mask for vis in visible]
        visible.append(mask)
        full_areas.append(area)
        class_ids.append(class_id)
    noise_sigma = rng.uniform(0, 8)
    if noise_sigma > 1:
        image = image + rng.normal(0, noise_sigma, size=image.shape).astype(np.float32)
    out = np.clip(image, 0, 255).astype(np.uint8)
    if rng.random() < 0.3:  # a little optical blur now and then
        radius = rng.uniform(0.3, 1.0) * scale / 480.0
        out = np.asarray(Image.fromarray(out).filter(ImageFilter.GaussianBlur(radius)))
    shapes = [
        Shape(class_id=cid, label=CLASSES[cid - 1], box=_bounding_box(vis), mask=vis)
        for cid, vis in zip(class_ids, visible, strict=True)
    ]
    return out, shapes


# ---------------------------------------------------------------------------------------------
# COCO output


def encode_jpeg(image: np.ndarray, quality: int = JPEG_QUALITY) -> bytes:
    """JPEG bytes of a uint8 RGB array (the format the data set and the demos use)."""
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def coco_categories() -> list[dict]:
    return [{"id": i + 1, "name": name, "supercategory": "shape"} for i, name in enumerate(CLASSES)]


def shape_to_annotation(shape: Shape, image_id: int, annotation_id: int) -> dict:
    """One COCO annotation: bbox [x, y, w, h], area, iscrowd 0 and an RLE segmentation."""
    rle = mask_utils.encode(np.asfortranarray(shape.mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    xmin, ymin, xmax, ymax = shape.box
    return {
        "id": annotation_id,
        "image_id": image_id,
        "category_id": shape.class_id,
        "bbox": [xmin, ymin, xmax - xmin, ymax - ymin],
        "area": float(shape.mask.sum()),
        "iscrowd": 0,
        "segmentation": rle,
    }


def write_coco_dataset(out_dir: Path, count: int, seed: int, width: int = 640, height: int = 480) -> Path:
    """JPEG images + annotations.json (COCO: images, annotations with bbox [x,y,w,h], area,
    iscrowd=0, segmentation as RLE from pycocotools, categories). Returns the json path."""
    out_dir = Path(out_dir)
    image_dir = out_dir / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    images: list[dict] = []
    annotations: list[dict] = []
    for index in range(count):
        image_id = index + 1
        image, shapes = generate_image(rng, width, height)
        file_name = f"{image_id:06d}.jpg"
        (image_dir / file_name).write_bytes(encode_jpeg(image))
        images.append({"id": image_id, "file_name": f"images/{file_name}", "width": width, "height": height})
        for shape in shapes:
            annotations.append(shape_to_annotation(shape, image_id, len(annotations) + 1))
    json_path = out_dir / "annotations.json"
    json_path.write_text(json.dumps({
        "info": {"description": "synthetic shapes", "seed": seed},
        "images": images,
        "annotations": annotations,
        "categories": coco_categories(),
    }))
    return json_path
