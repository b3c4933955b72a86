"""`python -m bench.video`: a video job's frame rate against the model server's own, and a worker's memory.

One run, the local model server (`shapes_jpeg`, warm), in the chosen CPU mode (shared: every process on
both cores; pinned: the model server on CPU 0, the worker and the load generator on CPU 1):

* **direct**: the video's frames, as the job sends them (JPEG, quality 92), as prebuilt gRPC `Predict`
  requests, 4 in flight: the model server's rate for the same frames, the floor no job can beat.
* **job**: a 640x480 H.264 video of moving demo shapes as a video job, one `python -m web.worker`
  (JOB_PICTURES_IN_FLIGHT=4), timed from the worker picking it up to the job's end (decode, predict,
  draw, encode and the results), with the per-frame decode, draw and encode costs the job measured.
* **memory**: a 2,000-frame video; the worker's RSS after the first 100 frames, and its largest later.

Writes bench/results/video-<mode>.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import av
import simplejpeg

from bench import cpus, stack
from bench.jobs import IN_FLIGHT, MODEL, direct_rate, placed_model_server, rss_mb, write_results
from demo.videos import shapes_video
from tools.local_model_server import REPO_ROOT
from web.jobs.config import JobSettings
from web.jobs.queue import JobQueue
from web.jobs.store import parse_iso
from web.jobs.video.job import JPEG_QUALITY, SUMMARY_FILE
from web.jobs.video.probe import VideoProbe

TARGET_RATIO, RSS_LIMIT = 0.85, 0.20


def frames_as_sent(video: Path) -> list[bytes]:
    """The video's frames as the job sends them to the model."""
    with av.open(str(video)) as source:
        return [
            simplejpeg.encode_jpeg(frame.to_ndarray(format="rgb24"), quality=JPEG_QUALITY, colorspace="RGB")
            for frame in source.decode(video=0)
        ]


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_job(address: str, config: Path, work: Path, video: Path, clients: frozenset[int] | None,
            rss_after: int = 100) -> dict[str, float]:
    """Queue a video job, run one worker on it, time it and follow its memory."""
    settings = JobSettings(jobs_folder=work / "jobs", worker_threads=1, in_flight=IN_FLIGHT, poll_s=0.05)
    queue = JobQueue(settings)
    upload = queue.store.incoming()
    upload.write_bytes(video.read_bytes())
    probe = VideoProbe(1 << 34, 24 * 3600.0, 10**7, 10**8)
    job = queue.create(model=MODEL, archive=upload, kind="video", options={"min_score": 0.5}, probe=probe)
    queue.submit(job)
    env = {**stack.base_env(), **settings.to_env(), "TF_SERVING_ADDRESS": address,
           "MODEL_CONFIG_FILE": str(config), "OUTPUT_FOLDER": str(work / "out")}
    log = (work / "worker.log").open("wb")
    worker = subprocess.Popen([sys.executable, "-m", "web.worker", "--log-level", "WARNING"], cwd=REPO_ROOT,
                              env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        if clients is not None:
            cpus.move_process(worker.pid, clients)
        rss_early, rss_most = None, 0.0
        cpu_start = None
        deadline = time.monotonic() + 3600
        while time.monotonic() < deadline:
            state = queue.store.get(job.id)
            if cpu_start is None and state.status == "running":
                cpu_start = cpu_s(worker.pid)  # the worker's start-up (imports) is not the job's
            if state.terminal:
                cpu_end = cpu_s(worker.pid)
                break
            if rss_early is None and state.progress["done"] >= rss_after:
                rss_early = rss_mb(worker.pid)
            elif rss_early is not None:
                rss_most = max(rss_most, rss_mb(worker.pid))
            time.sleep(0.05)
        state = queue.store.get(job.id)
        if state.status != "succeeded":
            tail = (work / "worker.log").read_text()[-2000:]
            raise RuntimeError(f"the job {state.status}: {state.error}\n{tail}")
        seconds = parse_iso(state.finished) - parse_iso(state.started)
        summary = json.loads(queue.store.result_path(job.id, SUMMARY_FILE).read_text())
        costs = {k: v for k, v in summary["output"].items() if k.endswith("_ms_per_frame")}
        return {
            "frames": state.total,
            "frames_per_s": round(state.total / seconds, 2),
            "seconds": round(seconds, 2),
            "worker_cpu_ms_per_frame": round((cpu_end - (cpu_start or 0.0)) * 1000 / state.total, 2),
            **costs,
            "rss_after_first_mb": round(rss_early or 0.0, 1),
            "rss_most_after_mb": round(rss_most, 1),
        }
    finally:
        worker.terminate()
        worker.wait(30)
        log.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=300, help="frames of the throughput video")
    parser.add_argument("--memory-frames", type=int, default=2000, help="the memory video's (0: none)")
    parser.add_argument("--mode", choices=cpus.MODES, default=cpus.SHARED)
    args = parser.parse_args(argv)
    placement = cpus.placement(args.mode, cpus.usable_cpus())
    if placement is None:
        parser.error("pinned mode needs 2 usable CPUs")
    config = REPO_ROOT / "tf_server" / "models.config"
    report: dict[str, object] = {"mode": placement.describe(), "model": MODEL, "in_flight": IN_FLIGHT}
    with tempfile.TemporaryDirectory(prefix="bench_video_") as tmp:
        work = Path(tmp)
        video = shapes_video(work / "clip.mp4", frames=args.frames, fps=30, step=2, seed=3).path
        with placed_model_server(work, config, args.mode, placement) as (server, clients):
            jpegs = frames_as_sent(video)
            before = cpu_s(server.process.pid)
            rates = [direct_rate(server.address, jpegs) for _ in range(2)]
            server_ms = (cpu_s(server.process.pid) - before) * 1000 / (2 * len(jpegs) + 16)
            report["model_server_cpu_ms_per_frame"] = round(server_ms, 2)
            job = run_job(server.address, config, work / "job", video, clients)
            report["direct_frames_per_s"] = round(statistics.median(rates), 2)
            report["job"] = job
            report["ratio"] = round(job["frames_per_s"] / report["direct_frames_per_s"], 3)
            # On shared cores the model server and the worker split the same CPU time: the best a job can
            # do is the model server's share of the CPU time a frame costs in all.
            report["shared_cpu_ceiling"] = round(server_ms / (server_ms + job["worker_cpu_ms_per_frame"]), 3)
            if args.memory_frames:
                long = shapes_video(work / "long.mp4", frames=args.memory_frames, fps=30, step=1, seed=4).path
                memory = run_job(server.address, config, work / "memory", long, clients)
                report["memory"] = memory
                growth = memory["rss_most_after_mb"] / memory["rss_after_first_mb"] - 1
                report["rss_growth"] = round(growth, 3)
    lines = [
        f"CPU mode {report['mode']}; {MODEL}; a 640x480 H.264 video of moving shapes; direct and the "
        f"worker: {IN_FLIGHT} predictions in flight",
        "",
        "| measured | value | target |",
        "|---|---|---|",
        f"| direct gRPC Predict, prebuilt requests of the same frames | {report['direct_frames_per_s']} "
        "frames/s | |",
        f"| {args.frames}-frame video job, one worker | {job['frames_per_s']} frames/s | |",
        f"| job / direct | {report['ratio']} | >= {TARGET_RATIO} |",
        f"| CPU per frame: model server / worker | {report['model_server_cpu_ms_per_frame']} / "
        f"{job['worker_cpu_ms_per_frame']} ms (on shared cores a job can reach at most "
        f"{report['shared_cpu_ceiling']} of direct) | |",
        f"| decode / draw / encode per frame (in the job) | {job['decode_ms_per_frame']} / "
        f"{job['draw_ms_per_frame']} / {job['encode_ms_per_frame']} ms | |",
    ]
    if "memory" in report:
        memory = report["memory"]
        lines.append(
            f"| worker RSS over a {args.memory_frames}-frame video | {memory['rss_after_first_mb']} MB after "
            f"100 frames, at most {memory['rss_most_after_mb']} MB later ({report['rss_growth']:+.1%}) | "
            f"within {RSS_LIMIT:.0%} |"
        )
    write_results(f"video-{args.mode}", report, lines)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())
