"""The model server's one table of dtypes: where a ``TensorProto`` keeps each dtype's values, and
which dtypes TF Serving's JSON reads and writes (``tf_server.tensors``, ``tf_server.rest_json``).

A ``TensorProto`` holds a dtype's values either in ``tensor_content`` or in one typed repeated field,
the one ``Tensor::AsProtoField`` fills. Float, double and complex values are fixed-width (``packed``):
a response writes them straight from the array's bytes. TF Serving's ``util/json_tensor.cc`` knows
fewer dtypes (``json``); it takes integers only within ``json_range`` (the narrow ints travel in
int32's range, in ``int_val``, and TensorFlow's cast wraps them around).

The gateway keeps its own table (``web/``): it imports no TensorFlow and nothing from here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from tensorflow.core.framework import tensor_pb2, types_pb2

INT32_RANGE = (-(2**31), 2**31 - 1)
INT64_RANGE = (-(2**63), 2**63 - 1)
UINT32_RANGE = (0, 2**32 - 1)
UINT64_RANGE = (0, 2**64 - 1)


@dataclass(frozen=True)
class DtypeRule:
    """How one dtype's values are stored in a TensorProto and read from JSON."""

    field: str  # the typed repeated field of TensorProto
    numpy: Any  # numpy type of one value (None: strings, bfloat16)
    packed: str | None = None  # little-endian numpy type of a packed fixed-width field's element
    json: bool = False  # TF Serving's JSON reads and writes this dtype
    json_range: tuple[int, int] | None = None  # the integers JSON may give (None: not an integer dtype)

    @property
    def field_number(self) -> int:
        return tensor_pb2.TensorProto.DESCRIPTOR.fields_by_name[self.field].number

    @property
    def plain(self) -> bool:
        """The values are listed as they are (not packed bytes, not half-float bit patterns)."""
        return self.packed is None and self.field != "half_val"

    @property
    def narrow(self) -> bool:
        """An integer dtype that JSON gives in int32's range and a cast wraps into fewer bits."""
        return self.json_range is not None and np.dtype(self.numpy).itemsize < 4


DTYPES: dict[int, DtypeRule] = {
    types_pb2.DT_FLOAT: DtypeRule("float_val", np.float32, packed="<f4", json=True),
    types_pb2.DT_DOUBLE: DtypeRule("double_val", np.float64, packed="<f8", json=True),
    types_pb2.DT_COMPLEX64: DtypeRule("scomplex_val", np.complex64, packed="<f4"),  # real, imaginary
    types_pb2.DT_COMPLEX128: DtypeRule("dcomplex_val", np.complex128, packed="<f8"),
    types_pb2.DT_INT32: DtypeRule("int_val", np.int32, json=True, json_range=INT32_RANGE),
    types_pb2.DT_INT16: DtypeRule("int_val", np.int16, json=True, json_range=INT32_RANGE),
    types_pb2.DT_INT8: DtypeRule("int_val", np.int8, json=True, json_range=INT32_RANGE),
    types_pb2.DT_UINT8: DtypeRule("int_val", np.uint8, json=True, json_range=INT32_RANGE),
    types_pb2.DT_UINT16: DtypeRule("int_val", np.uint16),
    types_pb2.DT_INT64: DtypeRule("int64_val", np.int64, json=True, json_range=INT64_RANGE),
    types_pb2.DT_UINT32: DtypeRule("uint32_val", np.uint32, json=True, json_range=UINT32_RANGE),
    types_pb2.DT_UINT64: DtypeRule("uint64_val", np.uint64, json=True, json_range=UINT64_RANGE),
    types_pb2.DT_BOOL: DtypeRule("bool_val", np.bool_, json=True),
    types_pb2.DT_STRING: DtypeRule("string_val", None, json=True),
    types_pb2.DT_HALF: DtypeRule("half_val", np.float16),  # the values' bit patterns
    types_pb2.DT_BFLOAT16: DtypeRule("half_val", None),
}
JSON_DTYPES: dict[int, DtypeRule] = {dtype: rule for dtype, rule in DTYPES.items() if rule.json}
