"""The gRPC services: ``PredictionService`` (Predict, GetModelMetadata) and ``ModelService``.

Generated from the official ``tensorflow-serving-api`` protos, so method paths, messages and
status codes are TF Serving's. Errors leave as ``context.abort(code, message)`` with TF Serving's
codes; Classify, Regress and MultiInference answer UNIMPLEMENTED (the generated default).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import grpc
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from tf_server.errors import ServingError, invalid_argument
from tf_server.model_config import ConfigError, models_from_server_config
from tf_server.model_manager import ModelManager, StartupError
from tf_server.predict import run_predict

log = logging.getLogger("tf_server")

SIGNATURE_DEF_FIELD = "signature_def"
T = TypeVar("T")


def _answer(context: grpc.ServicerContext, call: Callable[[], T]) -> T:
    """Run ``call``; turn ServingError into the gRPC status TF Serving would send."""
    try:
        return call()
    except ServingError as error:
        context.abort(error.code, error.message)
        raise  # unreachable: abort raises


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    """Predict and GetModelMetadata against the manager's current servables."""

    def __init__(self, manager: ModelManager) -> None:
        self._manager = manager

    def Predict(  # noqa: N802 - gRPC method name
        self, request: predict_pb2.PredictRequest, context: grpc.ServicerContext
    ) -> predict_pb2.PredictResponse:
        def call() -> predict_pb2.PredictResponse:
            if not request.HasField("model_spec"):
                raise invalid_argument("Missing ModelSpec")
            return run_predict(self._manager.resolve(request.model_spec), request)

        return _answer(context, call)

    def GetModelMetadata(  # noqa: N802 - gRPC method name
        self, request: get_model_metadata_pb2.GetModelMetadataRequest, context: grpc.ServicerContext
    ) -> get_model_metadata_pb2.GetModelMetadataResponse:
        def call() -> get_model_metadata_pb2.GetModelMetadataResponse:
            if not request.HasField("model_spec"):
                raise invalid_argument("Missing ModelSpec")
            if not request.metadata_field:
                raise invalid_argument("GetModelMetadataRequest must specify at least one metadata_field")
            for metadata_field in request.metadata_field:
                if metadata_field != SIGNATURE_DEF_FIELD:
                    raise invalid_argument(f"Metadata field {metadata_field} is not supported")
            servable = self._manager.resolve(request.model_spec)
            response = get_model_metadata_pb2.GetModelMetadataResponse()
            response.model_spec.name = servable.name
            response.model_spec.version.value = servable.version
            response.metadata[SIGNATURE_DEF_FIELD].CopyFrom(servable.signature_metadata)
            return response

        return _answer(context, call)


class ModelService(model_service_pb2_grpc.ModelServiceServicer):
    """GetModelStatus and HandleReloadConfigRequest."""

    def __init__(self, manager: ModelManager, config_root: Path) -> None:
        self._manager = manager
        self._config_root = config_root

    def GetModelStatus(  # noqa: N802 - gRPC method name
        self, request: get_model_status_pb2.GetModelStatusRequest, context: grpc.ServicerContext
    ) -> get_model_status_pb2.GetModelStatusResponse:
        def call() -> get_model_status_pb2.GetModelStatusResponse:
            if not request.HasField("model_spec"):
                raise invalid_argument("Missing ModelSpec")
            spec = request.model_spec
            version = spec.version.value if spec.HasField("version") else None
            response = get_model_status_pb2.GetModelStatusResponse()
            for status in self._manager.statuses(spec.name, version):
                entry = response.model_version_status.add()
                entry.version = status.version
                entry.state = int(status.state)
                entry.status.error_code = status.error_code
                entry.status.error_message = status.error_message
            return response

        return _answer(context, call)

    def HandleReloadConfigRequest(  # noqa: N802 - gRPC method name
        self, request: model_management_pb2.ReloadConfigRequest, context: grpc.ServicerContext
    ) -> model_management_pb2.ReloadConfigResponse:
        response = model_management_pb2.ReloadConfigResponse()
        try:
            if request.config.WhichOneof("config") != "model_config_list":
                raise invalid_argument(
                    "ServerModelConfig type not supported by HandleReloadConfigRequest. Only ModelConfigList "
                    "is currently supported"
                )
            try:
                models = models_from_server_config(request.config, self._config_root)
            except ConfigError as error:
                raise invalid_argument(str(error)) from None
            try:
                self._manager.apply_config(models)
            except StartupError as error:
                raise ServingError(grpc.StatusCode.UNKNOWN, str(error)) from None
        except ServingError as error:
            log.error("ReloadConfig failed: %s", error.message)
            response.status.error_code = error.code.value[0]
            response.status.error_message = error.message
            context.abort(error.code, error.message)
        return response
