"""`gunicorn "web:create_app()"` with several workers: each opens its own gRPC channel after the fork."""

from __future__ import annotations

from pathlib import Path

import requests

from tests.support.gunicorn_gateway import running_gateway
from tests.web.helpers import solid


def test_gunicorn_workers_serve_predictions(
    signature_server: str, signature_models: Path, tmp_path: Path
) -> None:
    settings = {
        "TF_SERVING_ADDRESS": signature_server,
        "MODEL_CONFIG_FILE": signature_models / "models.config",
    }
    with running_gateway(tmp_path, workers=2, threads=1, **settings) as base:
        image = solid(320, 240, (100, 100, 100))
        for i in range(8):  # a new connection per request, so both workers get some
            response = requests.post(
                f"{base}/api/v1/models/{('od_uint8', 'od_jpeg')[i % 2]}/predict?min_score=0",
                files={"image": ("grey.jpg", image, "image/jpeg")},
                timeout=30,
            )
            assert response.status_code == 200, response.text
            assert len(response.json()["detections"]) == 3
        assert requests.get(f"{base}/readyz", timeout=10).status_code == 200


class _RecordingLibc:
    """Stands in for glibc to see which allocator calls the gunicorn hooks make."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def mallopt(self, param: int, value: int) -> int:
        self.calls.append(("mallopt", param, value))
        return 1

    def malloc_trim(self, pad: int) -> int:
        self.calls.append(("malloc_trim", pad))
        return 1


def test_allocator_hooks_fix_the_thresholds_and_trim_only_after_large_bodies() -> None:
    import runpy

    from tests.support.model_server import REPO_ROOT

    hooks = runpy.run_path(str(REPO_ROOT / "gunicorn.conf.py"))
    libc = _RecordingLibc()
    namespace = hooks["post_fork"].__globals__
    namespace["_libc"] = lambda: libc
    namespace["_trim_every_interval"] = lambda: None  # the loop itself is not run here; its step is
    hooks["post_fork"](None, None)
    assert libc.calls == [
        ("mallopt", -8, 2),  # M_ARENA_MAX
        ("mallopt", -3, 4 * 1024 * 1024),  # M_MMAP_THRESHOLD: photo-sized buffers are mapped
        ("mallopt", -1, 8 * 1024 * 1024),  # M_TRIM_THRESHOLD
    ]
    libc.calls.clear()
    post_request = hooks["post_request"]
    for length in ("60000", "", "not a number", str(1024 * 1024 - 1)):
        post_request(None, None, {"CONTENT_LENGTH": length}, None)
    post_request(None, None, {}, None)
    assert libc.calls == []  # small requests keep their warm memory
    post_request(None, None, {"CONTENT_LENGTH": str(2_134_000)}, None)  # a 12 MP JPEG
    assert libc.calls == [("malloc_trim", 0)]
    # the once-a-second step trims after any requests, and does nothing while the worker is idle
    trim_if_served = namespace["trim_if_served"]
    assert trim_if_served() is True and libc.calls == [("malloc_trim", 0)] * 2
    assert trim_if_served() is False and len(libc.calls) == 2
    post_request(None, None, {"CONTENT_LENGTH": "100"}, None)
    assert trim_if_served() is True and len(libc.calls) == 3


def _chunks(body: bytes, size: int = 64 * 1024):  # noqa: ANN202 - a generator makes requests send it chunked
    for start in range(0, len(body), size):
        yield body[start : start + size]


def _multipart(image: bytes, boundary: str = "chunkedboundary42") -> tuple[bytes, str]:
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="p.jpg"\r\n'
        "Content-Type: image/jpeg\r\n\r\n"
    ).encode()
    return head + image + f"\r\n--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def test_chunked_uploads_are_capped_like_uploads_with_a_content_length(
    signature_server: str, signature_models: Path, tmp_path: Path
) -> None:
    """A body sent with Transfer-Encoding: chunked (no Content-Length) over MAX_CONTENT_LENGTH gets the
    same 413 naming the limit as one with a Content-Length, not a 400 for a form cut short; under the
    limit, chunked uploads (multipart or a raw body) are answered as usual."""
    settings = {
        "TF_SERVING_ADDRESS": signature_server,
        "MODEL_CONFIG_FILE": signature_models / "models.config",
    }
    photo = solid(320, 240, (100, 100, 100))
    oversized = photo + b"\0" * (17 * 1024 * 1024)  # a JPEG with 17 MiB of trailing bytes
    with running_gateway(tmp_path, workers=1, threads=2, **settings) as base:
        url = f"{base}/api/v1/models/od_uint8/predict?min_score=0"
        for body, content_type in (_multipart(oversized), (oversized, "image/jpeg")):
            headers = {"Content-Type": content_type}
            sized = requests.post(url, data=body, headers=headers, timeout=60)
            chunked = requests.post(url, data=_chunks(body), headers=headers, timeout=60)
            assert "Content-Length" in sized.request.headers
            assert "Content-Length" not in chunked.request.headers
            assert chunked.request.headers["Transfer-Encoding"] == "chunked"
            assert sized.status_code == chunked.status_code == 413, chunked.text
            message = chunked.json()["error"]["message"]
            assert message == sized.json()["error"]["message"]
            assert "MAX_CONTENT_LENGTH (16 MiB)" in message
        for body, content_type in (_multipart(photo), (photo, "image/jpeg")):
            headers = {"Content-Type": content_type}
            chunked = requests.post(url, data=_chunks(body, 1000), headers=headers, timeout=60)
            assert chunked.status_code == 200, chunked.text
            assert len(chunked.json()["detections"]) == 3
