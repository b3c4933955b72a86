"""TensorProto <-> numpy, the way TF Serving does it, plus the checks of request tensors.

Requests may carry values in ``tensor_content`` or in the typed ``*_val`` fields (clients use
both); ``tf.make_ndarray`` reads either. Responses are written like TF Serving's default
``AsProtoField`` serialization: values in the typed repeated fields (``float_val``, ``int_val``,
``string_val`` ...), not ``tensor_content``, so a client that only works with one of the two forms
fails here exactly as it would against the real server. Float and double outputs (boxes, scores,
masks: nearly all of a detection response) are encoded straight from the array's bytes as a packed
field, which costs about as much as ``tensor_content`` instead of a Python loop per value. Which
field holds which dtype is ``tf_server.dtypes``' table.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
from tensorflow.core.protobuf import meta_graph_pb2

from tf_server.dtypes import DTYPES
from tf_server.errors import invalid_argument


def dtype_name(dtype: int) -> str:
    """``DT_UINT8`` for the enum value (what TF Serving prints in metadata)."""
    try:
        return types_pb2.DataType.Name(dtype)
    except ValueError:
        return f"DT_<{dtype}>"


def short_dtype_name(dtype: int) -> str:
    """``uint8`` for DT_UINT8, as TF's own error messages spell types."""
    name = dtype_name(dtype)
    return name[3:].lower() if name.startswith("DT_") else name


def shape_dims(shape: tensor_shape_pb2.TensorShapeProto) -> tuple[int, ...] | None:
    """Dimensions (-1 for unknown), or None for unknown rank."""
    if shape.unknown_rank:
        return None
    return tuple(dim.size for dim in shape.dim)


def format_dims(dims: tuple[int, ...] | None) -> str:
    return "<unknown rank>" if dims is None else "[" + ",".join(str(d) for d in dims) + "]"


def describe_inputs(inputs: Mapping[str, meta_graph_pb2.TensorInfo]) -> str:
    """``{input_tensor: DT_UINT8 [1,-1,-1,3]}``: what a request must send, for error messages."""
    parts = [
        f"{alias}: {dtype_name(info.dtype)} {format_dims(shape_dims(info.tensor_shape))}"
        for alias, info in sorted(inputs.items())
    ]
    return "{" + ", ".join(parts) + "}"


def check_dtype(
    alias: str,
    position: int,
    proto: tensor_pb2.TensorProto,
    expected: meta_graph_pb2.TensorInfo,
    signature_name: str,
    inputs: Mapping[str, meta_graph_pb2.TensorInfo],
) -> None:
    """Raise INVALID_ARGUMENT if ``proto`` has another dtype than the input (TensorFlow's own
    message, plus what the signature expects). Shapes are left to the graph, as in TF Serving."""
    if proto.dtype != expected.dtype:
        raise invalid_argument(
            f"Expects arg[{position}] to be {short_dtype_name(expected.dtype)} but "
            f"{short_dtype_name(proto.dtype)} is provided (input '{alias}'). "
            f"Signature '{signature_name}' expects inputs {describe_inputs(inputs)}"
        )


def to_ndarray(alias: str, proto: tensor_pb2.TensorProto) -> np.ndarray:
    """Decode a request tensor (tensor_content or typed fields)."""
    try:
        try:
            return tf.make_ndarray(proto)
        except OverflowError:
            # int_val holding 300 for a uint8 tensor: TensorFlow's Tensor::FromProto casts in C++, so
            # the value wraps (to 44) instead of failing; numpy refuses the direct conversion.
            return _wrapped_integers(proto)
    except (ValueError, TypeError) as error:
        raise invalid_argument(f"tensor parsing error: {alias} ({error})") from None


def _wrapped_integers(proto: tensor_pb2.TensorProto) -> np.ndarray:
    dtype = tf.dtypes.as_dtype(proto.dtype).as_numpy_dtype
    shape = [dim.size for dim in proto.tensor_shape.dim]
    rule = DTYPES.get(proto.dtype)
    field = rule.field if rule is not None and rule.plain else "int_val"
    values = np.array(getattr(proto, field), dtype=np.int64).astype(dtype)
    count = int(np.prod(shape)) if shape else 1
    if values.size == 1 and count != 1:  # one value fills the tensor, as TF reads the typed fields
        return np.full(shape, values[0], dtype=dtype)
    return values.reshape(shape)


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        bits = value & 0x7F
        value >>= 7
        if value:
            out.append(bits | 0x80)
        else:
            out.append(bits)
            return bytes(out)


def datatype_of(array: np.ndarray) -> int:
    """The TensorFlow DataType of a numpy array (bytes and object arrays are DT_STRING)."""
    if array.dtype == object or array.dtype.kind in ("S", "U"):
        return types_pb2.DT_STRING
    return tf.dtypes.as_dtype(array.dtype).as_datatype_enum


def encode_as_proto_field(array: np.ndarray) -> bytes:
    """Serialized TensorProto with the values in typed fields (TF Serving's response format)."""
    dtype = datatype_of(array)
    header = tensor_pb2.TensorProto(dtype=dtype)
    for size in array.shape:
        header.tensor_shape.dim.add(size=size)
    rule = DTYPES.get(dtype)
    if rule is None:  # quantized and other rare types: TF would also fall back to raw content
        return tf.make_tensor_proto(array).SerializeToString()
    if rule.packed is not None:
        field_number, element = rule.field_number, rule.packed
        if array.size == 0:
            return header.SerializeToString()
        if dtype == types_pb2.DT_COMPLEX64:  # real, imaginary interleaved
            data = np.ascontiguousarray(array, dtype="<c8").view(element)
        elif dtype == types_pb2.DT_COMPLEX128:
            data = np.ascontiguousarray(array, dtype="<c16").view(element)
        else:
            data = np.ascontiguousarray(array, dtype=element)
        raw = data.tobytes()
        return header.SerializeToString() + _varint(field_number << 3 | 2) + _varint(len(raw)) + raw
    if rule.field == "string_val":
        header.string_val.extend(v if isinstance(v, bytes) else str(v).encode() for v in array.ravel())
    elif rule.field == "half_val":  # DT_HALF, DT_BFLOAT16: the bit patterns
        header.half_val.extend(array.ravel().view(np.uint16).tolist())
    else:
        getattr(header, rule.field).extend(array.ravel().tolist())
    return header.SerializeToString()
