"""Signatures and readings built by hand, for unit tests of the adapters (no server, no TensorFlow)."""

from __future__ import annotations

from web.reading.adapters import ModelReading, read_model
from web.reading.model_settings import ModelSettings
from web.reading.signatures import ModelSignature, TensorSpec, find_image_input
from web.serving.protos.tensorflow.core.framework import types_pb2

DTYPES = {
    "float32": types_pb2.DT_FLOAT,
    "float16": types_pb2.DT_HALF,
    "uint8": types_pb2.DT_UINT8,
    "int32": types_pb2.DT_INT32,
    "int64": types_pb2.DT_INT64,
    "string": types_pb2.DT_STRING,
}
UINT8_IMAGE = {"input_tensor": ("uint8", (1, -1, -1, 3))}


def specs(tensors: dict[str, tuple[str, tuple[int, ...] | None]]) -> dict[str, TensorSpec]:
    return {key: TensorSpec(key, DTYPES[dtype], shape) for key, (dtype, shape) in sorted(tensors.items())}


def signature(
    outputs: dict[str, tuple[str, tuple[int, ...] | None]],
    inputs: dict[str, tuple[str, tuple[int, ...] | None]] | None = None,
    model: str = "m",
) -> ModelSignature:
    """A serving signature with these outputs and inputs (default: a uint8 OD API image input)."""
    input_specs = specs(inputs if inputs is not None else UINT8_IMAGE)
    required = tuple(input_specs)
    image_input, problem = find_image_input(input_specs, required)
    return ModelSignature(
        model, 1, "serving_default", input_specs, specs(outputs), required, image_input, problem
    )


def reading(
    outputs: dict[str, tuple[str, tuple[int, ...] | None]],
    inputs: dict[str, tuple[str, tuple[int, ...] | None]] | None = None,
    **settings,
) -> ModelReading:
    """What the gateway makes of such a signature with these gateway.toml settings."""
    return read_model(signature(outputs, inputs), ModelSettings(**settings), "models/m/gateway.toml")
