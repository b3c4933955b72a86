"""Image classifiers: Keras applications and KerasHub `ImageClassifier` (`model.export()`), Keras 2
`model.save()`, TF Model Garden image classification, Ultralytics `-cls` models, the seeds' MNIST-style
networks.

Signature: one image input (often a fixed `[B, 224, 224, 3]` float32) and score outputs `[B, C]`
only: Keras 3 `output_0`, Keras 2 the last layer's name (`predictions`, `dense_1`), Model Garden
`logits` + `probs`, optionally a `classes` output naming each score. A `[B, N]` output with another
name (an embedding, a detector's `confidence`) is not taken for a classifier.

Float inputs: the signature cannot tell whether the model converts pixels itself (a Keras
application with its `Rescaling` layer, a serving function that runs the image converter) or wants
them converted (KerasHub `ImageClassifier.export()` writes the forward pass only, without its
preprocessor), and classifiers differ too much for a default, so such a model is refused until
gateway.toml says `preprocessing = "in_model"` or the conversion (`pixel_range`, `mean`, `std`), or
the export metadata implies it (Ultralytics -cls: 0-1).

Probabilities are reported as they are; an output called `logits` goes through a softmax; any
other activation is declared with `score_activation` in gateway.toml. Answers the `top_k` best
classes (5 by default, at most `max_detections`), the best one always, the others from `min_score`.
"""

from __future__ import annotations

import re

import numpy as np

from web.domain import Classification
from web.errors import ModelServerError
from web.options import PredictOptions
from web.reading.adapters.base import Layout, ModelAdapter, ModelReading, NotRecognized
from web.reading.adapters.frames import Frame
from web.reading.adapters.postprocess import activate, require_probabilities, top_classes
from web.reading.label_maps import LabelMap
from web.reading.signatures import ImageInput, ModelSignature

DEFAULT_TOP_K = 5
# Score outputs, most wanted first (Model Garden has both `probs` and `logits`: take `probs`).
PREFERRED = ("probabilities", "probs", "prob", "predictions", "prediction", "scores", "score", "softmax")
SCORE_NAME = re.compile(
    r"^(probabilities|probs?|predictions?|scores?|softmax|logits|class_logits|output|outputs|default|"
    r"dense|activation|classifier|classification|head|fc|pred)(_\d+)?$",
    re.IGNORECASE,
)
CLASSES_NAMES = frozenset({"classes", "class_ids", "class_names"})


class ClassifierAdapter(ModelAdapter):
    family = "classifier"
    title = "Image classifiers (Keras, KerasHub, Model Garden, Ultralytics -cls)"
    class_offset = 1  # score index 0 is the label map's id 1 (the first line of labels.txt)
    has_default_conversion = False

    def recognize(self, signature: ModelSignature) -> Layout:
        """Claims a signature only when every output is a score (or `classes`) tensor [batch, C]."""
        scores, classes = [], None
        for spec in signature.outputs.values():
            if spec.rank != 2:
                raise NotRecognized(f"output {spec.describe()} is not [batch, classes]")
            if spec.key.lower() in CLASSES_NAMES:
                classes = spec.key
            elif not spec.is_float:
                raise NotRecognized(f"output {spec.describe()} is not a float score tensor")
            elif not SCORE_NAME.match(spec.key):
                raise NotRecognized(
                    f"output '{spec.key}' is not named like a classifier's scores (probabilities, probs, "
                    "predictions, scores, logits, output_0, dense_1, ...)"
                )
            else:
                scores.append(spec.key)
        return _layout(scores, classes)

    def recognize_as_told(self, signature: ModelSignature) -> Layout:
        """Told it is a classifier: read the best-named float [batch, C] output, whatever its name, and
        leave other outputs (features, embeddings) alone."""
        outputs = signature.outputs.values()
        classes = next((s.key for s in outputs if s.rank == 2 and s.key.lower() in CLASSES_NAMES), None)
        scores = [s.key for s in outputs if s.rank == 2 and s.is_float and s.key != classes]
        return _layout(scores, classes)

    def conversion_choices(self, image_input: ImageInput) -> tuple[str, str, str]:
        return (
            'preprocessing = "in_model"',
            'pixel_range = "0-1"\nmean = [0.485, 0.456, 0.406]\nstd = [0.229, 0.224, 0.225]',
            "That is ImageNet normalization, as an example: set what the image converter's scale and offset "
            'do (scale 1/255 without offset is pixel_range = "0-1" alone; scale 1/127.5 with offset -1 is '
            'pixel_range = "-1-1").',
        )

    def decode(
        self,
        reading: ModelReading,
        outputs: dict[str, np.ndarray],
        index: int,
        frame: Frame,
        options: PredictOptions,
        labels: LabelMap,
    ) -> list[Classification]:
        details = reading.layout.details
        key = details["scores"]
        if key not in outputs:
            raise ModelServerError(f"model '{reading.model}' did not return '{key}'")
        values = np.asarray(outputs[key], dtype=np.float64)
        values = values[index] if values.ndim == 2 else values.reshape(-1)
        activation = reading.settings.score_activation or ("softmax" if "logit" in key.lower() else "none")
        probabilities = activate(values, activation)
        require_probabilities(probabilities, reading.model, key, reading.settings_path)
        names = None
        if details["classes"] and details["classes"] in outputs:
            names = np.asarray(outputs[details["classes"]])
            names = names[index] if names.ndim == 2 else names.reshape(-1)
        top_k = min(reading.settings.top_k or DEFAULT_TOP_K, options.max_detections)
        return top_classes(
            probabilities,
            min_score=options.min_score,
            top_k=top_k,
            labels=labels,
            class_offset=reading.class_offset,
            names=names,
        )


def _layout(scores: list[str], classes: str | None) -> Layout:
    if not scores:
        raise NotRecognized("no score output [batch, classes]")
    score = sorted(scores, key=lambda key: (_preference(key), key))[0]
    read = (score, *((classes,) if classes else ()))
    return Layout("classification", read, {"scores": score, "classes": classes})


def _preference(key: str) -> int:
    lowered = key.lower()
    for rank, name in enumerate(PREFERRED):
        if lowered == name or lowered.startswith(name + "_"):
            return rank
    return len(PREFERRED) + (1 if "logit" in lowered else 0)
