"""`python -m bench.soak` (`make soak`): the stack under a bounded mixed load, then model-server restarts.

Starts the local model server and the gateway under gunicorn (the benchmark's production flags),
then for `--duration` seconds `--concurrency` clients on loopback send a mix of good predictions
(`/predict`, `/predict_image`, 640x480 and a 4000x3000 JPEG) and bad uploads (truncated JPEG, a PNG
whose header claims 30000x30000 pixels, bytes that are no image, a label map nested past the limit,
`store=maybe`), plus `/healthz`. A good call must answer 200, a bad one a 4xx JSON error; anything
else (5xx, a dropped connection, a timeout) is counted as an error. The workers' RSS is sampled
every two seconds: it must stay flat.

Then the model server is killed (SIGKILL) and started again on the same port `--restarts` times; the
recovery time is from the moment its port accepts connections again (it opens only once the models
are loaded) to the gateway's first 200 prediction, both polled every 20 ms. Writes
`bench/results/soak.json` and `soak.md`; progress goes to stderr, the report to stdout. Exits 1 when
a call failed or the gateway did not recover.
"""

from __future__ import annotations

import argparse
import io
import json
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from bench import stack
from bench.clients import GatewayClient, multipart_body
from bench.images import make_images
from tools.local_model_server import launch_model_server
from tools.processes import free_port, log_tail, stop_process

MODEL = "shapes"
SAMPLE_EVERY_S = 2.0
IDLE_SETTLE_S = 3.0  # after the load, before the idle reading
POLL_S = 0.02
CLIENT_TIMEOUT_S = 30.0


def log(message: str) -> None:
    print(f"[soak {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of mixed load (default 60)")
    parser.add_argument("--concurrency", type=int, default=8, help="client threads (default 8)")
    parser.add_argument(
        "--max-requests", type=int, default=100_000, help="stop earlier after this many calls"
    )
    parser.add_argument(
        "--restarts", type=int, default=3, help="model-server kill/restart rounds (default 3)"
    )
    parser.add_argument(
        "--recovery-timeout",
        type=float,
        default=30.0,
        help="seconds a restart may take to be served again before it counts as failed",
    )
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--model-config", type=Path, default=stack.ROOT / "tf_server" / "models.config")
    parser.add_argument("--out", type=Path, default=stack.ROOT / "bench" / "results")
    return parser.parse_args(argv)


# ---------------------------------------------------------------------------------------------
# The calls


@dataclass(frozen=True)
class Call:
    """One request of the mix and what it must answer: 200, or any 4xx with a JSON error."""

    name: str
    method: str
    path: str
    body: bytes | None = None
    content_type: str | None = None
    good: bool = True


def _multipart(fields: dict[str, str], files: dict[str, tuple[str, bytes]]) -> tuple[bytes, str]:
    boundary = "soak-boundary-7d1f"
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
        for k, v in fields.items()
    ]
    for name, (filename, data) in files.items():
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        parts.append(head + data + b"\r\n")
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def _png_claiming(width: int, height: int) -> bytes:
    """A real PNG re-labelled as `width` x `height`: far too little data for the pixels it claims."""
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (120, 30, 200)).save(buf, format="PNG")
    data = bytearray(buf.getvalue())
    data[16:24] = width.to_bytes(4, "big") + height.to_bytes(4, "big")  # IHDR width, height (CRC left stale)
    return bytes(data)


