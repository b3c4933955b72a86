"""`python -m bench` (`make bench`): the gateway against calling TF Serving directly, in one run.

Starts the local model server and the gateway under gunicorn, then measures on the same JPEGs
(640x480 and 4000x3000): direct gRPC Predict with a prebuilt request (the floor), the gateway's
/predict and /predict_image, the hand-written tutorial pattern (in a subprocess, the only place
TensorFlow is imported), closed-loop throughput at several concurrencies, and the gateway
workers' memory and start-up time. Prints the tables, writes latest.json and latest.md.
Progress goes to stderr, the report to stdout.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench import masks, report, stack
from bench.clients import DirectClient, GatewayClient, InputSpec, multipart_body, types_pb2
from bench.images import TestImage, make_images
from bench.tutorial import TutorialProcess
from bench.workloads import Call, Factory, Samples, compare_throughput, interleaved, median_stages, summarize

STAGE_HISTOGRAMS = report.STAGES


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: few requests, one start-up timing")
    parser.add_argument("--iterations", type=int, default=None,
                        help="measured requests per workload at 640x480 (default 100; --quick 4)")
    parser.add_argument("--large-iterations", type=int, default=None,
                        help="measured requests per workload at 4000x3000 (default iterations/5, at least 3)")
    parser.add_argument("--warmup", type=int, default=None,
                        help="unmeasured requests per workload first (default 3)")
    parser.add_argument("--concurrency", default="1,4,16", help="comma-separated client concurrencies")
    parser.add_argument("--concurrency-requests", type=int, default=None,
                        help="requests per concurrency level and target (default max(160, 16 x concurrency))")
    parser.add_argument("--models", default="shapes,shapes_jpeg", help="comma-separated model names")
    parser.add_argument("--model-config", type=Path, default=stack.ROOT / "tf_server" / "models.config")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers (default 2: one per core)")
    parser.add_argument("--threads", type=int, default=8, help="threads per gunicorn worker")
    parser.add_argument("--startup-repeats", type=int, default=None, help="cold starts to time (default 5)")
    parser.add_argument("--time-limit", type=float, default=240.0,
                        help="seconds at most for each model x size latency group and each throughput run")
    parser.add_argument("--no-tutorial", action="store_true", help="skip the tutorial-pattern rows")
    parser.add_argument("--out", type=Path, default=stack.ROOT / "bench" / "results")
    args = parser.parse_args(argv)
    quick = args.quick
    args.iterations = args.iterations or (4 if quick else 100)
    args.large_iterations = args.large_iterations or max(2 if quick else 3, args.iterations // 5)
    args.warmup = args.warmup if args.warmup is not None else (1 if quick else 3)
    args.startup_repeats = args.startup_repeats or (1 if quick else 5)
    args.levels = [int(c) for c in args.concurrency.split(",") if c.strip()]
    args.model_names = [m.strip() for m in args.models.split(",") if m.strip()]
    return args


def concurrency_requests(args: argparse.Namespace, level: int) -> int:
    if args.concurrency_requests:
        return max(args.concurrency_requests, level)
    return max(2 * level, 8) if args.quick else max(160, 16 * level)


def predict_path(model: str, kind: str) -> str:
    return f"/api/v1/models/{model}/{kind}"


def gateway_calls(port: int, model: str, image: TestImage) -> tuple[Factory, Factory]:
    """Factories of (call, close) for /predict and /predict_image, each with its own keep-alive connection."""
    body, content_type = multipart_body(image.jpeg, filename=image.path.name)

    def json_factory() -> tuple[Call, Callable[[], None]]:
        client = GatewayClient("127.0.0.1", port)
        def call() -> dict | None:
            return client.post_json(predict_path(model, "predict"), body, content_type).get("timings_ms")

        return call, client.close

    def image_factory() -> tuple[Call, Callable[[], None]]:
        client = GatewayClient("127.0.0.1", port)

        def call() -> dict | None:
            return client.post_bytes(predict_path(model, "predict_image"), body, content_type)[1]

        return call, client.close

    return json_factory, image_factory


def latency_rows(args: argparse.Namespace, direct: DirectClient, specs: dict[str, InputSpec],
                 gateway_port: int, images: list[TestImage], tutorial: TutorialProcess | None) -> list[dict]:
    """Sequential latency of every workload, model and size (workloads interleaved per round)."""
    rows = []
    for model in args.model_names:
        spec = specs[model]
        for image in images:
            large = image.width * image.height > 2_000_000
            iterations = args.large_iterations if large else args.iterations
            request = direct.build_request(model, spec, image.jpeg, image.pixels)
            json_factory, image_factory = gateway_calls(gateway_port, model, image)
            json_call, json_close = json_factory()
            image_call, image_close = image_factory()

            def direct_call(request=request) -> None:
                direct.predict(request)

            workloads: dict = {"direct": direct_call, "gateway_json": json_call, "gateway_image": image_call}
            remote: set[str] = set()
            if tutorial is not None:
                kind = "string" if spec.dtype == types_pb2.DT_STRING else "pixels"

                def tutorial_call(count: int, model=model, spec=spec, image=image, kind=kind):
                    answer = tutorial.run(model, spec.name, kind, image.path, count)
                    return answer["latencies_ms"], answer["errors"], answer["error"]

                workloads["tutorial"] = tutorial_call
                remote.add("tutorial")
            log(f"latency: {model} {image.name}: {args.warmup} warm-up + {iterations} rounds of "
                f"{', '.join(workloads)}")
            try:
                samples = interleaved(workloads, remote, iterations, args.warmup, args.time_limit,
                                      progress=log)
            finally:
                json_close()
                image_close()
            for name, s in samples.items():
                rows.append(_row(name, model, image.name, s))
                log(f"  {name:<14} p50 {rows[-1]['p50_ms']} ms  p95 {rows[-1]['p95_ms']} ms  "
                    f"errors {s.errors}"
                    + (f"  ({s.last_error})" if s.last_error else ""))
    return rows


def _row(workload: str, model: str, size: str, samples: Samples) -> dict:
    row = {"workload": workload, "label": report.WORKLOAD_LABELS[workload], "model": model, "size": size,
           **summarize(samples.latencies_ms), "errors": samples.errors, "last_error": samples.last_error}
    if samples.stage_ms:
        row["server_stages_ms"] = median_stages(samples.stage_ms)
        row["server_stage_keys"] = sorted(samples.stage_ms)
    return row


def concurrency_rows(args: argparse.Namespace, direct: DirectClient, specs: dict[str, InputSpec],
                     gateway_port: int, image: TestImage) -> list[dict]:
    """Closed-loop throughput, direct (one shared channel) against the gateway (a connection per thread)."""
    rows = []
    for model in args.model_names:
        request = direct.build_request(model, specs[model], image.jpeg, image.pixels)

        def direct_factory(request=request) -> tuple[Call, Callable[[], None]]:
            def call() -> None:
                direct.predict(request)  # every thread shares the one channel

            return call, lambda: None

        json_factory, _ = gateway_calls(gateway_port, model, image)
        for level in args.levels:
            count = concurrency_requests(args, level)
            bursts = 1 if args.quick else 2
            log(f"throughput: {model} {image.name} concurrency {level}: {count} requests each, "
                f"{'direct, gateway' if bursts == 1 else 'direct, gateway, gateway, direct'} bursts")
            d, g = compare_throughput(direct_factory, json_factory, level, count, args.time_limit, bursts)
            log(f"  direct {d['throughput_req_s']} req/s, gateway {g['throughput_req_s']} req/s "
                f"(errors {d['errors']}/{g['errors']})" + (f" ({g['last_error'] or d['last_error']})"
                                                         if g['errors'] or d['errors'] else ""))
            rows.append({"model": model, "size": image.name, "concurrency": level, "direct": d, "gateway": g})
    return rows


def stage_histograms(port: int) -> dict[str, bool]:
    """Which per-stage timings appear as Prometheus histogram buckets on /metrics (loose name match)."""
    status, body = stack.http_get(port, "/metrics", timeout=10)
    lines = body.decode(errors="replace").splitlines() if status == 200 else []
    buckets = [line for line in lines if "_bucket" in line and not line.startswith("#")]
    # a `stage="decode"` label, or a per-stage metric name such as gateway_decode_seconds_bucket
    return {stage: any(f'stage="{stage}"' in line or stage in line.split("{", 1)[0] for line in buckets)
            for stage in STAGE_HISTOGRAMS}


def run(args: argparse.Namespace) -> dict:
    config = args.model_config.resolve()
    if not config.is_file():
        raise SystemExit(f"error: {config} not found: export the demo models first (`make demo-model`)")
    settings = stack.GatewaySettings(workers=args.workers, threads=args.threads)
    result: dict = {"machine": report.machine()}
    with tempfile.TemporaryDirectory(prefix="bench_") as tmp:
        work = Path(tmp)
        log("drawing the test images ...")
        images = make_images(work)
        result["settings"] = {
            "quick": args.quick, "iterations": args.iterations, "large_iterations": args.large_iterations,
            "warmup": args.warmup, "concurrency_levels": args.levels,
            "concurrency_requests": {str(c): concurrency_requests(args, c) for c in args.levels},
            "models": args.model_names, "gateway": settings.describe(),
            "model_server": "local tf_server (python -m tf_server, --enable_model_warmup=true), same machine",
            "images": [{"name": i.name, "bytes": len(i.jpeg)} for i in images],
        }
        log(f"starting the model server with {config} ...")
        with stack.model_server(config, work) as address:
            log(f"model server on {address}")
            direct = DirectClient(address)
            tutorial = None
            try:
                specs = {model: direct.input_spec(model) for model in args.model_names}
                env = stack.gateway_env(address, config, work)
                log(f"starting the gateway: {settings.describe()} ...")
                with stack.gateway(env, settings, work) as gw:
                    log(f"gateway on 127.0.0.1:{gw.port}, /readyz 200")
                    if not args.no_tutorial:
                        log("starting the tutorial-pattern client (imports TensorFlow, in a subprocess) ...")
                        try:
                            tutorial = TutorialProcess(address)
                        except (RuntimeError, TimeoutError) as exc:  # report the rest without it
                            log(f"tutorial-pattern client failed to start, skipping its rows: {exc}")
                            result["tutorial_error"] = str(exc)[:2000]
                    result["latency"] = latency_rows(args, direct, specs, gw.port, images, tutorial)
                    if tutorial is not None:
                        tutorial.close()
                        tutorial = None
                    result["concurrency"] = concurrency_rows(args, direct, specs, gw.port, images[0])
                    result["masks"] = masks.measure(20 if args.quick else 200)
                    log(f"masks: {result['masks']}")
                    keys = sorted({k for r in result["latency"] for k in r.get("server_stage_keys", [])
                                   if r["workload"] == "gateway_json"})
                    result["stages"] = {"json_keys": keys, "histograms": stage_histograms(gw.port)}
                    result["memory"] = {"workers": stack.worker_report(gw.process.pid),
                                        "master": stack.memory_mb(gw.process.pid)}
                    log(f"gateway workers: {result['memory']['workers']}")
            finally:
                if tutorial is not None:
                    tutorial.close()
                direct.close()
            log(f"timing gateway cold starts ({args.startup_repeats}x) ...")
            result["startup"] = stack.measure_startup(env, work, settings, repeats=args.startup_repeats)
            log(f"start-up: {result['startup']['seconds']} s")
    result["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    report.add_ratios(result)
    result["targets"] = report.targets(result)
    return result


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    result = run(args)
    result["duration_s"] = round(time.monotonic() - started, 1)
    json_path, md_path = report.write(result, args.out)
    print(report.render_text(result))
    log(f"done in {result['duration_s']:.0f}s: wrote {json_path} and {md_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
