"""The model catalog as the API and the form show it: the list, one model's description, its labels.

Everything here is read from the registry (models.config, the model server's version states and
signatures, the files beside each model); nothing runs a prediction.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from web.errors import ModelNotFound, ModelServerError, ModelServerUnavailable
from web.reading.label_maps import LabelMap
from web.reading.registry import ModelRegistry, VersionState


@dataclass
class ModelSummary:
    """A configured model as the model list shows it."""

    name: str
    versions: list[VersionState]
    kind: str  # detection | segmentation | classification | unknown
    label_source: str | None  # file name of the stored label map, None when there is none

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "versions": [{"version": v.version, "state": v.state} for v in self.versions],
            "kind": self.kind,
            "label_source": self.label_source,
        }


class Catalog:
    """The registry's models, described for clients."""

    def __init__(self, registry: ModelRegistry) -> None:
        self.registry = registry

    def model_names(self) -> list[str]:
        """The models in models.config, without asking the model server."""
        return [entry.name for entry in self.registry.entries()]

    def check_model(self, name: str) -> None:
        """Raise ModelNotFound (listing the models) unless `name` is in models.config."""
        self.registry.entry(name)

    def list_models(self) -> list[ModelSummary]:
        """Every configured model with its versions, states and kind (asks the model server)."""
        return [self.summary(entry.name) for entry in self.registry.entries()]

    def summary(self, name: str, version: int | None = None) -> ModelSummary:
        versions = self.registry.versions(name)
        kind, reading = "unknown", None
        if any(v.state == "AVAILABLE" for v in versions):
            try:
                reading = self.registry.reading(name, version=version)
                kind = reading.kind
            except (ModelNotFound, ModelServerError):  # a model the gateway cannot read is listed anyway
                kind = "unknown"
        path = self.registry.label_map_path(name)
        source = path.name if path else None
        if source is None and reading is not None and reading.metadata and reading.metadata.names:
            source = Path(reading.metadata.file).name
        return ModelSummary(name, versions, kind, source)

    def describe(self, name: str, version: int | None = None) -> dict[str, Any]:
        """A model's versions, label source, signature, and how the gateway reads it (for GET /models/<m>):
        the family, the preprocessing, the gateway.toml settings, or the problem that stops it."""
        self.registry.entry(name)
        out = self.summary(name).to_dict()
        reading = self.registry.reading(name, version=version)
        signature = reading.signature
        out.update(
            {
                "version": signature.version,
                "signature": {
                    "name": signature.name,
                    "inputs": {k: v.to_dict() for k, v in signature.inputs.items()},
                    "outputs": {k: v.to_dict() for k, v in signature.outputs.items()},
                },
                "kind": reading.kind,
                "family": reading.family,
                "input": None if reading.image_input is None else reading.image_input.to_dict(),
                "preprocessing": None if reading.preprocessing is None else reading.preprocessing.to_dict(),
                "class_offset": reading.class_offset if reading.adapter else None,
                "settings": {
                    "file": reading.settings_path,
                    "found": reading.settings.source is not None,
                    "values": (reading.file_settings or reading.settings).given(),
                },
                "export_metadata": None if reading.metadata is None else reading.metadata.to_dict(),
                "candidates": list(reading.candidates),
                "problem": reading.problem,
            }
        )
        return out

    def labels(self, name: str) -> LabelMap:
        """The label map stored beside the model, else the class names of its latest version's export
        metadata (empty when there is neither)."""
        self.registry.entry(name)
        stored = self.registry.stored_label_map(name)
        if stored.names:
            return stored
        try:
            return self.registry.labels_for(self.registry.reading(name))
        except (ModelNotFound, ModelServerError, ModelServerUnavailable):
            return stored
