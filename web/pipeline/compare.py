"""Two models' answers on one picture: which boxes both found, and which only one did.

A box of one model is paired with the other's best unpaired box of the same label (case-insensitive)
overlapping it by IoU >= `PAIR_IOU`, highest scores first, as COCOeval pairs detections with ground
truth. What stays unpaired is marked on the drawn picture (a thick magenta frame) and listed.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

from PIL import Image, ImageDraw

from web.domain import Box, Detection
from web.pipeline.render import _caption, _font, _scales

PAIR_IOU = 0.5
ONLY_COLOUR = (200, 30, 200)
JPEG_QUALITY = 90


@dataclass(frozen=True)
class Pairing:
    """Indices into each model's detections: pairs (first, second), and the unpaired ones."""

    pairs: list[tuple[int, int]] = field(default_factory=list)
    only_first: list[int] = field(default_factory=list)
    only_second: list[int] = field(default_factory=list)


def iou(a: Box, b: Box) -> float:
    width = min(a.xmax, b.xmax) - max(a.xmin, b.xmin)
    height = min(a.ymax, b.ymax) - max(a.ymin, b.ymin)
    if width <= 0 or height <= 0:
        return 0.0
    inter = width * height
    union = a.width * a.height + b.width * b.height - inter
    return inter / union if union > 0 else 0.0


def pair_detections(first: list[Detection], second: list[Detection], threshold: float = PAIR_IOU) -> Pairing:
    """Greedy pairing by score, same label, best IoU at or over `threshold`."""
    order = sorted(range(len(first)), key=lambda i: -first[i].score)
    free = set(range(len(second)))
    pairs: list[tuple[int, int]] = []
    for i in order:
        label = first[i].label.casefold()
        best, best_iou = None, threshold
        for j in free:
            if second[j].label.casefold() != label:
                continue
            overlap = iou(first[i].box, second[j].box)
            if overlap > best_iou or (best is None and overlap >= threshold):
                best, best_iou = j, overlap
        if best is not None:
            pairs.append((i, best))
            free.discard(best)
    paired_first = {i for i, _ in pairs}
    return Pairing(
        pairs=sorted(pairs),
        only_first=[i for i in range(len(first)) if i not in paired_first],
        only_second=sorted(free),
    )


def mark_only(drawn: bytes, detections: list[Detection], only: list[int]) -> bytes:
    """The drawn picture (JPEG) with a thick magenta frame and "only here" on each unpaired box."""
    if not only:
        return drawn
    with Image.open(io.BytesIO(drawn)) as opened:
        image = opened.convert("RGB")
    line, font_size = _scales(*image.size)
    draw = ImageDraw.Draw(image)
    font = _font(font_size)
    for index in only:
        box = detections[index].box
        pad = line * 2
        frame = [box.xmin - pad, box.ymin - pad, box.xmax + pad, box.ymax + pad]
        draw.rectangle(frame, outline=ONLY_COLOUR, width=line * 2)
        _caption(draw, (frame[0], frame[3]), "only here", ONLY_COLOUR, font, image.size, above=False)
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=JPEG_QUALITY)
    return out.getvalue()
