"""The one-picture pipeline: validate -> build the input -> Predict -> decode the answer -> draw.

`Pipeline.open` reads every upload's header (cheap, no pixels) into a `PipelineRequest`;
`predict` chooses the model's reading, builds the inputs, asks the model server and decodes its
answer with the reading's adapter; `predict_and_render` draws the result as well, decoding a big
photo's picture on another thread while the model predicts. Every stage is lapped on the
request's one clock; the per-stage timings go into the answer and into Prometheus.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from functools import partial
from typing import Any

from web import metrics
from web.domain import Prediction
from web.errors import (
    BadRequest,
    GatewayError,
    ModelNotFound,
    ModelServerError,
    ModelServerUnavailable,
    UnsupportedModel,
)
from web.metrics import StageClock
from web.options import PredictOptions
from web.pipeline import images
from web.pipeline.decode_budget import DecodeBudget
from web.pipeline.inputs import encoded_input, plan_input, tensor_input
from web.pipeline.render import render_prediction
from web.pipeline.request import Background, Picture, PipelineRequest, display_name
from web.reading.adapters import ModelReading
from web.reading.label_maps import LabelMap
from web.reading.registry import ModelRegistry
from web.reading.signatures import InputKind
from web.serving.client import ServingClient
from web.serving.requests import TensorConversionError, predict_request, read_answer
from web.settings import Settings

logger = logging.getLogger(__name__)
MAX_BATCH_IMAGES = 64
RENDER_FORMATS = {"jpeg": "jpeg", "jpg": "jpeg", "png": "png"}
# From this size up, JPEG work that does not feed the model (the completeness scan of a JPEG sent as
# it is, the decode of the picture to draw on) runs on another thread while the model predicts.
BACKGROUND_MIN_PIXELS = 2_000_000


def _check_all(pictures: list[Picture]) -> None:
    for picture in pictures:
        images.ensure_complete(picture.data, picture.info)


def render_encoding(fmt: str) -> str:
    """`jpeg` or `png` for a requested picture format (`jpg` accepted); else a 400."""
    encoding = RENDER_FORMATS.get(fmt.lower())
    if encoding is None:
        raise BadRequest(f"format must be jpeg or png, not {fmt!r}")
    return encoding


class Pipeline:
    """Turns uploads into predictions and pictures for the models of one registry (module doc)."""

    def __init__(
        self, settings: Settings, registry: ModelRegistry, client: ServingClient, decode_budget: DecodeBudget
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.client = client
        self.decode_budget = decode_budget

    # -- opening a request ----------------------------------------------------------------------
    def open(
        self,
        model: str,
        uploads: Sequence[tuple[str | None, bytes]],
        *,
        options: PredictOptions,
        label_map: LabelMap | None = None,
        clock: StageClock | None = None,
    ) -> PipelineRequest:
        """Check the model is configured (404 listing the models), the number of uploads, and every
        upload's header, before anything asks the model server: bad input gets its 4xx even while the
        model server is down. `clock` is the caller's when it times its own stages too."""
        self.registry.entry(model)
        clock = clock or StageClock(model)
        many = len(uploads) > 1
        pictures = []
        try:
            if not uploads:
                raise BadRequest("no image: send the picture in the multipart field 'image'")
            if len(uploads) > MAX_BATCH_IMAGES:
                raise BadRequest(f"{len(uploads)} images in one batch; send at most {MAX_BATCH_IMAGES}")
            for index, (filename, data) in enumerate(uploads):
                name = display_name(filename)
                name = f"image #{index + 1} ({name})" if many else name
                info = images.inspect_image(
                    data, max_pixels=self.settings.max_image_pixels, name=name, complete=False
                )
                pictures.append(Picture(name, data, info, filename, decode_ms=clock.lap("validate")))
        except GatewayError as exc:
            metrics.count_model_request(model, str(exc.status))
            raise
        return PipelineRequest(model, pictures, options, clock, label_map=label_map)

    # -- predicting -----------------------------------------------------------------------------
    def predict(self, request: PipelineRequest) -> list[Prediction]:
        """Run the request's model on its pictures, answers in the same order; boxes and masks are in
        the uploads' pixels. A bad picture fails the whole call."""
        model = request.model
        try:
            predictions = self._predict(request)
        except GatewayError as exc:
            metrics.count_model_request(model, str(exc.status))
            raise
        for prediction in predictions:
            metrics.count_model_request(model, "ok")
            metrics.observe_timings(model, prediction.timings_ms)
        return predictions

    def _predict(self, request: PipelineRequest) -> list[Prediction]:
        options, clock = request.options, request.clock
        try:
            reading = self.registry.reading(
                request.model, version=options.version, version_label=options.version_label
            )
        except GatewayError:  # a truncated upload is still the client's 400, not the server's 503
            _check_all(request.pictures)
            raise
        request.reading = reading
        clock.lap("validate")  # choosing the reading: its CPU is validation, its wall time no picture's
        # Big JPEGs sent as they are get their completeness scan (~25 ms at 12 MP) on another thread
        # while the model server works; small ones (under a millisecond) right here.
        later: list[Picture] = []
        for picture in request.pictures:
            if self._decode_checks(reading, picture.info):
                continue
            if picture.info.format == "JPEG" and picture.pixels >= BACKGROUND_MIN_PIXELS:
                later.append(picture)
                continue
            images.ensure_complete(picture.data, picture.info)
            picture.decode_ms += clock.lap("validate")
        scan = Background(request.model, "validate", _check_all, later).start() if later else None
        try:
            return self._predict_groups(request, reading)
        finally:
            if scan is not None:
                scan.result()  # a truncated upload is a 400, whatever the model server answered

    def _predict_groups(self, request: PipelineRequest, reading: ModelReading) -> list[Prediction]:
        if reading.problem or reading.adapter is None:
            raise UnsupportedModel(
                f"model '{request.model}' cannot be used through the gateway: {reading.problem}"
            )
        labels = request.label_map if request.label_map is not None else self.registry.labels_for(reading)
        for picture in request.pictures:
            picture.frame = plan_input(
                picture.info, reading.image_input, reading.preprocessing, self.settings.max_input_side
            )
        predictions: list[Prediction] = []
        # Decode group by group, so a batch of big photos for a [1, H, W, 3] model never holds more
        # than one decoded image at a time.
        for group in self._groups(reading, request.pictures):
            with self.decode_budget.reserve(self._decoded_pixels(reading, group), "this upload"):
                request.clock.lap("decode")  # waiting for the budget is no picture's decode time
                for picture in group:
                    self._prepare(reading, picture)
                    picture.decode_ms += request.clock.lap("decode")
                self._inputs_built(request)
                predictions.extend(self._run(request, reading, group, labels))
        return predictions

    @staticmethod
    def _decode_checks(reading: ModelReading, info: images.ImageInfo) -> bool:
        """Whether building the input decodes the whole JPEG strictly anyway (tensor inputs, and encoded
        inputs that get a re-encoded upright copy), which makes a separate completeness check redundant."""
        if info.format != "JPEG" or reading.image_input is None:
            return False
        return reading.image_input.kind != InputKind.ENCODED or not images.sent_as_uploaded(info)

    @staticmethod
    def _decoded_pixels(reading: ModelReading, group: list[Picture]) -> int:
        """What preparing a group holds decoded: nothing for upright JPEG/PNG sent as they are."""
        total = 0
        for picture in group:
            if reading.image_input.kind == InputKind.ENCODED and images.sent_as_uploaded(picture.info):
                continue
            total += picture.pixels
        return total

    @staticmethod
    def _prepare(reading: ModelReading, picture: Picture) -> None:
        """Encoded-string inputs get the upload (upright); tensor inputs one decode, as the adapter says."""
        if reading.image_input.kind == InputKind.ENCODED:
            picture.value = encoded_input(picture.data, picture.info)
        else:
            picture.value = tensor_input(
                picture.data, picture.info, picture.frame, reading.image_input, reading.preprocessing
            )

    @staticmethod
    def _groups(reading: ModelReading, pictures: list[Picture]) -> list[list[Picture]]:
        """Which pictures share one PredictRequest: all of them when the batch dimension is free (and,
        for tensors, they become inputs of the same size)."""
        spec = reading.image_input
        if spec.batch != -1 or len(pictures) == 1:
            return [[picture] for picture in pictures]
        if spec.kind == InputKind.ENCODED:
            return [pictures]
        sizes = {(p.frame.input_width, p.frame.input_height) for p in pictures}
        return [pictures] if len(sizes) == 1 else [[picture] for picture in pictures]

    @staticmethod
    def _request(reading: ModelReading, group: list[Picture]) -> Any:
        spec = reading.image_input
        try:
            return predict_request(
                reading.model,
                reading.signature.name,
                reading.version,
                reading.output_filter(),
                spec.key,
                [picture.value for picture in group],
                encoded=spec.kind == InputKind.ENCODED,
                batched=spec.batch is not None,
            )
        except TensorConversionError as exc:
            raise UnsupportedModel(f"cannot build the input for model '{reading.model}': {exc}") from None

    def _run(
        self, request: PipelineRequest, reading: ModelReading, group: list[Picture], labels: LabelMap
    ) -> list[Prediction]:
        model, options, clock = request.model, request.options, request.clock
        try:
            response = self.client.predict(self._request(reading, group))
        except ModelNotFound:
            if options.version is not None or options.version_label is not None:
                raise self.registry.version_not_found(model, options.version, options.version_label) from None
            # The version we resolved as "latest" a moment ago was unloaded (a newer one replaced it):
            # resolve again and retry once if the new version is read the same way.
            self.registry.forget_resolved(model)
            newer = self.registry.reading(model)
            if newer.version == reading.version or not newer.same_input_as(reading) or newer.problem:
                raise ModelServerUnavailable(
                    f"model '{model}' is switching versions on the model server; try again"
                ) from None
            logger.info(
                "model %s: version %d was unloaded, retrying on version %d",
                model,
                reading.version,
                newer.version,
            )
            reading = request.reading = newer
            response = self.client.predict(self._request(reading, group))
        predict_ms = clock.lap("predict")
        try:
            answer = read_answer(response)
        except TensorConversionError as exc:
            raise ModelServerError(f"model '{model}' answered with an unreadable tensor: {exc}") from None
        version = answer.version or reading.version
        clock.lap("postprocess")  # reading the tensors: postprocess CPU, no picture's wall time
        results = []
        for index, picture in enumerate(group):
            prediction = Prediction(model, version, picture.frame.width, picture.frame.height)
            found = self._decode(reading, answer.outputs, index, picture, options, labels)
            if reading.kind == "classification":
                prediction.classes = found
            else:
                prediction.detections = found
                for detection in found:  # encode RLE now: it belongs to the postprocess time
                    if detection.mask is not None:
                        detection.mask.rle()
            post_ms = clock.lap("postprocess")
            prediction.timings_ms = {
                "decode": picture.decode_ms,
                "predict": predict_ms,
                "postprocess": post_ms,
                "total": picture.decode_ms + predict_ms + post_ms,
            }
            results.append(prediction)
        return results

    @staticmethod
    def _decode(
        reading: ModelReading,
        outputs: dict[str, Any],
        index: int,
        picture: Picture,
        options: PredictOptions,
        labels: LabelMap,
    ) -> list:
        try:
            return reading.adapter.decode(reading, outputs, index, picture.frame, options, labels)
        except (IndexError, ValueError) as exc:  # outputs not shaped as the signature promised
            logger.warning("model %s: cannot decode its answer: %r", reading.model, exc)
            raise ModelServerError(
                f"model '{reading.model}' answered with tensors the {reading.family} adapter cannot read "
                f"({exc}); check GET /api/v1/models/{reading.model}"
            ) from None

    # -- drawing --------------------------------------------------------------------------------
    def render(
        self, picture: Picture, prediction: Prediction, fmt: str = "jpeg", clock: StageClock | None = None
    ) -> bytes:
        """The upload with the prediction drawn on it, as JPEG or PNG; adds a `render` timing."""
        encoding = render_encoding(fmt)
        clock = clock or StageClock(prediction.model_name)
        clock.lap("render")  # the render timing starts here
        with self.decode_budget.reserve(picture.pixels, "drawing this picture"):
            drawn = images.decode_image(picture.data, picture.info, strict=False)  # checked when predicted
            return self._draw(drawn, prediction, encoding, clock)

    def predict_and_render(self, request: PipelineRequest, fmt: str) -> tuple[Prediction, bytes]:
        """`predict` then `render` for one picture, but for a big photo the full-size decode the drawing
        needs runs on another thread while the model predicts (a 12 MP JPEG takes ~50-90 ms to decode):
        the answer comes that much sooner. Small pictures are done one after the other."""
        encoding = render_encoding(fmt)
        (picture,) = request.pictures
        if picture.pixels < BACKGROUND_MIN_PIXELS:
            prediction = self.predict(request)[0]
            return prediction, self.render(picture, prediction, fmt, request.clock)
        request.drawing = Background(
            request.model, "render", partial(images.decode_image, strict=False), picture.data, picture.info
        )
        try:
            try:
                prediction = self.predict(request)[0]
            finally:
                try:  # also when predict failed: no decode left running
                    drawn = request.drawing.result()
                except GatewayError:
                    drawn = None
            if not request.held:  # no room earlier: draw after predicting, with a reservation of its own
                return prediction, self.render(picture, prediction, fmt, request.clock)
            request.clock.lap("render")  # the render timing starts here, after waiting for the decode
            if drawn is None:  # could not be decoded after all: as `render` would have failed
                drawn = images.decode_image(picture.data, picture.info, strict=False)
            return prediction, self._draw(drawn, prediction, encoding, request.clock)
        finally:
            if request.held:
                self.decode_budget.give_back(request.held)
                request.held = 0

    def _inputs_built(self, request: PipelineRequest) -> None:
        """Start the decode for drawing once the model input is built (decoding both at once would only
        slow both down), and only if the decode budget has room right now: holding pixels while
        `predict` waits for its own would let two big requests starve each other."""
        if request.drawing is None or request.held:
            return
        request.held = self.decode_budget.try_take(request.pictures[0].pixels)
        if request.held:
            request.drawing.start()

    @staticmethod
    def _draw(drawn: Any, prediction: Prediction, encoding: str, clock: StageClock) -> bytes:
        render_prediction(drawn, prediction.detections, prediction.classes, in_place=True)
        data = images.encode_image(drawn, encoding)
        render_ms = clock.lap("render")
        prediction.timings_ms["render"] = render_ms
        prediction.timings_ms["total"] = prediction.timings_ms.get("total", 0.0) + render_ms
        metrics.observe_timings(prediction.model_name, {"render": render_ms})
        return data
