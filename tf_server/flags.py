"""The ``tensorflow_model_server`` command line, as far as this local server supports it.

Flags keep the real binary's names, defaults and meaning so the same command (or compose file)
works against either server. Syntax: ``--flag=value`` or ``--flag value``; booleans also as a bare
``--flag`` (true) or ``--flag=true|false``. Flags that only matter for the real binary (batching,
GPU memory, file system caches) are accepted and reported as ignored; anything else is refused with
the list of supported flags, like a typo in a deployment should be. Parsing imports no TensorFlow,
so ``--help`` and flag errors are instant.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

USAGE_EXIT_CODE = 2


class FlagError(ValueError):
    """A command line the server cannot run with; the message says what to change."""


@dataclass(frozen=True)
class ServerOptions:
    """Parsed command line; field names are the flag names."""

    port: int = 8500
    host: str = "0.0.0.0"
    grpc_socket_path: str = ""
    rest_api_port: int = 0
    rest_api_num_threads: int = 0
    rest_api_timeout_in_ms: int = 30_000
    rest_api_enable_cors_support: bool = False
    monitoring_config_file: str = ""
    enable_signature_method_name_check: bool = False
    model_config_file: str = ""
    model_config_file_poll_wait_seconds: int = 0
    model_name: str = "default"
    model_base_path: str = ""
    file_system_poll_wait_seconds: int = 1
    enable_model_warmup: bool = True
    num_request_iterations_for_warmup: int = 0
    max_num_load_retries: int = 5
    load_retry_interval_micros: int = 60_000_000
    allow_version_labels_for_unavailable_models: bool = False
    saved_model_tags: str = "serve"
    grpc_max_threads: int = 0
    grpc_channel_arguments: str = ""
    tensorflow_session_parallelism: int = 0
    tensorflow_intra_op_parallelism: int = 0
    tensorflow_inter_op_parallelism: int = 0
    enable_batching: bool = False
    batching_parameters_file: str = ""
    version: bool = False
    help: bool = False
    ignored: tuple[str, ...] = field(default=())


@dataclass(frozen=True)
class FlagSpec:
    """One flag: how to parse its value and what it does (for ``--help``)."""

    name: str
    parse: Callable[[str], Any]
    help: str

    @property
    def is_bool(self) -> bool:
        return self.parse is parse_bool


def parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise ValueError(f"expected true or false, got {text!r}")


def parse_int(text: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise ValueError(f"expected an integer, got {text!r}") from None


SUPPORTED: tuple[FlagSpec, ...] = (
    FlagSpec("port", parse_int, "TCP port to listen on for gRPC (default 8500)."),
    FlagSpec(
        "host",
        str,
        "Interface to listen on (default 0.0.0.0, all of them, as tensorflow_model_server does). An "
        "extension of this server: use 127.0.0.1 to keep a development server off the network.",
    ),
    FlagSpec(
        "grpc_socket_path",
        str,
        "Also serve gRPC on this UNIX domain socket (clients connect to unix:PATH). Default: none.",
    ),
    FlagSpec(
        "rest_api_port",
        parse_int,
        "Port of the HTTP/REST API (/v1/models/..., and Prometheus metrics when "
        "--monitoring_config_file enables them). 0 (default): no REST API. Must differ from --port.",
    ),
    FlagSpec("rest_api_num_threads", parse_int, "Threads serving REST requests (default: 4 x CPUs)."),
    FlagSpec("rest_api_timeout_in_ms", parse_int, "Deadline of each REST request in ms (default 30000)."),
    FlagSpec("rest_api_enable_cors_support", parse_bool, "Answer CORS preflight requests on the REST API."),
    FlagSpec(
        "monitoring_config_file",
        str,
        "A MonitoringConfig text proto; prometheus_config { enable: true path: ... } serves metrics "
        "on the REST port (default path /monitoring/prometheus/metrics).",
    ),
    FlagSpec(
        "enable_signature_method_name_check",
        parse_bool,
        "Classify/Regress/MultiInference require the signature's method_name to match (default false).",
    ),
    FlagSpec(
        "model_config_file",
        str,
        "Read an ascii ModelServerConfig protobuf from this file and serve the models in it "
        "(relative base_path values are resolved against the file's folder). "
        "If used, --model_name and --model_base_path are ignored.",
    ),
    FlagSpec(
        "model_config_file_poll_wait_seconds",
        parse_int,
        "Interval in seconds between polls of --model_config_file for changes (models added, "
        "removed, new policies or labels). 0 (default): read once.",
    ),
    FlagSpec("model_name", str, "Name of the model (default 'default'; ignored with --model_config_file)."),
    FlagSpec(
        "model_base_path",
        str,
        "Path to the model's folder of numbered versions (ignored with --model_config_file, otherwise "
        "required).",
    ),
    FlagSpec(
        "file_system_poll_wait_seconds",
        parse_int,
        "Interval in seconds between polls of the model folders for new versions (default 1). "
        "0: look once at startup.",
    ),
    FlagSpec(
        "enable_model_warmup",
        parse_bool,
        "Replay assets.extra/tf_serving_warmup_requests before a version becomes AVAILABLE (default true).",
    ),
    FlagSpec(
        "num_request_iterations_for_warmup",
        parse_int,
        "Number of times each warmup request is replayed; used only if > 0 (default 1 replay).",
    ),
    FlagSpec(
        "max_num_load_retries",
        parse_int,
        "Times a failed load is retried before the version is given up (default 5). A version that "
        "gave up is tried again when its files change.",
    ),
    FlagSpec(
        "load_retry_interval_micros",
        parse_int,
        "Interval in microseconds between load retries (default 1 minute).",
    ),
    FlagSpec(
        "allow_version_labels_for_unavailable_models",
        parse_bool,
        "Allow version_labels that point at versions which are not AVAILABLE yet (default false, "
        "as in TF Serving: then a config with labels only loads once the labelled versions serve).",
    ),
    FlagSpec(
        "saved_model_tags", str, "Comma-separated tag set of the MetaGraphDef to load (default 'serve')."
    ),
    FlagSpec(
        "grpc_max_threads", parse_int, "Max threads handling gRPC requests (default: 4 x CPUs, at least 8)."
    ),
    FlagSpec(
        "grpc_channel_arguments",
        str,
        "Comma-separated gRPC server arguments, e.g. grpc.max_connection_age_ms=2000.",
    ),
    FlagSpec(
        "tensorflow_session_parallelism",
        parse_int,
        "Threads for running TensorFlow ops (intra and inter op). 0: auto.",
    ),
    FlagSpec("tensorflow_intra_op_parallelism", parse_int, "Threads used to parallelize one op. 0: auto."),
    FlagSpec("tensorflow_inter_op_parallelism", parse_int, "Ops that may run at the same time. 0: auto."),
    FlagSpec("enable_batching", parse_bool, "Accepted for compatibility; requests are not batched here."),
    FlagSpec(
        "batching_parameters_file",
        str,
        "Accepted for compatibility (needs --enable_batching, as in TF Serving); not used here.",
    ),
    FlagSpec("version", parse_bool, "Print the version and exit."),
    FlagSpec("help", parse_bool, "Print this list and exit."),
)

# Flags the real binary takes that change nothing a client of this server can observe.
IGNORED: tuple[str, ...] = (
    "per_process_gpu_memory_fraction",
    "enable_per_model_batching_parameters",
    "flush_filesystem_caches",
    "num_load_threads",
    "num_unload_threads",
    "xla_cpu_compilation_enabled",
    "enable_profiler",
    "remove_unused_fields_from_bundle_metagraph",
)

_BY_NAME = {spec.name: spec for spec in SUPPORTED}
_OPTION_FIELDS = {f.name for f in fields(ServerOptions)}


def usage(program: str = "python -m tf_server") -> str:
    """``--help`` text: every supported flag, then the ones accepted and ignored."""
    defaults = ServerOptions()
    lines = [f"usage: {program} [--flag=value ...]", "", "Flags (tensorflow_model_server compatible):"]
    for spec in SUPPORTED:
        default = getattr(defaults, spec.name)
        shown = str(default).lower() if isinstance(default, bool) else repr(default)
        lines.append(f"  --{spec.name}  (default {shown})")
        lines.append(f"      {spec.help}")
    lines.append("")
    lines.append("Accepted for compatibility with the real binary and ignored:")
    lines.append("  " + " ".join(f"--{name}" for name in IGNORED))
    return "\n".join(lines) + "\n"


def _supported_list() -> str:
    return ", ".join(f"--{spec.name}" for spec in SUPPORTED)


def parse_flags(argv: Sequence[str]) -> ServerOptions:
    """Turn ``sys.argv[1:]`` into ServerOptions; raise FlagError naming the bad flag."""
    values: dict[str, Any] = {}
    ignored: list[str] = []
    args = list(argv)
    index = 0
    while index < len(args):
        arg = args[index]
        index += 1
        if not arg.startswith("-") or arg in ("-", "--"):
            raise FlagError(f"unexpected argument {arg!r}: flags look like --name=value")
        name, has_value, value = arg.lstrip("-").partition("=")
        if name == "h":
            name = "help"
        if name in IGNORED:
            if not has_value and index < len(args) and not args[index].startswith("--"):
                index += 1
            ignored.append(name)
            continue
        spec = _BY_NAME.get(name)
        if spec is None:
            raise FlagError(f"unknown command line flag '{name}'. Supported flags: {_supported_list()}")
        if not has_value:
            if spec.is_bool:
                value = "true"
            elif index < len(args):
                value = args[index]
                index += 1
            else:
                raise FlagError(f"flag --{name} needs a value: --{name}=VALUE")
        try:
            values[name] = spec.parse(value)
        except ValueError as error:
            raise FlagError(f"invalid value for --{name}: {error}") from None
    assert set(values) <= _OPTION_FIELDS
    return ServerOptions(**values, ignored=tuple(ignored))


def validate(options: ServerOptions) -> None:
    """Checks TF Serving makes before it starts (same conditions, similar words)."""
    if not 0 < options.port < 65536:
        raise FlagError(f"--port must be between 1 and 65535, got {options.port}")
    if not options.model_base_path and not options.model_config_file:
        raise FlagError(
            "Both --model_base_path and --model_config_file are empty! Pass "
            "--model_config_file=models.config or --model_name=NAME --model_base_path=/path/to/model"
        )
    if options.rest_api_port and not 0 < options.rest_api_port < 65536:
        raise FlagError(f"--rest_api_port must be between 1 and 65535, got {options.rest_api_port}")
    if options.rest_api_port == options.port:
        raise FlagError(
            f"--port and --rest_api_port are both {options.port}: the gRPC and REST APIs need a port each"
        )
    if options.batching_parameters_file and not options.enable_batching:
        raise FlagError("--batching_parameters_file is set without setting --enable_batching to true.")
