"""Which models to serve: ``models.config`` or ``--model_name``/``--model_base_path``.

``models.config`` is TF Serving's ``ModelServerConfig`` text proto, parsed with protobuf's
``text_format`` against the config messages shipped in ``tensorflow-serving-api``, so any file the
real server accepts is read the same way here (and typos fail with line and column).

Paths: a relative ``base_path`` is resolved against the folder holding the config file, so
``tf_server/models.config`` works from any working directory. Real TF Serving refuses relative
paths ("Expected model X to have an absolute path or URI"), so the Docker stack reads its twin,
``tf_server/models.docker.config``, with absolute paths under ``/tf_server``; a deploy test keeps
the two in step.

Versions follow TF Serving's folder layout: ``<base_path>/<version>/saved_model.pb`` where
``<version>`` is an all-digit folder name; anything else is ignored. The version policy picks the
versions to serve from the ones on disk: ``latest`` (default, ``num_versions`` 1), ``all`` or
``specific``. ``version_labels`` map names such as ``stable`` to version numbers.

This module is pure (no TensorFlow, no threads): the model manager calls it on every poll.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

log = logging.getLogger("tf_server")

SAVED_MODEL_FILES = ("saved_model.pb", "saved_model.pbtxt")


class ConfigError(ValueError):
    """models.config cannot be used; the message says where and why."""


@dataclass(frozen=True)
class VersionPolicy:
    """TF Serving's ServableVersionPolicy: which of the versions on disk should be served."""

    kind: str = "latest"  # "latest", "all" or "specific"
    num_versions: int = 1
    versions: frozenset[int] = frozenset()

    def select(self, on_disk: Iterable[int]) -> set[int]:
        """The aspired versions among those found on disk."""
        available = sorted(set(on_disk))
        if self.kind == "all":
            return set(available)
        if self.kind == "specific":
            return {v for v in available if v in self.versions}
        return set(available[-max(self.num_versions, 1) :]) if available else set()

    def describe(self) -> str:
        if self.kind == "specific":
            return f"specific {sorted(self.versions)}"
        if self.kind == "latest":
            return f"latest {self.num_versions}"
        return "all"


@dataclass(frozen=True)
class ModelConfig:
    """One entry of the model config list, with base_path made absolute."""

    name: str
    base_path: Path
    policy: VersionPolicy = VersionPolicy()
    version_labels: Mapping[str, int] = field(default_factory=dict)
    platform: str = "tensorflow"

    def __hash__(self) -> int:
        return hash((self.name, self.base_path, self.policy, tuple(sorted(self.version_labels.items()))))


def _policy_from_proto(proto: model_server_config_pb2.ModelConfig) -> VersionPolicy:
    if not proto.HasField("model_version_policy"):
        return VersionPolicy()
    policy = proto.model_version_policy
    choice = policy.WhichOneof("policy_choice")
    if choice == "all":
        return VersionPolicy(kind="all")
    if choice == "specific":
        if not policy.specific.versions:
            raise ConfigError(f"model {proto.name}: 'specific' version policy lists no versions")
        return VersionPolicy(kind="specific", versions=frozenset(policy.specific.versions))
    if choice == "latest":
        num = policy.latest.num_versions or 1
        return VersionPolicy(kind="latest", num_versions=num)
    return VersionPolicy()


def _model_from_proto(proto: model_server_config_pb2.ModelConfig, root: Path) -> ModelConfig:
    if not proto.name:
        raise ConfigError("a model config entry has no name")
    if not proto.base_path:
        raise ConfigError(f"model {proto.name} has no base_path")
    platform = proto.model_platform
    if not platform:
        # Same rule as TF Serving's ServerCore, so a config that works here also works there.
        raise ConfigError(
            f"model {proto.name}: Illegal setting neither ModelServerConfig::model_type (deprecated) "
            'nor ModelServerConfig::model_platform. Add model_platform: "tensorflow"'
        )
    if platform != "tensorflow":
        raise ConfigError(f"Model {proto.name} requests unsupported platform {platform}")
    base = Path(os.path.expanduser(proto.base_path))
    if not base.is_absolute():
        base = root / base
    return ModelConfig(
        name=proto.name,
        base_path=Path(os.path.normpath(base)),
        policy=_policy_from_proto(proto),
        version_labels=dict(proto.version_labels),
        platform=platform,
    )


