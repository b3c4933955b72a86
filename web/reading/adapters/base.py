"""The adapter contract: recognize a signature, say how to feed it, decode what it answers.

One adapter per model family (``web/reading/adapters/<family>.py``). The registry asks every adapter
whether it recognizes a model version's signature, once per version, and keeps the answer as a
`ModelReading`; the gateway facade then only calls the chosen adapter:

    recognize(signature) -> Layout      which outputs mean what (names, dtypes and shapes only)
    preprocessing(...)   -> Preprocessing   resize mode, pixel range, mean/std, channel order
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
from web.reading.model_settings import ModelSettings
from web.reading.signatures import ImageInput, InputKind, ModelSignature


class NotRecognized(Exception):
    """An adapter does not recognize a signature; the message says what it looked for."""


@dataclass(frozen=True)
class Layout:
    """What an adapter found in a signature: the kind of answer and the outputs it reads."""

    kind: str  # detection | segmentation | classification
    outputs: tuple[str, ...]  # the output keys the gateway asks for (PredictRequest.output_filter)
    details: dict[str, Any] = field(default_factory=dict)  # family-specific: which output is which


@dataclass(frozen=True)
class Preprocessing:
    """How an upload becomes the model's input tensor (ignored for encoded-string inputs)."""

    resize: str = "none"  # stretch | letterbox | crop | none (see frames.plan_frame)
    pixel_range: str = "0-255"  # 0-255 | 0-1 | -1-1 (float inputs only)
    mean: tuple[float, ...] | None = None  # subtracted after scaling to pixel_range
    std: tuple[float, ...] | None = None  # then divided by
    channel_order: str = "RGB"
    pad_value: int = 114  # letterbox padding grey level

    def to_dict(self) -> dict[str, Any]:
        return {
            "resize": self.resize,
            "pixel_range": self.pixel_range,
            "mean": None if self.mean is None else list(self.mean),
            "std": None if self.std is None else list(self.std),
            "channel_order": self.channel_order,
            "pad_value": self.pad_value,
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

    def preprocessing(self, image_input: ImageInput, settings: ModelSettings) -> Preprocessing:
        """The family default with every key that gateway.toml sets applied on top."""
        base = self.default_preprocessing(image_input)
        return Preprocessing(
            resize=settings.resize or base.resize,
            pixel_range=settings.pixel_range or base.pixel_range,
            mean=settings.mean if settings.mean is not None else base.mean,
            std=settings.std if settings.std is not None else base.std,
            channel_order=settings.channel_order or base.channel_order,
            pad_value=settings.pad_value if settings.pad_value is not None else base.pad_value,
        )

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
