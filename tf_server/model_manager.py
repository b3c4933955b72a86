"""Which versions are loaded, and keeping that in step with the disk and the config.

Follows TF Serving's ServerCore + FileSystemStoragePathSource + AvailabilityPreservingPolicy:

* Every ``--file_system_poll_wait_seconds`` each model's base path is listed; the version policy
  picks the aspired versions. New aspired versions are loaded (newest first) and warmed up before
  they serve; versions no longer aspired are retired only once an aspired version is AVAILABLE, so
  a model never goes dark during a roll-out. Loading happens on the poller thread while requests
  keep being served from the current versions.
* A version folder that appears while the server runs is loaded only when its files are unchanged
  between two polls, so a half-copied folder is not loaded. A failed load is retried
  (``--max_num_load_retries`` times, ``--load_retry_interval_micros`` apart), then the version ends
  with the error in its status; if its files change later it is tried again rather than staying
  broken forever.
* Requests resolve a servable from an immutable routing snapshot that is swapped whole on every
  change, so the hot path is two dict lookups and no lock. A retired version's objects stay alive
  until the requests still using it finish.
* ``version_labels`` follow TF Serving's rule: a label may only point at an AVAILABLE version unless
  ``--allow_version_labels_for_unavailable_models`` is set (then only new or unchanged labels may
  point at unavailable versions).

No TensorFlow here: loading is a function passed in (see ``server.py``).
"""

from __future__ import annotations

import enum
import gc
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import grpc

from tf_server.errors import ServingError, failed_precondition, invalid_argument, not_found
from tf_server.model_config import (
    ConfigError,
    ModelConfig,
    folder_fingerprint,
    read_config_file,
    versions_on_disk,
)

if TYPE_CHECKING:
    from tf_server.servable import Servable

log = logging.getLogger("tf_server")

STARTUP_POLL_S = 0.5


class VersionState(enum.IntEnum):
    """Numbers of ``ModelVersionStatus.State`` in get_model_status.proto."""

    UNKNOWN = 0
    START = 10
    LOADING = 20
    AVAILABLE = 30
    UNLOADING = 40
    END = 50


@dataclass(frozen=True)
class VersionStatus:
    """What GetModelStatus reports for one version; error_code uses gRPC/TensorFlow numbers (0 is OK)."""

    version: int
    state: VersionState
    error_code: int = 0
    error_message: str = ""


@dataclass(frozen=True)
class ManagerOptions:
    """The flags that shape loading and polling."""

    file_system_poll_wait_seconds: int = 1
    max_num_load_retries: int = 5
    load_retry_interval_s: float = 60.0
    allow_version_labels_for_unavailable_models: bool = False


class StartupError(RuntimeError):
    """The initial models could not be brought up (TF Serving exits in the same cases)."""


@dataclass
class _VersionRecord:
    version: int
    path: Path
    state: VersionState = VersionState.START
    servable: Servable | None = None
    fingerprint: tuple = ()
    attempts: int = 0
    retry_at: float = 0.0
    gave_up: bool = False
    error: str = ""

    def id_text(self, name: str) -> str:
        return f"{{name: {name} version: {self.version}}}"


@dataclass(frozen=True)
class _Routes:
    """Immutable snapshot the request path reads without locking."""

    by_version: Mapping[str, Mapping[int, Servable]] = field(default_factory=dict)
    latest: Mapping[str, Servable] = field(default_factory=dict)
    labels: Mapping[str, Mapping[str, int]] = field(default_factory=dict)


LoadFunction = Callable[[ModelConfig, int, Path], "Servable"]


def release_cycles() -> None:
    """Free a retired version's graph, which sits in reference cycles. The server freezes what it
    loaded at start-up (``gc.freeze()``, so collections skip it); frozen objects are never collected,
    so thaw, collect, and freeze what is left again."""
    frozen = gc.get_freeze_count() > 0
    gc.unfreeze()
    gc.collect()
    if frozen:
        gc.freeze()


