"""`python -m bench` (`make bench`): the gateway against calling TF Serving directly, in one run.

Starts the local model server, the gateway under gunicorn and a minimal WSGI forwarder under the
same gunicorn flags (bench/forwarder.py, the floor), then measures on the same JPEGs (640x480 and
4000x3000): direct gRPC Predict with a prebuilt request, the gateway's /predict and
/predict_image, the forwarder, the hand-written tutorial pattern (in a subprocess, the only place
TensorFlow is imported); the gateway workers' CPU per request split by stage; closed-loop
throughput in two CPU modes (shared, and pinned: model server on one CPU, the rest on another),
cross-checked with wrk; and the gateway workers' memory and start-up time. Prints the tables,
writes latest.json and latest.md. Progress goes to stderr, the report to stdout.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench import cpu_table, cpus, masks, report, stack, wrk
from bench.clients import DirectClient, GatewayClient, InputSpec, multipart_body, types_pb2
from bench.images import TestImage, make_images
from bench.tutorial import TutorialProcess
from bench.workloads import Call, Factory, Samples, compare_many, interleaved, median_stages, summarize

FORWARDER_APP = "bench.forwarder:app"
UPLOAD_FORMS = ("multipart", "raw")

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
    parser.add_argument("--modes", default="shared,pinned",
                        help="CPU modes for the throughput runs: shared (everything on every CPU), pinned "
                             "(model server on the first CPU, the rest on the second)")
    parser.add_argument("--pinned-concurrency", default="4,16",
                        help="client concurrencies in pinned mode (--concurrency is for shared mode)")
    parser.add_argument("--cpu-requests", type=int, default=None,
                        help="sequential requests per CPU-table column (default 200; --quick 20)")
    parser.add_argument("--no-forwarder", action="store_true", help="skip the minimal forwarder (the floor)")
    parser.add_argument("--no-wrk", action="store_true", help="skip the wrk cross-check")
    parser.add_argument("--wrk-concurrency", default="4,16", help="wrk connection counts")
    parser.add_argument("--wrk-duration", type=int, default=None,
                        help="seconds per wrk run (default 10; --quick 3)")
    parser.add_argument("--out", type=Path, default=stack.ROOT / "bench" / "results")
    args = parser.parse_args(argv)
    quick = args.quick
    args.iterations = args.iterations or (4 if quick else 100)
    args.large_iterations = args.large_iterations or max(2 if quick else 3, args.iterations // 5)
    args.warmup = args.warmup if args.warmup is not None else (1 if quick else 3)
    args.startup_repeats = args.startup_repeats or (1 if quick else 5)
    args.levels = _ints(args.concurrency)
    args.pinned_levels = _ints(args.pinned_concurrency)
    args.wrk_levels = _ints(args.wrk_concurrency)
    args.model_names = [m.strip() for m in args.models.split(",") if m.strip()]
    args.mode_names = [m.strip() for m in args.modes.split(",") if m.strip()]
    for mode in args.mode_names:
        if mode not in cpus.MODES:
            parser.error(f"--modes: unknown mode {mode!r} (expected {', '.join(cpus.MODES)})")
    args.cpu_requests = args.cpu_requests or (20 if quick else 200)
    args.cpu_warmup = 2 if quick else 5
    args.wrk_duration = args.wrk_duration or (3 if quick else 10)
    return args


def _ints(text: str) -> list[int]:
    return [int(c) for c in text.split(",") if c.strip()]


def concurrency_requests(args: argparse.Namespace, level: int) -> int:
    if args.concurrency_requests:
        return max(args.concurrency_requests, level)
    return max(2 * level, 8) if args.quick else max(160, 16 * level)


def predict_path(model: str, kind: str) -> str:
    return f"/api/v1/models/{model}/{kind}"


def upload(image: TestImage, form: str = "multipart") -> tuple[bytes, str]:
    """(body, Content-Type) of one upload: multipart field `image` (browsers, curl -F) or the raw JPEG."""
    if form == "raw":
        return image.jpeg, "image/jpeg"
    return multipart_body(image.jpeg, filename=image.path.name)


def json_factory_for(port: int, model: str, image: TestImage, form: str = "multipart") -> Factory:
    """Factory of (call, close) for POST /predict on `port` (gateway or forwarder), own connection."""
    body, content_type = upload(image, form)

    def json_factory() -> tuple[Call, Callable[[], None]]:
        client = GatewayClient("127.0.0.1", port)

        def call() -> dict | None:
            return client.post_json(predict_path(model, "predict"), body, content_type).get("timings_ms")

        return call, client.close

    return json_factory


def gateway_calls(port: int, model: str, image: TestImage) -> tuple[Factory, Factory]:
    """Factories of (call, close) for /predict and /predict_image, each with its own keep-alive connection."""
    body, content_type = upload(image)
    json_factory = json_factory_for(port, model, image)

    def image_factory() -> tuple[Call, Callable[[], None]]:
        client = GatewayClient("127.0.0.1", port)

        def call() -> dict | None:
            return client.post_bytes(predict_path(model, "predict_image"), body, content_type)[1]

        return call, client.close

    return json_factory, image_factory


def latency_rows(args: argparse.Namespace, direct: DirectClient, specs: dict[str, InputSpec],
                 gateway_port: int, images: list[TestImage], tutorial: TutorialProcess | None,
                 forwarder_port: int | None = None) -> list[dict]:
    """Sequential latency of every workload, model and size (workloads interleaved per round); the
    forwarder (the floor) at the small size only."""
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
            closers = [json_close, image_close]

            def direct_call(request=request) -> None:
                direct.predict(request)

            workloads: dict = {"direct": direct_call, "gateway_json": json_call, "gateway_image": image_call}
            if forwarder_port is not None and not large:
                forwarder_call, forwarder_close = json_factory_for(forwarder_port, model, image)()
                workloads["forwarder"] = forwarder_call
                closers.append(forwarder_close)
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
                for close in closers:
                    close()
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
                     gateway_port: int, image: TestImage, mode: str, levels: list[int],
                     forwarder_port: int | None = None) -> list[dict]:
    """Closed-loop throughput, direct (one shared channel) against the gateway and the forwarder
    (a connection per thread), in the CPU mode already applied."""
    rows = []
    for model in args.model_names:
        request = direct.build_request(model, specs[model], image.jpeg, image.pixels)

        def direct_factory(request=request) -> tuple[Call, Callable[[], None]]:
            def call() -> None:
                direct.predict(request)  # every thread shares the one channel

            return call, lambda: None

        factories = {"direct": direct_factory, "gateway": json_factory_for(gateway_port, model, image)}
        if forwarder_port is not None:
            factories["forwarder"] = json_factory_for(forwarder_port, model, image)
        for level in levels:
            count = concurrency_requests(args, level)
            bursts = 1 if args.quick else 2
            log(f"throughput [{mode}]: {model} {image.name} concurrency {level}: {count} requests each, "
                f"{bursts} burst(s) of {', '.join(factories)}")
            results = compare_many(factories, level, count, args.time_limit, bursts)
            log("  " + ", ".join(f"{name} {r['throughput_req_s']} req/s (errors {r['errors']})"
                                 for name, r in results.items())
                + "".join(f"  ({name}: {r['last_error']})" for name, r in results.items() if r["errors"]))
            rows.append({"mode": mode, "model": model, "size": image.name, "concurrency": level, **results})
    return rows


def wrk_rows(args: argparse.Namespace, work: Path, gateway_port: int, image: TestImage, mode: str,
             clients: frozenset[int] | None) -> list[dict]:
    """wrk against the gateway's /predict with the same multipart upload, per model and connection count."""
    rows = []
    body, content_type = upload(image)
    for model in args.model_names:
        try:
            script = wrk.write_script(work, f"{model}_{image.name}", body, content_type)
        except (OSError, ValueError) as exc:
            rows.append({"mode": mode, "model": model, "size": image.name, "concurrency": None,
                         "wrk": {"error": f"cannot write the wrk script: {exc}"}})
            continue
        url = f"http://127.0.0.1:{gateway_port}{predict_path(model, 'predict')}"
        for level in args.wrk_levels:
            log(f"wrk [{mode}]: {model} {image.name} -c{level} -d{args.wrk_duration}s")
            result = wrk.run(url, script, level, args.wrk_duration, clients)
            if "error" in result:
                log(f"  wrk failed: {result['error']}")
            else:
                log(f"  {result['requests_per_s']} req/s, p50 {result['latency_ms'].get('p50')} ms, "
                    f"non-2xx {result['non_2xx']}, socket errors {result['socket_errors']}")
            rows.append({"mode": mode, "model": model, "size": image.name, "concurrency": level,
                         "wrk": result})
    return rows


