"""Rendering: boxes, translucent masks and captions in one stable colour per class, on any image size."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from web.domain import Box, Classification, Detection
from web.pipeline.render import MASK_ALPHA, class_color, render_prediction
from web.reading.adapters.postprocess import reframe_mask

GREY = (128, 128, 128)


def close(pixel, color, tolerance: int = 3) -> bool:
    return all(abs(int(a) - int(b)) <= tolerance for a, b in zip(pixel, color, strict=True))


def test_class_colours_are_stable_and_distinct() -> None:
    colours = [class_color(i) for i in range(1, 11)]
    assert colours == [class_color(i) for i in range(1, 11)]
    assert len(set(colours)) == 10


@pytest.mark.parametrize("size", [(64, 48), (640, 480), (4000, 3000)])
def test_box_edge_caption_and_mask_are_drawn_at_any_size(size: tuple[int, int]) -> None:
    width, height = size
    box = Box(width * 0.25, height * 0.3, width * 0.75, height * 0.9)
    mask = reframe_mask(np.ones((33, 33), np.float32), box, (height, width))
    det = Detection(2, "square", 0.87, box, mask)
    out = np.asarray(render_prediction(Image.new("RGB", size, GREY), [det]))
    assert out.shape == (height, width, 3)
    color = class_color(2)
    # The box outline in the class colour on its left edge.
    assert close(out[int(height * 0.6), int(box.xmin)], color)
    # Inside the box: the mask blended translucently over grey, not opaque.
    blended = tuple(round(g * (1 - MASK_ALPHA) + c * MASK_ALPHA) for g, c in zip(GREY, color, strict=True))
    assert close(out[int(height * 0.85), width // 2], blended)
    # A "label score" caption near the top of the box: dark letters on the class colour (nothing
    # else in this picture is that dark).
    assert sum(color) / 3 > 100
    upper = out[: int(box.ymin + height * 0.3)]
    assert (upper.max(axis=2) < 60).any()
    assert (np.abs(upper.astype(int) - color).max(axis=2) <= 3).sum() > width // 8
    # Far from the box nothing changed.
    assert close(out[height - 1, width - 1], GREY, 0)


def test_caption_of_a_box_at_the_top_edge_stays_inside_the_image() -> None:
    det = Detection(1, "a-very-long-label-name", 0.5, Box(600.0, 0.0, 640.0, 20.0))
    out = np.asarray(render_prediction(Image.new("RGB", (640, 480), GREY), [det]))
    assert (np.abs(out[:30, 300:].astype(int) - class_color(1)).max(axis=2) <= 3).any()


def test_classification_captions_are_listed_top_left() -> None:
    classes = [Classification(0, "red", 0.9), Classification(1, "green", 0.05)]
    out = np.asarray(render_prediction(Image.new("RGB", (320, 240), GREY), [], classes))
    assert close(out[4, 4], class_color(0))
    assert close(out[239, 319], GREY, 0)
