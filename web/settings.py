"""The gateway's settings, read once per app: defaults, then the environment, then explicit overrides.

Every value is validated when the app is created so a typo in a deployment fails at start-up with
the variable's name, not on the first request.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from web.jobs.config import ENV_NAMES as JOB_ENV_NAMES
from web.jobs.config import JobSettings

MIB = 1024 * 1024
GIB = 1024 * MIB


class SettingsError(ValueError):
    """A configuration value is missing or malformed; the message names the variable."""


@dataclass(frozen=True)
class Settings:
    """Everything configurable about the gateway (README.md, "Configuration")."""

    tf_serving_address: str = "localhost:8500"
    model_config_file: Path = Path("tf_server/models.config")
    models_dir: Path | None = None
    upload_folder: Path = Path("upload_folder")
    output_folder: Path = Path("output")
    max_content_length: int = 16 * MIB
    max_image_pixels: int = 40_000_000
    grpc_timeout_s: float = 30.0
    api_keys: tuple[str, ...] = field(default=(), repr=False)
    max_input_side: int = 1600
    results_max_count: int = 200
    results_max_bytes: int = 512 * MIB
    max_decode_pixels_in_flight: int = 48_000_000
    decode_wait_s: float = 5.0
    secret_key: str | None = field(default=None, repr=False)
    metrics_token: str | None = field(default=None, repr=False)
    trusted_proxies: int = 0
    config_recheck_s: float = 1.0
    max_job_upload_bytes: int = 2 * GIB
    max_job_pictures: int = 10_000
    jobs_disk_budget_bytes: int = 20 * GIB
    max_video_bytes: int = 1 * GIB
    max_video_duration_s: float = 3600.0
    max_video_frames: int = 100_000
    max_video_pixels: int = 4096 * 2160
    # Label Studio ML backend (web/integrations/label_studio): where task pictures come from, and how
    label_studio_url: str | None = None
    label_studio_api_key: str | None = field(default=None, repr=False)
    label_studio_allowed_hosts: tuple[str, ...] = ()  # empty: Label Studio's own host only
    label_studio_label_map: tuple[tuple[str, str], ...] = ()  # (model label, Label Studio label)
    label_studio_timeout_s: float = 10.0
    label_studio_threads: int = 4
    label_studio_max_tasks: int = 200
    # JOBS_FOLDER, JOB_QUEUE_URL and the JOB_* tuning of the workers (web/jobs/config.py)
    jobs: JobSettings = field(default_factory=JobSettings)

    @classmethod
    def load(
        cls, environ: Mapping[str, str] | None = None, overrides: Mapping[str, Any] | None = None
    ) -> Settings:
        """Defaults, then `environ` (default: os.environ), then `overrides` keyed by the env var names."""
        environ = os.environ if environ is None else environ
        raw: dict[str, Any] = {var: environ[var] for var in _PARSERS if var in environ}
        job_vars = set(JOB_ENV_NAMES.values())
        unknown = sorted(set(overrides or {}) - set(_PARSERS) - job_vars)
        if unknown:
            known = ", ".join([*_PARSERS, *sorted(job_vars)])
            raise SettingsError(f"unknown setting(s) {', '.join(unknown)}; known: {known}")
        job_env = {var: str(environ[var]) for var in job_vars if var in environ}
        job_env.update({var: str(value) for var, value in (overrides or {}).items() if var in job_vars})
        raw.update({var: value for var, value in (overrides or {}).items() if var in _PARSERS})
        values: dict[str, Any] = {}
        for var, value in raw.items():
            attr, parse = _PARSERS[var]
            try:
                values[attr] = parse(value)
            except (TypeError, ValueError) as exc:
                raise SettingsError(f"invalid {var}={value!r}: {exc}") from None
        # Jobs live beside the stored results unless JOBS_FOLDER says otherwise (default output/jobs).
        job_env.setdefault("JOBS_FOLDER", str(Path(values.get("output_folder", cls.output_folder)) / "jobs"))
        try:
            values["jobs"] = JobSettings.from_env(job_env)
        except ValueError as exc:
            raise SettingsError(str(exc)) from None
        settings = dataclasses.replace(cls(), **values)
        if settings.api_keys and not settings.secret_key:
            raise SettingsError(
                "SECRET_KEY is required when API_KEYS is set (it signs the browsers' sign-in cookie): set it "
                "to a long random value, e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))'"
            )
        return settings


def _text(value: Any) -> str:
    text = str(value).strip()
    if not text:
        raise ValueError("must not be empty")
    return text


_HOST_PORT = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[^\s:/,\[\]]+):(\d{1,5})$")
_IPV4 = re.compile(r"^\d{1,3}(\.\d{1,3}){3}:")
TARGET_FORMS = (
    "host:port (localhost:8500), dns:///host:port (every address the name resolves to, e.g. a headless "
    "Kubernetes Service), ipv4:10.0.0.1:8500,10.0.0.2:8500 (a fixed list), ipv6:[::1]:8500, or unix:/path"
)


def _host_port(text: str) -> bool:
    match = _HOST_PORT.match(text)
    return bool(match) and 0 < int(match.group(2)) < 65536


def _address(value: Any) -> str:
    """A gRPC target: one server, or several that the channel balances calls over (round robin)."""
    text = _text(value)
    scheme, sep, rest = text.partition(":")
    if sep and scheme == "ipv4":
        ok = bool(rest) and all(_host_port(part) and _IPV4.match(part) for part in rest.split(","))
    elif sep and scheme == "ipv6":
        ok = bool(rest) and all(_host_port(part) and part.startswith("[") for part in rest.split(","))
    elif sep and scheme == "dns":
        name = rest[2:].partition("/")[2] if rest.startswith("//") else rest  # dns://[authority]/host:port
        ok = _host_port(name)
    elif sep and scheme in ("unix", "unix-abstract"):
        ok = bool(rest.strip("/"))
    else:
        ok = _host_port(text)
    if not ok:
        raise ValueError(f"expected a gRPC target: {TARGET_FORMS}")
    return text


def _path(value: Any) -> Path:
    return Path(_text(value))


def _optional_path(value: Any) -> Path | None:
    return Path(str(value).strip()) if value is not None and str(value).strip() else None


def _positive_int(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError("expected a positive integer")
    try:
        number = int(str(value).strip()) if not isinstance(value, int) else value
    except ValueError:
        raise ValueError("expected a positive integer") from None
    if number <= 0:
        raise ValueError("expected a positive integer")
    return number


def _positive_float(value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError("expected a positive number of seconds") from None
    if not number > 0 or number == float("inf"):
        raise ValueError("expected a positive number of seconds")
    return number


def _seconds_or_zero(value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError("expected a number of seconds, 0 or more") from None
    if not 0 <= number < float("inf"):
        raise ValueError("expected a number of seconds, 0 or more")
    return number


def _secret(value: Any) -> str | None:
    text = str(value).strip()
    if not text:
        return None
    if len(text) < 16:
        raise ValueError("must be at least 16 characters (use a long random value)")
    return text


def _optional_text(value: Any) -> str | None:
    return str(value).strip() or None


def _count(value: Any) -> int:
    try:
        number = int(str(value).strip())
    except ValueError:
        raise ValueError("expected a whole number of proxies (0 when clients connect directly)") from None
    if not 0 <= number <= 10:
        raise ValueError("expected 0 to 10")
    return number


def _keys(value: Any) -> tuple[str, ...]:
    items = value.split(",") if isinstance(value, str) else list(value)
    return tuple(key.strip() for key in items if key.strip())


def _http_url(value: Any) -> str | None:
    """An http(s) base URL with a host (Label Studio's address), without a trailing slash."""
    text = str(value).strip().rstrip("/")
    if not text:
        return None
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("expected an http:// or https:// URL with a host, e.g. http://label-studio:8080")
    return text


def _hosts(value: Any) -> tuple[str, ...]:
    """Host names (or IP addresses), comma-separated; compared case-insensitively."""
    return tuple(host.strip().lower().strip("[]") for host in str(value).split(",") if host.strip())


def label_pairs(value: Any) -> tuple[tuple[str, str], ...]:
    """`model_label:label_studio_label,...` (the model's label, then the project's): LABEL_STUDIO_LABEL_MAP,
    and the ML backend's `label_map` query parameter. ValueError names the pair that is not one."""
    pairs = []
    for item in str(value).split(","):
        if not item.strip():
            continue
        model, sep, target = item.partition(":")
        if not sep or not model.strip() or not target.strip():
            raise ValueError(
                f"expected model_label:label_studio_label pairs, comma-separated; got {item.strip()[:80]!r}"
            )
        pairs.append((model.strip(), target.strip()))
    return tuple(pairs)


_PARSERS: dict[str, tuple[str, Callable[[Any], Any]]] = {
    "TF_SERVING_ADDRESS": ("tf_serving_address", _address),
    "MODEL_CONFIG_FILE": ("model_config_file", _path),
    "MODELS_DIR": ("models_dir", _optional_path),
    "UPLOAD_FOLDER": ("upload_folder", _path),
    "OUTPUT_FOLDER": ("output_folder", _path),
    "MAX_CONTENT_LENGTH": ("max_content_length", _positive_int),
    "MAX_IMAGE_PIXELS": ("max_image_pixels", _positive_int),
    "GRPC_TIMEOUT_S": ("grpc_timeout_s", _positive_float),
    "API_KEYS": ("api_keys", _keys),
    "MAX_INPUT_SIDE": ("max_input_side", _positive_int),
    "RESULTS_MAX_COUNT": ("results_max_count", _positive_int),
    "RESULTS_MAX_BYTES": ("results_max_bytes", _positive_int),
    "MAX_DECODE_PIXELS_IN_FLIGHT": ("max_decode_pixels_in_flight", _positive_int),
    "DECODE_WAIT_S": ("decode_wait_s", _positive_float),
    "SECRET_KEY": ("secret_key", _secret),
    "METRICS_TOKEN": ("metrics_token", _optional_text),
    "TRUSTED_PROXIES": ("trusted_proxies", _count),
    "CONFIG_RECHECK_S": ("config_recheck_s", _seconds_or_zero),
    "MAX_JOB_UPLOAD_BYTES": ("max_job_upload_bytes", _positive_int),
    "MAX_JOB_PICTURES": ("max_job_pictures", _positive_int),
    "JOBS_DISK_BUDGET_BYTES": ("jobs_disk_budget_bytes", _positive_int),
    "MAX_VIDEO_BYTES": ("max_video_bytes", _positive_int),
    "MAX_VIDEO_DURATION_S": ("max_video_duration_s", _positive_float),
    "MAX_VIDEO_FRAMES": ("max_video_frames", _positive_int),
    "MAX_VIDEO_PIXELS": ("max_video_pixels", _positive_int),
    "LABEL_STUDIO_URL": ("label_studio_url", _http_url),
    "LABEL_STUDIO_API_KEY": ("label_studio_api_key", _optional_text),
    "LABEL_STUDIO_ALLOWED_HOSTS": ("label_studio_allowed_hosts", _hosts),
    "LABEL_STUDIO_LABEL_MAP": ("label_studio_label_map", label_pairs),
    "LABEL_STUDIO_TIMEOUT_S": ("label_studio_timeout_s", _positive_float),
    "LABEL_STUDIO_THREADS": ("label_studio_threads", _positive_int),
    "LABEL_STUDIO_MAX_TASKS": ("label_studio_max_tasks", _positive_int),
}
