"""The gRPC services: ``PredictionService`` (Predict, Classify, Regress, MultiInference,
GetModelMetadata) and ``ModelService`` (GetModelStatus, HandleReloadConfigRequest).

Generated from the official ``tensorflow-serving-api`` protos, so method paths, messages and
status codes are TF Serving's. The work is done by ``ServingCore`` (shared with the REST API);
errors leave as ``context.abort(code, message)`` with TF Serving's codes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import grpc
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

from tf_server.errors import ServingError, invalid_argument
from tf_server.model_config import ConfigError, models_from_server_config
from tf_server.model_manager import StartupError
from tf_server.serving_core import ServingCore

log = logging.getLogger("tf_server")

T = TypeVar("T")


def _answer(context: grpc.ServicerContext, call: Callable[[], T]) -> T:
    """Run ``call``; turn ServingError into the gRPC status TF Serving would send."""
    try:
        return call()
    except ServingError as error:
        context.abort(error.code, error.message)
        raise  # unreachable: abort raises


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    """TF Serving's PredictionService over the core."""

    def __init__(self, core: ServingCore) -> None:
        self._core = core

    def Predict(  # noqa: N802 - gRPC method name
        self, request: predict_pb2.PredictRequest, context: grpc.ServicerContext
    ) -> predict_pb2.PredictResponse:
        return _answer(context, lambda: self._core.predict(request))

    def Classify(  # noqa: N802 - gRPC method name
        self, request: classification_pb2.ClassificationRequest, context: grpc.ServicerContext
    ) -> classification_pb2.ClassificationResponse:
        return _answer(context, lambda: self._core.classify(request))

    def Regress(  # noqa: N802 - gRPC method name
        self, request: regression_pb2.RegressionRequest, context: grpc.ServicerContext
    ) -> regression_pb2.RegressionResponse:
        return _answer(context, lambda: self._core.regress(request))

    def MultiInference(  # noqa: N802 - gRPC method name
        self, request: inference_pb2.MultiInferenceRequest, context: grpc.ServicerContext
    ) -> inference_pb2.MultiInferenceResponse:
        return _answer(context, lambda: self._core.multi_inference(request))

    def GetModelMetadata(  # noqa: N802 - gRPC method name
        self, request: get_model_metadata_pb2.GetModelMetadataRequest, context: grpc.ServicerContext
    ) -> get_model_metadata_pb2.GetModelMetadataResponse:
        return _answer(context, lambda: self._core.metadata(request))


class ModelService(model_service_pb2_grpc.ModelServiceServicer):
    """GetModelStatus and HandleReloadConfigRequest."""

    def __init__(self, core: ServingCore, config_root: Path) -> None:
        self._core = core
        self._manager = core.manager
        self._config_root = config_root

    def GetModelStatus(  # noqa: N802 - gRPC method name
        self, request: get_model_status_pb2.GetModelStatusRequest, context: grpc.ServicerContext
    ) -> get_model_status_pb2.GetModelStatusResponse:
        return _answer(context, lambda: self._core.status(request))

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
