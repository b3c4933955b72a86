"""The benchmark's test pictures: synthetic "shapes" photos at a small and a large size.

The pictures come from the demo data generator (numpy and Pillow only), so they look like what
the demo models were trained on and every run uses the same bytes (fixed seeds). The decoded
pixels are kept too: the direct gRPC floor sends them prebuilt, without paying for decoding.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

SIZES: tuple[tuple[int, int], ...] = ((640, 480), (4000, 3000))
JPEG_QUALITY = 90


@dataclass(frozen=True)
class TestImage:
    """One JPEG as uploaded, plus the RGB pixels a JPEG decoder gives for it."""

    name: str  # "640x480"
    path: Path
    jpeg: bytes
    pixels: np.ndarray  # uint8 [H, W, 3], decoded from `jpeg` (what the gateway sees)

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])


def make_images(out_dir: Path, sizes: tuple[tuple[int, int], ...] = SIZES, seed: int = 5) -> list[TestImage]:
    """Draw one picture per size, save it as JPEG in `out_dir` and decode it back."""
    from demo.synthetic import generate_image  # numpy/Pillow only, no TensorFlow

    images = []
    for index, (width, height) in enumerate(sizes):
        pixels, _shapes = generate_image(np.random.default_rng(seed + index), width=width, height=height)
        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, format="JPEG", quality=JPEG_QUALITY)
        jpeg = buf.getvalue()
        name = f"{width}x{height}"
        path = out_dir / f"shapes_{name}.jpg"
        path.write_bytes(jpeg)
        decoded = np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB"))
        images.append(TestImage(name=name, path=path, jpeg=jpeg, pixels=decoded))
    return images