def mixed_calls(small_jpeg: bytes, large_jpeg: bytes) -> list[Call]:
    """The soak's request mix: mostly good predictions, some bad uploads, a health check."""
    predict = f"/api/v1/models/{MODEL}/predict"
    calls = []
    for name, jpeg in (("640x480", small_jpeg), ("4000x3000", large_jpeg)):
        body, ctype = multipart_body(jpeg)
        calls.append(Call(f"predict {name}", "POST", predict, body, ctype))
        calls.append(
            Call(f"predict_image {name}", "POST", f"/api/v1/models/{MODEL}/predict_image", body, ctype)
        )
    calls.append(calls[0])  # the common case twice as often
    bad_uploads = {
        "truncated JPEG": {"image": ("cut.jpg", small_jpeg[: len(small_jpeg) // 2] + b"\xff\xd9")},
        "PNG claiming 30000x30000": {"image": ("bomb.png", _png_claiming(30_000, 30_000))},
        "not an image": {"image": ("notes.jpg", b"these are not the pixels you are looking for" * 20)},
        "label map nested 4000 deep": {
            "image": ("photo.jpg", small_jpeg),
            "label_map": ("deep.pbtxt", b"item {" * 4000 + b"}" * 4000),
        },
    }
    for name, files in bad_uploads.items():
        body, ctype = _multipart({}, files)
        calls.append(Call(name, "POST", predict, body, ctype, good=False))
    body, ctype = _multipart({"store": "maybe"}, {"image": ("photo.jpg", small_jpeg)})
    calls.append(Call("store=maybe", "POST", predict, body, ctype, good=False))
    calls.append(Call("healthz", "GET", "/healthz"))
    return calls


def _outcome(call: Call, client: GatewayClient) -> tuple[str, bool]:
    """What one call got ("200", "400 + message", "HTTP 500", "no answer (...)") and whether that
    is what it must get."""
    try:
        headers = {"Content-Type": call.content_type} if call.content_type else {}
        status, data, _ = client.request(call.method, call.path, call.body, headers)
    except (OSError, TimeoutError) as exc:
        client.close()
        return f"no answer ({type(exc).__name__})", False
    if call.good or not 400 <= status < 500:
        return f"HTTP {status}", status == 200 and call.good
    try:
        message = json.loads(data)["error"]["message"]
    except (ValueError, KeyError, TypeError):
        return f"HTTP {status} without a JSON error", False
    return (f"HTTP {status} + message", True) if message else (f"HTTP {status}, empty message", False)


@dataclass
class LoadResult:
    seconds: float
    counts: Counter  # (call name, outcome, as it must be) -> calls
    latencies_ms: dict[str, list[float]]


def run_load(port: int, calls: list[Call], args: argparse.Namespace) -> LoadResult:
    """`args.concurrency` threads cycling through `calls` (each from its own offset) until the
    duration or the request cap is reached."""
    counts: Counter = Counter()
    latencies: dict[str, list[float]] = {}
    lock = threading.Lock()
    issued = iter(range(args.max_requests))
    deadline = time.monotonic() + args.duration

    def client_loop(offset: int) -> None:
        client = GatewayClient("127.0.0.1", port, timeout=CLIENT_TIMEOUT_S)
        try:
            for step in range(args.max_requests):
                with lock:
                    if time.monotonic() > deadline or next(issued, None) is None:
                        return
                call = calls[(offset + step) % len(calls)]
                started = time.perf_counter()
                outcome, expected = _outcome(call, client)
                elapsed_ms = (time.perf_counter() - started) * 1000
                with lock:
                    counts[(call.name, outcome, expected)] += 1
                    latencies.setdefault(call.name, []).append(elapsed_ms)
        finally:
            client.close()

    started = time.perf_counter()
    threads = [
        threading.Thread(target=client_loop, args=(i * 3,), daemon=True) for i in range(args.concurrency)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=args.duration + CLIENT_TIMEOUT_S + 30)
    return LoadResult(time.perf_counter() - started, counts, latencies)


@contextmanager
def rss_sampler(master_pid: int) -> Iterator[list[tuple[float, float, float]]]:
    """Samples (seconds since start, summed worker RSS MB, largest worker RSS MB) every 2 s."""
    samples: list[tuple[float, float, float]] = []
    stop = threading.Event()
    started = time.monotonic()

    def sample() -> None:
        while True:
            rss = [w["rss_mb"] for w in stack.worker_report(master_pid)]
            if rss:
                samples.append((round(time.monotonic() - started, 1), round(sum(rss), 1), max(rss)))
            if stop.wait(SAMPLE_EVERY_S):
                return

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield samples
    finally:
        stop.set()
        thread.join(timeout=10)


# ---------------------------------------------------------------------------------------------
# Restarts


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def start_model_server(port: int, model_config: Path, log: Path) -> subprocess.Popen:
    """`python -m tf_server` on `port` (it opens the port once its models are loaded and warm)."""
    flags = (f"--model_config_file={model_config}", "--enable_model_warmup=true")
    return launch_model_server(port, flags, log)


def wait_for_port(proc: subprocess.Popen, port: int, log: Path, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while not _port_open(port):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(
                f"the model server did not open :{port} (exit {proc.poll()}):\n{log_tail(log)}"
            )
        time.sleep(POLL_S)


def _status(client: GatewayClient, call: Call) -> str:
    try:
        status, _, _ = client.request(call.method, call.path, call.body, {"Content-Type": call.content_type})
    except (OSError, TimeoutError) as exc:
        client.close()
        return f"no answer ({type(exc).__name__})"
    return f"HTTP {status}"


def restart_and_time(
    gateway_port: int, server_port: int, call: Call, model_config: Path, log: Path, recovery_timeout: float
) -> tuple[subprocess.Popen, dict]:
    """Start the model server again on `server_port` while polling the gateway, and time its first
    200 from the moment the port accepts connections (both polled every 20 ms)."""
    client = GatewayClient("127.0.0.1", gateway_port, timeout=5.0)
    proc = start_model_server(server_port, model_config, log)
    while_down: Counter = Counter()  # what the gateway answered before the port reopened
    port_open_at = recovered_at = None
    deadline = time.monotonic() + 300.0  # TensorFlow's import and the warmup come first
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if port_open_at is None and _port_open(server_port):
                port_open_at = time.monotonic()
            answer = _status(client, call)
            if answer == "HTTP 200":
                recovered_at = time.monotonic()
                break
            if port_open_at is None:
                while_down[answer] += 1
            elif time.monotonic() - port_open_at > recovery_timeout:
                break
            time.sleep(POLL_S)
    finally:
        client.close()
    return proc, {
        "recovered": recovered_at is not None,
        "recovery_s": round(recovered_at - port_open_at, 3) if recovered_at and port_open_at else None,
        "gateway_answers_while_down": dict(while_down),
        "server_exit": proc.poll(),
    }


# ---------------------------------------------------------------------------------------------
# Report


def _percentile(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 1) if values else None


def build_report(
    args: argparse.Namespace,
    load: LoadResult,
    samples: list[tuple[float, float, float]],
    idle_after_mb: float | None,
    rounds: list[dict],
) -> dict:
    calls = {}
    for (name, outcome, expected), count in sorted(load.counts.items()):
        entry = calls.setdefault(name, {"calls": 0, "errors": 0, "outcomes": {}})
        entry["errors"] += 0 if expected else count
        entry["calls"] += count
        entry["outcomes"][outcome] = count
    for name, entry in calls.items():
        entry["p50_ms"] = _percentile(load.latencies_ms.get(name, []), 50)
        entry["p99_ms"] = _percentile(load.latencies_ms.get(name, []), 99)
    errors = sum(count for (_, _, expected), count in load.counts.items() if not expected)
    loaded = samples[1:] or samples  # the first sample is taken before any request
    half = len(loaded) // 2
    first_half = [total for _, total, _ in loaded[:half]] or [total for _, total, _ in loaded]
    second_half = [total for _, total, _ in loaded[half:]]
    rss = {
        "samples": len(samples),
        "workers_total_before_mb": samples[0][1] if samples else None,
        "workers_total_median_first_half_mb": round(statistics.median(first_half), 1) if first_half else None,
        "workers_total_median_second_half_mb": round(statistics.median(second_half), 1)
        if second_half
        else None,
        "workers_total_max_mb": max(s[1] for s in samples) if samples else None,
        "largest_worker_max_mb": max(s[2] for s in samples) if samples else None,
        "workers_total_idle_after_mb": idle_after_mb,
    }
    recovery = [r["recovery_s"] for r in rounds if r["recovery_s"] is not None]
    return {
        "settings": {
            "duration_s": args.duration,
            "concurrency": args.concurrency,
            "workers": args.workers,
            "threads": args.threads,
            "model": MODEL,
        },
        "seconds": round(load.seconds, 1),
        "requests": sum(load.counts.values()),
        "errors": errors,
        "requests_per_s": round(sum(load.counts.values()) / load.seconds, 1) if load.seconds else None,
        "calls": calls,
        "rss": rss,
        "rss_samples": samples,
        "restarts": rounds,
        "recovery_s_max": max(recovery) if recovery else None,
        "recovery_s_median": round(statistics.median(recovery), 3) if recovery else None,
        "passed": errors == 0 and all(r["recovered"] for r in rounds) and len(rounds) == args.restarts,
    }


def markdown(report: dict) -> str:
    s = report["settings"]
    lines = [
        f"Soak: {report['requests']} requests in {report['seconds']} s ({report['requests_per_s']} req/s), "
        f"{s['concurrency']} clients, gunicorn {s['workers']} workers x {s['threads']} threads, "
        f"**{report['errors']} errors**.",
        "",
        "| call | calls | errors | outcomes | p50 ms | p99 ms |",
        "|---|---:|---:|---|---:|---:|",
    ]
    for name, entry in report["calls"].items():
        outcomes = ", ".join(f"{k} x{v}" for k, v in entry["outcomes"].items())
        cells = [name, entry["calls"], entry["errors"], outcomes, entry["p50_ms"], entry["p99_ms"]]
        lines.append("| " + " | ".join(str(cell) for cell in cells) + " |")
    rss = report["rss"]
    lines += [
        "",
        f"Worker RSS, all workers together (sampled every {SAMPLE_EVERY_S:.0f} s): "
        f"{rss['workers_total_before_mb']} MB before the load; median "
        f"{rss['workers_total_median_first_half_mb']} MB in the first half of the load and "
        f"{rss['workers_total_median_second_half_mb']} MB in the second "
        f"(peak {rss['workers_total_max_mb']} MB, largest single worker {rss['largest_worker_max_mb']} MB); "
        f"{rss['workers_total_idle_after_mb']} MB idle {IDLE_SETTLE_S:.0f} s after it.",
        "",
        "| restart | recovered | seconds from port open to first 200 | gateway answers while down |",
        "|---:|---|---:|---|",
    ]
    for index, r in enumerate(report["restarts"], 1):
        down = ", ".join(f"{k} x{v}" for k, v in r["gateway_answers_while_down"].items()) or "-"
        lines.append(f"| {index} | {r['recovered']} | {r['recovery_s']} | {down} |")
    lines.append("")
    lines.append("PASSED" if report["passed"] else "FAILED")
    return "\n".join(lines) + "\n"


def restart_rounds(
    args: argparse.Namespace,
    gateway_port: int,
    server: subprocess.Popen,
    server_port: int,
    call: Call,
    work: Path,
) -> tuple[list[dict], subprocess.Popen]:
    """SIGKILL the model server and start it again on the same port, `args.restarts` times; returns
    each round's result and the server now running."""
    rounds = []
    for index in range(args.restarts):
        log(f"restart {index + 1}/{args.restarts}: SIGKILL the model server, start it again")
        server.send_signal(signal.SIGKILL)
        server.wait(timeout=30)
        server, result = restart_and_time(
            gateway_port,
            server_port,
            call,
            args.model_config,
            work / f"model_server_{index + 1}.log",
            args.recovery_timeout,
        )
        log(f"  recovered: {result['recovered']}, {result['recovery_s']} s after the port reopened")
        rounds.append(result)
        if not result["recovered"]:
            break
    return rounds, server


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="gateway_soak_") as tmp:
        work = Path(tmp)
        images = make_images(work)
        calls = mixed_calls(images[0].jpeg, images[-1].jpeg)
        recovery_call = calls[0]
        server_port = free_port()
        log(f"starting the model server on :{server_port} (TensorFlow import and warmup take a while)")
        server = start_model_server(server_port, args.model_config, work / "model_server.log")
        try:
            wait_for_port(server, server_port, work / "model_server.log")
            env = stack.gateway_env(f"127.0.0.1:{server_port}", args.model_config, work)
            settings = stack.GatewaySettings(workers=args.workers, threads=args.threads)
            with stack.gateway(env, settings, work) as gateway:
                log(f"{args.duration:.0f} s of mixed load from {args.concurrency} clients on :{gateway.port}")
                with rss_sampler(gateway.process.pid) as samples:
                    load = run_load(gateway.port, calls, args)
                time.sleep(IDLE_SETTLE_S)
                idle_after = [w["rss_mb"] for w in stack.worker_report(gateway.process.pid)]
                idle_after_mb = round(sum(idle_after), 1) if idle_after else None
                rounds, server = restart_rounds(args, gateway.port, server, server_port, recovery_call, work)
        finally:
            stop_process(server, 30.0)
    report = build_report(args, load, list(samples), idle_after_mb, rounds)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "soak.json").write_text(json.dumps(report, indent=2) + "\n")
    text = markdown(report)
    (args.out / "soak.md").write_text(text)
    print(text)
    log(f"wrote {args.out / 'soak.json'} and soak.md")
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
