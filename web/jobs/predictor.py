"""The workers' predictor: the gateway's own one-picture pipeline, in the worker process.

A job's picture goes through exactly what `POST /api/v1/models/<m>/predict` runs (the same checks of
size, pixels, decode budget and EXIF, the same adapters, label maps and JSON), without an HTTP hop:
each worker owns a `Gateway` facade with its own gRPC channel to TF Serving. The gateway's errors
become the runner's: a bad picture (4xx) is skipped with its message, an unavailable or slow model
server (503, 504, 502) is retried with back-off, and anything that no picture of this job can get
past (unknown model, a model the gateway cannot read) fails the job.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from web.errors import (
    BadRequest,
    ConfigurationError,
    GatewayError,
    ModelNotFound,
    ModelServerError,
    ModelServerTimeout,
    ModelServerUnavailable,
    PayloadTooLarge,
    UnsupportedMediaType,
    UnsupportedModel,
)
from web.gateway import Gateway
from web.jobs.runner import JobError, PictureError, RetryableError
from web.options import PredictOptions
from web.settings import Settings

RETRYABLE = (ModelServerUnavailable, ModelServerTimeout, ModelServerError)
PICTURE_PROBLEMS = (BadRequest, PayloadTooLarge, UnsupportedMediaType)
JOB_PROBLEMS = (ModelNotFound, UnsupportedModel, ConfigurationError)


class GatewayPredictor:
    """`Predictor` over the gateway facade (see the module docstring)."""

    def __init__(self, settings: Settings | None = None, gateway: Gateway | None = None) -> None:
        self.gateway = gateway or Gateway(settings or Settings.load())

    def predict(
        self, model: str, version: int | None, data: bytes, file_name: str, options: Mapping[str, Any]
    ) -> dict[str, Any]:
        values = {name: "" if value is None else str(value) for name, value in options.items()}
        if version is not None:
            values["version"] = str(version)
        try:
            parsed = PredictOptions.from_mapping(values)
            prediction = self.gateway.predict(model, data, options=parsed, filename=file_name)
        except RETRYABLE as error:
            raise RetryableError(error.message) from None
        except JOB_PROBLEMS as error:
            raise JobError(error.message) from None
        except PICTURE_PROBLEMS as error:
            raise PictureError(error.message) from None
        except GatewayError as error:  # 503 busy (decode budget): try again later
            raise RetryableError(error.message) from None
        return prediction.to_dict()