def cpu_column(port: int, master_pid: int, model: str, image: TestImage, form: str, requests: int,
               warmup: int, time_limit_s: float, stage_counter: bool) -> dict:
    """CPU per request of one workload: the workers' CPU (and the gateway's stage counter when
    `stage_counter`) read before and after `requests` sequential POST /predict, after `warmup`."""
    body, content_type = upload(image, form)
    path = predict_path(model, "predict")
    client = GatewayClient("127.0.0.1", port)
    errors, last_error = 0, None
    column: dict = {"model": model, "size": image.name, "form": form}
    try:
        for _ in range(warmup):
            try:
                client.post_json(path, body, content_type)
            except Exception as exc:  # the measured requests count it
                last_error = f"warm-up: {type(exc).__name__}: {exc}"[:300]
        workers = stack.children(master_pid)
        stages_before = scrape_stage_cpu(port, model) if stage_counter else None
        before = cpus.workers_cpu_s(workers)
        started = time.perf_counter()
        done = 0
        for _ in range(requests):
            if time.perf_counter() - started > time_limit_s:
                break
            try:
                client.post_json(path, body, content_type)
            except Exception as exc:  # counted, reported; the CPU it cost is in the total
                errors += 1
                last_error = f"{type(exc).__name__}: {exc}"[:300]
            done += 1
        wall = time.perf_counter() - started
        time.sleep(0.05)  # what a worker does after sending the last answer (access log, counters)
        after = cpus.workers_cpu_s(workers)
        stages_after = scrape_stage_cpu(port, model) if stage_counter else None
        workers_after = stack.children(master_pid)
    finally:
        client.close()
    if done == 0:
        return {**column, "requests": 0, "total_ms": None, "stages_ms": None, "other_ms": None,
                "errors": errors, "last_error": last_error or "time limit before the first request",
                "stage_counter_found": False}
    figures = cpu_table.breakdown(done, before, after, stages_before, stages_after)
    column.update(figures.to_dict())
    column.update({
        "errors": errors, "last_error": last_error, "wall_s": round(wall, 3),
        "workers": len(workers), "workers_changed": sorted(workers) != sorted(workers_after),
        # one clock tick per worker, spread over the requests: the finest step the total can take
        "resolution_ms": round(len(workers) * 1000.0 / cpus.CLOCK_TICKS / done, 3),
        "stage_counter_found": stages_after is not None,
    })
    return column


