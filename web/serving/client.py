"""The one TensorFlow Serving client: one gRPC channel per worker process, errors as GatewayErrors.

The channel balances calls over every address of its target (``dns:///name:port`` of a headless
Kubernetes Service, ``ipv4:a:port,b:port``), round robin, instead of pinning to the first server it
reached, and retries calls that fail with UNAVAILABLE on another one: Predict, metadata and status
have no side effects, so a replica that dies mid-call costs a retry, not an error.

The channel is created lazily on first use and re-created when the process id changes, so a
gunicorn worker never inherits a channel from the master (gRPC channels do not survive fork).
Message-size limits are raised (a 12 MP uint8 image is 36 MB; the default limit is 4 MB), every
call has a deadline, and `grpc.RpcError` never leaves this module.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from typing import TypeVar

import grpc

from web.errors import (
    BadRequest,
    GatewayError,
    ModelNotFound,
    ModelServerError,
    ModelServerTimeout,
    ModelServerUnavailable,
    PayloadTooLarge,
)
from web.metrics import MODEL_SERVER_CALLS, child
from web.serving.protos.tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

MAX_MESSAGE_BYTES = 512 * 1024 * 1024
# gRPC keeps what a call has sent so it can replay it on a retry; beyond this many bytes per call it
# gives up retrying. Uploads for tensor-input models are downsized to MAX_INPUT_SIDE (1600 px: 5.8 MB
# of uint8 pixels), so 64 MiB covers every request the gateway sends.
RETRY_BUFFER_BYTES = 64 * 1024 * 1024
RETRIED_METHODS = (
    ("tensorflow.serving.PredictionService", "Predict"),
    ("tensorflow.serving.PredictionService", "GetModelMetadata"),
    ("tensorflow.serving.ModelService", "GetModelStatus"),
)
SERVICE_CONFIG = json.dumps(
    {
        "loadBalancingConfig": [{"round_robin": {}}],
        # Retries stop while more than half of recent calls failed: an overloaded TF Serving (its
        # batching queue full answers UNAVAILABLE) gets no extra calls from the retries.
        "retryThrottling": {"maxTokens": 10, "tokenRatio": 0.1},
        "methodConfig": [
            {
                "name": [{"service": service, "method": method} for service, method in RETRIED_METHODS],
                "retryPolicy": {
                    "maxAttempts": 3,
                    "initialBackoff": "0.05s",
                    "maxBackoff": "0.5s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ],
    }
)
CHANNEL_OPTIONS = (
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    # Detect a dead connection during long calls; no pings while idle (servers reject those).
    ("grpc.keepalive_time_ms", 60_000),
    ("grpc.keepalive_timeout_ms", 20_000),
    ("grpc.keepalive_permit_without_calls", 0),
    # Reconnect fast when the model server comes back (gRPC's default back-off grows to 120 s, and a
    # restarted server would wait out its current step): first retry after 100 ms, then never more
    # than 0.5 s apart (±20 % jitter), so a server that is back is found within about 0.6 s.
    # (min_reconnect_backoff_ms stays at its default: gRPC also uses it as the connect timeout, and a
    # server that accepts TCP but hangs must still end in DEADLINE_EXCEEDED, not a fast UNAVAILABLE.)
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 500),
    # Round robin over every resolved address, and retries of UNAVAILABLE (see SERVICE_CONFIG).
    ("grpc.service_config", SERVICE_CONFIG),
    ("grpc.enable_retries", 1),
    ("grpc.per_rpc_retry_buffer_size", RETRY_BUFFER_BYTES),
    # A name's addresses are looked up again at most every 10 s (default 30 s) when a connection
    # drops, so replicas that come and go are found sooner.
    ("grpc.dns_min_time_between_resolutions_ms", 10_000),
)

Response = TypeVar("Response")


class ServingClient:
    """Calls TF Serving's Predict, GetModelMetadata and GetModelStatus with a default deadline."""

    def __init__(self, address: str, timeout_s: float) -> None:
        self.address = address
        self.timeout_s = timeout_s
        self._lock = threading.Lock()
        self._pid: int | None = None
        self._channel: grpc.Channel | None = None
        self._prediction: prediction_service_pb2_grpc.PredictionServiceStub | None = None
        self._models: model_service_pb2_grpc.ModelServiceStub | None = None

    def _connect(self) -> None:
        pid = os.getpid()
        if self._pid == pid:
            return
        with self._lock:
            if self._pid == pid:
                return
            # A channel inherited over fork is unusable: drop it without touching it, open our own.
            self._channel = grpc.insecure_channel(self.address, options=CHANNEL_OPTIONS)
            self._prediction = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
            self._models = model_service_pb2_grpc.ModelServiceStub(self._channel)
            self._pid = pid

    def close(self) -> None:
        """Close this process's channel (a later call opens a new one)."""
        with self._lock:
            if self._channel is not None and self._pid == os.getpid():
                self._channel.close()
            self._channel = self._prediction = self._models = None
            self._pid = None

    def predict(
        self, request: predict_pb2.PredictRequest, *, timeout: float | None = None
    ) -> predict_pb2.PredictResponse:
        self._connect()
        return self._call(self._prediction.Predict, request, timeout, f"Predict({request.model_spec.name})")

    def get_model_metadata(
        self,
        name: str,
        *,
        version: int | None = None,
        version_label: str | None = None,
        timeout: float | None = None,
    ) -> get_model_metadata_pb2.GetModelMetadataResponse:
        request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
        request.model_spec.name = name
        if version is not None:
            request.model_spec.version.value = version
        elif version_label is not None:
            request.model_spec.version_label = version_label
        self._connect()
        return self._call(self._prediction.GetModelMetadata, request, timeout, f"GetModelMetadata({name})")

    def get_model_status(
        self, name: str, *, timeout: float | None = None
    ) -> get_model_status_pb2.GetModelStatusResponse:
        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = name
        self._connect()
        return self._call(self._models.GetModelStatus, request, timeout, f"GetModelStatus({name})")

    def _call(
        self, method: Callable[..., Response], request: object, timeout: float | None, what: str
    ) -> Response:
        deadline = self.timeout_s if timeout is None else timeout
        name = what.partition("(")[0]
        try:
            response = method(request, timeout=deadline)
        except grpc.RpcError as exc:
            code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
            child(MODEL_SERVER_CALLS, name, code.name).inc()
            raise self.translate(exc, what, deadline) from None
        child(MODEL_SERVER_CALLS, name, "OK").inc()
        return response

    def translate(self, exc: grpc.RpcError, what: str, deadline: float) -> GatewayError:
        """Map a gRPC status to the project's exception, with a message naming the address."""
        code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
        details = (exc.details() if hasattr(exc, "details") else None) or str(exc)
        if code == grpc.StatusCode.UNAVAILABLE:
            return ModelServerUnavailable(
                f"the model server at {self.address} is unavailable ({details}); start it or fix "
                "TF_SERVING_ADDRESS"
            )
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            setting = " (GRPC_TIMEOUT_S)" if deadline == self.timeout_s else ""
            return ModelServerTimeout(
                f"the model server at {self.address} did not answer {what} within {deadline:g} s{setting}; "
                "it may be overloaded: try again later, or with a smaller image"
            )
        if code == grpc.StatusCode.NOT_FOUND:
            return ModelNotFound(details)
        if code == grpc.StatusCode.INVALID_ARGUMENT:
            return BadRequest(f"the model server rejected the input: {details}")
        if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
            if "larger than max" in details or "message" in details.lower():
                return PayloadTooLarge(
                    f"the request to the model server is too large ({details}): upload a smaller image"
                )
            return ModelServerUnavailable(f"the model server at {self.address} is overloaded ({details})")
        if code in (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.ABORTED):
            return ModelServerUnavailable(f"the model server at {self.address} is not ready: {details}")
        return ModelServerError(
            f"the model server at {self.address} failed on {what} ({code.name}): {details}"
        )
