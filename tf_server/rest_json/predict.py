"""Predict's JSON (``util/json_tensor.cc``): request bodies to ``TensorProto`` inputs, output
tensors to the answer.

Requests: ``{"signature_name": ..., "instances": [...]}`` (row format: one entry per batch item, an
object per item when the signature has several inputs) or ``{"inputs": ...}`` (columnar: one tensor,
or an object of named tensors); ``{"b64": "..."}`` is a binary string. Each JSON value must be of
the input's dtype as rapidjson sees it (``2.0`` is not an int32, ``true`` is not a number), lists
must be dense, and every input of the signature must be present; which dtypes JSON takes, and in
which range, is ``tf_server.dtypes``' table.

Answers: ``predictions`` (row format; a list of objects when there are several outputs) or
``outputs`` (columnar; the bare tensor for a single output), aliases sorted; string outputs whose
alias ends in ``_bytes`` as ``{"b64": ...}``. Error messages are upstream's.

Big numeric tensors take a fast path (one ``numpy.array`` call) only when it is certain to give what
the element-by-element rules give; anything else, errors included, goes through those rules.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2, types_pb2
from tensorflow.core.protobuf import meta_graph_pb2

from tf_server.dtypes import JSON_DTYPES
from tf_server.errors import ServingError, invalid_argument
from tf_server.rest_json.parser import (
    BASE64_KEY,
    TOO_BIG,
    decode_base64,
    fill_signature,
    format_error,
    is_base64_object,
    json_type,
    parse_json,
    to_bytes,
)
from tf_server.rest_json.writer import PrettyWriter, debug_string, float_tokens, quote, quote_bytes
from tf_server.tensors import short_dtype_name

ROW, COLUMNAR = "row", "columnar"  # JsonPredictRequestFormat
BYTES_SUFFIX = "_bytes"

InputInfos = Callable[[str], Mapping[str, meta_graph_pb2.TensorInfo]]


@dataclass
class _Tensor:
    """An output tensor ready for writing: dims, one JSON token per value, and whether the values
    are binary strings (base64 objects, which rapidjson lays out over several lines)."""

    dims: list[int]
    tokens: list[str]
    base64: bool = False


def _tokens(name: str, proto: tensor_pb2.TensorProto) -> _Tensor:
    """``AddSingleValueAndAdvance`` for every value of an output tensor."""
    dims = [dim.size for dim in proto.tensor_shape.dim]
    dtype = proto.dtype
    array = tf.make_ndarray(proto)
    if array.size == 0:
        return _Tensor(dims, [])
    values = array.ravel().tolist()
    if dtype in (types_pb2.DT_FLOAT, types_pb2.DT_DOUBLE):
        return _Tensor(dims, float_tokens(array))
    rule = JSON_DTYPES.get(dtype)
    if rule is not None and rule.json_range is not None:
        return _Tensor(dims, [str(v) for v in values])
    if dtype == types_pb2.DT_BOOL:
        return _Tensor(dims, ["true" if v else "false" for v in values])
    if dtype == types_pb2.DT_STRING:
        if name.endswith(BYTES_SUFFIX):
            return _Tensor(dims, [quote(base64.b64encode(v).decode("ascii")) for v in values], base64=True)
        return _Tensor(dims, [quote_bytes(v) for v in values])
    raise invalid_argument(f"Failed to write JSON value for tensor type: {short_dtype_name(dtype)}")


def _write_token(writer: PrettyWriter, tensor: _Tensor, offset: int) -> None:
    if tensor.base64:  # { "b64": "..." }, broken over lines even inside single-line arrays
        writer.start_object()
        writer.key(BASE64_KEY)
        writer.value(tensor.tokens[offset])
        writer.end_object()
    else:
        writer.value(tensor.tokens[offset])


def _write_values(writer: PrettyWriter, tensor: _Tensor, dim: int, offset: int) -> int:
    """``AddTensorValues``: nested arrays from ``dim`` on; returns the next value's offset."""
    dims = tensor.dims
    if dim > len(dims) - 1:
        _write_token(writer, tensor, offset)
        return offset + 1
    size = dims[dim]
    if dim == len(dims) - 1:
        if tensor.base64:
            writer.start_array()
            for index in range(offset, offset + size):
                _write_token(writer, tensor, index)
            writer.end_array()
        else:
            writer.array_of(tensor.tokens[offset : offset + size])
        return offset + size
    writer.start_array()
    for _ in range(size):
        offset = _write_values(writer, tensor, dim + 1, offset)
    writer.end_array()
    return offset


