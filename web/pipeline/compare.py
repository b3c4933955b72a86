"""Two models' answers on one picture: which boxes both found, and which only one did.

A box of one model is paired with the other's best unpaired box of the same label (case-insensitive)
overlapping it by IoU >= `PAIR_IOU`, highest scores first, as COCOeval pairs detections with ground
truth (`pair_boxes`, which an evaluation's disagreements use too). What stays unpaired is marked on
the drawn picture (a thick magenta frame) and listed.
"""

from __future__ import annotations

import io
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw

from web.domain import Detection
from web.pipeline.render import _caption, _font, _scales
from web.reading.adapters.nms import box_iou

PAIR_IOU = 0.5
ONLY_COLOUR = (200, 30, 200)
JPEG_QUALITY = 90


@dataclass(frozen=True)
class Pairing:
    """Indices into each model's detections: pairs (first, second), and the unpaired ones."""

    pairs: list[tuple[int, int]] = field(default_factory=list)
    only_first: list[int] = field(default_factory=list)
    only_second: list[int] = field(default_factory=list)


Item = tuple[Hashable, Sequence[float], float]  # (what must agree, (xmin, ymin, xmax, ymax), score)


def pair_boxes(first: Sequence[Item], second: Sequence[Item], threshold: float = PAIR_IOU) -> Pairing:
    """Pair two lists of boxes one-to-one, `first`'s best scores first: each takes the unpaired box of
    `second` with the same key and the highest IoU at or over `threshold` (on a tie, the better score).
    The upload page's comparison and an evaluation's disagreements both pair this way."""
    order = sorted(range(len(second)), key=lambda j: -second[j][2])
    keys = np.array([second[j][0] for j in order], dtype=object)
    boxes = np.array([second[j][1] for j in order], dtype=np.float64).reshape(-1, 4)
    free = np.ones(len(order), dtype=bool)
    pairs: list[tuple[int, int]] = []
    for i in sorted(range(len(first)), key=lambda i: -first[i][2]):
        if not free.any():
            break
        key, box, _ = first[i]
        overlap = box_iou(np.asarray(box, dtype=np.float64), boxes)
        eligible = free & (keys == key) & (overlap >= threshold)
        if eligible.any():
            k = int(np.argmax(np.where(eligible, overlap, -1.0)))
            free[k] = False
            pairs.append((i, order[k]))
    paired_first = {i for i, _ in pairs}
    return Pairing(
        pairs=sorted(pairs),
        only_first=[i for i in range(len(first)) if i not in paired_first],
        only_second=sorted(order[k] for k in np.flatnonzero(free)),
    )


def pair_detections(first: list[Detection], second: list[Detection], threshold: float = PAIR_IOU) -> Pairing:
    """Two models' detections on one picture, paired by label (case-insensitive) and IoU."""

    def items(detections: list[Detection]) -> list[Item]:
        return [
            (d.label.casefold(), (d.box.xmin, d.box.ymin, d.box.xmax, d.box.ymax), d.score)
            for d in detections
        ]

    return pair_boxes(items(first), items(second), threshold)


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
