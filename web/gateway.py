"""The gateway facade: upload bytes in, `Prediction` out; the only object the views and the API use.

It strings the pure steps together (validate -> build the input -> Predict -> post-process ->
render) around the registry and the client, times each stage, and records the timings as
Prometheus histograms per model and stage. Views never see gRPC or protobuf types.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

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
from web.options import PredictOptions
from web.pipeline import images
from web.pipeline.decode_budget import DecodeBudget
from web.pipeline.inputs import encoded_input, plan_input, tensor_input
from web.pipeline.render import render_prediction
from web.reading.adapters import ModelReading
from web.reading.adapters.frames import Frame
from web.reading.label_maps import LabelMap
from web.reading.registry import ModelRegistry, VersionState
from web.reading.signatures import InputKind
from web.serving.client import ServingClient
from web.serving.protos.tensorflow_serving.apis import predict_pb2
from web.serving.tensors import TensorConversionError, ndarray_to_proto, proto_to_ndarray, strings_to_proto
from web.settings import Settings

logger = logging.getLogger(__name__)
MAX_BATCH_IMAGES = 64
READINESS_TIMEOUT_S = 2.0
RENDER_FORMATS = {"jpeg": "jpeg", "jpg": "jpeg", "png": "png"}
# From this size up, JPEG work that does not feed the model (the completeness scan of a JPEG sent as
# it is, the decode of the picture to draw on) runs on another thread while the model predicts.
BACKGROUND_MIN_PIXELS = 2_000_000


@dataclass
class ModelSummary:
    """A configured model as the model list shows it."""

    name: str
    versions: list[VersionState]
    kind: str  # detection | segmentation | classification | unknown
    label_source: str | None  # file name of the stored label map, None when there is none

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "versions": [{"version": v.version, "state": v.state} for v in self.versions],
            "kind": self.kind,
            "label_source": self.label_source,
        }


@dataclass
class _Prepared:
    """One upload made ready for the model's input."""

    name: str
    info: images.ImageInfo
    frame: Frame
    value: bytes | np.ndarray
    decode_ms: float


class _Background:
    """`work(*args)` on its own thread, for C work that releases the GIL (JPEG decoding) and can run
    while the request thread waits on the model server; the thread's CPU is charged to `stage`.
    `result()` waits for it: its value, its GatewayError raised, or None if it never started."""

    def __init__(self, model: str, stage: str, work: Callable[..., Any], *args: Any) -> None:
        self._value: Any = None
        self._error: GatewayError | None = None
        self._thread = threading.Thread(
            target=self._run, args=(model, stage, work, args), daemon=True, name=f"gateway-{stage}"
        )

    def start(self) -> _Background:
        if self._thread.ident is None:
            self._thread.start()
        return self

    def _run(self, model: str, stage: str, work: Callable[..., Any], args: tuple) -> None:
        clock = metrics.CpuClock(model)
        try:
            self._value = work(*args)
        except GatewayError as exc:
            self._error = exc
        clock.lap(stage)

    def result(self) -> Any:
        if self._thread.ident is not None:
            self._thread.join()
        if self._error is not None:
            raise self._error
        return self._value


def _check_all(uploads: list[tuple[bytes, images.ImageInfo]]) -> None:
    for data, info in uploads:
        images.ensure_complete(data, info)


@dataclass
class Readiness:
    ready: bool
    reason: str
    models: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


_Checked = tuple[bytes, images.ImageInfo, float]  # upload, its header info, ms spent checking it


def _ms(start: float) -> float:
    return (time.perf_counter() - start) * 1000.0


