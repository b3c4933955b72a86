"""numpy <-> TensorProto without TensorFlow: tensor_content both ways, typed fields when servers use them."""

from __future__ import annotations

import numpy as np
import pytest

from web.serving.protos.tensorflow.core.framework import tensor_pb2, types_pb2
from web.serving.tensors import (
    TensorConversionError,
    ndarray_to_proto,
    proto_to_ndarray,
    shape_proto,
    strings_to_proto,
)


@pytest.mark.parametrize(
    "dtype,enum",
    [
        (np.uint8, types_pb2.DT_UINT8),
        (np.float32, types_pb2.DT_FLOAT),
        (np.float64, types_pb2.DT_DOUBLE),
        (np.float16, types_pb2.DT_HALF),
        (np.int32, types_pb2.DT_INT32),
        (np.int64, types_pb2.DT_INT64),
        (np.int8, types_pb2.DT_INT8),
        (np.uint16, types_pb2.DT_UINT16),
        (np.bool_, types_pb2.DT_BOOL),
    ],
)
def test_round_trip_through_tensor_content(dtype: type, enum: int) -> None:
    array = (np.arange(24).reshape(2, 3, 4) % 7).astype(dtype)
    proto = ndarray_to_proto(array)
    assert proto.dtype == enum
    assert [d.size for d in proto.tensor_shape.dim] == [2, 3, 4]
    assert proto.tensor_content and not proto.float_val and not proto.int_val
    wire = tensor_pb2.TensorProto.FromString(proto.SerializeToString())
    back = proto_to_ndarray(wire)
    assert back.dtype == np.dtype(dtype) and back.shape == (2, 3, 4)
    np.testing.assert_array_equal(back, array)


def test_non_contiguous_and_big_endian_input() -> None:
    array = np.arange(12, dtype=">i4").reshape(3, 4)[:, ::2]
    np.testing.assert_array_equal(proto_to_ndarray(ndarray_to_proto(array)), array)


def test_strings_keep_their_bytes() -> None:
    payload = [b"\xff\xd8\xff\x00binary", b"second"]
    proto = strings_to_proto(payload)
    assert proto.dtype == types_pb2.DT_STRING and list(proto.string_val) == payload
    assert proto_to_ndarray(proto).tolist() == payload
    scalar = strings_to_proto([b"only"], shape=())
    assert len(scalar.tensor_shape.dim) == 0
    with pytest.raises(TensorConversionError):
        strings_to_proto([b"a", b"b"], shape=(3,))


@pytest.mark.parametrize(
    "field,enum,values,dtype",
    [
        ("float_val", types_pb2.DT_FLOAT, [0.5, 1.5, 2.5, 3.5], np.float32),
        ("int_val", types_pb2.DT_INT32, [1, -2, 3, 4], np.int32),
        ("int_val", types_pb2.DT_UINT8, [0, 1, 254, 255], np.uint8),
        ("int64_val", types_pb2.DT_INT64, [1, 2, 3, 2**40], np.int64),
        ("double_val", types_pb2.DT_DOUBLE, [0.25, 0.5, 0.75, 1.0], np.float64),
        ("bool_val", types_pb2.DT_BOOL, [True, False, True, True], np.bool_),
    ],
)
def test_typed_fields_are_read_when_tensor_content_is_empty(
    field: str, enum: int, values: list, dtype: type
) -> None:
    proto = tensor_pb2.TensorProto(dtype=enum, tensor_shape=shape_proto([2, 2]))
    getattr(proto, field).extend(values)
    back = proto_to_ndarray(proto)
    assert back.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(back, np.asarray(values, dtype=dtype).reshape(2, 2))


def test_half_val_holds_bit_patterns() -> None:
    halves = np.asarray([0.5, -2.0, 65504.0], dtype=np.float16)
    proto = tensor_pb2.TensorProto(dtype=types_pb2.DT_HALF, tensor_shape=shape_proto([3]))
    proto.half_val.extend(halves.view(np.uint16).tolist())
    np.testing.assert_array_equal(proto_to_ndarray(proto), halves)


def test_a_single_value_fills_the_shape() -> None:
    proto = tensor_pb2.TensorProto(
        dtype=types_pb2.DT_FLOAT, tensor_shape=shape_proto([2, 3]), float_val=[7.0]
    )
    np.testing.assert_array_equal(proto_to_ndarray(proto), np.full((2, 3), 7.0, dtype=np.float32))


@pytest.mark.parametrize(
    "proto",
    [
        tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, tensor_shape=shape_proto([4]), float_val=[1.0, 2.0]),
        tensor_pb2.TensorProto(
            dtype=types_pb2.DT_FLOAT, tensor_shape=shape_proto([4]), tensor_content=b"\x00" * 5
        ),
        tensor_pb2.TensorProto(dtype=types_pb2.DT_VARIANT, tensor_shape=shape_proto([1])),
    ],
    ids=["too-few-values", "content-size-mismatch", "unsupported-dtype"],
)
def test_malformed_tensors_are_rejected(proto: tensor_pb2.TensorProto) -> None:
    with pytest.raises(TensorConversionError):
        proto_to_ndarray(proto)


def test_unsupported_numpy_dtype() -> None:
    with pytest.raises(TensorConversionError, match="complex128"):
        ndarray_to_proto(np.zeros(2, dtype=np.complex128))
