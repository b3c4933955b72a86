"""Synthetic pictures of one digit each, for the demo classifier.

Nothing can be downloaded, so the classifier learns from digits we draw: half in the TrueType
font Pillow ships (Aileron, at several weights through its stroke width), half as jittered pen
strokes that look hand-written, each in its own colour on a plain, gradient or noisy background of
another brightness, rotated, sheared, off-centre, blurred and noisy, in pictures of any aspect
ratio. Only numpy and Pillow (no TensorFlow), so tests can draw digits cheaply.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

CLASSES: tuple[str, ...] = tuple(str(d) for d in range(10))  # class index d is the digit d
MIN_CONTRAST = 70.0  # luminance difference between the digit and its background
_FONT_SIZE = 96

# Pen strokes of each digit on a unit square (x right, y down); each stroke is a polyline.
_STROKES: dict[int, list[list[tuple[float, float]]]] = {
    0: [[(0.5 + 0.3 * math.cos(t), 0.5 + 0.42 * math.sin(t)) for t in np.linspace(0, 2 * math.pi, 24)]],
    1: [[(0.32, 0.28), (0.55, 0.08), (0.55, 0.92)]],
    2: [[(0.2, 0.3), (0.32, 0.12), (0.6, 0.08), (0.8, 0.25), (0.72, 0.48), (0.2, 0.9), (0.85, 0.9)]],
    3: [[(0.2, 0.14), (0.78, 0.12), (0.45, 0.45), (0.72, 0.52), (0.8, 0.72), (0.6, 0.9), (0.2, 0.86)]],
    4: [[(0.65, 0.92), (0.65, 0.08), (0.15, 0.66), (0.86, 0.66)]],
    5: [[(0.8, 0.1), (0.27, 0.1), (0.22, 0.46), (0.6, 0.4), (0.8, 0.6), (0.72, 0.84), (0.45, 0.92),
         (0.2, 0.84)]],
    6: [[(0.72, 0.08), (0.4, 0.3), (0.22, 0.6), (0.3, 0.86), (0.55, 0.93), (0.77, 0.75), (0.65, 0.52),
         (0.4, 0.5), (0.24, 0.62)]],
    7: [[(0.15, 0.12), (0.85, 0.12), (0.4, 0.92)]],
    8: [[(0.5 + 0.22 * math.cos(t), 0.28 + 0.2 * math.sin(t)) for t in np.linspace(0, 2 * math.pi, 18)],
        [(0.5 + 0.27 * math.cos(t), 0.7 + 0.22 * math.sin(t)) for t in np.linspace(0, 2 * math.pi, 18)]],
    9: [[(0.5 + 0.26 * math.cos(t), 0.32 + 0.22 * math.sin(t)) for t in np.linspace(0, 2 * math.pi, 20)],
        [(0.76, 0.32), (0.7, 0.6), (0.55, 0.92)]],
}


@dataclass(frozen=True)
class DigitPicture:
    digit: int
    image: np.ndarray  # uint8 [H, W, 3]


def _luminance(colour: np.ndarray) -> float:
    return float(0.299 * colour[0] + 0.587 * colour[1] + 0.114 * colour[2])


def _colours(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A background and an ink colour whose brightness differs by at least MIN_CONTRAST."""
    while True:
        paper, ink = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
        if abs(_luminance(paper) - _luminance(ink)) >= MIN_CONTRAST:
            return paper, ink


