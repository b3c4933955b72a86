"""What models there are and how to talk to each: models.config, GetModelStatus, GetModelMetadata.

The model list comes from the same ``models.config`` (a ``ModelServerConfig`` text proto) the model
server reads, re-read when the file changes. Each model's signature is discovered with
``GetModelMetadata`` and cached per version (a version's SavedModel never changes); which version
is "latest" (or behind a version label) is re-resolved every few seconds. The input kind and the
output convention are derived from the signature alone: nothing is hard-coded per model.
"""

from __future__ import annotations

import enum
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from google.protobuf import text_format

from web.errors import (
    BadRequest,
    ConfigurationError,
    GatewayError,
    LabelMapError,
    ModelNotFound,
    ModelServerError,
)
from web.label_maps import LabelMap, load_label_map
from web.postprocess import Convention
from web.protos.tensorflow.core.framework import types_pb2
from web.protos.tensorflow.core.protobuf import meta_graph_pb2
from web.protos.tensorflow_serving.apis import get_model_metadata_pb2, get_model_status_pb2
from web.protos.tensorflow_serving.config import model_server_config_pb2
from web.serving_client import ServingClient
from web.tensors import dtype_name, shape_of

DEFAULT_SIGNATURE = "serving_default"
PREDICT_METHOD = "tensorflow/serving/predict"
LABEL_FILES = ("label_map.pbtxt", "labels.txt")
RESOLVE_TTL_S = 5.0
DETECTION_OUTPUTS = ("detection_boxes", "detection_scores", "detection_classes")
OPTIONAL_DETECTION_OUTPUTS = ("num_detections", "detection_masks", "image_info")
SCORE_OUTPUT_NAMES = ("probabilities", "probs", "scores", "predictions", "logits", "output_0")
FLOAT_DTYPES = (types_pb2.DT_FLOAT, types_pb2.DT_HALF, types_pb2.DT_DOUBLE)


class InputKind(enum.StrEnum):
    ENCODED = "encoded_image_string"
    UINT8 = "uint8_image"
    FLOAT = "float_image"


@dataclass(frozen=True)
class ModelEntry:
    """A model named in models.config; `base_path` resolved against the config file's folder."""

    name: str
    base_path: Path


@dataclass(frozen=True)
class VersionState:
    version: int
    state: str


@dataclass(frozen=True)
class TensorSpec:
    """One input or output of a signature: its key, dtype enum and shape (-1 unknown, None unknown rank)."""

    key: str
    dtype: int
    shape: tuple[int, ...] | None

    def to_dict(self) -> dict:
        return {"dtype": dtype_name(self.dtype), "shape": None if self.shape is None else list(self.shape)}


@dataclass(frozen=True)
class ImageInput:
    """How to feed an image: which input, what kind, the batch dimension and any fixed size."""

    key: str
    kind: InputKind
    dtype: int
    batch: int | None  # None: no batch dimension; -1: any; n: exactly n
    height: int | None  # fixed input height, or None when the model takes any size
    width: int | None

    @property
    def fixed_size(self) -> tuple[int, int] | None:
        return (self.width, self.height) if self.width and self.height else None


@dataclass(frozen=True)
class ModelSignature:
    """A model version's serving signature and what the gateway makes of it."""

    model: str
    version: int
    name: str
    inputs: dict[str, TensorSpec]
    outputs: dict[str, TensorSpec]
    image_input: ImageInput | None
    kind: str  # detection | segmentation | classification | unknown
    convention: Convention | None
    score_output: str | None = None
    classes_output: str | None = None
    problem: str | None = None  # why the gateway cannot use this signature, if it cannot

    def output_filter(self) -> list[str]:
        """The outputs the gateway reads (so the server skips e.g. raw_detection_scores)."""
        if self.kind in ("detection", "segmentation"):
            wanted = DETECTION_OUTPUTS + OPTIONAL_DETECTION_OUTPUTS
        elif self.kind == "classification":
            wanted = (self.score_output, self.classes_output)
        else:
            return []
        return [key for key in wanted if key and key in self.outputs]

    def same_input_as(self, other: ModelSignature) -> bool:
        return self.name == other.name and self.image_input == other.image_input


