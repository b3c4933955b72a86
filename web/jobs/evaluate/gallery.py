"""The report's pictures: ground truth and predictions drawn in two colours, and two models side by side.

Colours say what a box is, not its class, so a picture reads at a glance: ground truth green (found)
or orange (missed), predictions blue (a hit) or red (a false positive); on the side-by-side pictures
a box only one model found is magenta and thick. The labels are the dataset's category names. Boxes
are in the dataset's pixel coordinates (COCO's `width` x `height`); the picture is decoded with its
EXIF orientation applied, as the pipeline decodes it, and scaled so its longest side is at most
`GALLERY_SIDE`.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

from PIL import Image, ImageDraw

from web.pipeline import images
from web.pipeline.render import _caption, _font, _scales

GALLERY_SIDE = 720
JPEG_QUALITY = 85
# Every picture drawn was decoded under MAX_IMAGE_PIXELS when it was predicted; this bound only keeps
# inspect_image's own size check (which needs one) from refusing it here.
DRAWN_MAX_PIXELS = 2**31
COLOURS: dict[str, tuple[int, int, int]] = {
    "truth": (46, 160, 67),  # ground truth a prediction found
    "miss": (247, 129, 0),  # ground truth nothing found at the operating score
    "hit": (31, 111, 235),  # a prediction that matched a ground-truth box
    "false_positive": (218, 54, 51),  # a prediction that matched nothing
    "only": (200, 30, 200),  # side by side: found by this model and not by the other
}


@dataclass(frozen=True)
class Mark:
    """One box to draw: (xmin, ymin, xmax, ymax) in the dataset's pixels, its label, what it is
    (a key of COLOURS) and the prediction's score (None for ground truth)."""

    box: tuple[float, float, float, float]
    label: str
    kind: str
    score: float | None = None


def _open(data: bytes) -> tuple[Image.Image, tuple[int, int]]:
    """The picture upright at gallery size, decoded as the pipeline decodes it (JPEGs scaled while
    decoding, EXIF orientation applied), and its full upright size: the boxes' coordinates."""
    info = images.inspect_image(data, max_pixels=DRAWN_MAX_PIXELS, complete=False)
    scale = min(1.0, GALLERY_SIDE / max(info.width, info.height))
    size = (max(1, round(info.width * scale)), max(1, round(info.height * scale)))
    return images.decode_image(data, info, size=size, strict=False), (info.width, info.height)


def _panel(
    image: Image.Image, full: tuple[int, int], marks: Sequence[Mark], title: str | None = None
) -> Image.Image:
    """`image` (drawn on in place) with the marks, whose boxes are in pixels of the `full` size."""
    sx, sy = image.size[0] / max(full[0], 1), image.size[1] / max(full[1], 1)
    line, font_size = _scales(*image.size)
    font = _font(font_size)
    draw = ImageDraw.Draw(image)
    ordered = sorted(marks, key=lambda m: m.kind == "only")  # the highlighted boxes on top
    for mark in ordered:
        colour = COLOURS.get(mark.kind, COLOURS["hit"])
        x0, y0, x1, y1 = mark.box
        box = [x0 * sx, y0 * sy, max(x0 * sx, x1 * sx), max(y0 * sy, y1 * sy)]
        draw.rectangle(box, outline=colour, width=line * 2 if mark.kind in ("only", "miss") else line)
        text = mark.label if mark.score is None else f"{mark.label} {mark.score:.2f}"
        truth = mark.kind in ("truth", "miss")
        # ground truth captions go under the box's top edge, predictions above it, so both read
        _caption(draw, (box[0], box[1]), text, colour, font, image.size, above=not truth)
    if title:
        _caption(draw, (0, 0), title, (30, 30, 30), _font(max(font_size, 14)), image.size, above=False)
    return image


def _jpeg(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=JPEG_QUALITY)
    return out.getvalue()


def draw_picture(data: bytes, marks: Sequence[Mark]) -> bytes:
    """One gallery picture as JPEG: the ground truth and the predictions, each in its colour."""
    return _jpeg(_panel(*_open(data), marks))


def draw_side_by_side(
    data: bytes, left: Sequence[Mark], right: Sequence[Mark], titles: tuple[str, str]
) -> bytes:
    """The same picture twice, one model's predictions on each side, their titles in the corner."""
    image, full = _open(data)  # decoded once, drawn twice
    a, b = _panel(image.copy(), full, left, titles[0]), _panel(image, full, right, titles[1])
    gap = max(4, a.size[0] // 100)
    both = Image.new("RGB", (a.size[0] + gap + b.size[0], max(a.size[1], b.size[1])), (255, 255, 255))
    both.paste(a, (0, 0))
    both.paste(b, (a.size[0] + gap, 0))
    return _jpeg(both)