def _background(rng: np.random.Generator, width: int, height: int, paper: np.ndarray) -> np.ndarray:
    """Plain, a gentle gradient, or soft noise around `paper`, float32 [H, W, 3]."""
    image = np.broadcast_to(paper, (height, width, 3)).astype(np.float32)
    kind = rng.integers(0, 3)
    if kind == 1:
        angle = rng.uniform(0, 2 * math.pi)
        ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
        t = (xs * math.cos(angle) + ys * math.sin(angle)) / max(width, height)
        image = image + (t - t.mean())[..., None] * rng.uniform(-40, 40, 3)
    elif kind == 2:
        small = rng.normal(0, 1, (max(2, height // 8), max(2, width // 8), 3)).astype(np.float32)
        big = np.stack([np.asarray(Image.fromarray(c).resize((width, height), Image.Resampling.BICUBIC))
                        for c in small.transpose(2, 0, 1)], axis=-1)
        image = image + big * rng.uniform(5, 20)
    return image


def _glyph_mask(rng: np.random.Generator, digit: int, side: int) -> Image.Image:
    """The digit as an "L" mask on a side x side square: a font glyph or pen strokes."""
    mask = Image.new("L", (side, side), 0)
    draw = ImageDraw.Draw(mask)
    if rng.random() < 0.5:
        font = ImageFont.load_default(size=int(side * rng.uniform(0.7, 0.9)))
        stroke = int(rng.integers(0, max(1, side // 24)))
        draw.text((side / 2, side / 2), CLASSES[digit], fill=255, font=font, anchor="mm", stroke_width=stroke,
                  stroke_fill=255)
    else:
        width = int(side * rng.uniform(0.06, 0.14))
        for stroke in _STROKES[digit]:
            points = np.asarray(stroke) + rng.normal(0, 0.025, (len(stroke), 2))
            points = points * side * 0.8 + side * 0.1
            draw.line([tuple(p) for p in points], fill=255, width=width, joint="curve")
    return mask


def generate_digit(rng: np.random.Generator, digit: int | None = None, height: int = 64,
                   aspect: tuple[float, float] = (0.6, 1.6)) -> DigitPicture:
    """One picture of `digit` (random if None), `height` pixels tall, of a random aspect ratio."""
    digit = int(rng.integers(0, 10)) if digit is None else digit
    width = max(8, round(height * rng.uniform(*aspect)))
    paper, ink = _colours(rng)
    side = _FONT_SIZE
    glyph = _glyph_mask(rng, digit, side)
    glyph = glyph.rotate(rng.uniform(-15, 15), resample=Image.Resampling.BILINEAR)
    shear = rng.uniform(-0.2, 0.2)
    glyph = glyph.transform((side, side), Image.Transform.AFFINE, (1, shear, -shear * side / 2, 0, 1, 0),
                            resample=Image.Resampling.BILINEAR)
    # The digit fills 55-90 % of the picture's height, somewhere near the middle.
    target = max(4, round(min(height, width * 1.4) * rng.uniform(0.55, 0.9)))
    glyph = glyph.resize((target, target), Image.Resampling.BILINEAR)
    canvas = Image.new("L", (width, height), 0)
    dx = (width - target) / 2 + rng.uniform(-0.12, 0.12) * width
    dy = (height - target) / 2 + rng.uniform(-0.08, 0.08) * height
    canvas.paste(glyph, (round(dx), round(dy)))
    if rng.random() < 0.3:
        canvas = canvas.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.2)))
    alpha = np.asarray(canvas, dtype=np.float32)[..., None] / 255.0
    image = _background(rng, width, height, paper) * (1 - alpha) + ink * alpha
    image = image + rng.normal(0, rng.uniform(0, 8), image.shape)
    return DigitPicture(digit, np.clip(image, 0, 255).astype(np.uint8))


def training_arrays(rng: np.random.Generator, count: int, side: int) -> tuple[np.ndarray, np.ndarray]:
    """`count` pictures stretched to side x side (as the gateway stretches uploads): uint8
    [N, side, side, 3] and their digits [N]."""
    images = np.empty((count, side, side, 3), np.uint8)
    labels = np.empty(count, np.int64)
    for i in range(count):
        picture = generate_digit(rng, digit=i % 10, height=int(rng.integers(32, 96)))
        # The same resize the gateway applies to uploads (web/pipeline/images.py decode_image).
        stretched = Image.fromarray(picture.image).resize(
            (side, side), Image.Resampling.BILINEAR, reducing_gap=2.0
        )
        images[i] = np.asarray(stretched)
        labels[i] = picture.digit
    return images, labels
