"""The pure steps around every family: where the input lies in the upload (stretch, letterbox,
crop, downsizing), boxes mapped back, NMS, and how pixels are scaled for float inputs."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from web.pipeline.images import inspect_image
from web.pipeline.inputs import jpeg_scaled_size, place_on_canvas, plan_input, scale_pixels, tensor_input
from web.reading.adapters.base import Preprocessing
from web.reading.adapters.frames import Frame, plan_frame, to_xyxy
from web.reading.adapters.nms import box_iou, non_max_suppression
from web.reading.signatures import ImageInput, InputKind
from web.serving.protos.tensorflow.core.framework import types_pb2


@pytest.mark.parametrize(
    "size,mode,expected",
    [
        # (upload) -> (content size, offset) on a 640x640 input
        ((1280, 720), "letterbox", ((640, 360), (0, 140))),
        ((720, 1280), "letterbox", ((360, 640), (140, 0))),
        ((640, 640), "letterbox", ((640, 640), (0, 0))),
        ((1280, 720), "crop", ((1138, 640), (-249, 0))),
        ((1280, 720), "stretch", ((640, 640), (0, 0))),
        ((1280, 720), "none", ((640, 640), (0, 0))),  # a fixed input cannot take another size
    ],
)
def test_plan_frame(size, mode, expected) -> None:
    frame = plan_frame(*size, mode=mode, input_size=(640, 640))
    assert ((frame.content_width, frame.content_height), (frame.offset_x, frame.offset_y)) == expected
    assert (frame.input_width, frame.input_height) == (640, 640)


def test_letterbox_pads_like_ultralytics() -> None:
    # Ultralytics: dh = (640 - 427) / 2 = 106.5 -> top round(106.4) = 106, bottom round(106.6) = 107.
    frame = plan_frame(1920, 1280, mode="letterbox", input_size=(640, 640))
    assert (frame.content_width, frame.content_height, frame.offset_y) == (640, 427, 106)


def test_free_size_inputs_are_downsized_only() -> None:
    assert plan_frame(4000, 3000, mode="none", input_size=None, max_side=1600) == Frame(
        4000, 3000, 1600, 1200, 1600, 1200
    )
    assert plan_frame(300, 200, mode="letterbox", input_size=None, max_side=1600) == Frame.identity(300, 200)


@pytest.mark.parametrize(
    "size,expected",
    [
        ((4000, 3000), (1500, 1125)),  # 3/8: 94 % of 1600
        ((3024, 4032), (1134, 1512)),  # a portrait phone photo
        ((1700, 1000), (1488, 875)),  # 7/8, rounded up as libjpeg-turbo does
        ((5000, 3750), (1600, 1200)),  # 2/8 = 1250 is 78 %: decode at 3/8 and resize, as for a PNG
        ((1200, 900), (1200, 900)),  # small enough as it is
    ],
)
def test_big_jpegs_for_free_size_inputs_get_a_size_the_decoder_makes_directly(size, expected) -> None:
    """A JPEG decodes straight to n/8 of its size; when that fits MAX_INPUT_SIDE with at most 10 %
    to spare, it is the input size (no resize after the decode). Other formats and fixed-size inputs
    are planned as before."""
    width, height = size
    data = _jpeg(width, height)
    info = inspect_image(data, max_pixels=2 * 10**8)
    free = ImageInput("x", InputKind.UINT8, types_pb2.DT_UINT8, 1, None, None, 3)
    frame = plan_input(info, free, Preprocessing(), 1600)
    assert (frame.content_width, frame.content_height) == (frame.input_width, frame.input_height) == expected
    pixels = tensor_input(data, info, frame, free, Preprocessing())
    assert pixels.shape == (expected[1], expected[0], 3)
    png = inspect_image(_png((10, 20, 30), (width, height)), max_pixels=2 * 10**8)
    assert plan_input(png, free, Preprocessing(), 1600) == plan_frame(
        width, height, mode="none", input_size=None, max_side=1600)
    fixed = ImageInput("x", InputKind.UINT8, types_pb2.DT_UINT8, 1, 640, 640, 3)
    assert plan_input(info, fixed, Preprocessing(), 1600).content_width == 640


def test_jpeg_scaled_size_edges() -> None:
    assert jpeg_scaled_size(12800, 9600, 1600) == (1600, 1200)  # 1/8 lands exactly on it
    assert jpeg_scaled_size(1601, 900, 1600) is None  # 7/8 = 1401 is 88 %
    assert jpeg_scaled_size(4001, 3001, 1600) == (1501, 1126)  # ceil, like libjpeg-turbo
    assert jpeg_scaled_size(4000, 3000, None) is None


def _jpeg(width: int, height: int) -> bytes:
    rng = np.random.default_rng(width)
    small = Image.fromarray(rng.integers(0, 255, (height // 50 + 1, width // 50 + 1, 3), dtype=np.uint8))
    buf = io.BytesIO()
    small.resize((width, height), Image.Resampling.NEAREST).save(buf, "JPEG", quality=80)
    return buf.getvalue()


@pytest.mark.parametrize("mode", ["letterbox", "crop", "stretch"])
def test_boxes_map_back_exactly(mode: str) -> None:
    frame = plan_frame(1280, 720, mode=mode, input_size=(640, 640))
    upload_box = np.array([[100.0, 200.0, 500.0, 600.0]])
    input_box = upload_box * ([frame.scale_x, frame.scale_y] * 2) + [frame.offset_x, frame.offset_y] * 2
    np.testing.assert_allclose(frame.to_upload(input_box), upload_box, atol=1e-9)


def test_boxes_in_the_padding_are_clipped_to_the_upload() -> None:
    frame = plan_frame(1280, 720, mode="letterbox", input_size=(640, 640))
    np.testing.assert_allclose(frame.to_upload(np.array([[-10, 0, 700, 640]])), [[0, 0, 1280, 720]])


def test_box_formats() -> None:
    box = np.array([[10.0, 20.0, 30.0, 60.0]])
    np.testing.assert_array_equal(to_xyxy(box, "yxyx"), [[20, 10, 60, 30]])
    np.testing.assert_array_equal(to_xyxy(box, "xywh"), [[10, 20, 40, 80]])
    np.testing.assert_array_equal(to_xyxy(box, "center_xywh"), [[-5, -10, 25, 50]])


def test_nms_is_class_aware_unless_asked() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [0, 0, 10, 10], [50, 50, 60, 60]], float)
    scores = np.array([0.9, 0.8, 0.7, 0.6])
    classes = np.array([0, 0, 1, 0])
    assert box_iou(boxes[0], boxes[1:2])[0] == pytest.approx(81 / 119)
    assert list(non_max_suppression(boxes, scores, classes, iou_threshold=0.5)) == [0, 2, 3]
    assert list(non_max_suppression(boxes, scores, classes, iou_threshold=0.5, class_agnostic=True)) == [0, 3]
    assert list(non_max_suppression(boxes, scores, classes, iou_threshold=0.7)) == [0, 1, 2, 3]
    assert list(non_max_suppression(boxes, scores, classes, iou_threshold=0.5, max_keep=1)) == [0]
    assert list(non_max_suppression(np.zeros((0, 4)), np.zeros(0), np.zeros(0), iou_threshold=0.5)) == []


@pytest.mark.parametrize(
    "preprocessing,expected",
    [
        (Preprocessing(pixel_range="0-255"), [255.0, 0.0, 51.0]),
        (Preprocessing(pixel_range="0-1"), [1.0, 0.0, 0.2]),
        (Preprocessing(pixel_range="-1-1"), [1.0, -1.0, -0.6]),
        (
            Preprocessing(pixel_range="0-1", mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)),
            [(1 - 0.485) / 0.229, -0.456 / 0.224, (0.2 - 0.406) / 0.225],
        ),
        (Preprocessing(mean=(103.939, 116.779, 123.68)), [255 - 103.939, -116.779, 51 - 123.68]),
    ],
)
def test_pixel_scaling(preprocessing: Preprocessing, expected: list[float]) -> None:
    pixels = np.array([[[255, 0, 51]]], dtype=np.uint8)
    np.testing.assert_allclose(scale_pixels(pixels, preprocessing)[0, 0], expected, rtol=1e-5, atol=1e-5)


def test_crop_and_letterbox_canvas() -> None:
    pixels = np.arange(4 * 6 * 1, dtype=np.uint8).reshape(4, 6, 1)
    letterbox = place_on_canvas(pixels, Frame(6, 4, 6, 6, 6, 4, 0, 1), pad_value=114)
    assert (letterbox[0] == 114).all() and (letterbox[5] == 114).all()
    np.testing.assert_array_equal(letterbox[1:5], pixels)
    crop = place_on_canvas(pixels, Frame(6, 4, 4, 4, 6, 4, -1, 0), pad_value=114)
    np.testing.assert_array_equal(crop, pixels[:, 1:5])


def _png(colour: tuple[int, int, int], size=(8, 6)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, "PNG")
    return buf.getvalue()


def test_tensor_input_channel_order_grey_and_dtype() -> None:
    data = _png((200, 100, 50))
    info = inspect_image(data, max_pixels=10**6)
    rgb_input = ImageInput("x", InputKind.FLOAT, types_pb2.DT_HALF, 1, 4, 4, 3)
    frame = plan_frame(8, 6, mode="letterbox", input_size=(4, 4))
    bgr = tensor_input(data, info, frame, rgb_input, Preprocessing(pixel_range="0-1", channel_order="BGR"))
    assert bgr.dtype == np.float16 and bgr.shape == (4, 4, 3)
    np.testing.assert_allclose(bgr[0, 2], [50 / 255, 100 / 255, 200 / 255], atol=2e-3)
    np.testing.assert_allclose(bgr[3, 0], [114 / 255] * 3, atol=2e-3)  # the letterbox padding (8x6 -> 4x3)
    grey_input = ImageInput("x", InputKind.UINT8, types_pb2.DT_UINT8, 1, None, None, 1)
    grey = tensor_input(data, info, Frame.identity(8, 6), grey_input, Preprocessing())
    assert grey.shape == (6, 8, 1) and grey.dtype == np.uint8
    assert abs(int(grey[0, 0, 0]) - round(0.299 * 200 + 0.587 * 100 + 0.114 * 50)) <= 1