def make_json_from_tensors(outputs: Mapping[str, tensor_pb2.TensorProto], request_format: str) -> str:
    """``MakeJsonFromTensors``: ``predictions`` (row) or ``outputs`` (columnar); aliases sorted."""
    if not outputs:
        raise invalid_argument("Cannot convert empty tensor map to JSON")
    names = sorted(outputs)
    writer = PrettyWriter()
    several = len(names) > 1
    if request_format == ROW:
        batch = -1
        for name in names:
            dims = outputs[name].tensor_shape.dim
            if not dims:
                raise invalid_argument(f"Tensor name: {name} has no shape information ")
            if batch >= 0 and batch != dims[0].size:
                raise invalid_argument(
                    f"Tensor name: {name} has inconsistent batch size: {dims[0].size} expecting: {batch}"
                )
            batch = dims[0].size
        tensors = {name: _tokens(name, outputs[name]) for name in names}
        offsets = dict.fromkeys(names, 0)
        writer.start_object()
        writer.key("predictions")
        writer.start_array()
        for _ in range(batch):
            if several:
                writer.start_object()
            writer.single_line = True
            for name in names:
                if several:
                    writer.key(name)
                offsets[name] = _write_values(writer, tensors[name], 1, offsets[name])
            writer.single_line = False
            if several:
                writer.end_object()
        writer.end_array()
        writer.end_object()
    elif request_format == COLUMNAR:
        writer.start_object()
        writer.key("outputs")
        if several:
            writer.start_object()
        for name in names:
            if several:
                writer.key(name)
            _write_values(writer, _tokens(name, outputs[name]), 0, 0)
        if several:
            writer.end_object()
        writer.end_object()
    else:
        raise invalid_argument("Invalid request format")
    return writer.text()


def _type_error(value: Any, dtype: int) -> ServingError:
    return invalid_argument(
        f"JSON Value: {debug_string(value)} Type: {json_type(value)} is not of expected type: "
        f"{short_dtype_name(dtype)}"
    )


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _scalar(value: Any, dtype: int) -> Any:
    """``AddValueToTensor``: the value for the dtype's typed field, or the error."""
    rule = JSON_DTYPES.get(dtype)
    if rule is None:
        raise ServingError(
            grpc.StatusCode.UNIMPLEMENTED,
            f"Conversion of JSON Value: {debug_string(value)} to type: {short_dtype_name(dtype)}",
        )
    bounds = rule.json_range
    if dtype in (types_pb2.DT_FLOAT, types_pb2.DT_DOUBLE):
        if not _is_number(value):
            raise _type_error(value, dtype)
        try:
            return float(value)
        except OverflowError:  # parse_json refuses such numbers already
            raise invalid_argument(f"JSON Parse error: {TOO_BIG}") from None
    if dtype == types_pb2.DT_STRING:
        if not isinstance(value, str):
            raise _type_error(value, dtype)
        return to_bytes(value)
    if dtype == types_pb2.DT_BOOL:
        if not isinstance(value, bool):
            raise _type_error(value, dtype)
        return value
    assert bounds is not None
    if not (isinstance(value, int) and not isinstance(value, bool) and bounds[0] <= value <= bounds[1]):
        raise _type_error(value, dtype)
    # Narrow ints travel as int32 and are cast by TensorFlow (static_cast: they wrap around).
    return int(np.array(value, dtype=np.int64).astype(rule.numpy)) if rule.narrow else value


def _dense_shape(value: Any) -> list[int]:
    """``GetDenseTensorShape``: sizes along the first elements."""
    dims: list[int] = []
    while isinstance(value, list):
        dims.append(len(value))
        if not value:
            break
        value = value[0]
    return dims


def _fill_values(value: Any, level: int, dtype: int, dims: list[int], out: list[Any]) -> None:
    """``FillTensorProto``: append the values of a dense nested list (checked against ``dims``)."""
    rank = len(dims)
    if not isinstance(value, list):
        if level != rank:
            raise invalid_argument(
                f"JSON Value: {debug_string(value)} found at incorrect level: {level + 1} in the JSON DOM. "
                f"Expected at level: {rank}"
            )
        if isinstance(value, dict):
            if dtype != types_pb2.DT_STRING:
                raise _type_error(value, dtype)
            out.append(decode_base64(value))
        else:
            out.append(_scalar(value, dtype))
        return
    if level >= rank:
        raise invalid_argument(f"Encountered list at unexpected level: {level} expected < {rank}")
    if len(value) != dims[level]:
        raise invalid_argument(
            f"Encountered list at unexpected size: {len(value)} at level: {level} "
            f"expected size: {dims[level]}"
        )
    for item in value:
        _fill_values(item, level + 1, dtype, dims, out)


