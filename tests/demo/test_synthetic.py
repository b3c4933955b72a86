"""The synthetic shapes generator: determinism and annotations that match the pixels."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from demo.synthetic import (
    CLASSES,
    MAX_SIZE_FRACTION,
    MIN_VISIBLE_FRACTION,
    generate_image,
    write_coco_dataset,
)


def test_same_seed_gives_the_same_picture_and_shapes() -> None:
    first_image, first_shapes = generate_image(np.random.default_rng(5))
    second_image, second_shapes = generate_image(np.random.default_rng(5))
    assert np.array_equal(first_image, second_image)
    assert [(s.class_id, s.box) for s in first_shapes] == [(s.class_id, s.box) for s in second_shapes]
    assert all(np.array_equal(a.mask, b.mask) for a, b in zip(first_shapes, second_shapes, strict=True))
    other_image, _ = generate_image(np.random.default_rng(6))
    assert not np.array_equal(first_image, other_image)


@pytest.mark.parametrize("seed", range(8))
def test_shapes_are_consistent_with_their_masks(seed: int) -> None:
    rng = np.random.default_rng(seed)
    image, shapes = generate_image(rng, width=320, height=240, min_shapes=2, max_shapes=6)
    assert image.shape == (240, 320, 3) and image.dtype == np.uint8
    assert 2 <= len(shapes) <= 6
    taken = np.zeros((240, 320), dtype=bool)
    for shape in shapes:
        assert shape.label == CLASSES[shape.class_id - 1]
        assert shape.mask.shape == (240, 320) and shape.mask.dtype == bool
        assert not (taken & shape.mask).any(), "visible masks of two instances overlap"
        taken |= shape.mask
        rows = np.flatnonzero(shape.mask.any(axis=1))
        cols = np.flatnonzero(shape.mask.any(axis=0))
        assert shape.box == (cols[0], rows[0], cols[-1] + 1, rows[-1] + 1)
        # Occlusion stays moderate: the visible part fills a good share of the visible box.
        xmin, ymin, xmax, ymax = shape.box
        assert shape.mask.sum() >= 0.25 * MIN_VISIBLE_FRACTION * (xmax - xmin) * (ymax - ymin)


def test_shape_sizes_scale_with_the_picture() -> None:
    """A 4000x3000 picture looks like a 640x480 one: shape sizes relative to min(w, h) agree."""
    def relative_sizes(width: int, height: int) -> list[float]:
        sizes = []
        for seed in range(3):
            _, shapes = generate_image(np.random.default_rng(seed), width, height)
            sizes += [max(s.box[2] - s.box[0], s.box[3] - s.box[1]) / min(width, height) for s in shapes]
        return sizes

    small, large = relative_sizes(640, 480), relative_sizes(4000, 3000)
    for sizes in (small, large):
        assert min(sizes) > 0.03 and max(sizes) < MAX_SIZE_FRACTION * 1.5
    assert abs(np.median(small) - np.median(large)) < 0.08


def test_coco_dataset_round_trips_through_pycocotools(tmp_path) -> None:
    json_path = write_coco_dataset(tmp_path / "set", count=3, seed=11, width=200, height=150)
    data = json.loads(json_path.read_text())
    assert [c["name"] for c in data["categories"]] == list(CLASSES)
    coco = COCO(str(json_path))
    assert len(coco.imgs) == 3 and len(coco.anns) >= 3
    for info in coco.imgs.values():
        with Image.open(json_path.parent / info["file_name"]) as picture:
            assert picture.format == "JPEG" and picture.size == (200, 150)
    for ann in coco.anns.values():
        assert ann["iscrowd"] == 0 and ann["category_id"] in (1, 2, 3)
        mask = coco.annToMask(ann)
        assert mask.shape == (150, 200)
        assert int(mask.sum()) == ann["area"]
        assert np.allclose(mask_utils.toBbox(ann["segmentation"]), ann["bbox"])
