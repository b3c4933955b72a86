"""`label_studio.json`: Label Studio import tasks with the model's predictions, for pre-labelling.

Label Studio wants percent coordinates of the picture (`x`, `y`, `width`, `height` in 0-100) with
`original_width`/`original_height`, one `rectanglelabels` result per detection, and masks in its own
brush RLE (`brushlabels`, `format: "rle"`), which is not COCO's RLE: see `mask_to_brush_rle`. The
control names must match the project's labeling config; `label_config` writes one that does.

`region`, `rectangle_value`, `brush_value` and the brush RLE functions are pure and shared with the
Label Studio ML backend (web/integrations/label_studio), which answers the same `result` regions.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.sax.saxutils import quoteattr

import numpy as np
from pycocotools import mask as coco_mask

from web.domain import Box
from web.jobs.exporters.base import AtomicFile, Exporter, LabelMap, Record, box_of, detections, image_size
from web.jobs.exporters.base import model_version as record_model_version

# Label Studio's brush RLE is thi.ng's rle-pack over the mask's RGBA pixels (label-studio-converter's
# brush.py, now label_studio_sdk/converter/brush.py): a 32-bit value count, the word size minus one in
# 5 bits, four run-length field widths minus one in 4 bits each, then per run a 1-bit flag (1 = a
# repeated value, 0 = literal values), a 2-bit index into the widths, the count minus one in that
# width, and the 8-bit value(s); zero bits pad the end to a whole byte (a whole zero byte when already
# aligned, as the reference encoder does). The field widths and the choice of width per run follow
# the reference encoder, so the bytes match it exactly.
WORD_SIZE = 8
RLE_SIZES = (3, 4, 8, 16)
_MAX_RUN = 1 << 16
_TOKEN_BITS = 1 + 2 + 16 + WORD_SIZE
_TOKENS_PER_BLOCK = 1 << 18  # bounds the bit matrix's memory for masks with very many runs


def _runs(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(run lengths, run values) of a 1-D array."""
    if values.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.uint8)
    starts = np.concatenate(([0], np.flatnonzero(values[1:] != values[:-1]) + 1))
    lengths = np.diff(np.concatenate((starts, [values.size])))
    return lengths.astype(np.int64), values[starts].astype(np.int64)