def _fast_array(value: Any, dtype: int, no_bools: bool) -> np.ndarray | None:
    """The tensor in one numpy call when the element rules would surely accept every value the
    same way; None sends the caller to those rules. ``no_bools``: the body has no true/false
    (numpy would quietly turn them into numbers)."""
    rule = JSON_DTYPES.get(dtype)
    if rule is None or rule.numpy is None:
        return None
    try:
        array = np.array(value)
    except (ValueError, TypeError, OverflowError):
        return None
    kind = array.dtype.kind
    if dtype == types_pb2.DT_BOOL:
        return array if kind == "b" and array.size else None
    if not no_bools or not array.size:
        return None
    if dtype in (types_pb2.DT_FLOAT, types_pb2.DT_DOUBLE):
        # float32 via double, as rapidjson's GetFloat() rounds
        if kind not in "iuf":
            return None
        with np.errstate(over="ignore"):  # beyond float32: +-inf, as the C++ cast gives
            return array.astype(np.float64).astype(rule.numpy)
    low, high = rule.json_range  # type: ignore[misc]
    if kind not in "iu" or array.min() < low or array.max() > high:
        return None
    return array.astype(rule.numpy)  # narrow ints wrap, as TensorFlow's cast from int32 does


def _proto_from_array(array: np.ndarray, dtype: int) -> tensor_pb2.TensorProto:
    proto = tensor_pb2.TensorProto(dtype=dtype, tensor_content=np.ascontiguousarray(array).tobytes())
    for size in array.shape:
        proto.tensor_shape.dim.add(size=size)
    return proto


def _proto_from_values(dtype: int, dims: list[int], values: list[Any]) -> tensor_pb2.TensorProto:
    proto = tensor_pb2.TensorProto(dtype=dtype)
    for size in dims:
        proto.tensor_shape.dim.add(size=size)
    if values:  # values were parsed for one of JSON's dtypes; an empty list needs no field (any dtype)
        getattr(proto, JSON_DTYPES[dtype].field).extend(values)
    return proto


def _status_text(error: ServingError) -> str:
    return f"{error.code.name}: {error.message}"


def _shape_text(dims: list[int]) -> str:
    return "[" + ",".join(str(d) for d in dims) + "]"


def _instances_by_rules(
    instances: list[Any], infos: Mapping[str, meta_graph_pb2.TensorInfo]
) -> dict[str, tensor_pb2.TensorProto]:
    """``FillTensorMapFromInstancesList``, value by value."""
    objects = isinstance(instances[0], dict) and not is_base64_object(instances[0])
    input_names = sorted(infos)
    values: dict[str, list[Any]] = {}
    shapes: dict[str, list[int]] = {}
    sizes: dict[str, int] = {}

    def add_item(item: Any, name: str) -> None:  # AddInstanceItem
        if name not in infos:
            raise invalid_argument(f"JSON object: does not have named input: {name}")
        dims = _dense_shape(item)
        out = values.setdefault(name, [])
        before = len(out)
        _fill_values(item, 0, infos[name].dtype, dims, out)
        size = len(out) - before
        if name not in sizes:
            sizes[name], shapes[name] = size, dims
        elif sizes[name] != size:
            raise invalid_argument(f"Expecting tensor size: {sizes[name]} but got: {size}")
        elif shapes[name] != dims:
            raise invalid_argument(
                f"Expecting shape {_shape_text(shapes[name])} but got: {_shape_text(dims)}"
            )

    for index, element in enumerate(instances):
        element_is_object = isinstance(element, dict) and not is_base64_object(element)
        if objects:
            if not element_is_object:
                raise invalid_argument(f"Expecting object but got list at item {index} of input list")
            for name, item in element.items():
                try:
                    add_item(item, name)
                except ServingError as error:
                    raise invalid_argument(
                        f"Failed to process element: {index} key: {name} of 'instances' list. "
                        f"Error: {_status_text(error)}"
                    ) from None
            if set(element) != set(input_names):
                raise invalid_argument(
                    f"Failed to process element: {index} of 'instances' list. JSON object: "
                    f"{debug_string(element)} keys must be equal to: {','.join(input_names)}"
                )
        else:
            if element_is_object:
                raise invalid_argument(f"Expecting value/list but got object at item {index} of input list")
            name = next(iter(infos))
            try:
                add_item(element, name)
            except ServingError as error:
                raise invalid_argument(
                    f"Failed to process element: {index} of 'instances' list. Error: {_status_text(error)}"
                ) from None
    return {
        name: _proto_from_values(infos[name].dtype, [len(instances), *shapes[name]], values[name])
        for name in values
    }


