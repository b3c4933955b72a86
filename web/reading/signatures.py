"""A model version's serving signature, read from ``GetModelMetadata``, and which input is the image.

Pure data: names, dtypes and shapes of the inputs and outputs, nothing about what they mean. What
they mean (which model family wrote them) is decided by the adapters in ``web/reading/adapters``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from web.errors import ModelServerError
from web.serving.protos.tensorflow.core.framework import types_pb2
from web.serving.protos.tensorflow.core.protobuf import meta_graph_pb2
from web.serving.protos.tensorflow_serving.apis import get_model_metadata_pb2
from web.serving.tensors import dtype_name, shape_of

DEFAULT_SIGNATURE = "serving_default"
PREDICT_METHOD = "tensorflow/serving/predict"
FLOAT_DTYPES = frozenset({types_pb2.DT_FLOAT, types_pb2.DT_HALF, types_pb2.DT_DOUBLE})
INT_DTYPES = frozenset(
    {types_pb2.DT_INT8, types_pb2.DT_INT16, types_pb2.DT_INT32, types_pb2.DT_INT64, types_pb2.DT_UINT8}
)


class InputKind(enum.StrEnum):
    ENCODED = "encoded_image_string"
    UINT8 = "uint8_image"
    FLOAT = "float_image"


@dataclass(frozen=True)
class TensorSpec:
    """One input or output of a signature: its key, dtype enum and shape (-1 unknown, None unknown rank)."""

    key: str
    dtype: int
    shape: tuple[int, ...] | None

    @property
    def rank(self) -> int | None:
        return None if self.shape is None else len(self.shape)

    @property
    def is_float(self) -> bool:
        return self.dtype in FLOAT_DTYPES

    @property
    def is_int(self) -> bool:
        return self.dtype in INT_DTYPES

    def dim(self, axis: int) -> int:
        """The size of `axis` (negative counts from the end), -1 when unknown."""
        assert self.shape is not None
        return self.shape[axis]

    def describe(self) -> str:
        """`name float32 [1,100,4]` for messages."""
        shape = "unknown rank" if self.shape is None else "[" + ",".join(str(d) for d in self.shape) + "]"
        return f"{self.key} {dtype_name(self.dtype)} {shape}"

    def to_dict(self) -> dict:
        return {"dtype": dtype_name(self.dtype), "shape": None if self.shape is None else list(self.shape)}


@dataclass(frozen=True)
class ImageInput:
    """How to feed an image: which input, what kind, the batch dimension, any fixed size, channels."""

    key: str
    kind: InputKind
    dtype: int
    batch: int | None  # None: no batch dimension; -1: any; n: exactly n
    height: int | None  # fixed input height, or None when the model takes any size
    width: int | None
    channels: int = 3  # 3 (RGB/BGR) or 1 (grey)

    @property
    def fixed_size(self) -> tuple[int, int] | None:
        """(width, height) when the model takes one size only."""
        return (self.width, self.height) if self.width and self.height else None

    def to_dict(self) -> dict:
        fixed = self.fixed_size
        return {
            "name": self.key,
            "kind": str(self.kind),
            "fixed_size": None if not fixed else {"width": fixed[0], "height": fixed[1]},
            "channels": self.channels,
        }


@dataclass(frozen=True)
class ModelSignature:
    """A model version's serving signature: its name, inputs and outputs, and the image input."""

    model: str
    version: int
    name: str
    inputs: dict[str, TensorSpec]
    outputs: dict[str, TensorSpec]
    required_inputs: tuple[str, ...]
    image_input: ImageInput | None
    input_problem: str | None = None  # why no input can take an image, if none can

    def describe_outputs(self) -> str:
        return "; ".join(spec.describe() for spec in self.outputs.values()) or "none"

    def describe_inputs(self) -> str:
        return "; ".join(spec.describe() for spec in self.inputs.values()) or "none"


def parse_signature(
    model: str, version: int, metadata: get_model_metadata_pb2.GetModelMetadataResponse
) -> ModelSignature:
    """Pick the serving signature from GetModelMetadata and find its image input."""
    if "signature_def" not in metadata.metadata:
        raise ModelServerError(f"the model server sent no signature_def metadata for model '{model}'")
    signatures = get_model_metadata_pb2.SignatureDefMap()
    metadata.metadata["signature_def"].Unpack(signatures)
    defs = dict(signatures.signature_def)
    if DEFAULT_SIGNATURE in defs:
        name = DEFAULT_SIGNATURE
    else:
        predict = [
            key for key, sig in defs.items() if sig.method_name == PREDICT_METHOD and not key.startswith("__")
        ]
        if len(predict) != 1:
            raise ModelServerError(
                f"model '{model}' version {version} has no '{DEFAULT_SIGNATURE}' signature and "
                f"{len(predict)} predict signatures ({', '.join(sorted(predict)) or 'none'}); export it with "
                f"a '{DEFAULT_SIGNATURE}' signature"
            )
        name = predict[0]
    sig = defs[name]
    inputs = _specs(sig.inputs)
    outputs = _specs(sig.outputs)
    required = tuple(key for key in inputs if key not in set(sig.defaults))
    image_input, problem = find_image_input(inputs, required)
    return ModelSignature(model, version, name, inputs, outputs, required, image_input, problem)


def _specs(infos: dict[str, meta_graph_pb2.TensorInfo]) -> dict[str, TensorSpec]:
    return {
        key: TensorSpec(key, info.dtype, shape_of(info.tensor_shape)) for key, info in sorted(infos.items())
    }


def find_image_input(
    inputs: dict[str, TensorSpec], required: tuple[str, ...]
) -> tuple[ImageInput | None, str | None]:
    """The one required input, read as an image input; or None and the reason it cannot be one."""
    if len(required) != 1:
        names = ", ".join(inputs) or "none"
        return None, f"the gateway feeds exactly one image input; this signature requires inputs: {names}"
    spec = inputs[required[0]]
    shape = spec.shape
    if spec.dtype == types_pb2.DT_STRING:
        if shape is not None and len(shape) > 1:
            return None, f"string input '{spec.key}' must have shape [] or [batch], not {list(shape)}"
        batch = None if shape is not None and len(shape) == 0 else (shape[0] if shape else -1)
        return ImageInput(spec.key, InputKind.ENCODED, spec.dtype, batch, None, None), None
    if (spec.dtype == types_pb2.DT_UINT8 or spec.is_float) and shape is not None and len(shape) in (3, 4):
        batch = shape[0] if len(shape) == 4 else None
        height, width, channels = shape[-3:]
        if channels not in (1, 3, -1):
            return None, (
                f"image input '{spec.key}' has {channels} channels; the gateway sends RGB (3) or grey (1)"
            )
        kind = InputKind.UINT8 if spec.dtype == types_pb2.DT_UINT8 else InputKind.FLOAT
        return ImageInput(
            spec.key,
            kind,
            spec.dtype,
            batch,
            height if height > 0 else None,
            width if width > 0 else None,
            1 if channels == 1 else 3,
        ), None
    shape_text = "unknown rank" if shape is None else list(shape)
    return None, (
        f"input '{spec.key}' ({dtype_name(spec.dtype)}, {shape_text}) is not an image input: the gateway "
        "sends encoded image strings [batch] or uint8/float images [batch, height, width, 3]"
    )
