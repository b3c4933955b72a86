"""CVAT auto-annotation through the gateway: a nuclio function that needs no GPU (and no package) of its own.

CVAT sends each frame as {"image": <base64>, "threshold": <0-1>}; the function posts the picture to the
gateway's REST API (`POST /api/v1/models/<model>/predict`, the same checks as any upload) and answers
CVAT's shapes: `rectangle` for boxes, `mask` for masks (the mask cropped to its box, row by row, then
the box's left, top, right and bottom, inclusive: CVAT run-length encodes it itself) with the mask's
outline as `points` (what CVAT keeps when asked to convert masks to polygons), and `tag` for a
classifier's best class.

Settings (environment, see function.yaml): GATEWAY_URL, GATEWAY_MODEL, GATEWAY_API_KEY (when the
gateway has API_KEYS), GATEWAY_TIMEOUT_S. Standard library only: it runs in nuclio's python image,
and deploy/cvat/sdk_function.py (the cvat-sdk function) reuses this module's client and conversions.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import urllib.error
import urllib.parse
import urllib.request
from collections import deque
from typing import Any

DEFAULT_THRESHOLD = 0.5
POLYGON_TOLERANCE_PX = 1.0
_SIGNATURES = (
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"GIF8", "image/gif"),
    (b"BM", "image/bmp"),
    (b"II*\x00", "image/tiff"),
    (b"MM\x00*", "image/tiff"),
)


class GatewayError(Exception):
    """The gateway refused the picture or could not be reached; the message is the gateway's."""


