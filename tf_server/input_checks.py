"""Request tensors checked before TensorFlow sees them, so that no request can take the server down.

TF Serving leaves shapes to the graph, and so does this server where the graph answers for itself:
a ``[3]`` tensor fed to a ``[-1,1]`` input still runs when the graph broadcasts it, as upstream's
own tests expect. Three kinds of request never reach TensorFlow, because there a kernel, not the
graph, would decide what happens:

* **Sizes that cannot be.** Negative dimensions, and tensors claiming more than
  ``MAX_TENSOR_BYTES`` once decoded (TF's typed-field rule lets one value fill any shape, so a
  40-byte message can claim terabytes), are refused before anything is allocated.
  ``tensor_content`` must hold exactly the bytes its shape needs.
* **Pictures and volumes at the wrong rank.** An input the signature declares with rank 3 or more
  (images ``[N,H,W,C]``, videos, volumes) must arrive with that rank. oneDNN's convolution kernels
  (TensorFlow's default on AVX-512 CPUs) abort the whole process with a ``CHECK`` on a rank they do
  not expect, where Eigen's answer INVALID_ARGUMENT. Sizes stay the graph's business (a batch of 2
  to a ``[1,-1,-1,3]`` input runs if the ops take it), and inputs of rank 0 to 2 keep TF Serving's
  broadcasting.

Errors that oneDNN's kernels raise as ``ABORTED`` for sizes they cannot lay out ("could not create a
descriptor") are answered INVALID_ARGUMENT (``kernel_error_code``), the status of a bad input.
"""

from __future__ import annotations

from collections.abc import Mapping
from math import prod

import grpc
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2
from tensorflow.core.protobuf import meta_graph_pb2

from tf_server.errors import invalid_argument
from tf_server.tensors import describe_inputs, dtype_name, format_dims, shape_dims

MAX_TENSOR_BYTES = 1 << 30  # per request tensor, decoded; the same cap as a REST request body
STRICT_RANK = 3  # inputs declared with this rank or more must be sent at their declared rank
STRING_OVERHEAD_BYTES = 8  # what one element of a string tensor costs at least once decoded
_ONEDNN_ABORTS = ("Compute received an exception", "Operation received an exception")


def _itemsize(dtype: int) -> int | None:
    """Bytes per element, None for strings and other variable-size types (TensorFlow's own table)."""
    size = tf.dtypes.as_dtype(dtype).size
    return size or None


def check_request_tensor(
    alias: str,
    proto: tensor_pb2.TensorProto,
    expected: meta_graph_pb2.TensorInfo,
    signature_name: str,
    inputs: Mapping[str, meta_graph_pb2.TensorInfo],
) -> None:
    """Raise INVALID_ARGUMENT for a request tensor no kernel should be handed (see the module
    docstring); the dtype has already been checked against the signature."""
    dims = tuple(dim.size for dim in proto.tensor_shape.dim)
    sent = format_dims(dims)

    def refuse(problem: str) -> None:
        expects = describe_inputs(inputs)
        raise invalid_argument(f"input '{alias}' {problem}. Signature '{signature_name}' expects {expects}")

    for position, size in enumerate(dims):
        if size < 0:
            refuse(f"has shape {sent}: dimension {position} is {size}; sizes must be 0 or more")
    count = prod(dims)
    itemsize = _itemsize(proto.dtype)
    claimed = count * (itemsize or STRING_OVERHEAD_BYTES)
    if claimed > MAX_TENSOR_BYTES:
        refuse(
            f"claims shape {sent} of {dtype_name(proto.dtype)}: {count} values, {claimed} bytes once "
            f"decoded, over the model server's limit of {MAX_TENSOR_BYTES} bytes per request tensor"
        )
    if proto.tensor_content and itemsize is not None and len(proto.tensor_content) != claimed:
        refuse(
            f"has {len(proto.tensor_content)} bytes of tensor_content, but shape {sent} of "
            f"{dtype_name(proto.dtype)} needs {claimed}"
        )
    declared = shape_dims(expected.tensor_shape)
    if declared is not None and len(declared) >= STRICT_RANK and len(dims) != len(declared):
        refuse(f"has shape {sent} (rank {len(dims)}), but the signature declares rank {len(declared)}")


def kernel_error_code(code: grpc.StatusCode, message: str) -> grpc.StatusCode:
    """The status to answer for an error TensorFlow raised while running the graph: oneDNN's
    kernels turn input they cannot lay out into ABORTED, which Eigen's (TF Serving's) report as
    INVALID_ARGUMENT."""
    if code == grpc.StatusCode.ABORTED and message.startswith(_ONEDNN_ABORTS):
        return grpc.StatusCode.INVALID_ARGUMENT
    return code
