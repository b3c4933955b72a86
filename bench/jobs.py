"""`python -m bench.jobs`: a predict job's throughput against the model server's own, and a worker's memory.

One run, the local model server (`shapes_jpeg`, warm), in the chosen CPU mode (shared: every process
on both cores; pinned: the model server on CPU 0, the worker and the load generator on CPU 1):

* **direct**: the same 640x480 JPEGs sent as prebuilt gRPC `Predict` requests, 4 in flight, from a
  thread pool: the model server's rate, the floor no job can beat.
* **job**: the JPEGs in a zip, a job queued on the embedded queue, one `python -m web.worker`
  (JOB_WORKER_THREADS=1, JOB_PICTURES_IN_FLIGHT=4: 4 predictions in flight as well), timed from the
  worker picking the job up to the last picture done (the job's `started` and the moment progress
  reaches the total), so worker start-up and result assembly are reported apart.
* **memory**: a 2,000-picture job; the worker's RSS after the first 100 pictures and at the end.

Writes bench/results/jobs-<mode>.{json,md}.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image

from bench import cpus, stack
from bench.clients import DirectClient
from demo.synthetic import generate_image
from tools.local_model_server import REPO_ROOT, model_server_process
from web.jobs.config import JobSettings
from web.jobs.queue import JobQueue
from web.jobs.store import parse_iso

MODEL = "shapes_jpeg"
RESULTS = REPO_ROOT / "bench" / "results"
IN_FLIGHT = 4


def pictures(count: int, distinct: int = 20) -> list[bytes]:
    """`count` 640x480 JPEGs (`distinct` different scenes, repeated)."""
    scenes = []
    for seed in range(distinct):
        pixels, _ = generate_image(np.random.default_rng(seed), width=640, height=480)
        out = io.BytesIO()
        Image.fromarray(pixels).save(out, format="JPEG", quality=90)
        scenes.append(out.getvalue())
    return [scenes[i % distinct] for i in range(count)]


def direct_rate(address: str, jpegs: list[bytes]) -> float:
    """Pictures (or video frames) per second of prebuilt Predict calls, IN_FLIGHT at a time."""
    client = DirectClient(address)
    try:
        spec = client.input_spec(MODEL)
        requests = [client.build_request(MODEL, spec, jpeg, np.zeros((1, 1, 3), np.uint8)) for jpeg in jpegs]
        for request in requests[:8]:
            client.predict(request)
        with ThreadPoolExecutor(IN_FLIGHT) as pool:
            start = time.perf_counter()
            list(pool.map(client.predict, requests))
            return len(requests) / (time.perf_counter() - start)
    finally:
        client.close()


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def run_job(address: str, config: Path, work: Path, jpegs: list[bytes], clients: frozenset[int] | None,
            threads: int, in_flight: int, rss_after: int = 100) -> dict[str, float]:
    """Queue a job of `jpegs`, run one worker on it, and time it (see the module docstring)."""
    settings = JobSettings(jobs_folder=work / "jobs", worker_threads=threads, in_flight=in_flight,
                           chunk_size=16, poll_s=0.05)
    queue = JobQueue(settings)
    upload = queue.store.incoming()
    with zipfile.ZipFile(upload, "w", zipfile.ZIP_STORED) as zf:
        for index, jpeg in enumerate(jpegs):
            zf.writestr(f"set/{index:05d}.jpg", jpeg)
    job = queue.create(model=MODEL, archive=upload, options={"min_score": 0.5}, labels={})
    queue.submit(job)
    env = {**stack.base_env(), **settings.to_env(), "TF_SERVING_ADDRESS": address,
           "MODEL_CONFIG_FILE": str(config), "OUTPUT_FOLDER": str(work / "out")}
    log = (work / "worker.log").open("wb")
    worker = subprocess.Popen([sys.executable, "-m", "web.worker", "--log-level", "WARNING"], cwd=REPO_ROOT,
                              env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        if clients is not None:
            cpus.move_process(worker.pid, clients)
        rss_early = None
        total = len(jpegs)
        deadline = time.monotonic() + 3600
        done_at = None
        while time.monotonic() < deadline:
            state = queue.store.get(job.id)
            if rss_early is None and state.progress["done"] >= rss_after:
                rss_early = rss_mb(worker.pid)
            if done_at is None and state.progress["done"] >= total:
                done_at = time.time()
                rss_end = rss_mb(worker.pid)
            if state.terminal:
                break
            time.sleep(0.02)
        state = queue.store.get(job.id)
        if state.status != "succeeded":
            tail = (work / "worker.log").read_text()[-2000:]
            raise RuntimeError(f"the job {state.status}: {state.error}\n{tail}")
        started = parse_iso(state.started)
        return {
            "pictures": total,
            "pictures_per_s": round(total / (done_at - started), 2),
            "assembly_s": round(parse_iso(state.finished) - done_at, 2),
            "rss_after_first_mb": round(rss_early or 0.0, 1),
            "rss_end_mb": round(rss_end, 1),
        }
    finally:
        worker.terminate()
        worker.wait(30)
        log.close()


@contextmanager
def placed_model_server(work: Path, config: Path, mode: str, placement: cpus.Placement):
    """The warm local model server for `config`, and the CPUs the job's worker goes on (None: shared);
    in pinned mode the model server is moved to its CPU and this process to the clients' ones."""
    flags = (f"--model_config_file={config}", "--enable_model_warmup=true")
    with model_server_process(*flags, log_dir=work) as server:
        clients = None
        if mode == cpus.PINNED:
            cpus.move_process(server.process.pid, placement.model_server)
            cpus.move_self(placement.clients)
            clients = placement.clients
        yield server, clients


