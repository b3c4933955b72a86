"""What models there are and how to read each: models.config, GetModelStatus, GetModelMetadata.

The model list comes from the same ``models.config`` (a ``ModelServerConfig`` text proto) the model
server reads, re-read when the file changes. Each model's signature is discovered with
``GetModelMetadata`` and cached per version (a version's SavedModel never changes); which version
is "latest" (or behind a version label) is re-resolved every few seconds. Which model family wrote
a signature, and so how to feed and read it, is decided once per version by the adapters
(``web/reading/adapters``), with the model's ``gateway.toml`` (if any) taken into account.
"""

from __future__ import annotations

import re
import stat
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
    ServiceBusy,
)
from web.reading.adapters import ModelReading, read_model
from web.reading.export_metadata import ExportMetadata, read_export_metadata
from web.reading.label_maps import LabelMap, load_label_map
from web.reading.model_settings import SETTINGS_FILE, ModelSettings, ModelSettingsError, load_model_settings
from web.reading.signatures import ModelSignature, parse_signature
from web.serving.client import ServingClient
from web.serving.protos.tensorflow_serving.apis import get_model_status_pb2
from web.serving.protos.tensorflow_serving.config import model_server_config_pb2

LABEL_FILES = ("label_map.pbtxt", "labels.txt")
RESOLVE_TTL_S = 5.0
LOADING_RETRY_AFTER_S = 5


# base_path on object storage (gs://bucket/model, s3://...): TF Serving reads it, the gateway cannot.
REMOTE_BASE_PATH = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


@dataclass(frozen=True)
class ModelEntry:
    """A model named in models.config; `base_path` resolved against the config file's folder, or None
    when the model server reads it from object storage (`gs://...`), which the gateway cannot."""

    name: str
    base_path: Path | None


@dataclass(frozen=True)
class VersionState:
    version: int
    state: str


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
        if REMOTE_BASE_PATH.match(model.base_path):
            entries.append(ModelEntry(model.name, None))  # label maps etc. come from MODELS_DIR/<name>
            continue
        base = Path(model.base_path)
        if not base.is_absolute():
            base = path.parent / base
        entries.append(ModelEntry(model.name, base))
    return entries


class FileStates:
    """The modification times of the files the registry re-reads when they change (models.config,
    gateway.toml, label maps), looked up at most once per `recheck_s` per file: without it every
    prediction cost eight stat() calls. 0 looks every time."""

    def __init__(self, recheck_s: float) -> None:
        self.recheck_s = recheck_s
        self._seen: dict[Path, tuple[float, int | None]] = {}

    def mtime(self, path: Path) -> int | None:
        """st_mtime_ns of the regular file at `path`; None when there is none (missing, a folder, ...)."""
        now = time.monotonic()
        seen = self._seen.get(path)
        if seen is not None and now < seen[0]:
            return seen[1]
        try:
            info = path.stat()
            value = info.st_mtime_ns if stat.S_ISREG(info.st_mode) else None
        except OSError:
            value = None
        self._seen[path] = (now + self.recheck_s, value)
        return value


