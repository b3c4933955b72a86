"""Model adapters, one module per model family, and the one place an adapter is chosen.

`read_model` asks every adapter whether it recognizes a signature (names, dtypes, shapes; never
values). Exactly one must, unless gateway.toml names the family; none or several is a `problem`
that names the candidates and the setting that decides, and such a model never answers 200.
Adding a family: a module with a `ModelAdapter` subclass, listed in `ADAPTERS` (see
docs/architecture.md).
"""

from __future__ import annotations

import dataclasses

from web.reading.adapters.base import (
    Layout,
    ModelAdapter,
    ModelReading,
    NotRecognized,
    Preprocessing,
    PreprocessingUnsettled,
)
from web.reading.adapters.classifier import ClassifierAdapter
from web.reading.adapters.keras_hub import KerasHubAdapter
from web.reading.adapters.model_garden import ModelGardenAdapter
from web.reading.adapters.od_api import OdApiAdapter
from web.reading.adapters.yolo import YoloAdapter, YoloNmsAdapter
from web.reading.export_metadata import ExportMetadata
from web.reading.model_settings import FAMILIES, ModelSettings
from web.reading.signatures import ImageInput, InputKind, ModelSignature

ADAPTERS: tuple[ModelAdapter, ...] = (
    OdApiAdapter(),
    ModelGardenAdapter(),
    KerasHubAdapter(),
    YoloAdapter(),
    YoloNmsAdapter(),
    ClassifierAdapter(),
)
if tuple(adapter.family for adapter in ADAPTERS) != FAMILIES:  # gateway.toml validates `family` by it
    raise ImportError(
        "web.reading.model_settings.FAMILIES must list every adapter's family in ADAPTERS' order: "
        f"{[adapter.family for adapter in ADAPTERS]}"
    )
BY_FAMILY = {adapter.family: adapter for adapter in ADAPTERS}
# Ultralytics tasks (metadata.yaml) -> the families that read them, and the preprocessing their
# predictors use where it differs from the family default (classify: resize + centre crop, 0-1).
TASK_FAMILIES = {"detect": ("yolo", "yolo_nms"), "segment": ("yolo", "yolo_nms"), "classify": ("classifier",)}
TASK_SETTINGS = {"classify": ModelSettings(resize="crop", pixel_range="0-1")}

__all__ = [
    "ADAPTERS",
    "FAMILIES",
    "Layout",
    "ModelAdapter",
    "ModelReading",
    "NotRecognized",
    "Preprocessing",
    "read_model",
]


def read_model(
    signature: ModelSignature,
    settings: ModelSettings,
    settings_path: str,
    metadata: ExportMetadata | None = None,
) -> ModelReading:
    """Choose the adapter for a model version once, from its signature, its gateway.toml settings and
    what its exporter wrote beside it (`metadata`); see the module doc."""
    adapters = ADAPTERS
    effective = settings
    if metadata is not None and metadata.task and not settings.family:
        families = TASK_FAMILIES.get(metadata.task)
        if families is None:
            reading = ModelReading(signature, settings, settings_path, metadata=metadata)
            return _refused(
                reading,
                f"{metadata.file} says this is an {metadata.exporter} '{metadata.task}' model, which the "
                "gateway does not read (it reads detect, segment and classify models; the extra rows of a "
                f'{metadata.task} model would be taken for classes). To read it anyway, set family = "..." '
                f"in {settings_path}",
            )
        adapters = tuple(adapter for adapter in ADAPTERS if adapter.family in families)
        effective = merge_settings(TASK_SETTINGS.get(metadata.task), settings)
    reading = ModelReading(signature, effective, settings_path, metadata=metadata, file_settings=settings)
    image_input = signature.image_input
    if image_input is None:
        return _refused(reading, signature.input_problem or "the signature has no image input")
    if settings.family:
        adapter = BY_FAMILY[settings.family]
        try:
            layout = adapter.recognize_as_told(signature)
            adapter.check_input(image_input, settings)
        except NotRecognized as exc:
            return _refused(
                reading,
                f'{settings_path} sets family = "{adapter.family}", but this signature is not one: {exc} '
                f"(outputs: {signature.describe_outputs()})",
            )
        return _chosen(reading, adapter, layout, (adapter.family,))
    claims: list[tuple[ModelAdapter, Layout]] = []
    reasons: dict[str, str] = {}
    for adapter in adapters:
        try:
            layout = adapter.recognize(signature)
            adapter.check_input(image_input, settings)
        except NotRecognized as exc:
            reasons[adapter.family] = str(exc)
            continue
        claims.append((adapter, layout))
    if len(claims) == 1:
        adapter, layout = claims[0]
        return _chosen(reading, adapter, layout, (adapter.family,))
    if not claims:
        why = "; ".join(f"{family}: {reason}" for family, reason in reasons.items())
        return _refused(
            reading,
            f"no model family recognizes this signature (inputs: {signature.describe_inputs()}; outputs: "
            f"{signature.describe_outputs()}). Why not: {why}. If the model is one of these families "
            f'exported differently, set family = "<family>" and the keys that describe it in {settings_path}',
        )
    names = tuple(adapter.family for adapter, _ in claims)
    choices = " or ".join(f'family = "{name}"' for name in names)
    return _refused(
        reading,
        f"this signature could be read by more than one model family ({', '.join(names)}), and they would "
        f"read it differently: set {choices} in {settings_path}",
        names,
    )


