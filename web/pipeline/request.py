"""What one prediction call carries from stage to stage, each part computed once.

A `Picture` is one upload: its header is read once when the request is opened (type, size, EXIF
orientation), its frame (where the model's input lies in it) is planned once when the model's
reading is known, and its input is built once. A `PipelineRequest` is the call: the model, its
pictures, the options, the label map, the reading chosen for all of them, and the one clock that
times every stage (see `web.metrics.StageClock`).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from web.errors import GatewayError
from web.metrics import StageClock
from web.options import PredictOptions
from web.pipeline.images import ImageInfo
from web.reading.adapters import ModelReading
from web.reading.adapters.frames import Frame
from web.reading.label_maps import LabelMap


def display_name(filename: str | None, fallback: str = "image") -> str:
    """A client file name made safe to quote in messages (no control characters, bounded length)."""
    cleaned = re.sub(r"[\x00-\x1f\x7f]", "", filename or "").strip()
    return (cleaned[:80] + "…" if len(cleaned) > 80 else cleaned) or fallback


@dataclass
class Picture:
    """One upload on its way through the pipeline."""

    name: str  # how messages name it: the file name, or "image #2 (x.jpg)" in a batch
    data: bytes
    info: ImageInfo  # the header, read once
    filename: str | None = None  # as the client sent it (shown, never used in a path)
    frame: Frame | None = None  # planned once the reading is known
    value: bytes | np.ndarray | None = None  # the model input built from it
    decode_ms: float = 0.0  # wall time of its checks and its decode: the answer's `decode`

    @property
    def pixels(self) -> int:
        return self.info.width * self.info.height


class Background:
    """`work(*args)` on its own thread, for C work that releases the GIL (JPEG decoding) and can run
    while the request thread waits on the model server; the thread's CPU is charged to `stage`.
    `result()` waits for it: its value, its GatewayError raised, or None if it never started."""

    def __init__(self, model: str, stage: str, work: Callable[..., Any], *args: Any) -> None:
        self._value: Any = None
        self._error: GatewayError | None = None
        self._thread = threading.Thread(
            target=self._run, args=(model, stage, work, args), daemon=True, name=f"gateway-{stage}"
        )

    def start(self) -> Background:
        if self._thread.ident is None:
            self._thread.start()
        return self

    def _run(self, model: str, stage: str, work: Callable[..., Any], args: tuple) -> None:
        clock = StageClock(model)  # CPU time is per thread
        try:
            self._value = work(*args)
        except GatewayError as exc:
            self._error = exc
        clock.lap(stage)

    def result(self) -> Any:
        if self._thread.ident is not None:
            self._thread.join()
        if self._error is not None:
            raise self._error
        return self._value


@dataclass
class PipelineRequest:
    """One call: `model` on `pictures` with `options`; `reading` is filled in once it is chosen.

    `drawing` is set by predict-and-render for a big photo: the decode of the picture to draw on,
    started on another thread once the model's inputs are built (`held` pixels of the decode budget
    are then taken for it)."""

    model: str
    pictures: list[Picture]
    options: PredictOptions
    clock: StageClock
    label_map: LabelMap | None = None
    reading: ModelReading | None = None
    drawing: Background | None = None
    held: int = 0