def _encode_runs(count: int, lengths: np.ndarray, values: np.ndarray) -> list[int]:
    header = f"{count:032b}{WORD_SIZE - 1:05b}" + "".join(f"{size - 1:04b}" for size in RLE_SIZES)
    # Runs longer than 2**16 become several 2**16 runs and a remainder, all with the 16-bit width.
    long = lengths > 256
    pieces = np.where(lengths > _MAX_RUN, (lengths - 1) // _MAX_RUN + 1, 1)
    run_of = np.repeat(np.arange(lengths.size), pieces)
    first = np.repeat(np.cumsum(pieces) - pieces, pieces)
    last = np.arange(run_of.size) - first == pieces[run_of] - 1
    token_len = np.where(last, lengths[run_of] - _MAX_RUN * (pieces[run_of] - 1), _MAX_RUN)
    token_long = long[run_of]
    index = np.where(token_long, 3, np.where(token_len <= 8, 0, np.where(token_len <= 16, 1, 2)))
    flag = ((token_len > 1) | token_long).astype(np.int64)
    widths = np.asarray(RLE_SIZES, np.int64)[index]
    bits = 1 + 2 + widths + WORD_SIZE
    tokens = (
        (flag << (bits - 1)) | (index << (bits - 3)) | ((token_len - 1) << WORD_SIZE) | values[run_of]
    ).astype(np.int64)
    columns = np.arange(_TOKEN_BITS, dtype=np.int64)
    parts = [np.frombuffer(header.encode(), np.uint8) - ord("0")]
    for start in range(0, tokens.size, _TOKENS_PER_BLOCK):
        block = slice(start, start + _TOKENS_PER_BLOCK)
        aligned = tokens[block] << (_TOKEN_BITS - bits[block])
        matrix = ((aligned[:, None] >> (_TOKEN_BITS - 1 - columns)) & 1).astype(np.uint8)
        parts.append(matrix[columns < bits[block][:, None]])
    stream = np.concatenate(parts)
    stream = np.concatenate((stream, np.zeros(8 - stream.size % 8, np.uint8)))
    return np.packbits(stream).tolist()


def encode_brush_rle(values: np.ndarray) -> list[int]:
    """Label Studio's RLE of a 1-D uint8 array (the reference `encode_rle`)."""
    flat = np.asarray(values, dtype=np.uint8).ravel()
    return _encode_runs(flat.size, *_runs(flat))


def mask_to_brush_rle(mask: np.ndarray) -> list[int]:
    """Label Studio's brush RLE of a 2-D mask: its RGBA image, every channel 255 inside and 0 outside.

    Each pixel repeats 4 times in the RGBA array, so the runs are those of the mask times four and
    the RGBA array is never built (a 12-megapixel mask stays cheap).
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"a mask is 2-D (height, width), not {mask.shape}")
    lengths, values = _runs((mask != 0).ravel().astype(np.uint8) * 255)
    return _encode_runs(4 * mask.size, 4 * lengths, values)


def decode_brush_rle(rle: Sequence[int]) -> np.ndarray:
    """The uint8 values a Label Studio RLE holds (the reference `decode_rle`, for tests and backends)."""
    bits = np.unpackbits(np.frombuffer(bytes(rle), np.uint8))
    position = 0

    def read(width: int) -> int:
        nonlocal position
        field = bits[position : position + width]
        position += width
        if field.size < width:
            raise ValueError("brush RLE ends in the middle of a field")
        return int("".join("01"[b] for b in field), 2) if width else 0

    count = read(32)
    word_size = read(5) + 1
    sizes = [read(4) + 1 for _ in range(4)]
    out = np.zeros(count, np.uint8)
    i = 0
    while i < count:
        repeated = read(1)
        end = i + 1 + read(sizes[read(2)])
        if end > count:
            raise ValueError("brush RLE runs past its declared length")
        if repeated:
            out[i:end] = read(word_size)
        else:
            for k in range(i, end):
                out[k] = read(word_size)
        i = end
    return out


def brush_rle_to_mask(rle: Sequence[int], height: int, width: int) -> np.ndarray:
    """The boolean mask of a brush RLE: Label Studio draws the alpha channel."""
    return decode_brush_rle(rle).reshape(height, width, 4)[:, :, 3] > 0


@dataclass(frozen=True)
class ControlNames:
    """Names of the labeling config's tags that the results refer to (`from_name`/`to_name`)."""

    image: str = "image"
    rectangles: str = "label"
    brush: str = "mask"
    choices: str = "choice"


def label_config(labels: Iterable[str], names: ControlNames = ControlNames(), masks: bool = False,
                 classification: bool = False) -> str:  # fmt: skip
    """A labeling config for a project that these tasks import into."""
    options = "".join(f"    <Label value={quoteattr(label)}/>\n" for label in labels)
    image = f'  <Image name="{names.image}" value="$image" zoom="true"/>\n'
    if classification:
        choices = options.replace("<Label ", "<Choice ")
        body = f'  <Choices name="{names.choices}" toName="{names.image}">\n{choices}  </Choices>\n'
    else:
        body = (
            f'  <RectangleLabels name="{names.rectangles}" toName="{names.image}">\n'
            f"{options}  </RectangleLabels>\n"
        )
        if masks:
            body += (
                f'  <BrushLabels name="{names.brush}" toName="{names.image}">\n{options}  </BrushLabels>\n'
            )
    return f"<View>\n{image}{body}</View>\n"


def _percent(value: float, whole: int) -> float:
    return min(max(100.0 * value / whole, 0.0), 100.0)


def region(
    region_id: str, kind: str, from_name: str, to_name: str, size: tuple[int, int], value: dict[str, Any],
    score: float,
) -> dict[str, Any]:  # fmt: skip
    """One Label Studio result region: `kind` is its type (`rectanglelabels`, `brushlabels`, ...),
    `size` the picture's (width, height) that the percent coordinates are of."""
    width, height = size
    return {
        "id": region_id, "from_name": from_name, "to_name": to_name, "type": kind,
        "original_width": width, "original_height": height, "image_rotation": 0,
        "value": value, "score": score,
    }  # fmt: skip


def rectangle_value(box: Box, size: tuple[int, int], label: str) -> dict[str, Any]:
    """A box in pixels as a `rectanglelabels` value: percent of the picture, clamped into it."""
    width, height = size
    return {
        "x": _percent(box.xmin, width),
        "y": _percent(box.ymin, height),
        "width": _percent(box.width, width),
        "height": _percent(box.height, height),
        "rotation": 0,
        "rectanglelabels": [label],
    }


def brush_value(mask: np.ndarray, label: str) -> dict[str, Any]:
    """A full-picture 2-D mask as a `brushlabels` value (Label Studio's brush RLE)."""
    return {"format": "rle", "rle": mask_to_brush_rle(mask), "brushlabels": [label]}


def task_prediction(
    record: Record, names: ControlNames = ControlNames(), model_version: str | None = None
) -> dict[str, Any]:
    """One record as a Label Studio prediction: {"model_version", "score", "result": [...]}."""
    width, height = image_size(record)
    size = (width, height)
    results: list[dict[str, Any]] = []
    scores: list[float] = []
    for n, det in enumerate(detections(record)):
        box = box_of(det, width, height)
        score = float(det["score"])
        scores.append(score)
        label = str(det["label"])
        value = rectangle_value(box, size, label)
        results.append(region(f"d{n}", "rectanglelabels", names.rectangles, names.image, size, value, score))
        mask = det.get("mask")
        if mask:
            pixels = coco_mask.decode({"size": list(mask["size"]), "counts": str(mask["counts"]).encode()})
            value = brush_value(pixels, label)
            results.append(region(f"d{n}m", "brushlabels", names.brush, names.image, size, value, score))
    classes = list(record.get("classes") or ())
    if classes:
        best = classes[0]
        scores.append(float(best["score"]))
        value = {"choices": [str(best["label"])]}
        results.append(region("c0", "choices", names.choices, names.image, size, value, float(best["score"])))
    return {
        "model_version": model_version or record_model_version(record),
        "score": sum(scores) / len(scores) if scores else 0.0,
        "result": results,
    }


class LabelStudioExporter(Exporter):
    """A JSON array of tasks, written one task at a time: {"data": {"image", "file"}, "predictions"}.

    `image_root` is put before each picture's path in `data.image`: the address Label Studio serves
    the pictures from (for local storage, `/data/local-files/?d=<folder>/`). Empty, the path is as in
    the archive, to be rewritten by whoever imports the tasks.
    """

    file_name = "label_studio.json"

    def __init__(
        self, folder: Path, labels: LabelMap, names: ControlNames = ControlNames(), image_root: str = "",
        model_version: str | None = None,
    ) -> None:  # fmt: skip
        super().__init__(folder, labels)
        self.names = names
        self.image_root = image_root
        self.model_version = model_version
        self._file = AtomicFile(self.folder / self.file_name)
        self._file.stream.write("[")
        self._count = 0

    def add(self, record: Record) -> None:
        task = {
            "data": {"image": self.image_root + record["file"], "file": record["file"]},
            "predictions": [task_prediction(record, self.names, self.model_version)],
        }
        self._file.stream.write(("," if self._count else "") + "\n")
        self._file.stream.write(json.dumps(task, ensure_ascii=False, separators=(",", ":")))
        self._count += 1

    def _finish(self) -> Path:
        self._file.stream.write("\n]\n")
        return self._file.commit()

    def _discard(self) -> None:
        self._file.abort()