def merge_settings(defaults: ModelSettings | None, settings: ModelSettings) -> ModelSettings:
    """`settings` with every key it leaves unset taken from `defaults`."""
    if defaults is None:
        return settings
    return dataclasses.replace(defaults, **settings.given(), source=settings.source)


def _refused(reading: ModelReading, problem: str, candidates: tuple[str, ...] = ()) -> ModelReading:
    return dataclasses.replace(
        reading, adapter=None, layout=None, preprocessing=None, problem=problem, candidates=candidates
    )


def _chosen(
    reading: ModelReading, adapter: ModelAdapter, layout: Layout, candidates: tuple[str, ...]
) -> ModelReading:
    image_input = reading.signature.image_input
    problem = _settings_problem(image_input, reading.file_settings or reading.settings, reading.settings_path)
    if problem:
        return _refused(reading, problem, candidates)
    try:
        preprocessing = adapter.preprocessing(image_input, reading.settings, reading.file_settings)
    except PreprocessingUnsettled as exc:
        return _refused(reading, f"{reading.settings_path}: {exc}", candidates)
    channels = image_input.channels
    for key, values in (("mean", preprocessing.mean), ("std", preprocessing.std)):
        if values is not None and len(values) not in (1, channels):
            return _refused(
                reading,
                f"{reading.settings_path}: '{key}' has {len(values)} values; input '{image_input.key}' has "
                f"{channels} channel{'s' if channels > 1 else ''}",
                candidates,
            )
    return dataclasses.replace(
        reading, adapter=adapter, layout=layout, preprocessing=preprocessing, candidates=candidates
    )


def _settings_problem(image_input: ImageInput, settings: ModelSettings, path: str) -> str | None:
    """Pixel settings that cannot apply to this input are refused rather than silently ignored."""
    if image_input.kind == InputKind.ENCODED:
        pixel_keys = ("resize", "pixel_range", "mean", "std", "channel_order", "pad_value")
        given = [key for key in pixel_keys if getattr(settings, key) is not None]
        if given:
            return (
                f"{path} sets {', '.join(given)}, but input '{image_input.key}' takes encoded images that "
                "the model decodes itself: remove them"
            )
    elif image_input.kind == InputKind.UINT8:
        given = [key for key in ("mean", "std") if getattr(settings, key) is not None]
        if settings.pixel_range not in (None, "0-255"):
            given.insert(0, "pixel_range")
        if given:
            return (
                f"{path} sets {', '.join(given)}, but input '{image_input.key}' is uint8, which carries "
                "pixels as 0-255: remove them"
            )
    return None