def scrape_stage_cpu(port: int, model: str) -> dict[str, float] | None:
    status, body = stack.http_get(port, "/metrics", timeout=10)
    if status != 200:
        return None
    return cpu_table.stage_cpu_s(body.decode(errors="replace"), model)


def cpu_columns(args: argparse.Namespace, port: int, master_pid: int, image: TestImage,
                target: str) -> list[dict]:
    """One column per model and upload form, measured one after the other (nothing interleaved)."""
    columns = []
    for model in args.model_names:
        for form in UPLOAD_FORMS:
            column = cpu_column(port, master_pid, model, image, form, args.cpu_requests, args.cpu_warmup,
                                args.time_limit, stage_counter=target == "gateway")
            column["target"] = target
            columns.append(column)
            stages = column["stages_ms"]
            if not column["requests"]:
                log(f"cpu [{target}] {model} {image.name} {form}: nothing measured ({column['last_error']})")
                continue
            log(f"cpu [{target}] {model} {image.name} {form}: {column['total_ms']:.2f} ms/request "
                f"({'no stage counter' if stages is None else cpu_table.top_phases(column)}), "
                f"errors {column['errors']}" + (f" ({column['last_error']})" if column["errors"] else ""))
    return columns


def apply_mode(place: cpus.Placement, server_pid: int, gunicorn_pids: dict[str, int]) -> dict:
    """Move the model server, every gunicorn (masters, workers, their threads) and this process."""
    moved = {"model_server": cpus.move_process(server_pid, place.model_server)}
    for name, pid in gunicorn_pids.items():
        moved[name] = cpus.move_process(pid, place.clients)
    moved["load_generator"] = cpus.move_self(place.clients)
    return moved


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
    forwarder_settings = dataclasses.replace(settings, app=FORWARDER_APP)
    usable = cpus.usable_cpus()
    result: dict = {"machine": report.machine()}
    with tempfile.TemporaryDirectory(prefix="bench_") as tmp:
        work = Path(tmp)
        log("drawing the test images ...")
        images = make_images(work)
        result["settings"] = {
            "quick": args.quick, "iterations": args.iterations, "large_iterations": args.large_iterations,
            "warmup": args.warmup, "concurrency_levels": args.levels, "pinned_concurrency_levels":
            args.pinned_levels, "modes": args.mode_names,
            "concurrency_requests": {str(c): concurrency_requests(args, c)
                                     for c in sorted({*args.levels, *args.pinned_levels})},
            "cpu_requests": args.cpu_requests, "cpu_warmup": args.cpu_warmup,
            "wrk_levels": [] if args.no_wrk else args.wrk_levels, "wrk_duration_s": args.wrk_duration,
            "models": args.model_names, "gateway": settings.describe(),
            "forwarder": None if args.no_forwarder else f"gunicorn {FORWARDER_APP}, the gateway's flags",
            "model_server": "local tf_server (python -m tf_server, --enable_model_warmup=true), same machine",
            "images": [{"name": i.name, "bytes": len(i.jpeg)} for i in images],
        }
        log(f"starting the model server with {config} ...")
        with stack.model_server_with_pid(config, work) as (address, server_pid), \
                contextlib.ExitStack() as stacked:
            log(f"model server on {address} (pid {server_pid})")
            direct = DirectClient(address)
            stacked.callback(direct.close)
            tutorial = None
            specs = {model: direct.input_spec(model) for model in args.model_names}
            env = stack.gateway_env(address, config, work)
            log(f"starting the gateway: {settings.describe()} ...")
            gw = stacked.enter_context(stack.gateway(env, settings, work))
            log(f"gateway on 127.0.0.1:{gw.port}, /readyz 200")
            fw = None
            if not args.no_forwarder:
                fw = start_forwarder(stacked, env, forwarder_settings, work, result)
            gunicorn_pids = {"gateway": gw.process.pid, **({"forwarder": fw.process.pid} if fw else {})}
            fw_port = fw.port if fw else None
            try:
                if not args.no_tutorial:
                    log("starting the tutorial-pattern client (imports TensorFlow, in a subprocess) ...")
                    try:
                        tutorial = TutorialProcess(address)
                    except (RuntimeError, TimeoutError) as exc:  # report the rest without it
                        log(f"tutorial-pattern client failed to start, skipping its rows: {exc}")
                        result["tutorial_error"] = str(exc)[:2000]
                result["latency"] = latency_rows(args, direct, specs, gw.port, images, tutorial, fw_port)
            finally:
                if tutorial is not None:
                    tutorial.close()
            # CPU per request is CPU time, not wall time: measured in shared mode (as the processes start)
            log(f"CPU per request: {args.cpu_requests} sequential requests per model and upload form ...")
            columns = cpu_columns(args, gw.port, gw.process.pid, images[0], "gateway")
            if fw is not None:
                columns += cpu_columns(args, fw.port, fw.process.pid, images[0], "forwarder")
            result["cpu"] = {"metric": cpu_table.STAGE_CPU_METRIC, "requests": args.cpu_requests,
                             "clock_ticks_per_s": cpus.CLOCK_TICKS, "columns": columns}
            result["concurrency"], result["wrk"] = [], {"rows": []}
            if args.no_wrk:
                result["wrk"]["skipped"] = "--no-wrk"
            elif wrk.executable() is None:
                result["wrk"]["skipped"] = wrk.NOT_INSTALLED
                log(f"wrk: {result['wrk']['skipped']}")
            result["cpu_modes"] = {"usable_cpus": cpus.format_cpus(usable), "modes": {}}
            shared = cpus.placement(cpus.SHARED, usable)
            try:
                for mode in args.mode_names:
                    place = cpus.placement(mode, usable)
                    if place is None:
                        note = f"skipped: {len(usable)} usable CPU(s), pinned mode needs 2"
                        result["cpu_modes"]["modes"][mode] = {"skipped": note}
                        log(f"{mode} mode {note}")
                        continue
                    moved = apply_mode(place, server_pid, gunicorn_pids)
                    result["cpu_modes"]["modes"][mode] = {"placement": place.describe(), "moved": moved}
                    log(f"CPU mode {place.describe()}: " + "; ".join(
                        f"{name} {m['processes']} process(es), {m['threads']} threads on CPU {m['cpus']}"
                        + ("" if m["all_moved"] else " (NOT ALL MOVED)") for name, m in moved.items()))
                    levels = args.levels if mode == cpus.SHARED else args.pinned_levels
                    result["concurrency"] += concurrency_rows(args, direct, specs, gw.port, images[0], mode,
                                                              levels, fw_port)
                    if not result["wrk"].get("skipped"):
                        clients = place.clients if mode == cpus.PINNED else None
                        result["wrk"]["rows"] += wrk_rows(args, work, gw.port, images[0], mode, clients)
            finally:
                if shared is not None:
                    apply_mode(shared, server_pid, gunicorn_pids)
            result["masks"] = masks.measure(20 if args.quick else 200)
            log(f"masks: {result['masks']}")
            keys = sorted({k for r in result["latency"] for k in r.get("server_stage_keys", [])
                           if r["workload"] == "gateway_json"})
            result["stages"] = {"json_keys": keys, "histograms": stage_histograms(gw.port)}
            result["memory"] = {"workers": stack.worker_report(gw.process.pid),
                                "master": stack.memory_mb(gw.process.pid)}
            log(f"gateway workers: {result['memory']['workers']}")
            if fw is not None:
                result["forwarder"]["memory"] = stack.worker_report(fw.process.pid)
            stacked.close()
            log(f"timing gateway cold starts ({args.startup_repeats}x) ...")
            result["startup"] = stack.measure_startup(env, work, settings, repeats=args.startup_repeats)
            log(f"start-up: {result['startup']['seconds']} s")
    result["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    report.add_ratios(result)
    result["targets"] = report.targets(result)
    return result


def start_forwarder(stacked: contextlib.ExitStack, env: dict[str, str], settings: stack.GatewaySettings,
                    work: Path, result: dict) -> stack.Gateway | None:
    """The minimal forwarder under gunicorn, with a Prometheus folder of its own (gunicorn.conf.py
    empties that folder at start, and the gateway's must stay as it is). None when it fails."""
    folder = work / "prometheus_forwarder"
    folder.mkdir(exist_ok=True)
    fw_env = dict(env, PROMETHEUS_MULTIPROC_DIR=str(folder))
    log(f"starting the minimal forwarder: gunicorn {settings.app}, the gateway's flags ...")
    try:
        fw = stacked.enter_context(stack.gateway(fw_env, settings, work, timeout=60, name="forwarder"))
    except RuntimeError as exc:
        log(f"forwarder failed to start, skipping its rows: {exc}")
        result["forwarder"] = {"running": False, "error": str(exc)[:2000]}
        return None
    status, body = stack.http_get(fw.port, "/healthz")
    info = json.loads(body) if status == 200 else {}
    result["forwarder"] = {"running": True, "app": settings.app,
                           "flask_loaded": info.get("flask_loaded"),
                           "tensorflow_loaded": info.get("tensorflow_loaded")}
    log(f"forwarder on 127.0.0.1:{fw.port}: {result['forwarder']}")
    return fw


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