class ModelRegistry:
    """The configured models, their version states, signatures (cached per version) and label maps."""

    def __init__(
        self,
        client: ServingClient,
        config_file: Path,
        models_dir: Path | None = None,
        recheck_s: float = 1.0,
    ) -> None:
        self.client = client
        self.config_file = config_file
        self.models_dir = models_dir
        self.files = FileStates(recheck_s)
        self._lock = threading.Lock()
        self._config: tuple[int, list[ModelEntry]] | None = None
        self._signatures: dict[tuple[str, int], ModelSignature] = {}
        self._readings: dict[tuple[str, int], tuple[tuple[str, int], ModelReading]] = {}
        self._resolved: dict[tuple[str, str | None], tuple[int, float]] = {}
        self._label_maps: dict[Path, tuple[int, LabelMap]] = {}
        self._settings: dict[Path, tuple[int, ModelSettings]] = {}

    # -- models.config -------------------------------------------------------------------------
    def entries(self) -> list[ModelEntry]:
        """The models in MODEL_CONFIG_FILE, re-read when the file changes."""
        mtime = self.files.mtime(self.config_file)
        if mtime is None:
            try:
                self.config_file.stat()
                reason = "it is not a file"
            except OSError as exc:
                reason = exc.strerror or str(exc)
            raise ConfigurationError(
                f"MODEL_CONFIG_FILE {self.config_file} cannot be read ({reason}); point it at the "
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
                raise self.not_available_yet(name, exc.message) from None
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

    def reading(
        self, name: str, *, version: int | None = None, version_label: str | None = None
    ) -> ModelReading:
        """How the gateway reads a version (default: the latest): signature, adapter, settings, or the
        problem that stops it. Chosen once per version and gateway.toml state."""
        signature = self.signature(name, version=version, version_label=version_label)
        path = self.settings_path(name)
        mtime = self.files.mtime(path) or 0
        state = (str(path), mtime)
        cached = self._readings.get((name, signature.version))
        if cached is not None and cached[0] == state and signature.version:
            return cached[1]
        shown = _shown(path)
        metadata = self.export_metadata(name, signature.version)
        try:
            settings = self._load_settings(path, shown, mtime)
        except ModelSettingsError as exc:
            broken = ModelSettings(source=shown)  # the file is there, but unusable
            reading = ModelReading(signature, broken, shown, problem=str(exc), metadata=metadata)
        else:
            reading = read_model(signature, settings, shown, metadata)
        with self._lock:
            self._readings[(name, signature.version)] = (state, reading)
        return reading

    def export_metadata(self, name: str, version: int) -> ExportMetadata | None:
        """What the exporter wrote into the version folder (Ultralytics' metadata.yaml), if the gateway
        can see that folder (it can when it shares the models folder with the model server)."""
        base = self.entry(name).base_path
        if not version or base is None:
            return None
        folder = base / str(version)
        return read_export_metadata(folder, _shown(folder / "metadata.yaml"))

    def labels_for(self, reading: ModelReading) -> LabelMap:
        """The stored label map of a model; else the class names its export metadata lists (placed at
        class + class_offset, like any label map); else an empty map (`class <id>`)."""
        stored = self.stored_label_map(reading.model)
        if stored.names or reading.metadata is None or not reading.metadata.names:
            return stored
        offset = reading.class_offset
        names = {class_id + offset: label for class_id, label in reading.metadata.names.items()}
        return LabelMap(names=names, source=reading.metadata.file)

    def _load_settings(self, path: Path, shown: str, mtime: int) -> ModelSettings:
        if not mtime:
            return ModelSettings()
        cached = self._settings.get(path)
        if cached is not None and cached[0] == mtime:
            return cached[1]
        settings = load_model_settings(path, shown)
        self._settings[path] = (mtime, settings)
        return settings

    def settings_path(self, name: str) -> Path:
        """The model's gateway.toml: beside its versions (base_path), else MODELS_DIR/<name>; where it
        would go when there is none."""
        folders = self._model_folders(name)
        for folder in folders:
            path = folder / SETTINGS_FILE
            if self.files.mtime(path) is not None:
                return path
        return folders[0] / SETTINGS_FILE

    def _model_folders(self, name: str) -> list[Path]:
        entry = self.entry(name)
        folders = [entry.base_path] if entry.base_path is not None else []
        if self.models_dir is not None:
            folders.append(self.models_dir / name)
        return folders or [self.config_file.parent / name]  # a remote model without MODELS_DIR

    def forget_resolved(self, name: str) -> None:
        """Drop which version "latest" (or a label) meant for `name`; the next call asks the server."""
        with self._lock:
            for key in [key for key in self._resolved if key[0] == name]:
                del self._resolved[key]

    def not_available_yet(self, name: str, detail: str) -> ServiceBusy:
        """A configured model without an AVAILABLE version is loading (or failing to): 503, try later."""
        try:
            states = self.versions(name)
        except GatewayError:
            states = []
        seen = (
            ", ".join(f"version {v.version} is {v.state}" for v in states)
            or "the model server does not list it yet"
        )
        return ServiceBusy(
            f"model '{name}' is configured but has no AVAILABLE version ({seen}; {detail}): it is probably "
            "still loading, try again in a few seconds",
            retry_after=LOADING_RETRY_AFTER_S,
        )

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
        for folder in self._model_folders(name):
            for filename in LABEL_FILES:
                path = folder / filename
                if self.files.mtime(path) is not None:
                    return path
        return None

    def stored_label_map(self, name: str) -> LabelMap:
        """The stored label map of `name` (re-read when it changes), or an empty map (`class <id>`)."""
        path = self.label_map_path(name)
        mtime = None if path is None else self.files.mtime(path)
        if path is None or mtime is None:
            return LabelMap()
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


def _shown(path: Path) -> str:
    """A settings path as messages show it: relative to the working folder when it is inside it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except (OSError, ValueError):
        return str(path)