class ModelManager:
    """Owns the servables of every configured model and the threads that keep them current."""

    def __init__(self, load_version: LoadFunction, options: ManagerOptions) -> None:
        self._load_version = load_version
        self._options = options
        self._models: dict[str, ModelConfig] = {}
        self._labels: dict[str, dict[str, int]] = {}
        self._records: dict[str, dict[int, _VersionRecord]] = {}
        self._routes = _Routes()
        self._sync_lock = threading.RLock()  # one reconciliation (poll, reload) at a time
        self._state_lock = threading.Lock()  # records, read by GetModelStatus
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._notes: dict[str, str] = {}

    # ------------------------------------------------------------------ requests (hot path)

    def resolve(self, model_spec) -> Servable:  # noqa: ANN001 - tensorflow.serving.ModelSpec
        """The servable a request's ModelSpec names, with TF Serving's errors."""
        name = model_spec.name
        if not name:
            raise invalid_argument("ModelSpec has no name specified.")
        routes = self._routes
        choice = model_spec.WhichOneof("version_choice")
        if choice is None:
            servable = routes.latest.get(name)
            if servable is None:
                raise not_found(f"Servable not found for request: Latest({name})")
            return servable
        if choice == "version":
            version = model_spec.version.value
        else:
            label = model_spec.version_label
            version = routes.labels.get(name, {}).get(label)
            if version is None:
                raise invalid_argument(f"Unrecognized servable version label: {label}")
        servable = routes.by_version.get(name, {}).get(version)
        if servable is None:
            raise not_found(f"Servable not found for request: Specific({name}, {version})")
        return servable

    def statuses(self, name: str, version: int | None = None) -> list[VersionStatus]:
        """GetModelStatus: one version, or all known versions newest first."""
        with self._state_lock:
            records = dict(self._records.get(name, {}))
            snapshot = [
                VersionStatus(
                    r.version,
                    r.state,
                    grpc.StatusCode.UNKNOWN.value[0] if r.error and r.state == VersionState.END else 0,
                    r.error if r.state == VersionState.END else "",
                )
                for r in records.values()
            ]
        if version is not None:
            found = [s for s in snapshot if s.version == version]
            if not found:
                raise not_found(f"Could not find version {version} of model {name}")
            return found
        if not snapshot:
            raise not_found(f"Could not find any versions of model {name}")
        return sorted(snapshot, key=lambda s: s.version, reverse=True)

    def model_names(self) -> list[str]:
        return sorted(self._models)

    # ------------------------------------------------------------------ configuration

    def start(self, models: Iterable[ModelConfig]) -> None:
        """Load the initial config and block until every model serves (or fail like TF Serving)."""
        models = tuple(models)
        with self._sync_lock:
            log.info("Adding/updating models.")
            self._labels = self._label_map(models)
            self._models = {m.name: m for m in models}
            for model in models:
                log.info(" (Re-)adding model: %s", model.name)
            self._bring_up(models)
            log.info("Finished adding/updating models")

    def apply_config(self, models: Iterable[ModelConfig]) -> None:
        """ReloadConfig: add, remove and update models; wait for the new ones like TF Serving does."""
        models = tuple(models)
        with self._sync_lock:
            new_labels = self._label_map(models)  # checked first: a refused config changes nothing
            log.info("Adding/updating models.")
            old = self._models
            self._models = {m.name: m for m in models}
            self._labels = new_labels
            for name in sorted(set(old) - set(self._models)):
                log.info("Removing model: %s", name)
                self._retire_all(name)
            fresh: list[ModelConfig] = []
            for model in models:
                log.info(" (Re-)adding model: %s", model.name)
                previous = old.get(model.name)
                if previous is None or previous.base_path != model.base_path:
                    if previous is not None:
                        self._retire_all(model.name)
                    fresh.append(model)
            for model in models:
                if model not in fresh:
                    self._sync_model(model, startup=False)
            self._publish()
            self._bring_up(fresh)
            log.info("Finished adding/updating models")

    def _label_map(self, models: Iterable[ModelConfig]) -> dict[str, dict[str, int]]:
        labels: dict[str, dict[str, int]] = {}
        for model in models:
            for label, version in sorted(model.version_labels.items()):
                existing = self._labels.get(model.name, {}).get(label)
                may_be_unavailable = self._options.allow_version_labels_for_unavailable_models and (
                    existing is None or existing == version
                )
                record = self._records.get(model.name, {}).get(version)
                available = record is not None and record.state == VersionState.AVAILABLE
                if not available and not may_be_unavailable:
                    raise failed_precondition(
                        f"Request to assign label to version {version} of model {model.name}, which is not "
                        "currently available for inference"
                    )
                labels.setdefault(model.name, {})[label] = version
        return labels

    # ------------------------------------------------------------------ polling

    def start_polling(self, config_file: Path | None = None, config_poll_seconds: int = 0) -> None:
        """Start the version poller and, if asked, the config-file poller."""
        if self._options.file_system_poll_wait_seconds > 0:
            self._spawn("version-poller", self._poll_versions)
        if config_file is not None and config_poll_seconds > 0:
            self._spawn("config-poller", lambda: self._poll_config(config_file, config_poll_seconds))

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout)

    def _spawn(self, name: str, target: Callable[[], None]) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _poll_versions(self) -> None:
        while not self._stop.wait(self._options.file_system_poll_wait_seconds):
            try:
                with self._sync_lock:
                    for model in list(self._models.values()):
                        self._sync_model(model, startup=False)
                    self._publish()
            except Exception:  # keep polling whatever one model does
                log.exception("Polling model folders failed")

    def _poll_config(self, path: Path, interval: int) -> None:
        applied = tuple(self._models.values())
        while not self._stop.wait(interval):
            try:
                models = read_config_file(path)
            except ConfigError as error:
                self._note("config", f"Failed to read model config file {path}: {error}", logging.ERROR)
                continue
            if models == applied:
                continue
            try:
                log.info("Model config file %s changed; reloading", path)
                self.apply_config(models)
                applied = models
                self._notes.pop("config", None)
            except (ServingError, StartupError) as error:
                text = error.message if isinstance(error, ServingError) else str(error)
                self._note(
                    "config",
                    f"Reloading model config {path} failed (retrying on the next poll): {text}",
                    logging.ERROR,
                )

    def _note(self, key: str, message: str, level: int = logging.WARNING) -> None:
        """Log a recurring condition once, and again only when it changes."""
        if self._notes.get(key) != message:
            self._notes[key] = message
            log.log(level, message)

    # ------------------------------------------------------------------ reconciliation

    def _bring_up(self, models: Iterable[ModelConfig]) -> None:
        """Sync ``models`` until each serves its newest aspired version; raise if one fails for good."""
        pending = list(models)
        while pending:
            for model in pending:
                self._sync_model(model, startup=True)
            self._publish()
            failed: list[str] = []
            waiting: list[ModelConfig] = []
            for model in pending:
                record = self._newest_aspired(model)
                if record is not None and record.state == VersionState.AVAILABLE:
                    continue
                if record is not None and record.gave_up:
                    failed.append(f"{{{record.id_text(model.name)} due to error: {record.error}}}, ")
                else:
                    waiting.append(model)
            if failed:
                raise StartupError(f"{len(failed)} model(s) did not become available: {{{''.join(failed)}}}")
            pending = waiting
            if pending and self._stop.wait(STARTUP_POLL_S):
                raise StartupError("stopped while waiting for models to load")

    def _newest_aspired(self, model: ModelConfig) -> _VersionRecord | None:
        try:
            on_disk = versions_on_disk(model.base_path)
        except OSError:
            return None
        aspired = model.policy.select(on_disk)
        if not aspired:
            return None
        return self._records.get(model.name, {}).get(max(aspired))

    def _sync_model(self, model: ModelConfig, startup: bool) -> None:
        name = model.name
        try:
            on_disk = versions_on_disk(model.base_path)
        except OSError as error:
            self._note(
                f"base:{name}",
                "FileSystemStoragePathSource encountered a filesystem access error: Could not find base path "
                f"{model.base_path} for servable {name} with error {error.strerror}",
            )
            return
        self._notes.pop(f"base:{name}", None)
        if not on_disk:
            self._note(
                f"empty:{name}",
                f"No versions of servable {name} found under base path {model.base_path}. "
                "Did you forget to name your leaf directory as a number (eg. '/1/')?",
            )
        else:
            self._notes.pop(f"empty:{name}", None)
        if model.policy.kind == "specific":
            missing = sorted(model.policy.versions - set(on_disk))
            if missing:
                self._note(
                    f"specific:{name}",
                    f"Version(s) {missing} of servable {name} not found under "
                    f"{model.base_path}; serving the others of the specific version policy",
                )
        aspired = model.policy.select(on_disk)
        records = self._records.setdefault(name, {})
        for version in sorted(aspired, reverse=True):
            self._advance(model, version, on_disk[version], records, startup)
        self._retire_unaspired(name, aspired, records)

    def _advance(
        self, model: ModelConfig, version: int, path: Path, records: dict[int, _VersionRecord], startup: bool
    ) -> None:
        """Move one aspired version towards AVAILABLE (settle, load, retry) by at most one load."""
        record = records.get(version)
        settled = (VersionState.AVAILABLE, VersionState.UNLOADING)
        if record is not None and record.path == path and record.state in settled:
            return
        fingerprint = folder_fingerprint(path)
        if record is None or record.path != path:
            record = _VersionRecord(version, path, fingerprint=fingerprint)
            with self._state_lock:
                records[version] = record
            if not startup:
                return  # load once the files are unchanged at the next poll
        elif record.state == VersionState.END and record.gave_up:
            if fingerprint == record.fingerprint:
                return  # broken and unchanged: keep the error
            log.info(
                "Files of servable version %s changed; trying to load it again", record.id_text(model.name)
            )
            with self._state_lock:
                record.state, record.gave_up, record.error, record.attempts = VersionState.START, False, "", 0
                record.fingerprint = fingerprint
            return
        elif record.state == VersionState.END:  # retired earlier, aspired again
            with self._state_lock:
                record.state, record.attempts, record.fingerprint = VersionState.START, 0, fingerprint
        elif fingerprint != record.fingerprint and not startup:
            record.fingerprint = fingerprint  # still being written
            return
        elif record.state == VersionState.LOADING and time.monotonic() < record.retry_at:
            return
        self._load(model, record)

    def _load(self, model: ModelConfig, record: _VersionRecord) -> None:
        id_text = record.id_text(model.name)
        with self._state_lock:
            record.state = VersionState.LOADING
        if record.attempts == 0:
            log.info("Approving load for servable version %s", id_text)
        log.info("Loading servable version %s", id_text)
        started = time.perf_counter()
        try:
            servable = self._load_version(model, record.version, record.path)
        except Exception as error:  # any load failure is reported in the version status
            record.attempts += 1
            message = str(error) or type(error).__name__
            if record.attempts > self._options.max_num_load_retries:
                log.error("Loading servable: %s failed: %s", id_text, message)
                with self._state_lock:
                    record.state, record.gave_up, record.error = VersionState.END, True, message
            else:
                log.warning(
                    "Loading servable: %s failed (attempt %d of %d; retrying in %.1fs): %s",
                    id_text,
                    record.attempts,
                    self._options.max_num_load_retries + 1,
                    self._options.load_retry_interval_s,
                    message,
                )
                record.retry_at = time.monotonic() + self._options.load_retry_interval_s
            return
        with self._state_lock:
            record.servable, record.state, record.error, record.attempts = (
                servable,
                VersionState.AVAILABLE,
                "",
                0,
            )
        log.info("Successfully loaded servable version %s (%.2fs)", id_text, time.perf_counter() - started)
        self._publish()

    def _retire_unaspired(self, name: str, aspired: set[int], records: dict[int, _VersionRecord]) -> None:
        """AvailabilityPreservingPolicy: drop old versions once the model stays available without them."""
        serving = {v for v, r in records.items() if r.state == VersionState.AVAILABLE}
        unaspired = sorted(serving - aspired)
        if not unaspired:
            return
        if aspired and not (serving & aspired):
            unaspired = unaspired[:-1]  # keep the newest old version until a new one serves
        for version in unaspired:
            self._unload(name, records[version])
        # versions waiting to load that are no longer wanted simply end
        for version, record in records.items():
            if version not in aspired and record.state in (VersionState.START, VersionState.LOADING):
                with self._state_lock:
                    record.state = VersionState.END

    def _retire_all(self, name: str) -> None:
        records = self._records.get(name, {})
        for record in list(records.values()):
            if record.state == VersionState.AVAILABLE:
                self._unload(name, record)
            elif record.state in (VersionState.START, VersionState.LOADING):
                with self._state_lock:
                    record.state = VersionState.END
        self._publish()

    def _unload(self, name: str, record: _VersionRecord) -> None:
        id_text = record.id_text(name)
        with self._state_lock:
            record.state = VersionState.UNLOADING
        self._publish()  # no new request gets this version; running ones keep their reference
        log.info("Quiescing servable version %s", id_text)
        log.info("Done quiescing servable version %s", id_text)
        log.info("Unloading servable version %s", id_text)
        with self._state_lock:
            record.servable = None
            record.state = VersionState.END
        release_cycles()
        log.info("Done unloading servable version %s", id_text)

    def _publish(self) -> None:
        by_version: dict[str, dict[int, Servable]] = {}
        with self._state_lock:
            for name in self._models:
                serving = {
                    v: r.servable
                    for v, r in self._records.get(name, {}).items()
                    if r.state == VersionState.AVAILABLE and r.servable is not None
                }
                if serving:
                    by_version[name] = serving
        latest = {name: versions[max(versions)] for name, versions in by_version.items()}
        labels = {name: dict(mapping) for name, mapping in self._labels.items()}
        self._routes = _Routes(by_version, latest, labels)
