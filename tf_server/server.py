"""Bring the model server up and down: models first, then the gRPC port; SIGTERM stops it cleanly.

Like ``tensorflow_model_server``, the port opens only after the initial models have loaded and
warmed up, so "the channel is ready" means "the models are AVAILABLE". Message limits are TF
Serving's (2 GiB - 1 both ways). Requests run on a thread pool: TensorFlow releases the GIL, so
concurrent Predicts run in parallel. SIGTERM/SIGINT stop accepting calls, give running ones a
grace period, stop the pollers and exit 0.
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import sys
import threading
from concurrent import futures
from importlib import metadata
from pathlib import Path

import grpc
import tensorflow as tf
from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

from tf_server.errors import ServingError
from tf_server.flags import ServerOptions
from tf_server.http_server import RunningServer
from tf_server.model_config import ConfigError, ModelConfig, read_config_file, single_model
from tf_server.model_manager import ManagerOptions, ModelManager, StartupError
from tf_server.monitoring import ServingMetrics, read_monitoring_config
from tf_server.rest_api import start_rest_server
from tf_server.servable import Servable, load_servable
from tf_server.servicer import ModelService, PredictionService
from tf_server.serving_core import ServingCore
from tf_server.warmup import run_warmup

log = logging.getLogger("tf_server")

MAX_MESSAGE_BYTES = 2**31 - 1  # TF Serving: builder.SetMaxMessageSize(kint32max)
STOP_GRACE_S = 10.0
FAILED_TO_START = 255  # tensorflow_model_server's `return -1`


class _Stopped(Exception):
    """SIGTERM/SIGINT before the server started serving."""


def configure_logging() -> None:
    """glog-like lines, as TF Serving prints them, on stderr."""
    handler = logging.StreamHandler(sys.stderr)
    line = "%(asctime)s.%(msecs)03d: %(levelname).1s tf_server/%(module)s.py:%(lineno)d] %(message)s"
    handler.setFormatter(logging.Formatter(line, "%Y-%m-%d %H:%M:%S"))
    root = logging.getLogger("tf_server")
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    root.propagate = False


def version_text() -> str:
    def installed(dist: str) -> str:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return "unknown"

    return (
        f"TensorFlow ModelServer: {installed('tensorflow-serving-api')}-local (python -m tf_server)\n"
        f"TensorFlow Library: {tf.__version__}\n"
    )


def session_config(options: ServerOptions) -> tf.compat.v1.ConfigProto:
    """Every model's session gets TF Serving's session options from the same flags (0: TF decides)."""
    intra = options.tensorflow_intra_op_parallelism or options.tensorflow_session_parallelism
    inter = options.tensorflow_inter_op_parallelism or options.tensorflow_session_parallelism
    return tf.compat.v1.ConfigProto(
        intra_op_parallelism_threads=intra, inter_op_parallelism_threads=inter, allow_soft_placement=True
    )


def _models(options: ServerOptions) -> tuple[ModelConfig, ...]:
    if options.model_config_file:
        return read_config_file(options.model_config_file)
    log.info(
        "Building single TensorFlow model file config:  model_name: %s model_base_path: %s",
        options.model_name,
        options.model_base_path,
    )
    return single_model(options.model_name, options.model_base_path)


def _loader(options: ServerOptions):  # noqa: ANN202 - LoadFunction
    tags = [tag for tag in options.saved_model_tags.split(",") if tag]
    config = session_config(options)

    def load(model: ModelConfig, version: int, path: Path) -> Servable:
        log.info("Reading SavedModel from: %s", path)
        servable = load_servable(model.name, version, path, tags, config)
        if options.enable_model_warmup:
            run_warmup(servable, options.num_request_iterations_for_warmup)
        return servable

    return load


def _channel_arguments(text: str) -> list[tuple[str, int | str]]:
    arguments: list[tuple[str, int | str]] = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, _, value = item.partition("=")
        arguments.append((key, int(value) if value.lstrip("-").isdigit() else value))
    return arguments


def build_grpc_server(core: ServingCore, options: ServerOptions, config_root: Path) -> grpc.Server:
    workers = options.grpc_max_threads or max(8, 4 * (os.cpu_count() or 1))
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="grpc"),
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.so_reuseport", 0),  # a port already in use is an error, not a silent second server
            *_channel_arguments(options.grpc_channel_arguments),
        ],
    )
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(PredictionService(core), server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelService(core, config_root), server)
    return server


def bind_grpc(server: grpc.Server, options: ServerOptions) -> str:
    """The TCP port, and the UNIX socket when --grpc_socket_path is set; returns what is served."""
    address = f"{options.host}:{options.port}"
    if server.add_insecure_port(address) == 0:
        raise StartupError(f"could not bind {address}")
    if options.grpc_socket_path:
        socket_path = Path(options.grpc_socket_path)
        if socket_path.is_socket():
            socket_path.unlink()  # left by a server that was killed; binding would fail
        if server.add_insecure_port(f"unix:{socket_path}") == 0:
            raise StartupError(f"could not bind the gRPC socket {socket_path}")
        address += f" and unix:{socket_path}"
    return address


def serve(options: ServerOptions) -> int:
    """Run until SIGTERM/SIGINT; return the process exit code."""
    configure_logging()
    onednn = os.environ.get("TF_ENABLE_ONEDNN_OPTS", "")
    kernels = "oneDNN" if onednn.lower() in ("1", "true") else "Eigen, as TF Serving's own build"
    log.info("TensorFlow kernels: %s (TF_ENABLE_ONEDNN_OPTS=%s)", kernels, onednn or "unset")
    for name in options.ignored:
        log.info("Flag --%s is accepted for compatibility with tensorflow_model_server and ignored", name)
    if options.enable_batching:
        log.info("--enable_batching: this server runs requests individually (no batching)")

    stop = threading.Event()
    serving = False

    def on_signal(signum: int, _frame: object) -> None:
        log.info("Received %s, shutting down", signal.Signals(signum).name)
        stop.set()
        if not serving:
            raise _Stopped

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    manager = ModelManager(
        _loader(options),
        ManagerOptions(
            file_system_poll_wait_seconds=options.file_system_poll_wait_seconds,
            max_num_load_retries=max(options.max_num_load_retries, 0),
            load_retry_interval_s=max(options.load_retry_interval_micros, 0) / 1e6,
            allow_version_labels_for_unavailable_models=options.allow_version_labels_for_unavailable_models,
        ),
    )
    config_file = Path(options.model_config_file).resolve() if options.model_config_file else None
    metrics: ServingMetrics | None = None
    try:
        # TF Serving reads --monitoring_config_file only when it serves REST (the metrics page is
        # on the REST port); read before the models load, a bad file fails the same way sooner.
        if options.rest_api_port and options.monitoring_config_file:
            prometheus = read_monitoring_config(options.monitoring_config_file)
            if prometheus.enable:
                metrics = ServingMetrics(prometheus.path)
        manager.start(_models(options))
        # The loaded graphs are millions of long-lived Python objects: keep the garbage collector from
        # walking them again on every collection (a JSON request body alone triggers several).
        gc.freeze()
        if metrics is not None:  # made-up model names share one series, from the first request on
            metrics.bind_models(lambda name: name in manager.model_names())
        core = ServingCore(
            manager,
            observe=metrics.observe if metrics is not None else None,
            check_method_names=options.enable_signature_method_name_check,
        )
        server = build_grpc_server(core, options, config_file.parent if config_file else Path.cwd())
        address = bind_grpc(server, options)
        server.start()
    except _Stopped:
        manager.stop()
        return 0
    except (ConfigError, StartupError, ServingError, RuntimeError) as error:
        manager.stop()
        text = f"{error.code.name}: {error.message}" if isinstance(error, ServingError) else str(error)
        print(f"Failed to start server. Error: {text}", file=sys.stderr, flush=True)
        return FAILED_TO_START
    serving = True
    manager.start_polling(config_file, options.model_config_file_poll_wait_seconds)
    log.info("Running gRPC ModelServer at %s ...", address)
    rest: RunningServer | None = None
    if options.rest_api_port:
        rest_address = f"localhost:{options.rest_api_port}"
        try:
            rest = start_rest_server(
                core,
                options.host,
                options.rest_api_port,
                num_threads=options.rest_api_num_threads,
                timeout_ms=options.rest_api_timeout_in_ms,
                cors=options.rest_api_enable_cors_support,
                metrics=metrics,
            )
        except OSError as error:  # as TF Serving: logged, and gRPC keeps serving
            log.error("Failed to start HTTP Server at %s (%s)", rest_address, error)
        else:
            log.info("Exporting HTTP/REST API at:%s ...", rest_address)
    while not stop.wait(1.0):
        pass
    if rest is not None:
        rest.stop()
    server.stop(STOP_GRACE_S).wait()
    manager.stop()
    log.info("Server stopped")
    return 0
