"""One loaded model version (a "servable" in TF Serving's words) and how it is loaded.

Signatures are read from the SavedModel's own MetaGraphDef (``saved_model.pb``), not rebuilt from
the loaded Python objects, so ``GetModelMetadata`` returns exactly the ``SignatureDefMap`` TF
Serving returns: every signature of the MetaGraphDef (``__saved_model_init_op`` included), with
the original dtypes, shapes and tensor names. The packed metadata is built once at load time, so
metadata calls cost a dictionary lookup.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tensorflow as tf
from google.protobuf import any_pb2, text_format
from tensorflow.core.protobuf import meta_graph_pb2, saved_model_pb2
from tensorflow_serving.apis import get_model_metadata_pb2

DEFAULT_SIGNATURE = "serving_default"


class LoadError(RuntimeError):
    """A version folder that cannot be served (yet): missing files, no matching tag set, bad graph."""


@dataclass(frozen=True)
class Signature:
    """A callable signature: its SignatureDef and the concrete function that runs it."""

    name: str
    definition: meta_graph_pb2.SignatureDef
    function: Callable[..., Mapping[str, Any]]
    input_order: tuple[str, ...]

    @property
    def inputs(self) -> Mapping[str, meta_graph_pb2.TensorInfo]:
        return self.definition.inputs

    @property
    def outputs(self) -> Mapping[str, meta_graph_pb2.TensorInfo]:
        return self.definition.outputs


@dataclass(frozen=True)
class Servable:
    """A model version ready to answer requests."""

    name: str
    version: int
    path: Path
    signatures: Mapping[str, Signature]
    signature_metadata: any_pb2.Any
    # Keeps the loaded SavedModel (variables, functions) alive as long as the servable is referenced,
    # so requests still in flight finish on a version that has just been retired.
    loaded: Any = field(repr=False, default=None)

    @property
    def id_text(self) -> str:
        """``{name: shapes version: 1}``, TF Serving's way of naming a servable in logs."""
        return f"{{name: {self.name} version: {self.version}}}"


def read_meta_graph(export_dir: Path, tags: Sequence[str]) -> meta_graph_pb2.MetaGraphDef:
    """The MetaGraphDef whose tag set equals ``tags`` (TF Serving's LoadSavedModel rule)."""
    saved_model = saved_model_pb2.SavedModel()
    binary = export_dir / "saved_model.pb"
    text = export_dir / "saved_model.pbtxt"
    try:
        if binary.is_file():
            saved_model.ParseFromString(binary.read_bytes())
        elif text.is_file():
            text_format.Parse(text.read_text(), saved_model)
        else:
            raise LoadError(f"SavedModel not found in export directory: {export_dir}")
    except (OSError, text_format.ParseError) as error:
        raise LoadError(f"cannot read SavedModel in {export_dir}: {error}") from error
    except Exception as error:  # protobuf DecodeError: half-written file
        raise LoadError(f"cannot parse {binary}: {error}") from error
    wanted = set(tags)
    for meta_graph in saved_model.meta_graphs:
        if set(meta_graph.meta_info_def.tags) == wanted:
            return meta_graph
    available = [sorted(mg.meta_info_def.tags) for mg in saved_model.meta_graphs]
    raise LoadError(
        f"Could not find meta graph def matching supplied tags: {{ {' '.join(sorted(wanted))} }}. "
        f"Available tag sets: {available}. To inspect available tag-sets in the SavedModel, please use "
        "the SavedModel CLI: `saved_model_cli`"
    )


def _signature_input_order(function: Any, definition: meta_graph_pb2.SignatureDef) -> tuple[str, ...]:
    """Input aliases in the order the function takes them (for ``arg[i]`` in dtype errors)."""
    try:
        _args, kwargs = function.structured_input_signature
        ordered = [name for name in kwargs if name in definition.inputs]
    except (AttributeError, TypeError, ValueError):
        ordered = []
    rest = sorted(set(definition.inputs) - set(ordered))
    return tuple(ordered + rest)


def load_servable(name: str, version: int, export_dir: Path, tags: Sequence[str]) -> Servable:
    """Load one version folder; raise LoadError with a reason TF Serving would also give."""
    meta_graph = read_meta_graph(export_dir, tags)
    try:
        loaded = tf.saved_model.load(str(export_dir), tags=list(tags))
    except Exception as error:  # TF raises many types for incomplete or broken SavedModels
        raise LoadError(f"{type(error).__name__}: {error}") from error
    signatures: dict[str, Signature] = {}
    for key, definition in meta_graph.signature_def.items():
        function = loaded.signatures.get(key) if hasattr(loaded, "signatures") else None
        if function is None:
            continue  # e.g. __saved_model_init_op: listed in metadata, not callable
        signatures[key] = Signature(key, definition, function, _signature_input_order(function, definition))
    metadata = any_pb2.Any()
    metadata.Pack(get_model_metadata_pb2.SignatureDefMap(signature_def=meta_graph.signature_def))
    return Servable(
        name=name,
        version=version,
        path=export_dir,
        signatures=signatures,
        signature_metadata=metadata,
        loaded=loaded,
    )