def models_from_server_config(
    config: model_server_config_pb2.ModelServerConfig, root: Path
) -> tuple[ModelConfig, ...]:
    """Validate a ModelServerConfig the way TF Serving's ServerCore does and flatten it."""
    which = config.WhichOneof("config")
    if which is None:
        return ()
    if which != "model_config_list":
        raise ConfigError("only model_config_list is supported (custom_model_config is not)")
    models = tuple(_model_from_proto(entry, root) for entry in config.model_config_list.config)
    seen: set[str] = set()
    for model in models:
        if model.name in seen:
            raise ConfigError(f"Illegal to list model {model.name} multiple times in config list")
        seen.add(model.name)
    return models


def parse_config_text(text: str, root: Path, source: str = "<config>") -> tuple[ModelConfig, ...]:
    """Parse models.config text (relative base paths resolve against ``root``)."""
    config = model_server_config_pb2.ModelServerConfig()
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as error:
        raise ConfigError(f"Invalid protobuf file: '{source}'. {parse_error_text(error, config)}") from None
    return models_from_server_config(config, root)


def parse_error_text(error: text_format.ParseError, message: object) -> str:
    """Words a text-format error as TF Serving's protobuf library does:
    ``Error parsing text-format tensorflow.serving.ModelServerConfig: 1:7: <what>``."""
    line, column = error.GetLine(), error.GetColumn()
    what = str(error).rstrip(".")
    if line is not None and what.startswith(f"{line}:{column} : "):
        what = what[len(f"{line}:{column} : ") :]
    where = f"{line}:{column}: " if line is not None else ""
    return f"Error parsing text-format {message.DESCRIPTOR.full_name}: {where}{what}"  # type: ignore[attr-defined]


def read_config_file(path: str | Path) -> tuple[ModelConfig, ...]:
    """Read models.config from disk."""
    path = Path(path).resolve()
    try:
        text = path.read_text()
    except OSError as error:
        raise ConfigError(f"cannot read model config file {path}: {error.strerror}") from None
    return parse_config_text(text, path.parent, str(path))


def single_model(name: str, base_path: str | Path) -> tuple[ModelConfig, ...]:
    """The ``--model_name``/``--model_base_path`` form (relative paths resolve against the cwd)."""
    return (ModelConfig(name=name, base_path=Path(os.path.abspath(os.path.expanduser(str(base_path))))),)


def has_saved_model(folder: Path) -> bool:
    return any((folder / name).is_file() for name in SAVED_MODEL_FILES)


def versions_on_disk(base_path: Path) -> dict[int, Path]:
    """All-digit subfolders holding a SavedModel, by version; OSError if base_path is missing."""
    found: dict[int, Path] = {}
    with os.scandir(base_path) as entries:
        for entry in entries:
            if entry.name.isdigit() and entry.is_dir() and has_saved_model(Path(entry.path)):
                found[int(entry.name)] = Path(entry.path)
    return found


def folder_fingerprint(folder: Path) -> tuple[tuple[str, int, int], ...]:
    """Names, sizes and mtimes of every file below ``folder``: equal on two polls means the copy is done."""
    items: list[tuple[str, int, int]] = []
    for dirpath, _dirnames, filenames in os.walk(folder):
        for filename in filenames:
            full = os.path.join(dirpath, filename)
            try:
                stat = os.stat(full)
            except OSError:
                continue
            items.append((os.path.relpath(full, folder), stat.st_size, stat.st_mtime_ns))
    return tuple(sorted(items))
