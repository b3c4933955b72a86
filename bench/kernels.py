"""`python -m bench.kernels`: the model server's latency and CPU per Predict with Eigen's kernels
(the local server's default, as TF Serving's own build) and with oneDNN's (TensorFlow's default on
AVX-512 CPUs), for each demo model, in one run.

Each setting gets its own model server (``TF_ENABLE_ONEDNN_OPTS`` only differs); each model gets
the same prebuilt requests (a 640x480 synthetic photo as uint8 pixels for ``shapes``, as JPEG bytes
for ``shapes_jpeg``, a 32x32 picture scaled to 0-1 floats for ``digits``), sent one at a time
after a warm-up. CPU per request is the server process's utime+stime over the timed requests.
Writes bench/results/kernels.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.clients import DirectClient
from bench.images import make_images
from tools.local_model_server import REPO_ROOT, model_server_process
from web.serving.protos.tensorflow_serving.apis import predict_pb2

SETTINGS = {"0": "Eigen (default)", "1": "oneDNN"}
MODELS = ("shapes", "shapes_jpeg", "digits")
RESULTS = REPO_ROOT / "bench" / "results"


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _digits_request(pixels: np.ndarray) -> predict_pb2.PredictRequest:
    from PIL import Image

    small = np.asarray(Image.fromarray(pixels).resize((32, 32)), np.float32) / 255.0
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "digits"
    tensor = request.inputs["keras_tensor"]
    tensor.dtype = 1  # DT_FLOAT
    for size in (1, 32, 32, 3):
        tensor.tensor_shape.dim.add(size=size)
    tensor.tensor_content = small.tobytes()
    return request


def measure(onednn: str, requests: int, warmup: int, work: Path) -> dict[str, dict[str, float]]:
    [image] = make_images(work, sizes=((640, 480),))
    flags = (f"--model_config_file={REPO_ROOT / 'tf_server' / 'models.config'}", "--enable_model_warmup=true")
    results: dict[str, dict[str, float]] = {}
    with model_server_process(*flags, log_dir=work, env={"TF_ENABLE_ONEDNN_OPTS": onednn}) as server:
        client = DirectClient(server.address)
        try:
            for model in MODELS:
                if model == "digits":
                    request = _digits_request(image.pixels)
                else:
                    request = client.build_request(model, client.input_spec(model), image.jpeg, image.pixels)
                for _ in range(warmup):
                    client.predict(request)
                cpu_before = _cpu_seconds(server.process.pid)
                times = []
                for _ in range(requests):
                    start = time.perf_counter()
                    client.predict(request)
                    times.append((time.perf_counter() - start) * 1000)
                cpu = (_cpu_seconds(server.process.pid) - cpu_before) * 1000 / requests
                results[model] = {
                    "p50_ms": round(statistics.median(times), 2),
                    "p90_ms": round(float(np.percentile(times, 90)), 2),
                    "cpu_ms": round(cpu, 2),
                }
                print(f"[kernels] {SETTINGS[onednn]} {model}: {results[model]}", file=sys.stderr, flush=True)
        finally:
            client.close()
    return results


def table(results: dict[str, dict[str, dict[str, float]]]) -> str:
    lines = [
        "| model | Eigen p50 ms | oneDNN p50 ms | Eigen CPU ms/request | oneDNN CPU ms/request |",
        "|---|---|---|---|---|",
    ]
    for model in MODELS:
        eigen, onednn = results["0"][model], results["1"][model]
        lines.append(
            f"| `{model}` | {eigen['p50_ms']} | {onednn['p50_ms']} | {eigen['cpu_ms']} | {onednn['cpu_ms']} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200, help="timed requests per model and setting")
    parser.add_argument("--warmup", type=int, default=20, help="untimed requests first")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench_kernels_") as tmp:
        results = {onednn: measure(onednn, args.requests, args.warmup, Path(tmp)) for onednn in SETTINGS}
    RESULTS.mkdir(parents=True, exist_ok=True)
    text = table(results)
    (RESULTS / "kernels.json").write_text(json.dumps(results, indent=2) + "\n")
    (RESULTS / "kernels.md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
