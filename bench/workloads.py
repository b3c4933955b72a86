"""Timing loops: sequential latency (interleaved across workloads) and closed-loop throughput.

Sequential rows of one model and size are measured round-robin, one request of each workload
per round (the order rotating from round to round), so a background job slowing the machine for
a while slows every row alike and the ratios stay meaningful on a busy box. Every loop is
bounded by a request count and a deadline.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

# A workload's one request; it may return the gateway's `timings_ms` to collect per-stage times.
Call = Callable[[], dict | None]


@dataclass
class Samples:
    """Latencies of one workload plus what went wrong and the server-side stage timings."""

    latencies_ms: list[float] = field(default_factory=list)
    errors: int = 0
    last_error: str | None = None
    stage_ms: dict[str, list[float]] = field(default_factory=dict)

    def add_stages(self, timings: dict | None) -> None:
        for stage, value in (timings or {}).items():
            if isinstance(value, int | float):
                self.stage_ms.setdefault(stage, []).append(float(value))


def summarize(latencies_ms: list[float]) -> dict:
    """n, p50, p95, mean (ms) and sequential req/s (requests / time spent in them)."""
    if not latencies_ms:
        return {"n": 0, "p50_ms": None, "p95_ms": None, "mean_ms": None, "req_s": None}
    values = np.asarray(latencies_ms)
    return {
        "n": int(values.size),
        "p50_ms": round(float(np.percentile(values, 50)), 2),
        "p95_ms": round(float(np.percentile(values, 95)), 2),
        "mean_ms": round(float(values.mean()), 2),
        "req_s": round(float(values.size / (values.sum() / 1000.0)), 2),
    }


def median_stages(stage_ms: dict[str, list[float]]) -> dict[str, float]:
    return {stage: round(statistics.median(values), 2) for stage, values in stage_ms.items() if values}


def timed(call: Call, samples: Samples) -> None:
    """Run one request, recording its latency or its error."""
    start = time.perf_counter()
    try:
        timings = call()
    except Exception as exc:  # a failed request is counted and reported, not fatal
        samples.errors += 1
        samples.last_error = f"{type(exc).__name__}: {exc}"[:500]
        return
    samples.latencies_ms.append((time.perf_counter() - start) * 1000.0)
    samples.add_stages(timings)


# A workload either runs in-process (a Call, timed here) or remotely (the tutorial subprocess:
# a function that runs `count` requests and returns their latencies, errors and last error).
Remote = Callable[[int], tuple[list[float], int, str | None]]


def interleaved(workloads: dict[str, Call | Remote], remote: set[str], iterations: int, warmup: int,
                time_limit_s: float, progress: Callable[[str], None] | None = None) -> dict[str, Samples]:
    """Round-robin sequential latency: `warmup` unmeasured requests each, then up to `iterations` rounds."""
    samples = {name: Samples() for name in workloads}
    for name, work in workloads.items():
        if name in remote:
            work(warmup)
        else:
            for _ in range(warmup):
                try:
                    work()
                except Exception as exc:  # the measured rounds report it
                    samples[name].last_error = f"warm-up: {type(exc).__name__}: {exc}"[:500]
    deadline = time.monotonic() + time_limit_s
    for round_index in range(iterations):
        if time.monotonic() > deadline:
            if progress:
                progress(f"time limit {time_limit_s:.0f}s reached after {round_index} rounds")
            break
        names = list(workloads)
        shift = round_index % len(names)  # rotate the order so no row always follows the same one
        for name in names[shift:] + names[:shift]:
            work = workloads[name]
            if name in remote:
                latencies, errors, error = work(1)
                samples[name].latencies_ms.extend(latencies)
                samples[name].errors += errors
                samples[name].last_error = error or samples[name].last_error
            else:
                timed(work, samples[name])
    return samples


Factory = Callable[[], tuple[Call, Callable[[], None]]]


def closed_loop(make_call: Factory, concurrency: int, requests: int,
                time_limit_s: float) -> tuple[Samples, float]:
    """`concurrency` threads, each with its own client from `make_call`, share `requests` requests.

    Each thread warms its client with one unmeasured request, then all start together. Returns the
    samples and the wall time from that start to the last answer.
    """
    lock = threading.Lock()
    issued = 0
    samples = Samples()
    started: list[float] = []
    barrier = threading.Barrier(concurrency, action=lambda: started.append(time.perf_counter()))
    finished: list[float] = []

    def worker() -> None:
        nonlocal issued
        call, close = make_call()
        try:
            try:
                call()
            except Exception:  # warm-up only; measured requests report errors
                pass
            barrier.wait(timeout=time_limit_s)
            deadline = started[0] + time_limit_s
            mine = Samples()
            while True:
                with lock:
                    if issued >= requests or time.perf_counter() > deadline:
                        break
                    issued += 1
                timed(call, mine)
            with lock:
                for stage, values in mine.stage_ms.items():
                    samples.stage_ms.setdefault(stage, []).extend(values)
                samples.latencies_ms.extend(mine.latencies_ms)
                samples.errors += mine.errors
                samples.last_error = mine.last_error or samples.last_error
                finished.append(time.perf_counter())
        finally:
            close()

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=time_limit_s * 2 + 60)
    wall = (max(finished) - started[0]) if finished and started else 0.0
    return samples, wall


def compare_throughput(first: Factory, second: Factory, concurrency: int, requests: int,
                       time_limit_s: float, bursts: int = 2) -> tuple[dict, dict]:
    """Closed-loop throughput of two clients, each doing `requests` in `bursts` bursts (A-B-B-A order).

    Alternating cancels a load that drifts over the run (the other jobs on a shared machine);
    throughput = all completed requests / the summed wall time of that client's bursts.
    """
    results = compare_many({"first": first, "second": second}, concurrency, requests, time_limit_s, bursts)
    return results["first"], results["second"]


def burst_order(names: list[str], bursts: int) -> list[str]:
    """A-B-C, C-B-A, A-B-C, ...: `bursts` passes, every other one reversed, so each client sees the
    start and the end of a drifting load alike (two clients, two bursts: A-B-B-A)."""
    order: list[str] = []
    for index in range(max(1, bursts)):
        order += names if index % 2 == 0 else names[::-1]
    return order


def compare_many(factories: dict[str, Factory], concurrency: int, requests: int, time_limit_s: float,
                 bursts: int = 2) -> dict[str, dict]:
    """Closed-loop throughput of several clients, each doing `requests` in `bursts` bursts, in the
    order of `burst_order`; throughput = completed requests / the summed wall time of its bursts."""
    results: dict[str, tuple[Samples, float]] = {name: (Samples(), 0.0) for name in factories}
    bursts = max(1, bursts)
    per_burst = max(concurrency, requests // bursts)
    for name in burst_order(list(factories), bursts):
        samples, wall = closed_loop(factories[name], concurrency, per_burst, time_limit_s)
        total, total_wall = results[name]
        total.latencies_ms.extend(samples.latencies_ms)
        total.errors += samples.errors
        total.last_error = samples.last_error or total.last_error
        for stage, values in samples.stage_ms.items():
            total.stage_ms.setdefault(stage, []).extend(values)
        results[name] = (total, total_wall + wall)
    return {name: _throughput(samples, wall, concurrency) for name, (samples, wall) in results.items()}


def _throughput(samples: Samples, wall: float, concurrency: int) -> dict:
    completed = len(samples.latencies_ms)
    stats = summarize(samples.latencies_ms)
    stats.pop("req_s")  # sequential req/s means nothing here: throughput_req_s is the figure
    stats.update({
        "concurrency": concurrency,
        "completed": completed,
        "errors": samples.errors,
        "last_error": samples.last_error,
        "wall_s": round(wall, 3),
        "throughput_req_s": round(completed / wall, 2) if completed and wall > 0 else None,
    })
    if samples.stage_ms:
        stats["server_stages_ms"] = median_stages(samples.stage_ms)
    return stats
