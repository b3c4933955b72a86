"""The one place requests are served: the gRPC services and the REST API both call this.

Each method takes and returns TF Serving's protobuf messages and raises ``ServingError`` with TF
Serving's status code and message, so the two front ends differ only in how they decode the
request and encode the answer. Every call is timed and reported to ``observe`` (the Prometheus
metrics of ``tf_server.monitoring``) with its model, API, entry point and status.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import grpc
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    predict_pb2,
    regression_pb2,
)

from tf_server.errors import ServingError, invalid_argument
from tf_server.inference import run_classify, run_multi_inference, run_regress
from tf_server.model_manager import ModelManager
from tf_server.predict import run_predict
from tf_server.servable import Servable

SIGNATURE_DEF_FIELD = "signature_def"
# (model name, API name, entry point "GRPC"/"REST", status code, seconds)
Observer = Callable[[str, str, str, grpc.StatusCode, float], None]
T = TypeVar("T")


class ServingCore:
    """Predict, Classify, Regress, MultiInference, metadata and status over the loaded models."""

    def __init__(
        self, manager: ModelManager, observe: Observer | None = None, check_method_names: bool = False
    ) -> None:
        self.manager = manager
        self._observe = observe
        self._check = check_method_names

    def _timed(self, api: str, model: str, entrypoint: str, call: Callable[[], T]) -> T:
        started = time.perf_counter()
        code = grpc.StatusCode.OK
        try:
            return call()
        except ServingError as error:
            code = error.code
            raise
        except Exception:  # a bug: counted as the UNKNOWN status the client gets, never as OK
            code = grpc.StatusCode.UNKNOWN
            raise
        finally:
            if self._observe is not None:
                self._observe(model, api, entrypoint, code, time.perf_counter() - started)

    def resolve(self, request) -> Servable:  # noqa: ANN001 - any request with a model_spec
        """The servable a request names. ``predict``/``classify``/``regress`` take the one a front
        end already resolved (the REST API decodes JSON against it), so that decoding and running
        use the same version even while "latest" or a label moves."""
        if not request.HasField("model_spec"):
            raise invalid_argument("Missing ModelSpec")
        return self.manager.resolve(request.model_spec)

    def predict(
        self, request: predict_pb2.PredictRequest, entrypoint: str = "GRPC", servable: Servable | None = None
    ) -> predict_pb2.PredictResponse:
        return self._timed(
            "Predict",
            request.model_spec.name,
            entrypoint,
            lambda: run_predict(servable or self.resolve(request), request),
        )

    def classify(
        self,
        request: classification_pb2.ClassificationRequest,
        entrypoint: str = "GRPC",
        servable: Servable | None = None,
    ) -> classification_pb2.ClassificationResponse:
        return self._timed(
            "Classify",
            request.model_spec.name,
            entrypoint,
            lambda: run_classify(servable or self.resolve(request), request, self._check),
        )

    def regress(
        self,
        request: regression_pb2.RegressionRequest,
        entrypoint: str = "GRPC",
        servable: Servable | None = None,
    ) -> regression_pb2.RegressionResponse:
        return self._timed(
            "Regress",
            request.model_spec.name,
            entrypoint,
            lambda: run_regress(servable or self.resolve(request), request, self._check),
        )

    def multi_inference(
        self, request: inference_pb2.MultiInferenceRequest, entrypoint: str = "GRPC"
    ) -> inference_pb2.MultiInferenceResponse:
        # As TF Serving: the first task's ModelSpec picks the servable (version included).
        spec = request.tasks[0].model_spec if request.tasks else None

        def call() -> inference_pb2.MultiInferenceResponse:
            if spec is None:
                raise invalid_argument("Found ModelSpec with an empty model name.")
            return run_multi_inference(self.manager.resolve(spec), request, self._check)

        return self._timed("MultiInference", spec.name if spec else "", entrypoint, call)

    def metadata(
        self, request: get_model_metadata_pb2.GetModelMetadataRequest, entrypoint: str = "GRPC"
    ) -> get_model_metadata_pb2.GetModelMetadataResponse:
        def call() -> get_model_metadata_pb2.GetModelMetadataResponse:
            if not request.HasField("model_spec"):
                raise invalid_argument("Missing ModelSpec")
            if not request.metadata_field:
                raise invalid_argument("GetModelMetadataRequest must specify at least one metadata_field")
            for metadata_field in request.metadata_field:
                if metadata_field != SIGNATURE_DEF_FIELD:
                    raise invalid_argument(f"Metadata field {metadata_field} is not supported")
            servable = self.manager.resolve(request.model_spec)
            response = get_model_metadata_pb2.GetModelMetadataResponse()
            response.model_spec.name = servable.name
            response.model_spec.version.value = servable.version
            response.metadata[SIGNATURE_DEF_FIELD].CopyFrom(servable.signature_metadata)
            return response

        return self._timed("GetModelMetadata", request.model_spec.name, entrypoint, call)

    def status(
        self, request: get_model_status_pb2.GetModelStatusRequest, entrypoint: str = "GRPC"
    ) -> get_model_status_pb2.GetModelStatusResponse:
        def call() -> get_model_status_pb2.GetModelStatusResponse:
            if not request.HasField("model_spec"):
                raise invalid_argument("Missing ModelSpec")
            spec = request.model_spec
            version = spec.version.value if spec.HasField("version") else None
            response = get_model_status_pb2.GetModelStatusResponse()
            for status in self.manager.statuses(spec.name, version):
                entry = response.model_version_status.add()
                entry.version = status.version
                entry.state = int(status.state)
                entry.status.error_code = status.error_code
                entry.status.error_message = status.error_message
            return response

        return self._timed("GetModelStatus", request.model_spec.name, entrypoint, call)
