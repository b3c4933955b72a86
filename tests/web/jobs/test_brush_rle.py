"""Label Studio's brush RLE, byte for byte against the reference encoder.

label-studio-sdk cannot be installed beside the pinned packages (it pins an older numpy), so the
expected bytes below were produced once by the reference implementation, `mask2rle` and
`encode_rle` in label_studio_sdk/converter/brush.py of label-studio-sdk 2.1.2 (the same code as
label-studio-converter's brush.py), on exactly the inputs built here.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from web.jobs.exporters.label_studio import (
    brush_rle_to_mask,
    decode_brush_rle,
    encode_brush_rle,
    mask_to_brush_rle,
)

SMALL = np.array([[0, 1, 1, 0], [1, 1, 1, 1], [0, 0, 0, 1]], dtype=bool)
SMALL_RLE = [0, 0, 0, 48, 57, 27, 252, 96, 19, 255, 198, 1, 127, 254, 216, 4, 127, 224]
# A disc in the corner of a 130x130 mask: runs of every width, and a background run over 2**16 values.
DISC_RLE = [
    0, 1, 8, 16, 57, 27, 255, 2, 35, 0, 143, 255, 128, 251, 128, 97, 191, 254, 3, 206, 1, 136, 255, 248, 15,
    24, 6, 35, 255, 224, 60, 96, 24, 143, 255, 128, 239, 128, 98, 191, 254, 3, 190, 1, 136, 255, 248, 15, 24,
    6, 35, 255, 224, 60, 96, 24, 143, 255, 128, 243, 128, 97, 191, 254, 3, 238, 1, 31, 255, 241, 151, 0, 0,
]  # fmt: skip
# encode_rle on any uint8 values: single values (the literal form), each run width, a run over 2**16.
VALUES = np.array([7] + [3] * 2 + [9] * 9 + [4] * 17 + [200] * 300 + [1] + [5] * 70000 + [6], np.uint8)
VALUES_RLE = [
    0, 1, 18, 187, 57, 27, 248, 0, 240, 129, 216, 9, 194, 0, 156, 4, 175, 32, 0, 31, 255, 254, 11, 196, 91,
    193, 64, 6, 0,
]  # fmt: skip
NOISY_SHA256 = "0f5052f9d9c419597bb03edaa3585ba6141b15c1d3ab74556126a8a7da476762"  # 1712 bytes


def disc() -> np.ndarray:
    yy, xx = np.mgrid[0:130, 0:130]
    return ((yy - 6) ** 2 + (xx - 7) ** 2) <= 25


def noisy() -> np.ndarray:
    yy, xx = np.mgrid[0:37, 0:53]
    return ((yy * 7919 + xx * xx * 104729) % 13) > 7


def test_masks_encode_exactly_as_the_reference() -> None:
    assert mask_to_brush_rle(SMALL) == SMALL_RLE
    assert mask_to_brush_rle(SMALL.astype(np.uint8) * 255) == SMALL_RLE  # any non-zero is inside
    assert mask_to_brush_rle(disc()) == DISC_RLE
    encoded = mask_to_brush_rle(noisy())
    assert (len(encoded), hashlib.sha256(bytes(encoded)).hexdigest()) == (1712, NOISY_SHA256)


def test_values_encode_exactly_as_the_reference_and_decode_back() -> None:
    assert encode_brush_rle(VALUES) == VALUES_RLE
    np.testing.assert_array_equal(decode_brush_rle(VALUES_RLE), VALUES)


@pytest.mark.parametrize("mask", [SMALL, disc(), noisy(), np.zeros((5, 7), bool), np.ones((300, 300), bool)])
def test_masks_round_trip_through_the_rgba_image(mask: np.ndarray) -> None:
    rle = mask_to_brush_rle(mask)
    rgba = decode_brush_rle(rle).reshape(*mask.shape, 4)
    np.testing.assert_array_equal(rgba, np.repeat(mask[..., None], 4, axis=2).astype(np.uint8) * 255)
    np.testing.assert_array_equal(brush_rle_to_mask(rle, *mask.shape), mask)


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match="a mask is 2-D"):
        mask_to_brush_rle(np.zeros((2, 2, 4)))
    with pytest.raises(ValueError, match="ends in the middle"):
        decode_brush_rle(SMALL_RLE[:8])
