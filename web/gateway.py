"""The gateway facade: the one object the views and the API use (`app.extensions["gateway"]`).

It owns one TF Serving client, the model registry, the decode budget and the result store, and
hands each question to the part that answers it: the model catalog (`web.reading.catalog`),
the one-picture pipeline (`web.pipeline.predict`), readiness (`web.reading.readiness`). Views
never see gRPC or protobuf types.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from web.domain import Prediction
from web.metrics import StageClock
from web.options import PredictOptions
from web.pipeline import images
from web.pipeline.decode_budget import DecodeBudget
from web.pipeline.predict import Pipeline, render_encoding
from web.pipeline.request import Picture, PipelineRequest, display_name
from web.reading.catalog import Catalog, ModelSummary
from web.reading.label_maps import LabelMap
from web.reading.readiness import Readiness, check_readiness
from web.reading.registry import ModelRegistry
from web.serving.client import ServingClient
from web.settings import Settings


class Gateway:
    """Lists models and turns uploads into predictions and pictures (see the module docstring)."""

    def __init__(
        self,
        settings: Settings,
        store: Any = None,
        client: ServingClient | None = None,
        registry: ModelRegistry | None = None,
    ) -> None:
        self.settings = settings
        self.client = client or ServingClient(settings.tf_serving_address, settings.grpc_timeout_s)
        self.registry = registry or ModelRegistry(
            self.client, settings.model_config_file, settings.models_dir, settings.config_recheck_s
        )
        self.store = store
        self.decode_budget = DecodeBudget(settings.max_decode_pixels_in_flight, settings.decode_wait_s)
        self.catalog = Catalog(self.registry)
        self.pipeline = Pipeline(settings, self.registry, self.client, self.decode_budget)

    # -- models -------------------------------------------------------------------------------
    def model_names(self) -> list[str]:
        return self.catalog.model_names()

    def check_model(self, name: str) -> None:
        self.catalog.check_model(name)

    def list_models(self) -> list[ModelSummary]:
        return self.catalog.list_models()

    def describe(self, name: str, version: int | None = None) -> dict[str, Any]:
        return self.catalog.describe(name, version)

    def labels(self, name: str) -> LabelMap:
        return self.catalog.labels(name)

    def readiness(self) -> Readiness:
        return check_readiness(self.registry, self.settings.model_config_file, self.settings.grpc_timeout_s)

    # -- predictions --------------------------------------------------------------------------
    def open(
        self,
        model: str,
        uploads: Sequence[tuple[str | None, bytes]],
        *,
        options: PredictOptions,
        label_map: LabelMap | None = None,
        clock: StageClock | None = None,
    ) -> PipelineRequest:
        """A request for `model` on `(file name, bytes)` uploads, every header checked (see Pipeline)."""
        return self.pipeline.open(model, uploads, options=options, label_map=label_map, clock=clock)

    def run(self, request: PipelineRequest) -> list[Prediction]:
        return self.pipeline.predict(request)

    def run_and_render(self, request: PipelineRequest, fmt: str) -> tuple[Prediction, bytes]:
        return self.pipeline.predict_and_render(request, fmt)

    def predict(
        self,
        model: str,
        image: bytes,
        *,
        options: PredictOptions,
        label_map: LabelMap | None = None,
        filename: str | None = None,
    ) -> Prediction:
        """Run `model` on one uploaded image; boxes and masks are in the upload's pixels."""
        return self.run(self.open(model, [(filename, image)], options=options, label_map=label_map))[0]

    def predict_batch(
        self,
        model: str,
        uploads: Sequence[tuple[str | None, bytes]],
        *,
        options: PredictOptions,
        label_map: LabelMap | None = None,
    ) -> list[Prediction]:
        """Run `model` on several images, answers in the same order; a bad image fails the whole call."""
        return self.run(self.open(model, uploads, options=options, label_map=label_map))

    def predict_and_render(
        self,
        model: str,
        image: bytes,
        fmt: str,
        *,
        options: PredictOptions,
        label_map: LabelMap | None = None,
        filename: str | None = None,
    ) -> tuple[Prediction, bytes]:
        """`predict` and the picture with the prediction drawn (JPEG or PNG)."""
        render_encoding(fmt)  # a wrong format is the first mistake reported
        request = self.open(model, [(filename, image)], options=options, label_map=label_map)
        return self.run_and_render(request, fmt)

    def render(
        self,
        image: bytes,
        prediction: Prediction,
        fmt: str = "jpeg",
        info: images.ImageInfo | None = None,
        clock: StageClock | None = None,
    ) -> bytes:
        """The upload with the prediction drawn on it, as JPEG or PNG; adds a `render` timing. `info` is
        the upload's header when the caller has read it already."""
        render_encoding(fmt)
        if info is None:
            info = images.inspect_image(image, max_pixels=self.settings.max_image_pixels, complete=False)
        return self.pipeline.render(Picture(display_name(info.name), image, info), prediction, fmt, clock)
