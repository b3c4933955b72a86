"""Hostile requests never take the model server down, over gRPC and REST, on every CPU.

Each case sends one request a client could send by mistake or on purpose (wrong ranks, zero and
negative dimensions, ``tensor_content`` of the wrong length, absurd claimed sizes, wrong dtypes,
garbage strings to encoded-image inputs, NaN and infinity, ragged and deeply nested JSON, batch 0,
extreme aspect ratios), asserts the status TF Serving answers it with, and then that the same
server still answers a good Predict. The server runs once with TensorFlow's oneDNN kernels
forced on (``TF_ENABLE_ONEDNN_OPTS=1``: what AVX-512 machines get by default, and where a rank-2
tensor into a convolution used to abort the whole process) and once with them off (Eigen, the
kernels of TF Serving's own build), so the suite fails on this machine for a crash that only
another CPU would show. A case that kills the server restarts it, so the next cases still run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import pytest
import requests

from tests.support.model_server import REPO_ROOT, free_port, model_server_process
from tests.tf_server.grpc_client import serving_client, string_tensor_proto, tensor_proto
from web.serving.protos.tensorflow.core.framework import tensor_pb2, types_pb2

MODELS = REPO_ROOT / "tf_server" / "models"
HTTP_TIMEOUT_S = 60
DIGITS_INPUT = "keras_tensor"  # float32 [-1, 32, 32, 3] into a Keras CNN
SHAPES_INPUT = "input_tensor"  # uint8 [1, -1, -1, 3] into an OD-API-style detector
INVALID = grpc.StatusCode.INVALID_ARGUMENT
OK = grpc.StatusCode.OK


def _proto(dtype: int, dims: list[int], **fields: object) -> tensor_pb2.TensorProto:
    proto = tensor_pb2.TensorProto(dtype=dtype)
    for size in dims:
        proto.tensor_shape.dim.add(size=size)
    for name, value in fields.items():
        if isinstance(value, bytes):
            setattr(proto, name, value)
        else:
            getattr(proto, name).extend(value)  # type: ignore[arg-type]
    return proto


def _floats(*shape: int, value: float = 0.5) -> tensor_pb2.TensorProto:
    return tensor_proto(np.full(shape, value, np.float32))


def _pixels(*shape: int) -> tensor_pb2.TensorProto:
    return tensor_proto(np.full(shape, 128, np.uint8))


def _jpeg(width: int = 64, height: int = 48) -> bytes:
    from io import BytesIO

    from PIL import Image

    out = BytesIO()
    Image.new("RGB", (width, height), (200, 40, 40)).save(out, "JPEG")
    return out.getvalue()


@dataclass(frozen=True)
class GrpcCase:
    id: str
    model: str
    inputs: Callable[[], dict[str, tensor_pb2.TensorProto]]
    code: grpc.StatusCode
    names: tuple[str, ...] = ()  # words the error message must contain (input, expected shape)
    onednn: grpc.StatusCode | None = None  # where oneDNN's kernels answer otherwise than Eigen's


def _digits(proto: tensor_pb2.TensorProto) -> dict[str, tensor_pb2.TensorProto]:
    return {DIGITS_INPUT: proto}


def _shapes(proto: tensor_pb2.TensorProto) -> dict[str, tensor_pb2.TensorProto]:
    return {SHAPES_INPUT: proto}


def _encoded(values: list[bytes]) -> dict[str, tensor_pb2.TensorProto]:
    return {SHAPES_INPUT: string_tensor_proto(values)}


DIGITS_SHAPE = ("keras_tensor", "[-1,32,32,3]")
SHAPES_SHAPE = ("input_tensor", "[1,-1,-1,3]")
GRPC_CASES = [
    # wrong rank, 1 to 5, into a convolution
    GrpcCase("digits-rank1", "digits", lambda: _digits(_floats(2)), INVALID, DIGITS_SHAPE),
    GrpcCase("digits-rank2", "digits", lambda: _digits(_floats(1, 2)), INVALID, DIGITS_SHAPE),
    GrpcCase("digits-rank3", "digits", lambda: _digits(_floats(32, 32, 3)), INVALID, DIGITS_SHAPE),
    GrpcCase("digits-rank5", "digits", lambda: _digits(_floats(1, 1, 32, 32, 3)), INVALID, DIGITS_SHAPE),
    GrpcCase("digits-scalar", "digits", lambda: _digits(_proto(types_pb2.DT_FLOAT, [], float_val=[1.0])),
             INVALID, DIGITS_SHAPE),
    GrpcCase("shapes-rank1", "shapes", lambda: _shapes(_pixels(3)), INVALID, SHAPES_SHAPE),
    GrpcCase("shapes-rank2", "shapes", lambda: _shapes(_pixels(4, 3)), INVALID, SHAPES_SHAPE),
    GrpcCase("shapes-rank3", "shapes", lambda: _shapes(_pixels(8, 8, 3)), INVALID, SHAPES_SHAPE),
    GrpcCase("shapes-rank5", "shapes", lambda: _shapes(_pixels(1, 1, 8, 8, 3)), INVALID, SHAPES_SHAPE),
    GrpcCase("jpeg-rank2", "shapes_jpeg", lambda: {SHAPES_INPUT: _proto(
        types_pb2.DT_STRING, [1, 1], string_val=[_jpeg()])}, INVALID, ("input_tensor", "[-1]")),
    GrpcCase("jpeg-scalar", "shapes_jpeg", lambda: {SHAPES_INPUT: _proto(
        types_pb2.DT_STRING, [], string_val=[_jpeg()])}, INVALID, ("input_tensor", "[-1]")),
    # declared sizes the input cannot take
    # sizes the graph decides on: Eigen's kernels pool a 1x1 picture, oneDNN's cannot lay it out
    GrpcCase("digits-1x1", "digits", lambda: _digits(_floats(1, 1, 1, 3)), OK, DIGITS_SHAPE, INVALID),
    GrpcCase("digits-1x20000", "digits", lambda: _digits(_floats(1, 1, 20000, 3)), OK, DIGITS_SHAPE, INVALID),
    GrpcCase("digits-4-channels", "digits", lambda: _digits(_floats(1, 32, 32, 4)), INVALID, DIGITS_SHAPE),
    GrpcCase("shapes-batch2", "shapes", lambda: _shapes(_pixels(2, 8, 8, 3)), OK),
    GrpcCase("shapes-1-channel", "shapes", lambda: _shapes(_pixels(1, 8, 8, 1)), INVALID, SHAPES_SHAPE),
    # zero dimensions and batch 0
    GrpcCase("digits-batch0", "digits", lambda: _digits(_floats(0, 32, 32, 3)), OK, DIGITS_SHAPE, INVALID),
    GrpcCase("digits-0-channels", "digits", lambda: _digits(_floats(1, 32, 32, 0)), OK, DIGITS_SHAPE,
             INVALID),
    GrpcCase("shapes-0x0", "shapes", lambda: _shapes(_pixels(1, 0, 0, 3)), INVALID, SHAPES_SHAPE),
    GrpcCase("shapes-0-width", "shapes", lambda: _shapes(_pixels(1, 8, 0, 3)), INVALID, SHAPES_SHAPE),
    # batch 0 of encoded pictures: Eigen's kernels answer an empty batch, oneDNN's refuse it
    GrpcCase("jpeg-batch0", "shapes_jpeg", lambda: _encoded([]), OK, onednn=INVALID),
    # negative dimensions
    GrpcCase("digits-negative-batch", "digits", lambda: _digits(_proto(
        types_pb2.DT_FLOAT, [-1, 32, 32, 3], float_val=[1.0])), INVALID, ("keras_tensor", "-1")),
    GrpcCase("shapes-negative-height", "shapes", lambda: _shapes(_proto(
        types_pb2.DT_UINT8, [1, -5, 8, 3], int_val=[1])), INVALID, ("input_tensor", "-5")),
    # tensor_content shorter or longer than its shape
    GrpcCase("digits-content-short", "digits", lambda: _digits(_proto(
        types_pb2.DT_FLOAT, [1, 32, 32, 3], tensor_content=b"\0" * 100)), INVALID, ("keras_tensor",)),
    GrpcCase("digits-content-long", "digits", lambda: _digits(_proto(
        types_pb2.DT_FLOAT, [1, 32, 32, 3], tensor_content=b"\0" * (4 * 32 * 32 * 3 + 8))), INVALID,
        ("keras_tensor",)),
    GrpcCase("digits-content-odd", "digits", lambda: _digits(_proto(
        types_pb2.DT_FLOAT, [1, 32, 32, 3], tensor_content=b"\0" * (4 * 32 * 32 * 3 - 1))), INVALID,
        ("keras_tensor",)),
    GrpcCase("shapes-content-short", "shapes", lambda: _shapes(_proto(
        types_pb2.DT_UINT8, [1, 8, 8, 3], tensor_content=b"\1" * 10)), INVALID, ("input_tensor",)),
    GrpcCase("shapes-content-long", "shapes", lambda: _shapes(_proto(
        types_pb2.DT_UINT8, [1, 8, 8, 3], tensor_content=b"\1" * 1000)), INVALID, ("input_tensor",)),
    GrpcCase("digits-too-many-values", "digits", lambda: _digits(_proto(
        types_pb2.DT_FLOAT, [1, 2, 2, 3], float_val=[1.0] * 13)), INVALID, ("keras_tensor",)),
    # absurd claimed sizes: one value would fill them (TF's typed-field rule)
    GrpcCase("digits-claims-1e5-batch", "digits", lambda: _digits(_proto(
        types_pb2.DT_FLOAT, [100_000_000, 32, 32, 3], float_val=[1.0])), INVALID, ("keras_tensor", "bytes")),
    GrpcCase("shapes-claims-terapixels", "shapes", lambda: _shapes(_proto(
        types_pb2.DT_UINT8, [1, 1_000_000, 1_000_000, 3], int_val=[7])), INVALID, ("input_tensor", "bytes")),
    GrpcCase("shapes-claims-int64-overflow", "shapes", lambda: _shapes(_proto(
        types_pb2.DT_UINT8, [1, 2**62, 2**62, 3], int_val=[7])), INVALID, ("input_tensor",)),
    GrpcCase("jpeg-claims-1e9-strings", "shapes_jpeg", lambda: {SHAPES_INPUT: _proto(
        types_pb2.DT_STRING, [1_000_000_000], string_val=[b"x"])}, INVALID, ("input_tensor",)),
    # wrong dtypes
    GrpcCase("digits-as-strings", "digits", lambda: _digits(_proto(
        types_pb2.DT_STRING, [1, 32, 32, 3], string_val=[b"a"])), INVALID, ("keras_tensor", "float")),
    GrpcCase("digits-as-int32", "digits", lambda: _digits(tensor_proto(
        np.zeros((1, 32, 32, 3), np.int32))), INVALID, ("keras_tensor", "float")),
    GrpcCase("shapes-as-float", "shapes", lambda: _shapes(_floats(1, 8, 8, 3)), INVALID, ("input_tensor",)),
    GrpcCase("jpeg-as-uint8", "shapes_jpeg", lambda: _shapes(_pixels(1, 8, 8, 3)), INVALID,
             ("input_tensor",)),
    GrpcCase("digits-dtype-invalid", "digits", lambda: _digits(_proto(0, [1], float_val=[1.0])), INVALID,
             ("keras_tensor",)),
    GrpcCase("digits-dtype-unknown-enum", "digits", lambda: _digits(_proto(999, [1])), INVALID,
             ("keras_tensor",)),
    GrpcCase("no-inputs", "digits", lambda: {}, INVALID, ("keras_tensor",)),
    # garbage and empty strings to encoded-image inputs
    GrpcCase("jpeg-garbage", "shapes_jpeg", lambda: _encoded([b"\x00garbage" * 50]), INVALID),
    GrpcCase("jpeg-empty-string", "shapes_jpeg", lambda: _encoded([b""]), INVALID),
    GrpcCase("jpeg-truncated-header", "shapes_jpeg", lambda: _encoded([_jpeg()[:40]]), INVALID),
    GrpcCase("jpeg-two-sizes", "shapes_jpeg", lambda: _encoded([_jpeg(64, 48), _jpeg(40, 40)]), OK),
    # NaN and infinity are values like any other
    GrpcCase("digits-nan", "digits", lambda: _digits(_floats(1, 32, 32, 3, value=float("nan"))), OK),
    GrpcCase("digits-inf", "digits", lambda: _digits(_floats(1, 32, 32, 3, value=float("inf"))), OK),
    GrpcCase("digits-minus-inf", "digits", lambda: _digits(_floats(1, 32, 32, 3, value=float("-inf"))), OK),
    # extreme aspect ratios and tiny pictures to a detector that takes any size
    GrpcCase("shapes-1x1", "shapes", lambda: _shapes(_pixels(1, 1, 1, 3)), OK),
    GrpcCase("shapes-1x4000", "shapes", lambda: _shapes(_pixels(1, 1, 4000, 3)), OK),
    GrpcCase("shapes-4000x1", "shapes", lambda: _shapes(_pixels(1, 4000, 1, 3)), OK),
    GrpcCase("jpeg-1x2000", "shapes_jpeg", lambda: _encoded([_jpeg(2000, 1)]), OK),
]


@dataclass(frozen=True)
class RestCase:
    id: str
    model: str
    body: str | bytes
    status: int


def _nested(depth: int) -> str:
    return '{"instances": ' + "[" * depth + "1.0" + "]" * depth + "}"


REST_CASES = [
    RestCase("rank2-to-conv", "digits", json.dumps({"instances": [[1.0, 2.0]]}), 400),
    RestCase("rank1-to-conv", "digits", json.dumps({"instances": [1.0, 2.0]}), 400),
    RestCase("rank3-to-conv", "digits", json.dumps({"instances": [[[1.0, 2.0, 3.0]]]}), 400),
    RestCase("columnar-rank2", "digits", json.dumps({"inputs": [[1.0, 2.0]]}), 400),
    RestCase("empty-instances", "digits", json.dumps({"instances": []}), 400),
    RestCase("empty-inner-lists", "digits", json.dumps({"instances": [[[]]]}), 400),
    RestCase("ragged", "digits", json.dumps({"instances": [[1.0], [1.0, 2.0]]}), 400),
    RestCase("ragged-deep", "shapes", json.dumps({"instances": [[[[1, 2, 3]], [[1, 2]]]]}), 400),
    RestCase("nested-64", "digits", _nested(64), 400),
    RestCase("nested-100000", "digits", _nested(100_000), 400),
    RestCase("nested-objects", "digits", '{"instances": [' + '{"a": ' * 50_000 + "1" + "}" * 50_000 + "]}",
             400),
    RestCase("strings-to-floats", "digits", json.dumps({"instances": ["a", "b"]}), 400),
    RestCase("nan-picture", "digits", json.dumps({"instances": np.full((1, 32, 32, 3), np.nan).tolist()}),
             200),
    RestCase("nan-rank2", "digits", '{"instances": [[NaN, Infinity, -Infinity]]}', 400),
    RestCase("mixed-types", "digits", json.dumps({"instances": [[[[1.0, "a", None]]]]}), 400),
    RestCase("bad-b64", "shapes_jpeg", json.dumps({"instances": [{"b64": "!!!not base64"}]}), 400),
    RestCase("b64-garbage-picture", "shapes_jpeg", json.dumps({"instances": [{"b64": "AAAAAAAA"}]}), 400),
    RestCase("b64-empty", "shapes_jpeg", json.dumps({"instances": [{"b64": ""}]}), 400),
    RestCase("uint8-out-of-range-floats", "shapes", json.dumps({"instances": [[[[1.5, 2.5, 3.5]]]]}), 400),
    RestCase("shapes-rank2", "shapes", json.dumps({"instances": [[1, 2, 3]]}), 400),
    RestCase("not-json", "digits", b"\xff\xfe\x00garbage", 400),
    RestCase("json-array-body", "digits", "[1, 2, 3]", 400),
    RestCase("instances-not-list", "digits", json.dumps({"instances": 5}), 400),
]


class HostileServer:
    """One model server (demo models, REST on) with a fixed oneDNN setting, restarted when a
    case killed it so that the next case still tests something."""

    def __init__(self, onednn: str, root: Path) -> None:
        self.onednn = onednn
        self.root = root
        self.config = root / "models.config"
        entries = "".join(
            f'  config {{ name: "{name}" base_path: "{MODELS / name}" model_platform: "tensorflow" }}\n'
            for name in ("digits", "shapes", "shapes_jpeg")
        )
        self.config.write_text("model_config_list {\n" + entries + "}\n")
        self._stack = ExitStack()
        self.start()

    def start(self) -> None:
        self._stack.close()
        self._stack = ExitStack()
        self.rest_port = free_port()
        self.process = self._stack.enter_context(
            model_server_process(
                f"--model_config_file={self.config}",
                f"--rest_api_port={self.rest_port}",
                log_dir=self.root,
                env={"TF_ENABLE_ONEDNN_OPTS": self.onednn},
            )
        )
        self.client = self._stack.enter_context(serving_client(self.process.address)).prediction
        self.url = f"http://127.0.0.1:{self.rest_port}"
        deadline = time.monotonic() + 30
        while True:  # the REST port opens right after the gRPC one
            try:
                requests.get(self.url + "/v1/models/digits", timeout=5)
                return
            except requests.ConnectionError:
                if time.monotonic() > deadline:
                    raise AssertionError(f"REST port did not open:\n{self.process.log()[-3000:]}") from None
                time.sleep(0.1)

    def predict(self, model: str, inputs: dict[str, tensor_pb2.TensorProto]) -> grpc.StatusCode:
        from web.serving.protos.tensorflow_serving.apis import predict_pb2

        request = predict_pb2.PredictRequest()
        request.model_spec.name = model
        for name, proto in inputs.items():
            request.inputs[name].CopyFrom(proto)
        try:
            self.client.Predict(request, timeout=HTTP_TIMEOUT_S)
        except grpc.RpcError as error:
            self.last_details = error.details() or ""
            return error.code()
        self.last_details = ""
        return grpc.StatusCode.OK

    def assert_still_serving(self, case: str) -> None:
        """A good Predict over gRPC and over REST answers; restart (and fail) if the server died."""
        problem = ""
        if self.process.process.poll() is not None:
            problem = f"the model server exited with {self.process.process.returncode}"
        else:
            try:
                code = self.predict("digits", _digits(_floats(1, 32, 32, 3)))
                rest = requests.post(
                    self.url + "/v1/models/digits:predict",
                    data=json.dumps({"instances": np.zeros((1, 32, 32, 3)).tolist()}),
                    timeout=HTTP_TIMEOUT_S,
                )
                if code != OK or rest.status_code != 200:
                    problem = f"a good Predict got {code.name} (gRPC) and {rest.status_code} (REST)"
            except requests.RequestException as error:
                problem = f"REST did not answer: {error}"
        if problem:
            log = self.process.log()[-3000:]
            self.start()
            pytest.fail(f"after {case} with TF_ENABLE_ONEDNN_OPTS={self.onednn}: {problem}\n{log}")

    def close(self) -> None:
        self._stack.close()


@pytest.fixture(scope="module", params=["1", "0"], ids=lambda value: f"onednn{value}")
def hostile(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[HostileServer]:
    server = HostileServer(request.param, tmp_path_factory.mktemp(f"hostile_onednn{request.param}"))
    try:
        yield server
    finally:
        server.close()


@pytest.mark.parametrize("case", GRPC_CASES, ids=lambda case: case.id)
def test_grpc_hostile_tensor_gets_a_status(hostile: HostileServer, case: GrpcCase) -> None:
    code = hostile.predict(case.model, case.inputs())
    details = hostile.last_details
    hostile.assert_still_serving(case.id)
    expected = case.onednn if case.onednn is not None and hostile.onednn == "1" else case.code
    assert code == expected, f"{case.id}: {code.name}: {details}"
    for word in case.names if code != OK else ():
        assert word in details, f"{case.id}: {word!r} not in {details!r}"


@pytest.mark.parametrize("case", REST_CASES, ids=lambda case: case.id)
def test_rest_hostile_body_gets_a_status(hostile: HostileServer, case: RestCase) -> None:
    try:
        response = requests.post(
            f"{hostile.url}/v1/models/{case.model}:predict", data=case.body, timeout=HTTP_TIMEOUT_S
        )
        status, text = response.status_code, response.text
    except requests.RequestException as error:
        status, text = 0, str(error)
    hostile.assert_still_serving(case.id)
    assert status == case.status, f"{case.id}: {status}: {text[:500]}"
    answer = json.loads(text)
    assert answer["error"] if status != 200 else answer["predictions"], text[:500]


def test_the_suite_is_big_enough() -> None:
    assert len(GRPC_CASES) + len(REST_CASES) >= 40
    assert len({case.id for case in GRPC_CASES}) == len(GRPC_CASES)
    assert len({case.id for case in REST_CASES}) == len(REST_CASES)


EMPTY_INPUTS_SCRIPT = """
import json, sys
from tensorflow.core.framework import types_pb2
from tensorflow.core.protobuf import meta_graph_pb2
from tensorflow_serving.apis import predict_pb2
from tf_server.rest_json.predict import fill_predict_request
from tf_server.errors import ServingError
answers = {}
for name in ("DT_COMPLEX64", "DT_UINT16", "DT_HALF", "DT_FLOAT"):
    info = meta_graph_pb2.TensorInfo(name="x:0", dtype=types_pb2.DataType.Value(name))
    request = predict_pb2.PredictRequest()
    for body in (b'{"inputs": []}', b'{"inputs": {"x": []}}'):
        try:
            fill_predict_request(body, lambda _signature: {"x": info}, request)
            answers[name + body.decode()] = [d.size for d in request.inputs["x"].tensor_shape.dim]
        except ServingError as error:
            answers[name + body.decode()] = error.code.name
print(json.dumps(answers))
"""


def test_empty_json_inputs_of_any_dtype_become_empty_tensors() -> None:
    """``{"inputs": []}`` is an empty tensor whatever the input's dtype (TF Serving's answer), never a
    500 for dtypes JSON has no values for (complex, uint16, half). Run in a TensorFlow subprocess."""
    result = subprocess.run(
        [sys.executable, "-c", EMPTY_INPUTS_SCRIPT], cwd=REPO_ROOT, capture_output=True, text=True,
        timeout=300, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    answers = json.loads(result.stdout.strip().splitlines()[-1])
    assert answers == {f"{dtype}{body}": [0] for dtype in ("DT_COMPLEX64", "DT_UINT16", "DT_HALF", "DT_FLOAT")
                       for body in ('{"inputs": []}', '{"inputs": {"x": []}}')}, answers
