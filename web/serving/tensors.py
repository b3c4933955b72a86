"""numpy <-> ``tensorflow.TensorProto`` without the TensorFlow runtime.

Numeric tensors travel as little-endian bytes in ``tensor_content`` (one copy, no per-element
protobuf fields); responses are read back with ``np.frombuffer``. Servers may instead fill the
typed ``*_val`` fields (and may send a single value meaning "every element"), so those are read too.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from web.serving.protos.tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2

_NUMPY_BY_DTYPE: dict[int, np.dtype] = {
    types_pb2.DT_FLOAT: np.dtype("<f4"),
    types_pb2.DT_DOUBLE: np.dtype("<f8"),
    types_pb2.DT_HALF: np.dtype("<f2"),
    types_pb2.DT_INT8: np.dtype("i1"),
    types_pb2.DT_INT16: np.dtype("<i2"),
    types_pb2.DT_INT32: np.dtype("<i4"),
    types_pb2.DT_INT64: np.dtype("<i8"),
    types_pb2.DT_UINT8: np.dtype("u1"),
    types_pb2.DT_UINT16: np.dtype("<u2"),
    types_pb2.DT_UINT32: np.dtype("<u4"),
    types_pb2.DT_UINT64: np.dtype("<u8"),
    types_pb2.DT_BOOL: np.dtype("?"),
}
_DTYPE_BY_NUMPY: dict[np.dtype, int] = {dt.newbyteorder("="): enum for enum, dt in _NUMPY_BY_DTYPE.items()}

# Which typed field carries the values of each dtype when tensor_content is empty.
_VAL_FIELD: dict[int, str] = {
    types_pb2.DT_FLOAT: "float_val",
    types_pb2.DT_DOUBLE: "double_val",
    types_pb2.DT_HALF: "half_val",
    types_pb2.DT_INT8: "int_val",
    types_pb2.DT_INT16: "int_val",
    types_pb2.DT_INT32: "int_val",
    types_pb2.DT_UINT8: "int_val",
    types_pb2.DT_UINT16: "int_val",
    types_pb2.DT_INT64: "int64_val",
    types_pb2.DT_UINT32: "uint32_val",
    types_pb2.DT_UINT64: "uint64_val",
    types_pb2.DT_BOOL: "bool_val",
}


class TensorConversionError(ValueError):
    """A tensor cannot be converted (unsupported dtype, or values that do not fill the shape)."""


def dtype_name(dtype: int) -> str:
    """`DT_FLOAT` -> "float32"-style names for messages and the API ("string" for DT_STRING)."""
    if dtype == types_pb2.DT_STRING:
        return "string"
    if dtype in _NUMPY_BY_DTYPE:
        return _NUMPY_BY_DTYPE[dtype].name
    return types_pb2.DataType.Name(dtype).removeprefix("DT_").lower()


def shape_proto(shape: Sequence[int]) -> tensor_shape_pb2.TensorShapeProto:
    return tensor_shape_pb2.TensorShapeProto(
        dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=int(d)) for d in shape]
    )


def shape_of(shape: tensor_shape_pb2.TensorShapeProto) -> tuple[int, ...] | None:
    """A TensorShapeProto as a tuple (-1 for unknown dimensions), None for unknown rank."""
    if shape.unknown_rank:
        return None
    return tuple(int(d.size) for d in shape.dim)


def ndarray_to_proto(array: np.ndarray, out: tensor_pb2.TensorProto | None = None) -> tensor_pb2.TensorProto:
    """A numeric array as a TensorProto with `tensor_content` (little-endian, C order), written into
    `out` when given (a request's input: one copy of the pixels fewer than building and copying it)."""
    dtype = array.dtype.newbyteorder("=") if array.dtype.byteorder in "<>" else array.dtype
    if dtype not in _DTYPE_BY_NUMPY:
        raise TensorConversionError(f"cannot send numpy dtype {array.dtype} as a tensor")
    enum = _DTYPE_BY_NUMPY[dtype]
    data = np.ascontiguousarray(array, dtype=_NUMPY_BY_DTYPE[enum])
    tensor = tensor_pb2.TensorProto() if out is None else out
    tensor.dtype = enum
    tensor.tensor_shape.CopyFrom(shape_proto(array.shape))
    tensor.tensor_content = data.tobytes()
    return tensor


def strings_to_proto(
    values: Sequence[bytes], shape: Sequence[int] | None = None, out: tensor_pb2.TensorProto | None = None
) -> tensor_pb2.TensorProto:
    """Byte strings (e.g. encoded images, sent as they are) as a DT_STRING TensorProto (into `out`)."""
    shape = (len(values),) if shape is None else tuple(shape)
    if math.prod(shape) != len(values):
        raise TensorConversionError(f"{len(values)} strings do not fill shape {list(shape)}")
    tensor = tensor_pb2.TensorProto() if out is None else out
    tensor.dtype = types_pb2.DT_STRING
    tensor.tensor_shape.CopyFrom(shape_proto(shape))
    tensor.string_val.extend(values)
    return tensor


def proto_to_ndarray(proto: tensor_pb2.TensorProto) -> np.ndarray:
    """A TensorProto as a numpy array: `tensor_content` via np.frombuffer, else the typed fields."""
    shape = shape_of(proto.tensor_shape)
    if shape is None:
        raise TensorConversionError("tensor has unknown rank")
    size = math.prod(shape)
    if proto.dtype == types_pb2.DT_STRING:
        values = np.empty(len(proto.string_val), dtype=object)
        values[:] = list(proto.string_val)
        return _fill(values, shape, size, "string_val")
    if proto.dtype not in _NUMPY_BY_DTYPE:
        raise TensorConversionError(f"unsupported tensor dtype {types_pb2.DataType.Name(proto.dtype)}")
    dtype = _NUMPY_BY_DTYPE[proto.dtype]
    content = proto.tensor_content  # each read of a bytes field is a new copy: read it once
    if content:
        if len(content) != size * dtype.itemsize:
            raise TensorConversionError(
                f"tensor_content has {len(content)} bytes, shape {list(shape)} of {dtype.name} "
                f"needs {size * dtype.itemsize}"
            )
        return np.frombuffer(content, dtype=dtype).reshape(shape)
    field_name = _VAL_FIELD[proto.dtype]
    raw = getattr(proto, field_name)
    if proto.dtype == types_pb2.DT_HALF:  # half_val holds the 16-bit patterns as ints
        values = np.asarray(raw, dtype=np.uint16).view(np.float16)
    else:
        values = np.asarray(raw, dtype=dtype)
    return _fill(values, shape, size, field_name)


def _fill(values: np.ndarray, shape: tuple[int, ...], size: int, field_name: str) -> np.ndarray:
    if values.size == size:
        return values.reshape(shape)
    if values.size == 1:  # TensorFlow's convention: one value fills the whole tensor
        return np.full(shape, values[0], dtype=values.dtype)
    if values.size == 0 and size == 0:
        return values.reshape(shape)
    raise TensorConversionError(f"{field_name} has {values.size} values, shape {list(shape)} needs {size}")