def _instances(
    instances: list[Any], infos: Mapping[str, meta_graph_pb2.TensorInfo], no_bools: bool
) -> dict[str, tensor_pb2.TensorProto]:
    if not isinstance(instances[0], dict) and len(infos) > 1:
        raise invalid_argument(
            "instances is a plain list, but expecting list of objects as multiple input tensors required "
            "as per tensorinfo_map"
        )
    names = set(infos)
    fast: dict[str, tensor_pb2.TensorProto] = {}
    if isinstance(instances[0], dict) and not is_base64_object(instances[0]):
        if all(isinstance(e, dict) and set(e) == names for e in instances):
            for name in names:
                array = _fast_array([e[name] for e in instances], infos[name].dtype, no_bools)
                if array is None:
                    break
                fast[name] = _proto_from_array(array, infos[name].dtype)
            else:
                return fast
    else:
        name = next(iter(infos))
        array = _fast_array(instances, infos[name].dtype, no_bools)
        if array is not None and array.ndim >= 1:
            return {name: _proto_from_array(array, infos[name].dtype)}
    return _instances_by_rules(instances, infos)


def _columnar_tensor(value: Any, dtype: int, no_bools: bool) -> tensor_pb2.TensorProto:
    array = _fast_array(value, dtype, no_bools)
    if array is not None:
        return _proto_from_array(array, dtype)
    dims = _dense_shape(value)
    out: list[Any] = []
    _fill_values(value, 0, dtype, dims, out)
    return _proto_from_values(dtype, dims, out)


def _columnar(
    value: Any, infos: Mapping[str, meta_graph_pb2.TensorInfo], no_bools: bool
) -> dict[str, tensor_pb2.TensorProto]:
    """``FillTensorMapFromInputsMap``: one tensor, or an object with every input (others ignored)."""
    if not isinstance(value, dict) or is_base64_object(value):
        if len(infos) > 1:
            raise invalid_argument(
                "inputs is a plain value/list, but expecting an object as multiple input tensors required "
                "as per tensorinfo_map"
            )
        name = next(iter(infos))
        return {name: _columnar_tensor(value, infos[name].dtype, no_bools)}
    tensors = {}
    for name, info in infos.items():
        if name not in value:
            raise invalid_argument(f"Missing named input: {name} in 'inputs' object.")
        tensors[name] = _columnar_tensor(value[name], info.dtype, no_bools)
    return tensors


def fill_predict_request(body: bytes, input_infos: InputInfos, request: Any) -> str:
    """``FillPredictRequestFromJson``: fill ``request`` (model_spec name/version already set);
    return ROW or COLUMNAR. ``input_infos(signature_name)`` gives the signature's inputs."""
    document = parse_json(body)
    fill_signature(document, request)
    signature_name = request.model_spec.signature_name
    infos = input_infos(signature_name)
    if not infos:
        raise invalid_argument(f"Failed to get input map for signature: {signature_name or 'DEFAULT'}")
    no_bools = b"true" not in body and b"false" not in body
    if "instances" in document:
        if "inputs" in document:
            raise format_error(
                document,
                "Not formatted correctly expecting only one of 'inputs' or 'instances' keys to exist ",
            )
        instances = document["instances"]
        if not isinstance(instances, list):
            raise format_error(document, "Expecting 'instances' to be an list/array")
        if not instances:
            raise format_error(document, "No values in 'instances' array")
        tensors, request_format = _instances(instances, infos, no_bools), ROW
    elif "inputs" in document:
        tensors, request_format = _columnar(document["inputs"], infos, no_bools), COLUMNAR
    else:
        raise invalid_argument("Missing 'inputs' or 'instances' key")
    for name, proto in tensors.items():
        request.inputs[name].CopyFrom(proto)
    return request_format
