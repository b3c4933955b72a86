"""The adapter contract: recognize a signature, say how to feed it, decode what it answers.

One adapter per model family (``web/reading/adapters/<family>.py``). The registry asks every adapter
whether it recognizes a model version's signature, once per version, and keeps the answer as a
`ModelReading`; the gateway facade then only calls the chosen adapter:

    recognize(signature) -> Layout      which outputs mean what (names, dtypes and shapes only)
    preprocessing(...)   -> Preprocessing   resize mode, pixel range, mean/std, channel order, and
                                            where each value came from
    decode(reading, outputs, index, frame, options, labels) -> detections or classes,
                                            in pixels of the upload, clipped
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from web.domain import Classification, Detection
from web.options import PredictOptions
from web.reading.adapters.frames import Frame
from web.reading.export_metadata import ExportMetadata
from web.reading.label_maps import LabelMap
from web.reading.model_settings import EXPORT_METADATA, FAMILY_DEFAULT, GATEWAY_TOML, ModelSettings
from web.reading.signatures import ImageInput, InputKind, ModelSignature


class NotRecognized(Exception):
    """An adapter does not recognize a signature; the message says what it looked for."""


@dataclass(frozen=True)
class Layout:
    """What an adapter found in a signature: the kind of answer and the outputs it reads."""

    kind: str  # detection | segmentation | classification
    outputs: tuple[str, ...]  # the output keys the gateway asks for (PredictRequest.output_filter)
    details: dict[str, Any] = field(default_factory=dict)  # family-specific: which output is which


PIXEL_KEYS = ("pixel_range", "mean", "std")
OTHER_KEYS = ("resize", "channel_order", "pad_value")


class PreprocessingUnsettled(Exception):
    """The settings leave the pixel conversion open or contradict themselves; the message says what to set."""


@dataclass(frozen=True)
class Preprocessing:
    """How an upload becomes the model's input tensor (ignored for encoded-string inputs).

    `where` says who converts 0-255 pixels into what the network takes: ``gateway`` (pixel_range,
    mean and std below) or ``in_model`` (the export's serving function does it: the gateway sends 0-255
    pixels). `sources` says, per key, whether its value is the family default, from the export
    metadata or from gateway.toml (shown in the model detail; not part of equality).
    """

    resize: str = "none"  # stretch | letterbox | crop | none (see frames.plan_frame)
    pixel_range: str = "0-255"  # 0-255 | 0-1 | -1-1 (float inputs only)
    mean: tuple[float, ...] | None = None  # subtracted after scaling to pixel_range
    std: tuple[float, ...] | None = None  # then divided by
    channel_order: str = "RGB"
    pad_value: int = 114  # letterbox padding grey level
    where: str = "gateway"  # gateway | in_model
    sources: tuple[tuple[str, str], ...] = field(default=(), compare=False)

    def to_dict(self) -> dict[str, Any]:
        sources = dict(self.sources)
        return {
            "where": self.where,
            "resize": self.resize,
            "pixel_range": self.pixel_range,
            "mean": None if self.mean is None else list(self.mean),
            "std": None if self.std is None else list(self.std),
            "channel_order": self.channel_order,
            "pad_value": self.pad_value,
            "sources": {key: sources.get(key, FAMILY_DEFAULT) for key in ("where", *OTHER_KEYS, *PIXEL_KEYS)},
        }


@dataclass(frozen=True)
class ModelReading:
    """How the gateway reads one model version: its signature, the chosen adapter and its settings.

    `problem` is set (and `adapter` None) when the gateway cannot read the model correctly; such a
    model is listed but never answers a prediction.
    """

    signature: ModelSignature
    settings: ModelSettings  # gateway.toml over what the export's metadata implies
    settings_path: str  # where gateway.toml is (or would be), for messages
    adapter: ModelAdapter | None = None
    layout: Layout | None = None
    preprocessing: Preprocessing | None = None
    problem: str | None = None
    candidates: tuple[str, ...] = ()
    metadata: ExportMetadata | None = None
    file_settings: ModelSettings | None = None  # what gateway.toml itself says (None: as `settings`)

    @property
    def model(self) -> str:
        return self.signature.model

    @property
    def version(self) -> int:
        return self.signature.version

    @property
    def image_input(self) -> ImageInput | None:
        return self.signature.image_input

    @property
    def family(self) -> str | None:
        return None if self.adapter is None else self.adapter.family

    @property
    def kind(self) -> str:
        return "unknown" if self.problem or self.layout is None else self.layout.kind

    @property
    def class_offset(self) -> int:
        if self.settings.class_offset is not None:
            return self.settings.class_offset
        return 0 if self.adapter is None else self.adapter.class_offset

    def output_filter(self) -> list[str]:
        return [] if self.layout is None else list(self.layout.outputs)

    def same_input_as(self, other: ModelReading) -> bool:
        return (
            self.signature.name == other.signature.name
            and self.image_input == other.image_input
            and self.preprocessing == other.preprocessing
        )


class ModelAdapter(ABC):
    """One model family: how to recognize its signatures, feed them and read their answers."""

    family: ClassVar[str]  # the name used in gateway.toml (`family = "..."`) and the API
    title: ClassVar[str]  # for people: "TF Object Detection API"
    class_offset: ClassVar[int] = 0  # added to the model's class ids to find them in the label map
    # Whether `preprocessing = "gateway"` alone means the family default's pixel_range/mean/std (False: the
    # family's exports differ too much; gateway.toml must name them).
    has_default_conversion: ClassVar[bool] = True

    @abstractmethod
    def recognize(self, signature: ModelSignature) -> Layout:
        """The layout of a signature this family wrote; raise NotRecognized saying why not."""

    def recognize_as_told(self, signature: ModelSignature) -> Layout:
        """The layout when gateway.toml names this family: the same checks by default; a family may
        accept more here than it would claim on its own (e.g. outputs it does not read)."""
        return self.recognize(signature)

    def default_preprocessing(self, image_input: ImageInput) -> Preprocessing:
        """How this family's exports want their pixels (overridden by gateway.toml keys)."""
        return Preprocessing(resize="stretch" if image_input.fixed_size else "none")

    def conversion_choices(self, image_input: ImageInput) -> tuple[str, str, str] | None:
        """For a family whose float-input signatures cannot tell whether the export converts pixels itself
        (its image converter inside the serving function) or wants them converted: the gateway.toml lines
        for each case and a note, ``(in_model, gateway, note)``, for the problem shown until it says
        which. None: the signature tells, and the family default holds."""
        return None

    def preprocessing(
        self, image_input: ImageInput, settings: ModelSettings, file_settings: ModelSettings | None = None
    ) -> Preprocessing:
        """The family default with the keys that gateway.toml (`file_settings`) or the export metadata
        (the rest of `settings`) set, each value with its source; see docs/architecture.md for what every
        combination of `preprocessing`, `pixel_range`, `mean` and `std` means.

        Raise PreprocessingUnsettled where the family cannot tell how pixels are converted and nothing
        says, or where the keys contradict each other."""
        told = file_settings or settings
        base = self.default_preprocessing(image_input)

        def source(key: str) -> str:
            if getattr(told, key) is not None:
                return GATEWAY_TOML
            return EXPORT_METADATA if getattr(settings, key) is not None else FAMILY_DEFAULT

        values: dict[str, Any] = {}
        sources = {}
        for key in OTHER_KEYS:
            value = getattr(settings, key)
            values[key] = getattr(base, key) if value is None else value
            sources[key] = source(key)
        where = settings.preprocessing
        given = [key for key in PIXEL_KEYS if getattr(settings, key) is not None]
        float_input = image_input.kind == InputKind.FLOAT
        if where == "in_model" or not float_input:
            if given and where == "in_model":
                raise PreprocessingUnsettled(
                    f'sets preprocessing = "in_model" (the export converts 0-255 pixels itself) and also '
                    f'{", ".join(given)}: remove {"them" if len(given) > 1 else "it"}, or set '
                    'preprocessing = "gateway" to have the gateway convert them'
                )
            if where == "gateway":
                takes = "uint8 pixels" if image_input.kind == InputKind.UINT8 else "encoded images"
                raise PreprocessingUnsettled(
                    f"sets preprocessing = \"gateway\", but input '{image_input.key}' takes {takes}, which "
                    "the model converts itself: remove it"
                )
            values.update(pixel_range="0-255", mean=None, std=None)
            sources.update({key: source("preprocessing") for key in PIXEL_KEYS})
            values["where"] = "in_model"
            sources["where"] = source("preprocessing") if where else FAMILY_DEFAULT
        elif given:
            if settings.pixel_range is None:
                raise PreprocessingUnsettled(
                    f"sets {' and '.join(given)} without pixel_range: they are in units of the pixel range, "
                    'so say which, e.g. pixel_range = "0-1" (or "0-255", "-1-1")'
                )
            for key in PIXEL_KEYS:  # an unset mean or std is none: never a family value for another range
                values[key] = getattr(settings, key)
                sources[key] = source(key) if key in given else source("pixel_range")
            values["where"] = "gateway"
            sources["where"] = source("preprocessing") if where else source("pixel_range")
        else:
            choices = self.conversion_choices(image_input)
            if where is None and choices is not None:
                in_model, gateway, note = choices
                raise PreprocessingUnsettled(
                    f"a {self.family} signature cannot tell whether the export converts pixels itself "
                    "(e.g. its serving function runs the image converter) or takes converted pixels, and "
                    "read the other way it answers something else. If the model converts them itself, "
                    f"set:\n\n{in_model}\n\nIf it takes converted pixels (the converter runs outside it, as "
                    f"after model.export()), set:\n\n{gateway}\n\n{note}"
                )
            if where == "gateway" and choices is not None and not self.has_default_conversion:
                raise PreprocessingUnsettled(
                    f'sets preprocessing = "gateway", but {self.title} have no default conversion: set what '
                    f"the image converter does instead, e.g.\n\n{choices[1]}\n\n{choices[2]}"
                )
            for key in PIXEL_KEYS:
                values[key] = getattr(base, key)
                sources[key] = FAMILY_DEFAULT
            # A family default of raw 0-255 pixels (TF OD API float inputs): the model converts them.
            raw = (base.pixel_range, base.mean, base.std) == ("0-255", None, None)
            values["where"] = where or ("in_model" if raw else "gateway")
            sources["where"] = source("preprocessing")
        return Preprocessing(**values, sources=tuple(sources.items()))

    def check_input(self, image_input: ImageInput, settings: ModelSettings) -> None:  # noqa: B027
        """Raise NotRecognized when this family cannot take this input (default: any image input)."""

    @abstractmethod
    def decode(
        self,
        reading: ModelReading,
        outputs: dict[str, np.ndarray],
        index: int,
        frame: Frame,
        options: PredictOptions,
        labels: LabelMap,
    ) -> list[Detection] | list[Classification]:
        """Batch item `index` of the model's answer, in pixels of the upload (see `frame`)."""


def needs_tensor_input(image_input: ImageInput, family: str) -> None:
    """Families whose boxes are in pixels of a tensor the gateway built cannot take encoded strings."""
    if image_input.kind == InputKind.ENCODED:
        raise NotRecognized(
            f"{family} exports take an image tensor, not encoded image strings ('{image_input.key}')"
        )