def read_model_config(path: Path) -> list[ModelEntry]:
    """The models of a ModelServerConfig text proto (TF Serving's --model_config_file)."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigurationError(
            f"cannot read MODEL_CONFIG_FILE {path}: {exc.strerror}; "
            "point it at the model server's models.config"
        ) from None
    config = model_server_config_pb2.ModelServerConfig()
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as exc:
        raise ConfigurationError(
            f"MODEL_CONFIG_FILE {path} is not a valid ModelServerConfig: {exc}"
        ) from None
    entries = []
    for model in config.model_config_list.config:
        base = Path(model.base_path)
        if not base.is_absolute():
            base = path.parent / base
        entries.append(ModelEntry(model.name, base))
    return entries


def parse_signature(
    model: str, version: int, metadata: get_model_metadata_pb2.GetModelMetadataResponse
) -> ModelSignature:
    """Pick the serving signature from GetModelMetadata and classify its input and outputs."""
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
    image_input, problem = _image_input(inputs, set(sig.defaults))
    kind, convention, score, classes = _outputs_kind(outputs)
    if problem is None and kind == "unknown":
        problem = (
            f"outputs {', '.join(sorted(outputs))} are neither detection outputs "
            f"({', '.join(DETECTION_OUTPUTS)}) "
            "nor a [batch, classes] score tensor"
        )
    return ModelSignature(
        model, version, name, inputs, outputs, image_input, kind, convention, score, classes, problem
    )


def _specs(infos: dict[str, meta_graph_pb2.TensorInfo]) -> dict[str, TensorSpec]:
    return {
        key: TensorSpec(key, info.dtype, shape_of(info.tensor_shape)) for key, info in sorted(infos.items())
    }


def _image_input(
    inputs: dict[str, TensorSpec], with_defaults: set[str]
) -> tuple[ImageInput | None, str | None]:
    required = [spec for key, spec in inputs.items() if key not in with_defaults]
    if len(required) != 1:
        names = ", ".join(inputs) or "none"
        return None, f"the gateway feeds exactly one image input; this signature requires inputs: {names}"
    spec = required[0]
    shape = spec.shape
    if spec.dtype == types_pb2.DT_STRING:
        if shape is not None and len(shape) > 1:
            return None, f"string input '{spec.key}' must have shape [] or [batch], not {list(shape)}"
        batch = None if shape is not None and len(shape) == 0 else (shape[0] if shape else -1)
        return ImageInput(spec.key, InputKind.ENCODED, spec.dtype, batch, None, None), None
    if spec.dtype in (types_pb2.DT_UINT8, *FLOAT_DTYPES) and shape is not None and len(shape) in (3, 4):
        batch = shape[0] if len(shape) == 4 else None
        height, width, channels = shape[-3:]
        if channels not in (3, -1):
            return None, f"image input '{spec.key}' has {channels} channels; the gateway sends RGB (3)"
        kind = InputKind.UINT8 if spec.dtype == types_pb2.DT_UINT8 else InputKind.FLOAT
        return ImageInput(
            spec.key, kind, spec.dtype, batch, height if height > 0 else None, width if width > 0 else None
        ), None
    shape_text = "unknown rank" if shape is None else list(shape)
    return None, (
        f"input '{spec.key}' ({dtype_name(spec.dtype)}, {shape_text}) is not an image input: the gateway "
        "sends encoded image strings [batch] or uint8/float images [batch, height, width, 3]"
    )


def _outputs_kind(outputs: dict[str, TensorSpec]) -> tuple[str, Convention | None, str | None, str | None]:
    if all(key in outputs for key in DETECTION_OUTPUTS):
        kind = "segmentation" if "detection_masks" in outputs else "detection"
        convention = Convention.MODEL_GARDEN if "image_info" in outputs else Convention.OD_API
        return kind, convention, None, None
    scores = [
        spec
        for spec in outputs.values()
        if spec.dtype in FLOAT_DTYPES
        and spec.shape is not None
        and len(spec.shape) == 2
        and spec.key != "classes"
    ]
    if not scores:
        return "unknown", None, None, None
    named = [spec for name in SCORE_OUTPUT_NAMES for spec in scores if spec.key == name]
    score = (named or scores)[0].key
    classes = "classes" if "classes" in outputs else None
    return "classification", None, score, classes


class ModelRegistry:
    """The configured models, their version states, signatures (cached per version) and label maps."""

    def __init__(self, client: ServingClient, config_file: Path, models_dir: Path | None = None) -> None:
        self.client = client
        self.config_file = config_file
        self.models_dir = models_dir
        self._lock = threading.Lock()
        self._config: tuple[int, list[ModelEntry]] | None = None
        self._signatures: dict[tuple[str, int], ModelSignature] = {}
        self._resolved: dict[tuple[str, str | None], tuple[int, float]] = {}
        self._label_maps: dict[Path, tuple[int, LabelMap]] = {}

    # -- models.config -------------------------------------------------------------------------
    def entries(self) -> list[ModelEntry]:
        """The models in MODEL_CONFIG_FILE, re-read when the file changes."""
        try:
            mtime = self.config_file.stat().st_mtime_ns
        except OSError as exc:
            raise ConfigurationError(
                f"MODEL_CONFIG_FILE {self.config_file} cannot be read ({exc.strerror}); point it at the "
                "model server's models.config"
            ) from None
        cached = self._config
        if cached is None or cached[0] != mtime:
            cached = (mtime, read_model_config(self.config_file))
            self._config = cached
        return cached[1]

    def entry(self, name: str) -> ModelEntry:
        """The configured model `name`, or ModelNotFound listing the models that exist."""
        entries = self.entries()
        for entry in entries:
            if entry.name == name:
                return entry
        known = ", ".join(e.name for e in entries) or "none"
        raise ModelNotFound(f"unknown model '{name}': the models are {known} (GET /api/v1/models)")

    # -- versions and signatures ------------------------------------------------------------------
    def versions(self, name: str, *, timeout: float | None = None) -> list[VersionState]:
        """Every version the server knows of `name` with its state (AVAILABLE, LOADING, ...)."""
        try:
            response = self.client.get_model_status(name, timeout=timeout)
        except ModelNotFound:
            return []
        return sorted(
            (
                VersionState(int(s.version), get_model_status_pb2.ModelVersionStatus.State.Name(s.state))
                for s in response.model_version_status
            ),
            key=lambda v: v.version,
        )

    def signature(
        self, name: str, *, version: int | None = None, version_label: str | None = None
    ) -> ModelSignature:
        """The serving signature of a version (default: the latest), from cache or GetModelMetadata."""
        if version is not None:
            cached = self._signatures.get((name, version))
            if cached is not None:
                return cached
        else:
            resolved = self._resolved.get((name, version_label))
            if resolved is not None and resolved[1] > time.monotonic():
                cached = self._signatures.get((name, resolved[0]))
                if cached is not None:
                    return cached
        try:
            metadata = self.client.get_model_metadata(name, version=version, version_label=version_label)
        except BadRequest as exc:
            # TF Serving answers INVALID_ARGUMENT for an unknown version label; to the user it is a 404.
            if version_label is not None and "label" in exc.message:
                raise self.version_not_found(name, version, version_label) from None
            raise
        except ModelNotFound as exc:
            if version is None and version_label is None:
                raise ModelNotFound(
                    f"model '{name}' has no loaded version on the model server ({exc.message})"
                ) from None
            raise self.version_not_found(name, version, version_label) from None
        actual = int(metadata.model_spec.version.value) if metadata.model_spec.HasField("version") else 0
        actual = actual or (version or 0)
        signature = parse_signature(name, actual, metadata)
        with self._lock:
            if actual:
                self._signatures[(name, actual)] = signature
            if version is None:
                self._resolved[(name, version_label)] = (actual, time.monotonic() + RESOLVE_TTL_S)
        return signature

    def forget_resolved(self, name: str) -> None:
        """Drop which version "latest" (or a label) meant for `name`; the next call asks the server."""
        with self._lock:
            for key in [key for key in self._resolved if key[0] == name]:
                del self._resolved[key]

    def version_not_found(self, name: str, version: int | None, label: str | None) -> ModelNotFound:
        """A 404 that names the versions the model does have."""
        try:
            states = self.versions(name)
        except GatewayError:  # the original NOT_FOUND is the error that matters
            states = []
        have = ", ".join(f"{v.version} ({v.state})" for v in states) or "none"
        asked = f"version {version}" if version is not None else f"version label '{label}'"
        return ModelNotFound(f"model '{name}' has no {asked}; its versions: {have}")

    # -- label maps ------------------------------------------------------------------------------
    def label_map_path(self, name: str) -> Path | None:
        """The label map stored beside the model (base_path, then MODELS_DIR/<name>), if any."""
        entry = self.entry(name)
        folders = [entry.base_path]
        if self.models_dir is not None:
            folders.append(self.models_dir / name)
        for folder in folders:
            for filename in LABEL_FILES:
                path = folder / filename
                if path.is_file():
                    return path
        return None

    def stored_label_map(self, name: str) -> LabelMap:
        """The stored label map of `name` (re-read when it changes), or an empty map (`class <id>`)."""
        path = self.label_map_path(name)
        if path is None:
            return LabelMap()
        mtime = path.stat().st_mtime_ns
        cached = self._label_maps.get(path)
        if cached is not None and cached[0] == mtime:
            return cached[1]
        try:
            label_map = load_label_map(path)
        except LabelMapError as exc:
            raise ConfigurationError(
                f"the label map stored for model '{name}' is broken ({exc.message}); "
                f"fix {path.name} or upload a label map with the request"
            ) from None
        self._label_maps[path] = (mtime, label_map)
        return label_map