def display_name(filename: str | None, fallback: str = "image") -> str:
    """A client file name made safe to quote in messages (no control characters, bounded length)."""
    cleaned = re.sub(r"[\x00-\x1f\x7f]", "", filename or "").strip()
    return (cleaned[:80] + "…" if len(cleaned) > 80 else cleaned) or fallback


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

    # -- models -------------------------------------------------------------------------------
    def model_names(self) -> list[str]:
        """The models in models.config, without asking the model server."""
        return [entry.name for entry in self.registry.entries()]

    def check_model(self, name: str) -> None:
        """Raise ModelNotFound (listing the models) unless `name` is in models.config."""
        self.registry.entry(name)

    def list_models(self) -> list[ModelSummary]:
        """Every configured model with its versions, states and kind (asks the model server)."""
        return [self._summary(entry.name) for entry in self.registry.entries()]

    def _summary(self, name: str, version: int | None = None) -> ModelSummary:
        versions = self.registry.versions(name)
        kind, reading = "unknown", None
        if any(v.state == "AVAILABLE" for v in versions):
            try:
                reading = self.registry.reading(name, version=version)
                kind = reading.kind
            except (ModelNotFound, ModelServerError):  # a model the gateway cannot read is listed anyway
                kind = "unknown"
        path = self.registry.label_map_path(name)
        source = path.name if path else None
        if source is None and reading is not None and reading.metadata and reading.metadata.names:
            source = Path(reading.metadata.file).name
        return ModelSummary(name, versions, kind, source)

    def describe(self, name: str, version: int | None = None) -> dict[str, Any]:
        """A model's versions, label source, signature, and how the gateway reads it (for GET /models/<m>):
        the family, the preprocessing, the gateway.toml settings, or the problem that stops it."""
        self.registry.entry(name)
        summary = self._summary(name)
        out = summary.to_dict()
        reading = self.registry.reading(name, version=version)
        signature = reading.signature
        out.update(
            {
                "version": signature.version,
                "signature": {
                    "name": signature.name,
                    "inputs": {k: v.to_dict() for k, v in signature.inputs.items()},
                    "outputs": {k: v.to_dict() for k, v in signature.outputs.items()},
                },
                "kind": reading.kind,
                "family": reading.family,
                "input": None if reading.image_input is None else reading.image_input.to_dict(),
                "preprocessing": None if reading.preprocessing is None else reading.preprocessing.to_dict(),
                "class_offset": reading.class_offset if reading.adapter else None,
                "settings": {
                    "file": reading.settings_path,
                    "found": reading.settings.source is not None,
                    "values": (reading.file_settings or reading.settings).given(),
                },
                "export_metadata": None if reading.metadata is None else reading.metadata.to_dict(),
                "candidates": list(reading.candidates),
                "problem": reading.problem,
            }
        )
        return out

    def labels(self, name: str) -> LabelMap:
        """The label map stored beside the model, else the class names of its latest version's export
        metadata (empty when there is neither)."""
        self.registry.entry(name)
        stored = self.registry.stored_label_map(name)
        if stored.names:
            return stored
        try:
            return self.registry.labels_for(self.registry.reading(name))
        except (ModelNotFound, ModelServerError, ModelServerUnavailable):
            return stored

    # -- predictions --------------------------------------------------------------------------
    def predict(
        self,
        model: str,
        image: bytes,
        *,
        options: PredictOptions,
        label_map: LabelMap | None = None,
        filename: str | None = None,
        inputs_ready: Callable[[], None] | None = None,
    ) -> Prediction:
        """Run `model` on one uploaded image; boxes and masks are in the upload's pixels. `inputs_ready`
        is called once the model input is built, just before the model server is asked."""
        return self.predict_batch(
            model, [(filename, image)], options=options, label_map=label_map, inputs_ready=inputs_ready
        )[0]

    def predict_batch(
        self,
        model: str,
        uploads: Sequence[tuple[str | None, bytes]],
        *,
        options: PredictOptions,
        label_map: LabelMap | None = None,
        inputs_ready: Callable[[], None] | None = None,
    ) -> list[Prediction]:
        """Run `model` on several images, answers in the same order; a bad image fails the whole call."""
        self.registry.entry(model)  # unknown model: 404 before anything else
        clock = metrics.CpuClock(model)
        try:
            predictions = self._predict_all(model, uploads, options, label_map, clock, inputs_ready)
        except GatewayError as exc:
            metrics.count_model_request(model, str(exc.status))
            raise
        for prediction in predictions:
            metrics.count_model_request(model, "ok")
            metrics.observe_timings(model, prediction.timings_ms)
        return predictions

    def _predict_all(
        self,
        model: str,
        uploads: Sequence[tuple[str | None, bytes]],
        options: PredictOptions,
        label_map: LabelMap | None,
        clock: metrics.CpuClock,
        inputs_ready: Callable[[], None] | None = None,
    ) -> list[Prediction]:
        if not uploads:
            raise BadRequest("no image: send the picture in the multipart field 'image'")
        if len(uploads) > MAX_BATCH_IMAGES:
            raise BadRequest(f"{len(uploads)} images in one batch; send at most {MAX_BATCH_IMAGES}")
        # Check every upload's header (cheap) before asking the model server anything, so bad input
        # gets its 4xx even while the model server is down.
        many = len(uploads) > 1
        checked: list[_Checked] = []
        for index, (filename, data) in enumerate(uploads):
            start = time.perf_counter()
            name = display_name(filename)
            name = f"image #{index + 1} ({name})" if many else name
            info = images.inspect_image(
                data, max_pixels=self.settings.max_image_pixels, name=name, complete=False
            )
            checked.append((data, info, _ms(start)))
        try:
            reading = self.registry.reading(
                model, version=options.version, version_label=options.version_label
            )
        except GatewayError:  # a truncated upload is still the client's 400, not the server's 503
            for data, info, _ in checked:
                images.ensure_complete(data, info)
            raise
        # Big JPEGs sent as they are get their completeness scan (~25 ms at 12 MP) on another thread
        # while the model server works; small ones (under a millisecond) right here.
        later: list[tuple[bytes, images.ImageInfo]] = []
        for index, (data, info, ms) in enumerate(checked):
            if self._decode_checks(reading, info):
                continue
            if info.format == "JPEG" and info.width * info.height >= BACKGROUND_MIN_PIXELS:
                later.append((data, info))
                continue
            start = time.perf_counter()
            images.ensure_complete(data, info)
            checked[index] = (data, info, ms + _ms(start))
        clock.lap("validate")
        scan = _Background(model, "validate", _check_all, later).start() if later else None
        try:
            return self._predict_groups(model, reading, checked, options, label_map, clock, inputs_ready)
        finally:
            if scan is not None:
                scan.result()  # a truncated upload is a 400, whatever the model server answered

    def _predict_groups(
        self,
        model: str,
        reading: ModelReading,
        checked: list[_Checked],
        options: PredictOptions,
        label_map: LabelMap | None,
        clock: metrics.CpuClock,
        inputs_ready: Callable[[], None] | None,
    ) -> list[Prediction]:
        if reading.problem or reading.adapter is None:
            raise UnsupportedModel(f"model '{model}' cannot be used through the gateway: {reading.problem}")
        labels = label_map if label_map is not None else self.registry.labels_for(reading)
        predictions: list[Prediction] = []
        # Decode group by group, so a batch of big photos for a [1, H, W, 3] model never holds more
        # than one decoded image at a time.
        for group in self._groups(reading, checked):
            with self.decode_budget.reserve(self._decoded_pixels(reading, group), "this upload"):
                prepared = [self._prepare(reading, data, info, ms) for data, info, ms in group]
                clock.lap("decode")
                if inputs_ready is not None:
                    inputs_ready()
                predictions.extend(self._run(model, reading, prepared, options, labels, clock))
        return predictions

    @staticmethod
    def _decode_checks(reading: ModelReading, info: images.ImageInfo) -> bool:
        """Whether building the input decodes the whole JPEG strictly anyway (tensor inputs, and encoded
        inputs that get a re-encoded upright copy), which makes a separate completeness check redundant."""
        if info.format != "JPEG" or reading.image_input is None:
            return False
        return reading.image_input.kind != InputKind.ENCODED or not images.sent_as_uploaded(info)

    @staticmethod
    def _decoded_pixels(reading: ModelReading, group: list[_Checked]) -> int:
        """What preparing a group holds decoded: nothing for upright JPEG/PNG sent as they are."""
        total = 0
        for _, info, _ in group:
            if reading.image_input.kind == InputKind.ENCODED and images.sent_as_uploaded(info):
                continue
            total += info.width * info.height
        return total

    def _frame(self, reading: ModelReading, info: images.ImageInfo) -> Frame:
        return plan_input(info, reading.image_input, reading.preprocessing, self.settings.max_input_side)

    def _prepare(
        self, reading: ModelReading, data: bytes, info: images.ImageInfo, inspect_ms: float
    ) -> _Prepared:
        """Encoded-string inputs get the upload (upright); tensor inputs one decode, as the adapter says."""
        start = time.perf_counter()
        frame = self._frame(reading, info)
        if reading.image_input.kind == InputKind.ENCODED:
            value: bytes | np.ndarray = encoded_input(data, info)
        else:
            value = tensor_input(data, info, frame, reading.image_input, reading.preprocessing)
        return _Prepared(info.name, info, frame, value, inspect_ms + _ms(start))

    def _groups(self, reading: ModelReading, checked: list[_Checked]) -> list[list[_Checked]]:
        """Which images share one PredictRequest: all of them when the batch dimension is free (and,
        for tensors, they become inputs of the same size)."""
        spec = reading.image_input
        if spec.batch != -1 or len(checked) == 1:
            return [[item] for item in checked]
        if spec.kind == InputKind.ENCODED:
            return [checked]
        sizes = {
            (f.input_width, f.input_height) for f in (self._frame(reading, info) for _, info, _ in checked)
        }
        return [checked] if len(sizes) == 1 else [[item] for item in checked]

    def _request(self, reading: ModelReading, group: list[_Prepared]) -> predict_pb2.PredictRequest:
        spec = reading.image_input
        request = predict_pb2.PredictRequest()
        request.model_spec.name = reading.model
        request.model_spec.signature_name = reading.signature.name
        if reading.version:
            request.model_spec.version.value = reading.version
        request.output_filter.extend(reading.output_filter())
        tensor = request.inputs[spec.key]  # filled in place: a 640x480 input is 0.9 MB to copy
        try:
            if spec.kind == InputKind.ENCODED:
                values = [item.value for item in group]
                shape = () if spec.batch is None else (len(values),)
                strings_to_proto(values, shape, out=tensor)
            elif spec.batch is None:
                ndarray_to_proto(group[0].value, out=tensor)
            elif len(group) == 1:
                ndarray_to_proto(group[0].value[np.newaxis], out=tensor)
            else:
                ndarray_to_proto(np.stack([item.value for item in group]), out=tensor)
        except TensorConversionError as exc:
            raise UnsupportedModel(f"cannot build the input for model '{reading.model}': {exc}") from None
        return request

    def _run(
        self,
        model: str,
        reading: ModelReading,
        group: list[_Prepared],
        options: PredictOptions,
        labels: LabelMap,
        clock: metrics.CpuClock,
    ) -> list[Prediction]:
        start = time.perf_counter()
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
            reading = newer
            response = self.client.predict(self._request(reading, group))
        predict_ms = _ms(start)
        clock.lap("predict")
        try:
            outputs = {key: proto_to_ndarray(proto) for key, proto in response.outputs.items()}
        except TensorConversionError as exc:
            raise ModelServerError(f"model '{model}' answered with an unreadable tensor: {exc}") from None
        version = int(response.model_spec.version.value) or reading.version
        results = []
        for index, item in enumerate(group):
            start = time.perf_counter()
            prediction = Prediction(model, version, item.frame.width, item.frame.height)
            found = self._decode(reading, outputs, index, item, options, labels)
            if reading.kind == "classification":
                prediction.classes = found
            else:
                prediction.detections = found
                for detection in found:  # encode RLE now: it belongs to the postprocess time
                    if detection.mask is not None:
                        detection.mask.rle()
            post_ms = _ms(start)
            prediction.timings_ms = {
                "decode": item.decode_ms,
                "predict": predict_ms,
                "postprocess": post_ms,
                "total": item.decode_ms + predict_ms + post_ms,
            }
            results.append(prediction)
        clock.lap("postprocess")
        return results

    @staticmethod
    def _decode(
        reading: ModelReading,
        outputs: dict[str, np.ndarray],
        index: int,
        item: _Prepared,
        options: PredictOptions,
        labels: LabelMap,
    ) -> list:
        try:
            return reading.adapter.decode(reading, outputs, index, item.frame, options, labels)
        except (IndexError, ValueError) as exc:  # outputs not shaped as the signature promised
            logger.warning("model %s: cannot decode its answer: %r", reading.model, exc)
            raise ModelServerError(
                f"model '{reading.model}' answered with tensors the {reading.family} adapter cannot read "
                f"({exc}); check GET /api/v1/models/{reading.model}"
            ) from None

    # -- rendering ----------------------------------------------------------------------------
    def render(
        self, image: bytes, prediction: Prediction, fmt: str = "jpeg", info: images.ImageInfo | None = None
    ) -> bytes:
        """The upload with the prediction drawn on it, as JPEG or PNG; adds a `render` timing. `info` is
        the upload's header when the caller has read it already."""
        encoding = self._encoding(fmt)
        start = time.perf_counter()
        clock = metrics.CpuClock(prediction.model_name)
        if info is None:
            info = images.inspect_image(image, max_pixels=self.settings.max_image_pixels, complete=False)
        with self.decode_budget.reserve(info.width * info.height, "drawing this picture"):
            picture = images.decode_image(image, info, strict=False)  # checked when it was predicted
            return self._draw(picture, prediction, encoding, start, clock)

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
        """`predict` then `render`, but for a big photo the full-size decode the drawing needs runs on
        another thread while the model predicts (a 12 MP JPEG takes ~50-90 ms to decode): the answer
        comes that much sooner. Small pictures are done one after the other."""
        encoding = self._encoding(fmt)
        info = images.inspect_image(
            image, max_pixels=self.settings.max_image_pixels, name=display_name(filename), complete=False
        )
        if info.width * info.height < BACKGROUND_MIN_PIXELS:
            prediction = self.predict(model, image, options=options, label_map=label_map, filename=filename)
            return prediction, self.render(image, prediction, fmt, info)
        decoding = _Background(model, "render", partial(images.decode_image, strict=False), image, info)
        held = 0

        def decode_for_drawing() -> None:
            """Once the model input is built (decoding both at once would only slow both down), and
            only if the decode budget has room right now: holding pixels while `predict` waits for
            its own would let two big requests starve each other."""
            nonlocal held
            held = self.decode_budget.try_take(info.width * info.height)
            if held:
                decoding.start()

        try:
            try:
                prediction = self.predict(
                    model, image, options=options, label_map=label_map, filename=filename,
                    inputs_ready=decode_for_drawing,
                )
            finally:
                try:  # also when predict failed: no decode left running
                    picture = decoding.result()
                except GatewayError:
                    picture = None
            if not held:  # no room earlier: draw after predicting, with a reservation of its own
                return prediction, self.render(image, prediction, fmt, info)
            start = time.perf_counter()
            if picture is None:  # could not be decoded after all: as `render` would have failed
                picture = images.decode_image(image, info, strict=False)
            return prediction, self._draw(picture, prediction, encoding, start, metrics.CpuClock(model))
        finally:
            if held:
                self.decode_budget.give_back(held)

    @staticmethod
    def _encoding(fmt: str) -> str:
        encoding = RENDER_FORMATS.get(fmt.lower())
        if encoding is None:
            raise BadRequest(f"format must be jpeg or png, not {fmt!r}")
        return encoding

    @staticmethod
    def _draw(
        picture: Any, prediction: Prediction, encoding: str, start: float, clock: metrics.CpuClock
    ) -> bytes:
        render_prediction(picture, prediction.detections, prediction.classes, in_place=True)
        data = images.encode_image(picture, encoding)
        clock.lap("render")
        render_ms = _ms(start)
        prediction.timings_ms["render"] = render_ms
        prediction.timings_ms["total"] = prediction.timings_ms.get("total", 0.0) + render_ms
        metrics.observe_timings(prediction.model_name, {"render": render_ms})
        return data

    # -- readiness ----------------------------------------------------------------------------
    def readiness(self) -> Readiness:
        """Whether the model server answers and every configured model has an AVAILABLE version."""
        try:
            entries = self.registry.entries()
        except GatewayError as exc:
            return Readiness(False, exc.message)
        timeout = min(READINESS_TIMEOUT_S, self.settings.grpc_timeout_s)
        states: dict[str, list[dict[str, Any]]] = {}
        problems = []
        for entry in entries:
            try:
                versions = self.registry.versions(entry.name, timeout=timeout)
            except GatewayError as exc:
                return Readiness(False, exc.message, states)
            states[entry.name] = [{"version": v.version, "state": v.state} for v in versions]
            if not any(v.state == "AVAILABLE" for v in versions):
                seen = ", ".join(f"version {v.version} is {v.state}" for v in versions)
                problems.append(
                    f"model '{entry.name}' has no AVAILABLE version ({seen or 'the server does not know it'})"
                )
        if not entries:
            problems.append(f"MODEL_CONFIG_FILE {self.settings.model_config_file} lists no models")
        return Readiness(not problems, "; ".join(problems) or "ready", states)
