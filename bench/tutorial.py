"""The pattern users write by hand today (the reference row), run in its own process.

Per request, as the TF Serving tutorials and blog posts do it: decode the JPEG with Pillow into
numpy, `tf.make_tensor_proto` on the pixels (or on the encoded bytes for a string-input model),
open a NEW `grpc.insecure_channel`, call `Predict` through the official `tensorflow_serving.apis`
stubs, then `tf.make_ndarray(...).tolist()` every output and `json.dumps` the lot (what a
hand-written Flask endpoint returns).

This module is run as ``python -m bench.tutorial --address HOST:PORT``: it imports TensorFlow,
which must never be loaded into the benchmark driver (that process imports the gateway's
vendored messages, whose protobuf names collide with the official ones). The driver talks to it
over stdin/stdout, one JSON line per command, so tutorial requests can be interleaved with the
other workloads while the timing itself happens here.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
READY = "tutorial-ready"
STARTUP_TIMEOUT_S = 180.0


class TutorialProcess:
    """Driver side: start the subprocess once, then ask it for timed requests."""

    def __init__(self, address: str) -> None:
        self._log = tempfile.NamedTemporaryFile(prefix="bench_tutorial_", suffix=".log", delete=False)
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.tutorial", f"--address={address}"],
            cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log, text=True,
        )
        line = self._readline(STARTUP_TIMEOUT_S)
        if line.strip() != READY:
            self.close()
            raise RuntimeError(f"tutorial process did not start: {line!r}\n{self.log_tail()}")

    def log_tail(self, limit: int = 3000) -> str:
        return Path(self._log.name).read_text(errors="replace")[-limit:]

    def _readline(self, timeout: float) -> str:
        import selectors

        with selectors.DefaultSelector() as selector:
            selector.register(self.proc.stdout, selectors.EVENT_READ)
            if not selector.select(timeout):
                raise TimeoutError(f"tutorial process silent for {timeout:.0f}s\n{self.log_tail()}")
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"tutorial process exited ({self.proc.poll()})\n{self.log_tail()}")
        return line

    def run(self, model: str, input_name: str, input_kind: str, image: Path, count: int,
            timeout: float = 600.0) -> dict:
        """Time `count` requests there; returns {"latencies_ms": [...], "errors": n, "error": str|None}."""
        command = {"model": model, "input_name": input_name, "input_kind": input_kind,
                   "image": str(image), "count": count}
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()
        return json.loads(self._readline(timeout))

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
                self.proc.wait(timeout=15)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        Path(self._log.name).unlink(missing_ok=True)


def _serve(address: str) -> None:
    """Subprocess side: the tutorial code, timed per request, commands from stdin."""
    import io

    import grpc
    import numpy as np
    import tensorflow as tf
    from PIL import Image
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    options = [("grpc.max_send_message_length", 256 << 20), ("grpc.max_receive_message_length", 256 << 20)]

    def one_request(model: str, input_name: str, input_kind: str, jpeg: bytes) -> str:
        if input_kind == "string":
            proto = tf.make_tensor_proto([jpeg], shape=[1])
        else:
            pixels = np.array(Image.open(io.BytesIO(jpeg)).convert("RGB"))
            height, width = pixels.shape[:2]
            proto = tf.make_tensor_proto(pixels, shape=[1, height, width, 3])
        channel = grpc.insecure_channel(address, options=options)
        try:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            request = predict_pb2.PredictRequest()
            request.model_spec.name = model
            request.model_spec.signature_name = "serving_default"
            request.inputs[input_name].CopyFrom(proto)
            result = stub.Predict(request, 120.0)
        finally:
            channel.close()
        outputs = {key: tf.make_ndarray(value).tolist() for key, value in result.outputs.items()}
        return json.dumps(outputs)

    print(READY, flush=True)
    for line in sys.stdin:
        command = json.loads(line)
        jpeg = Path(command["image"]).read_bytes()
        latencies: list[float] = []
        errors = 0
        error = None
        for _ in range(int(command["count"])):
            start = time.perf_counter()
            try:
                one_request(command["model"], command["input_name"], command["input_kind"], jpeg)
            except Exception as exc:  # reported to the driver, which counts it
                errors += 1
                error = f"{type(exc).__name__}: {exc}"[:500]
                continue
            latencies.append((time.perf_counter() - start) * 1000.0)
        print(json.dumps({"latencies_ms": latencies, "errors": errors, "error": error}), flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="tutorial-pattern client (run by python -m bench)")
    parser.add_argument("--address", required=True)
    _serve(parser.parse_args(argv).address)


if __name__ == "__main__":
    main()
