"""One loaded model version (a "servable" in TF Serving's words) and how it is loaded.

Every SavedModel, TF1 graph or TF2 export, is loaded as TF Serving loads it: the MetaGraphDef into
its own graph and a TF1 session (``tf.compat.v1.saved_model.loader``; TF Serving's
``SavedModelBundle``), and signatures run as ``session.run`` on their tensor names. So TF1 exports
that ``tf.saved_model.load`` cannot restore (graphs with ``ParseExample`` and other TF1 ops) load,
and shapes are decided by the graph itself, not by a Python-side check TF Serving does not make:
a ``[1]`` tensor fed to a ``[-1,1]`` input runs when the graph's ops accept it.

Signatures are read from the SavedModel's own MetaGraphDef (``saved_model.pb``), not rebuilt from
the loaded Python objects, so ``GetModelMetadata`` returns exactly the ``SignatureDefMap`` TF
Serving returns: every signature of the MetaGraphDef (``__saved_model_init_op`` included), with
the original dtypes, shapes and tensor names. The packed metadata is built once at load time, so
metadata calls cost a dictionary lookup.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf
from google.protobuf import any_pb2, text_format
from tensorflow.core.protobuf import meta_graph_pb2, saved_model_pb2
from tensorflow_serving.apis import get_model_metadata_pb2

DEFAULT_SIGNATURE = "serving_default"


class LoadError(RuntimeError):
    """A version folder that cannot be served (yet): missing files, no matching tag set, bad graph."""


class SessionModel:
    """A SavedModel's graph in its own TF1 session; runs feeds and fetches by tensor name.

    ``session.run`` would check feed shapes against the placeholders in Python and cast dtypes
    silently; TF Serving's C++ ``Session::Run`` does neither (a wrong dtype fails in TensorFlow with
    "Expects arg[0] to be float but int32 is provided"). The session's own C entry point behaves
    like TF Serving's, so that is the one called (TensorFlow is pinned in requirements/server.txt).
    """

    def __init__(self, export_dir: Path, tags: Sequence[str], config: Any = None) -> None:
        self.graph = tf.Graph()
        self.session = tf.compat.v1.Session(graph=self.graph, config=config)
        with self.graph.as_default():
            tf.compat.v1.saved_model.loader.load(self.session, list(tags), str(export_dir))
        self._outputs: dict[str, Any] = {}

    def tf_output(self, name: str) -> Any:
        """The graph's output handle for a tensor name (looked up once)."""
        found = self._outputs.get(name)
        if found is None:
            try:
                found = self.graph.get_tensor_by_name(name)._as_tf_output()
            except (KeyError, ValueError) as error:
                raise LoadError(f"tensor {name} of the signature is not in the graph: {error}") from None
            self._outputs[name] = found
        return found

    def run(self, feeds: Mapping[str, Any], fetches: Sequence[str]) -> list[np.ndarray]:
        """Values of the ``fetches`` tensors with ``feeds`` (tensor name -> array) fed; raises
        ``tf.errors.OpError`` as TensorFlow does."""
        feed = {self.tf_output(name): value for name, value in feeds.items()}
        return self.session._call_tf_sessionrun(None, feed, [self.tf_output(n) for n in fetches], [], None)


@dataclass(frozen=True)
class Signature:
    """A SignatureDef of a loaded version, runnable by input and output alias."""

    name: str
    definition: meta_graph_pb2.SignatureDef
    model: SessionModel
    input_order: tuple[str, ...]

    @property
    def inputs(self) -> Mapping[str, meta_graph_pb2.TensorInfo]:
        return self.definition.inputs

    @property
    def outputs(self) -> Mapping[str, meta_graph_pb2.TensorInfo]:
        return self.definition.outputs

    @property
    def method_name(self) -> str:
        return self.definition.method_name

    def run(self, feeds: Mapping[str, Any], output_aliases: Sequence[str]) -> dict[str, np.ndarray]:
        """Outputs by alias for inputs by alias (aliases already checked against the signature)."""
        values = self.model.run(
            {self.inputs[alias].name: value for alias, value in feeds.items()},
            [self.outputs[alias].name for alias in output_aliases],
        )
        return dict(zip(output_aliases, values, strict=True))


@dataclass(frozen=True)
class Servable:
    """A model version ready to answer requests."""

    name: str
    version: int
    path: Path
    signatures: Mapping[str, Signature]
    signature_metadata: any_pb2.Any
    # Keeps the session alive as long as the servable is referenced, so requests still in flight
    # finish on a version that has just been retired.
    loaded: SessionModel | None = field(repr=False, default=None)

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


def _runnable(definition: meta_graph_pb2.SignatureDef) -> bool:
    """Whether every tensor of the signature is a plain named tensor (composite and sparse
    encodings are listed in metadata but not served here)."""
    infos = [*definition.inputs.values(), *definition.outputs.values()]
    return bool(definition.outputs) and all(info.WhichOneof("encoding") == "name" for info in infos)


def load_servable(
    name: str, version: int, export_dir: Path, tags: Sequence[str], session_config: Any = None
) -> Servable:
    """Load one version folder; raise LoadError with a reason TF Serving would also give."""
    meta_graph = read_meta_graph(export_dir, tags)
    try:
        model = SessionModel(export_dir, tags, session_config)
    except Exception as error:  # TF raises many types for incomplete or broken SavedModels
        raise LoadError(f"{type(error).__name__}: {error}") from error
    signatures: dict[str, Signature] = {}
    for key, definition in meta_graph.signature_def.items():
        if key.startswith("__") or not _runnable(definition):
            continue  # e.g. __saved_model_init_op: listed in metadata, not callable
        for info in (*definition.inputs.values(), *definition.outputs.values()):
            model.tf_output(info.name)  # a signature naming a missing tensor fails the load, not a request
        # Sorted aliases: the order "arg[i]" in dtype errors counts in.
        signatures[key] = Signature(key, definition, model, tuple(sorted(definition.inputs)))
    metadata = any_pb2.Any()
    metadata.Pack(get_model_metadata_pb2.SignatureDefMap(signature_def=meta_graph.signature_def))
    return Servable(
        name=name,
        version=version,
        path=export_dir,
        signatures=signatures,
        signature_metadata=metadata,
        loaded=model,
    )