def write_results(stem: str, report: dict, lines: list[str]) -> None:
    """bench/results/<stem>.json (the report) and .md (the table `lines`), and the table on stdout."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n")
    text = "\n".join(lines)
    (RESULTS / f"{stem}.md").write_text(text + "\n")
    print(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pictures", type=int, default=200, help="pictures of the throughput job")
    parser.add_argument("--memory-pictures", type=int, default=2000, help="the memory job's (0: none)")
    parser.add_argument("--mode", choices=cpus.MODES, default=cpus.SHARED)
    parser.add_argument("--worker-threads", type=int, default=2,
                        help="chunks the worker runs at once (JOB_WORKER_THREADS, default 2)")
    parser.add_argument("--in-flight", type=int, default=2,
                        help="predictions in flight per chunk (JOB_PICTURES_IN_FLIGHT); threads x this = "
                        "the job's predictions in flight (default 2 x 2 = 4, as the direct row)")
    args = parser.parse_args(argv)
    placement = cpus.placement(args.mode, cpus.usable_cpus())
    if placement is None:
        parser.error("pinned mode needs 2 usable CPUs")
    config = REPO_ROOT / "tf_server" / "models.config"
    report: dict[str, object] = {
        "mode": placement.describe(),
        "model": MODEL,
        "in_flight": IN_FLIGHT,
        "worker": {"threads": args.worker_threads, "in_flight_per_chunk": args.in_flight},
    }
    with tempfile.TemporaryDirectory(prefix="bench_jobs_") as tmp:
        work = Path(tmp)
        with placed_model_server(work, config, args.mode, placement) as (server, clients):
            jpegs = pictures(args.pictures)
            rates = [direct_rate(server.address, jpegs) for _ in range(2)]
            job = run_job(server.address, config, work / "job", jpegs, clients, args.worker_threads,
                          args.in_flight)
            report["direct_pictures_per_s"] = round(statistics.median(rates), 2)
            report["job"] = job
            report["ratio"] = round(job["pictures_per_s"] / report["direct_pictures_per_s"], 3)
            if args.memory_pictures:
                many = pictures(args.memory_pictures)
                memory = run_job(server.address, config, work / "memory", many, clients, args.worker_threads,
                                 args.in_flight)
                report["memory"] = memory
                report["rss_growth"] = round(memory["rss_end_mb"] / memory["rss_after_first_mb"] - 1, 3)
    lines = [
        f"CPU mode {report['mode']}; {MODEL}, 640x480 JPEGs; direct: {IN_FLIGHT} in flight; the worker: "
        f"{args.worker_threads} chunks at once x {args.in_flight} in flight each",
        "",
        "| measured | value | target |",
        "|---|---|---|",
        f"| direct gRPC Predict, prebuilt requests | {report['direct_pictures_per_s']} pictures/s | |",
        f"| {args.pictures}-picture job, one worker | {job['pictures_per_s']} pictures/s "
        f"(results assembled in {job['assembly_s']} s after) | |",
        f"| job / direct | {report['ratio']} | >= {0.90 if args.mode == cpus.PINNED else 0.80} |",
    ]
    if "memory" in report:
        memory = report["memory"]
        lines.append(
            f"| worker RSS over a {args.memory_pictures}-picture job | {memory['rss_after_first_mb']} MB "
            f"after 100, {memory['rss_end_mb']} MB at the end ({report['rss_growth']:+.1%}) | within 20 % |"
        )
    write_results(f"jobs-{args.mode}", report, lines)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())
