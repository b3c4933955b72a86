"""The model for the queue tests, loaded by the worker subprocesses through JOB_PREDICTOR.

It stands for the model server only: its prediction is a pure function of the picture's bytes (so a
test can tell that each file's result came from that file's bytes), it decodes the picture with
Pillow (a broken one raises PictureError, as /predict answers 400), and environment variables make it
slow (FAKE_MODEL_DELAY_S) or unavailable (FAKE_MODEL_UNAVAILABLE=1, RetryableError on every call).
Each call appends "<pid> <file>" to FAKE_MODEL_CALLS, so a test sees which worker predicted what.
"""

from __future__ import annotations

import hashlib
import io
import os
import time
from collections.abc import Mapping
from typing import Any

from PIL import Image, UnidentifiedImageError

from web.jobs.runner import PictureError, RetryableError

LABELS = {1: "circle", 2: "square", 3: "triangle"}


def prediction(model: str, data: bytes) -> dict[str, Any]:
    """The deterministic prediction JSON for a picture's bytes."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            width, height = image.size
    except (UnidentifiedImageError, OSError, SyntaxError) as error:
        raise PictureError(f"not a decodable picture ({error})") from None
    digest = hashlib.sha256(data).digest()
    class_id = digest[0] % 3 + 1
    x0, y0 = digest[1] % (width // 2), digest[2] % (height // 2)
    return {
        "model": {"name": model, "version": 1},
        "image": {"width": width, "height": height},
        "detections": [
            {
                "label": LABELS[class_id],
                "class_id": class_id,
                "score": round(0.5 + digest[3] / 512, 4),
                "box": {"xmin": x0, "ymin": y0, "xmax": x0 + width // 2, "ymax": y0 + height // 2},
            }
        ],
    }


class Predictor:
    def __init__(self) -> None:
        self.delay_s = float(os.environ.get("FAKE_MODEL_DELAY_S", "0"))
        self.unavailable = os.environ.get("FAKE_MODEL_UNAVAILABLE") == "1"
        self.calls = os.environ.get("FAKE_MODEL_CALLS")

    def predict(
        self, model: str, version: int | None, data: bytes, file_name: str, options: Mapping[str, Any]
    ) -> dict[str, Any]:
        if self.calls:
            fd = os.open(self.calls, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, f"{os.getpid()} {file_name}\n".encode())
            finally:
                os.close(fd)
        if self.unavailable:
            raise RetryableError("fake model server: connection refused")
        time.sleep(self.delay_s)
        return prediction(model, data)