class GatewayClient:
    """The gateway's REST API for one model."""

    def __init__(self, url: str, model: str, api_key: str | None = None, timeout: float = 60.0) -> None:
        if not url or not model:
            raise ValueError("set GATEWAY_URL (e.g. http://gateway:5000) and GATEWAY_MODEL (e.g. shapes)")
        self.url = url.rstrip("/")
        self.model = model
        self.api_key = api_key or None
        self.timeout = timeout

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> GatewayClient:
        env = os.environ if environ is None else environ
        timeout = float(env.get("GATEWAY_TIMEOUT_S") or 60)
        return cls(
            env.get("GATEWAY_URL", ""), env.get("GATEWAY_MODEL", ""), env.get("GATEWAY_API_KEY"), timeout
        )

    def _call(self, path: str, body: bytes | None = None, content_type: str | None = None) -> Any:
        headers = {"Accept": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        if content_type:
            headers["Content-Type"] = content_type
        request = urllib.request.Request(self.url + path, data=body, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            try:
                message = json.loads(exc.read())["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = exc.reason
            raise GatewayError(f"the gateway answered {exc.code}: {message}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise GatewayError(f"cannot reach the gateway at {self.url}: {exc}") from None

    def labels(self) -> dict[int, str]:
        """The model's labels, class id -> name."""
        model = urllib.parse.quote(self.model, safe="")
        return {int(k): v for k, v in self._call(f"/api/v1/models/{model}/labels").items()}

    def describe(self) -> dict[str, Any]:
        return self._call(f"/api/v1/models/{urllib.parse.quote(self.model, safe='')}")

    def predict(self, picture: bytes, min_score: float) -> dict[str, Any]:
        """The gateway's prediction JSON for one picture (boxes in pixels, masks COCO RLE)."""
        query = urllib.parse.urlencode({"min_score": f"{min_score:g}"})
        path = f"/api/v1/models/{urllib.parse.quote(self.model, safe='')}/predict?{query}"
        return self._call(path, picture, sniff_type(picture))


def sniff_type(picture: bytes) -> str:
    """The picture's media type by its first bytes (the gateway checks the content again)."""
    for signature, media_type in _SIGNATURES:
        if picture.startswith(signature):
            return media_type
    if picture[:4] == b"RIFF" and picture[8:12] == b"WEBP":
        return "image/webp"
    return "image/jpeg"


# -- masks: COCO RLE in, CVAT's cropped bitmap and an outline out --------------------------------------


def decode_coco_rle(counts: str, height: int, width: int) -> bytearray:
    """A COCO compressed RLE string (pycocotools' format) as a row-major 0/1 bytearray of height x width."""
    runs: list[int] = []
    position = 0
    while position < len(counts):
        value, shift, more = 0, 0, True
        while more:
            c = ord(counts[position]) - 48
            value |= (c & 0x1F) << (5 * shift)
            more = bool(c & 0x20)
            position += 1
            shift += 1
            if not more and c & 0x10:
                value |= -1 << (5 * shift)
        if len(runs) > 2:
            value += runs[-2]
        runs.append(value)
    column_major = bytearray(height * width)
    index, bit = 0, 0
    for run in runs:
        if bit:
            column_major[index : index + run] = b"\x01" * run
        index += run
        bit ^= 1
    if index != height * width:
        raise ValueError(f"the mask's RLE covers {index} pixels, not {height} x {width}")
    # COCO RLE runs down the columns; CVAT wants rows.
    out = bytearray(height * width)
    for x in range(width):
        out[x::width] = column_major[x * height : (x + 1) * height]
    return out


def mask_box(bitmap: bytearray, height: int, width: int) -> tuple[int, int, int, int] | None:
    """(left, top, right, bottom) of the mask's pixels, inclusive; None for an empty mask."""
    rows = [y for y in range(height) if any(bitmap[y * width : (y + 1) * width])]
    if not rows:
        return None
    columns = [x for x in range(width) if any(bitmap[x::width])]
    return columns[0], rows[0], columns[-1], rows[-1]


def crop(bitmap: bytearray, width: int, box: tuple[int, int, int, int]) -> list[int]:
    left, top, right, bottom = box
    out: list[int] = []
    for y in range(top, bottom + 1):
        out.extend(bitmap[y * width + left : y * width + right + 1])
    return out


def outline(cropped: list[int], box: tuple[int, int, int, int]) -> list[float]:
    """The outer boundary of the mask's largest part (Moore neighbour tracing through pixel centres,
    simplified to within POLYGON_TOLERANCE_PX) as CVAT polygon points [x1, y1, x2, y2, ...]."""
    left, top, right, bottom = box
    w, h = right - left + 1, bottom - top + 1
    pixels = _largest_part(cropped, w, h)
    if not pixels:
        return []
    start = min(pixels, key=lambda p: (p[1], p[0]))
    if len(pixels) == 1:
        ring = [start]
    else:
        ring = _trace(pixels, start)
    ring = _simplify(ring, POLYGON_TOLERANCE_PX) if len(ring) > 4 else ring
    if len(ring) < 3:  # a line or a dot: its pixels' corners instead
        xs = [p[0] for p in ring]
        ys = [p[1] for p in ring]
        ring = [
            (min(xs), min(ys)),
            (max(xs) + 1, min(ys)),
            (max(xs) + 1, max(ys) + 1),
            (min(xs), max(ys) + 1),
        ]
    return [float(v) for x, y in ring for v in (x + left, y + top)]


_NEIGHBOURS = ((1, 0), (1, 1), (0, 1), (-1, 1), (-1, 0), (-1, -1), (0, -1), (1, -1))  # clockwise (y down)


def _largest_part(cropped: list[int], w: int, h: int) -> set[tuple[int, int]]:
    seen = bytearray(w * h)
    best: set[tuple[int, int]] = set()
    for i, value in enumerate(cropped):
        if not value or seen[i]:
            continue
        part = set()
        queue = deque([i])
        seen[i] = 1
        while queue:
            j = queue.popleft()
            x, y = j % w, j // w
            part.add((x, y))
            for dx, dy in _NEIGHBOURS:
                nx, ny = x + dx, y + dy
                k = ny * w + nx
                if 0 <= nx < w and 0 <= ny < h and cropped[k] and not seen[k]:
                    seen[k] = 1
                    queue.append(k)
        if len(part) > len(best):
            best = part
    return best


def _trace(pixels: set[tuple[int, int]], start: tuple[int, int]) -> list[tuple[int, int]]:
    """Radial sweep: from each boundary pixel, look clockwise starting just after the pixel it came
    from; done when the start pixel is about to be left the way it was first left."""
    ring: list[tuple[int, int]] = []
    current, search, first_move = start, 5, None  # the start's left and upper neighbours are outside
    for _ in range(8 * len(pixels) + 8):
        for turn in range(8):
            d = (search + turn) % 8
            candidate = (current[0] + _NEIGHBOURS[d][0], current[1] + _NEIGHBOURS[d][1])
            if candidate in pixels:
                break
        else:
            return [current]
        if current == start:
            if first_move is None:
                first_move = d
            elif d == first_move:
                break
        ring.append(current)
        current, search = candidate, (d + 5) % 8
    return ring


def _simplify(points: list[tuple[int, int]], tolerance: float) -> list[tuple[int, int]]:
    """Ramer-Douglas-Peucker on a closed ring, split at the point farthest from the first."""
    far = max(
        range(len(points)),
        key=lambda i: (points[i][0] - points[0][0]) ** 2 + (points[i][1] - points[0][1]) ** 2,
    )
    first = _rdp(points[: far + 1], tolerance)
    second = _rdp(points[far:] + points[:1], tolerance)
    return first[:-1] + second[:-1]


def _rdp(points: list[tuple[int, int]], tolerance: float) -> list[tuple[int, int]]:
    keep = [False] * len(points)
    keep[0] = keep[-1] = True
    stack = [(0, len(points) - 1)]
    while stack:
        start, end = stack.pop()
        (ax, ay), (bx, by) = points[start], points[end]
        length = ((bx - ax) ** 2 + (by - ay) ** 2) ** 0.5
        best, index = 0.0, -1
        for i in range(start + 1, end):
            px, py = points[i]
            if length:
                distance = abs((bx - ax) * (py - ay) - (by - ay) * (px - ax)) / length
            else:
                distance = ((px - ax) ** 2 + (py - ay) ** 2) ** 0.5
            if distance > best:
                best, index = distance, i
        if index >= 0 and best > tolerance:
            keep[index] = True
            stack.extend([(start, index), (index, end)])
    return [p for p, k in zip(points, keep, strict=True) if k]


# -- the gateway's answer as CVAT's shapes -----------------------------------------------------------------


def _clamped_box(box: dict[str, float], width: int, height: int) -> list[float]:
    return [
        min(max(float(box["xmin"]), 0.0), width),
        min(max(float(box["ymin"]), 0.0), height),
        min(max(float(box["xmax"]), 0.0), width),
        min(max(float(box["ymax"]), 0.0), height),
    ]


def to_cvat_shapes(prediction: dict[str, Any]) -> list[dict[str, Any]]:
    """CVAT's serverless answer for a gateway prediction."""
    width, height = int(prediction["image"]["width"]), int(prediction["image"]["height"])
    shapes: list[dict[str, Any]] = []
    for det in prediction.get("detections") or ():
        confidence = f"{float(det['score']):.4f}"
        mask = det.get("mask")
        if mask:
            rows, columns = (int(v) for v in mask["size"])
            bitmap = decode_coco_rle(str(mask["counts"]), rows, columns)
            box = mask_box(bitmap, rows, columns)
            if box is not None:
                cropped = crop(bitmap, columns, box)
                shapes.append(
                    {
                        "confidence": confidence,
                        "label": det["label"],
                        "type": "mask",
                        "mask": cropped + list(box),
                        "points": outline(cropped, box),
                    }
                )
                continue
        shapes.append(
            {
                "confidence": confidence,
                "label": det["label"],
                "type": "rectangle",
                "points": _clamped_box(det["box"], width, height),
            }
        )
    classes = prediction.get("classes") or ()
    if classes:
        best = classes[0]
        shapes.append({"confidence": f"{float(best['score']):.4f}", "label": best["label"], "type": "tag"})
    return shapes


def threshold_of(body: dict[str, Any]) -> float:
    try:
        value = float(body.get("threshold", DEFAULT_THRESHOLD))
    except (TypeError, ValueError):
        return DEFAULT_THRESHOLD
    return min(max(value, 0.0), 1.0)


# -- nuclio ------------------------------------------------------------------------------------------------


def init_context(context: Any) -> None:
    context.logger.info("gateway function: connecting to the gateway named by GATEWAY_URL")
    context.user_data.gateway = GatewayClient.from_env()


def _json_response(context: Any, body: Any, status: int) -> Any:
    return context.Response(
        body=json.dumps(body), headers={}, content_type="application/json", status_code=status
    )


def handler(context: Any, event: Any) -> Any:
    body = event.body
    if isinstance(body, bytes | str):
        try:
            body = json.loads(body)
        except ValueError:
            return _json_response(context, {"error": 'the body is not JSON: send {"image": <base64>}'}, 400)
    if not isinstance(body, dict) or not isinstance(body.get("image"), str):
        return _json_response(context, {"error": 'send {"image": <base64 picture>, "threshold": 0.5}'}, 400)
    try:
        picture = base64.b64decode(body["image"], validate=True)
    except (binascii.Error, ValueError):
        return _json_response(context, {"error": "image is not valid base64"}, 400)
    try:
        prediction = context.user_data.gateway.predict(picture, threshold_of(body))
    except GatewayError as exc:
        context.logger.warn(str(exc))
        return _json_response(context, {"error": str(exc)}, 502)
    return _json_response(context, to_cvat_shapes(prediction), 200)
