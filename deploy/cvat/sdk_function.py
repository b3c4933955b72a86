"""A cvat-sdk auto-annotation function that asks the gateway (no model, no GPU on the annotating machine).

    cvat-cli --server-host https://cvat.example.com --auth user task auto-annotate 42 \\
        --function-file deploy/cvat/sdk_function.py \\
        -p model=str:shapes -p url=str:http://gateway:5000 -p api_key=str:$GATEWAY_API_KEY

`create(...)` is the factory cvat-cli calls with the `-p` parameters (GATEWAY_MODEL, GATEWAY_URL and
GATEWAY_API_KEY from the environment fill what is not given); its `spec` lists the model's labels, so
CVAT matches them to the task's by name. The gateway client and the mask outline are main.py's (the
nuclio function beside this file), so both ways of auto-annotating answer the same shapes.
"""

from __future__ import annotations

import importlib.util
import io
import os
import sys
from pathlib import Path
from typing import Any

import cvat_sdk.auto_annotation as cvataa
import numpy as np
from cvat_sdk.masks import encode_mask

_MAIN = "cvat_gateway_function_main"
if _MAIN not in sys.modules:
    _spec = importlib.util.spec_from_file_location(_MAIN, Path(__file__).with_name("main.py"))
    assert _spec is not None and _spec.loader is not None
    sys.modules[_MAIN] = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(sys.modules[_MAIN])
gateway = sys.modules[_MAIN]

SHAPE_TYPES = {"segmentation": "mask", "detection": "rectangle", "classification": "tag"}


class GatewayFunction:
    """A DetectionFunction: `spec` from the model's labels, `detect` through the gateway's predict."""

    def __init__(self, client: Any) -> None:
        self.client = client
        labels = client.labels()
        kind = client.describe().get("kind", "detection")
        shape_type = SHAPE_TYPES.get(kind, "any")
        self._ids = {name: class_id for class_id, name in labels.items()}
        self.spec = cvataa.DetectionFunctionSpec(
            labels=[
                cvataa.label_spec(name, class_id, type=shape_type)
                for class_id, name in sorted(labels.items())
            ]
        )

    def detect(self, context: cvataa.DetectionFunctionContext, image: Any) -> list[Any]:
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")  # lossless: the gateway sees the frame's own pixels
        threshold = gateway.DEFAULT_THRESHOLD if context.conf_threshold is None else context.conf_threshold
        prediction = self.client.predict(buffer.getvalue(), threshold)
        out: list[Any] = []
        for shape in gateway.to_cvat_shapes(prediction):
            label_id = self._ids.get(shape["label"])
            if label_id is None:
                continue
            if shape["type"] == "tag":
                out.append(cvataa.tag(label_id))
            elif shape["type"] == "rectangle":
                out.append(cvataa.rectangle(label_id, shape["points"]))
            elif context.conv_mask_to_poly:
                if len(shape["points"]) >= 6:
                    out.append(cvataa.polygon(label_id, shape["points"]))
            else:
                out.append(cvataa.mask(label_id, _encode(shape["mask"], image.width)))
        return out


def _encode(cropped_and_box: list[int], width: int) -> list[float]:
    """main.py's cropped bitmap + box, in the SDK's mask encoding (RLE of the crop, then the box)."""
    left, top, right, bottom = cropped_and_box[-4:]
    crop = np.asarray(cropped_and_box[:-4], dtype=bool).reshape(bottom - top + 1, right - left + 1)
    bitmap = np.zeros((bottom + 1, max(width, right + 1)), dtype=bool)
    bitmap[top : bottom + 1, left : right + 1] = crop
    return encode_mask(bitmap, bbox=[left, top, right + 1, bottom + 1])


def create(model: str = "", url: str = "", api_key: str = "", timeout: float = 60.0) -> GatewayFunction:
    """The function for cvat-cli's `-p model=str:... -p url=str:... -p api_key=str:...`."""
    client = gateway.GatewayClient(
        url or os.environ.get("GATEWAY_URL", ""),
        model or os.environ.get("GATEWAY_MODEL", ""),
        api_key or os.environ.get("GATEWAY_API_KEY"),
        float(timeout),
    )
    return GatewayFunction(client)
