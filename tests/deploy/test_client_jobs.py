"""`python -m web.client job MODEL archive.zip --out DIR` end to end: gunicorn serving the gateway, a real
`python -m web.worker` predicting over gRPC with the local model server (the demo models), the embedded
SQLite queue. The client runs as a subprocess, as a user runs it; what it downloads is compared with
what the jobs API itself serves.

A second gateway has no worker at all, so its jobs stay queued for as long as a test needs: that is
where Ctrl-C (which must cancel the job on the server) and `--timeout` are tried.
"""

from __future__ import annotations

import io
import json
import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import requests
from PIL import Image
from pycocotools.coco import COCO

from demo.synthetic import encode_jpeg, generate_image
from tests.support import gunicorn_gateway
from tests.support.gunicorn_gateway import running_gateway
from tests.support.model_server import REPO_ROOT, free_port
from tests.web.jobs.queue_helpers import Workers, wait_for
from web.jobs.config import JobSettings

MODEL = "shapes"
CLIENT_TIMEOUT_S = 240
API_KEY = "client-jobs-key"
IDLE_UPLOAD_LIMIT = 8 * 2**20  # the idle gateway's MAX_JOB_UPLOAD_BYTES
JOB_LINE = re.compile(r"^job (\S+) queued: (\d+) pictures$", re.MULTILINE)


@dataclass(frozen=True)
class Stack:
    url: str  # a gateway with a worker: jobs run
    idle_url: str  # a gateway without any worker: jobs stay queued; uploads up to IDLE_UPLOAD_LIMIT
    keyed_url: str  # a gateway with API_KEYS, whose jobs the same worker runs
    idle_jobs: Path  # the idle gateway's JOBS_FOLDER


def serving_env(demo_model_server: str, root: Path) -> dict[str, str]:
    return {
        "TF_SERVING_ADDRESS": demo_model_server,
        "MODEL_CONFIG_FILE": str(REPO_ROOT / "tf_server" / "models.config"),
        "JOBS_FOLDER": str(root / "jobs"),
        "JOB_QUEUE_POLL_S": "0.1",
        "JOB_CHUNK_SIZE": "4",
    }


@pytest.fixture(scope="module")
def stack(demo_model_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("client_jobs")
    serving = serving_env(demo_model_server, root)
    idle = {**serving, "JOBS_FOLDER": str(root / "idle_jobs"), "MAX_JOB_UPLOAD_BYTES": str(IDLE_UPLOAD_LIMIT)}
    keyed = {**serving, "API_KEYS": API_KEY, "SECRET_KEY": "client-jobs-session-secret"}
    workers = Workers(root)
    with (
        running_gateway(root / "gateway", **serving) as url,
        running_gateway(root / "idle", **idle) as idle_url,
        running_gateway(root / "keyed", **keyed) as keyed_url,
    ):
        workers.start(JobSettings.from_env(serving), predictor=None, **serving)
        try:
            yield Stack(url, idle_url, keyed_url, Path(idle["JOBS_FOLDER"]))
        finally:
            workers.stop_all()
            assert "Traceback" not in workers.logs(), workers.logs()[-4000:]


def photo(seed: int, size: tuple[int, int], fmt: str = "JPEG") -> bytes:
    pixels, _ = generate_image(
        np.random.default_rng(seed), width=size[0], height=size[1], min_shapes=2, max_shapes=4
    )
    if fmt == "JPEG":
        return encode_jpeg(pixels)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt)
    return buffer.getvalue()


PICTURES = {
    "photos/a.jpg": photo(1, (640, 480)),
    "photos/deep/er/b.jpg": photo(2, (480, 360)),
    "c.png": photo(3, (320, 400), "PNG"),
}


def write_zip(path: Path, entries: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return path


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three photos at various depths and a text file, which the job skips."""
    folder = tmp_path_factory.mktemp("client_job_archive")
    return write_zip(folder / "photos.zip", {**PICTURES, "notes.txt": b"not a picture\n"})


def client_env() -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    env.pop("GATEWAY_URL", None)
    env.pop("GATEWAY_API_KEY", None)
    return env


def run_job(
    *args: str | Path, timeout: float = CLIENT_TIMEOUT_S, **env: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "web.client", "job", *map(str, args)],
        cwd=REPO_ROOT,
        env={**client_env(), **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def api_job(url: str, job_id: str) -> dict:
    answer = requests.get(f"{url}/api/v1/jobs/{job_id}", timeout=30)
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_a_job_is_uploaded_followed_and_every_result_downloaded(
    stack: Stack, archive: Path, tmp_path: Path
) -> None:
    out = tmp_path / "results" / "deeper"  # created by the client
    proc = run_job(MODEL, archive, "--out", out, "--url", stack.url, "--min-score", "0.3")
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    (job_id, total), *_ = JOB_LINE.findall(proc.stdout)
    assert int(total) == len(PICTURES)
    job = api_job(stack.url, job_id)
    assert job["status"] == "succeeded" and job["model"]["name"] == MODEL
    # Every result file, byte for byte what the API serves, and nothing else (no temporary files).
    assert sorted(p.name for p in out.iterdir()) == sorted(job["results"]) and len(job["results"]) >= 6
    for name, link in job["results"].items():
        served = requests.get(f"{stack.url}{link}", timeout=60)
        assert served.status_code == 200
        assert (out / name).read_bytes() == served.content, name
        assert f"wrote {out / name} (" in proc.stdout
    lines = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert sorted(line["file"] for line in lines) == sorted(PICTURES)
    for line in lines:
        with Image.open(io.BytesIO(PICTURES[line["file"]])) as picture:
            assert line["image"] == {"width": picture.width, "height": picture.height}
        assert line["model"]["name"] == MODEL
        assert all(d["score"] >= 0.3 for d in line["detections"]), "--min-score was sent with the job"
    assert any(line["detections"] for line in lines), "the demo model finds shapes in these photos"
    coco = COCO(str(out / "coco.json"))
    assert sorted(image["file_name"] for image in coco.dataset["images"]) == sorted(PICTURES)
    assert len(coco.getAnnIds()) == sum(len(line["detections"]) for line in lines)
    with zipfile.ZipFile(out / "yolo.zip") as yolo:
        assert "data.yaml" in yolo.namelist()
    # The summary: pictures done, what was skipped and why, the files written.
    assert f"job {job_id} succeeded: 3 of 3 pictures done, 1 skipped" in proc.stdout
    (skipped,) = job["skipped"]
    assert f"  skipped notes.txt: {skipped['reason']}" in proc.stdout
    assert f"{len(job['results'])} file(s) written to {out}" in proc.stdout
    # Progress without a terminal: plain lines, the last one the job's end.
    assert "\r" not in proc.stderr
    assert "uploading: " in proc.stderr and "(100%)" in proc.stderr
    assert "] 3/3 100% succeeded" in proc.stderr.splitlines()[-1]


def test_the_progress_bar_on_a_terminal(stack: Stack, tmp_path: Path) -> None:
    """With stderr on a (pseudo-)terminal the bar is one line redrawn with \\r: done/total, percent,
    and pictures per second once the job has been seen running twice."""
    entries = {f"set/{i:03d}.jpg": photo(100 + i, (320, 240)) for i in range(40)}
    zipped = write_zip(tmp_path / "forty.zip", entries)
    master, slave = pty.openpty()
    env = {**client_env(), "COLUMNS": "120"}
    command = [sys.executable, "-m", "web.client", "job", MODEL, str(zipped), "--out", str(tmp_path / "out")]
    proc = subprocess.Popen(
        [*command, "--url", stack.url],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=slave,
        text=True,
    )
    os.close(slave)
    chunks: list[bytes] = []
    deadline = time.monotonic() + CLIENT_TIMEOUT_S
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 1.0)
            if ready:
                try:
                    data = os.read(master, 4096)
                except OSError:  # EIO: the child closed its end
                    break
                if not data:
                    break
                chunks.append(data)
            elif proc.poll() is not None:
                break
        stdout, _ = proc.communicate(timeout=60)
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    terminal = b"".join(chunks).decode(errors="replace")
    assert proc.returncode == 0, terminal
    assert "\r" in terminal and "\r" not in stdout, "the bar goes to stderr only"
    frames = [frame.strip() for frame in re.split(r"\r(?:\x1b\[K)?", terminal) if frame.strip()]
    assert any(frame.startswith("uploading: ") for frame in frames)
    bars = [frame for frame in frames if frame.startswith("[")]
    assert bars and re.fullmatch(r"\[#{30}\] 40/40 100% succeeded(, [\d.]+ pictures/s)?", bars[-1]), bars[-3:]
    done_seen = [int(m.group(1)) for m in (re.search(r"\] (\d+)/40 ", bar) for bar in bars) if m]
    assert done_seen == sorted(done_seen), "progress only grows"
    running = {done for bar, done in zip(bars, done_seen, strict=True) if " running" in bar}
    if len(running) >= 2:  # seen running at two counts: the rate is known from then on
        assert "pictures/s" in bars[-1]
    assert "job " in stdout and "40 of 40 pictures done" in stdout


def test_a_bad_archive_is_refused_with_the_servers_message(stack: Stack, tmp_path: Path) -> None:
    not_a_zip = tmp_path / "photos.zip"
    not_a_zip.write_bytes(b"these are notes, not a zip archive\n" * 50)
    direct = requests.post(
        f"{stack.url}/api/v1/jobs",
        data={"model": MODEL},
        files={"archive": ("photos.zip", not_a_zip.read_bytes(), "application/zip")},
        timeout=60,
    )
    assert direct.status_code == 400
    message = direct.json()["error"]["message"]
    proc = run_job(MODEL, not_a_zip, "--out", tmp_path / "out", "--url", stack.url)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == f"error: HTTP 400: {message}"
    assert proc.stdout == "" and "Traceback" not in proc.stderr
    assert list((tmp_path / "out").iterdir()) == []


def test_an_unknown_model_and_bad_options_exit_2(stack: Stack, archive: Path, tmp_path: Path) -> None:
    unknown = run_job("no_such_model", archive, "--out", tmp_path / "out", "--url", stack.url)
    assert unknown.returncode == 2
    assert "HTTP 404" in unknown.stderr and "no_such_model" in unknown.stderr
    # Checked here, from the same declarations the server checks them with: nothing is uploaded.
    bad = run_job(MODEL, archive, "--out", tmp_path / "out", "--url", stack.url, "--min-score", "1.5")
    assert bad.returncode == 2 and "--min-score must be a number between 0 and 1, got 1.5" in bad.stderr
    missing = run_job(MODEL, tmp_path / "absent.zip", "--out", tmp_path / "out", "--url", stack.url)
    assert missing.returncode == 2 and "cannot read the file" in missing.stderr


# Runs a command and reports its peak RSS. A process's peak from wait4 counts what it had at fork time,
# which for a child of pytest is pytest's own memory: so the fork happens in this tiny process
# (standard library, no site), well below the client's own peak.
PEAK_RSS = """
import os, sys
pid = os.fork()
if pid == 0:
    os.execv(sys.argv[1], sys.argv[1:])
_, status, usage = os.wait4(pid, 0)
sys.stderr.write(f"peak-rss-kib {usage.ru_maxrss}\\n")
sys.exit(os.waitstatus_to_exitcode(status))
"""


def peak_rss_kib(args: list[str]) -> tuple[int, str, str, int]:
    """Run the client; its exit status, stdout, stderr and peak resident memory (KiB)."""
    proc = subprocess.run(
        [sys.executable, "-S", "-c", PEAK_RSS, sys.executable, "-m", "web.client", "job", *args],
        cwd=REPO_ROOT,
        env=client_env(),
        capture_output=True,
        text=True,
        timeout=CLIENT_TIMEOUT_S,
    )
    *stderr, last = proc.stderr.splitlines()
    assert last.startswith("peak-rss-kib "), proc.stderr
    return proc.returncode, proc.stdout, "\n".join(stderr), int(last.split()[1])


def test_a_large_archive_is_streamed_not_held_in_memory(stack: Stack, archive: Path, tmp_path: Path) -> None:
    """30 MiB of stored (uncompressed) entries: the client's peak memory grows by far less than that over
    the same client sending the small archive."""
    rng = np.random.default_rng(7)
    blobs = {f"blobs/{i:02d}.bin": rng.bytes(1 << 20) for i in range(30)}
    large = write_zip(tmp_path / "large.zip", {**PICTURES, **blobs})
    assert large.stat().st_size > 30 * 2**20
    common = ["--url", stack.url, "--no-progress"]
    small_rc, _, small_err, small_peak = peak_rss_kib(
        [MODEL, str(archive), "--out", str(tmp_path / "s"), *common]
    )
    assert small_rc == 0, small_err
    rc, stdout, stderr, peak = peak_rss_kib([MODEL, str(large), "--out", str(tmp_path / "l"), *common])
    assert rc == 0, stderr
    assert "3 of 3 pictures done, 30 skipped" in stdout
    # Over a gateway's MAX_JOB_UPLOAD_BYTES: refused before the body is read, and the client says so.
    refused = run_job(MODEL, large, "--out", tmp_path / "refused", "--url", stack.idle_url, "--no-progress")
    assert refused.returncode == 2, refused.stderr
    last = refused.stderr.strip().splitlines()[-1]
    assert last.startswith("error: HTTP 413: ") and "MAX_JOB_UPLOAD_BYTES" in last, refused.stderr
    # Measured, not assumed: a client that read the archive whole would add its 30 MiB here.
    assert small_peak > 10 * 1024, f"{small_peak} KiB: the client's own peak, not the fork's"
    assert peak - small_peak < 10 * 1024, f"peak RSS {peak} KiB with 30 MiB sent, {small_peak} KiB with a few"


def start_waiting(url: str, archive: Path, out: Path, *extra: str) -> tuple[subprocess.Popen[str], str]:
    """The client on the gateway without workers: started, its job queued (and never run); the job id."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "web.client",
            "job",
            MODEL,
            str(archive),
            "--out",
            str(out),
            "--url",
            url,
            *extra,
        ],
        cwd=REPO_ROOT,
        env=client_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    found = JOB_LINE.match(line.rstrip("\n"))
    assert found, f"{line!r} {proc.stderr.read() if proc.poll() is not None else ''}"  # type: ignore[union-attr]
    return proc, found.group(1)


def test_ctrl_c_while_waiting_cancels_the_job(stack: Stack, archive: Path, tmp_path: Path) -> None:
    proc, job_id = start_waiting(stack.idle_url, archive, tmp_path / "out")
    try:
        wait_for(lambda: api_job(stack.idle_url, job_id)["status"] == "queued", 30, "the job to be queued")
        time.sleep(1.5)  # a poll or two
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert proc.returncode == 130, stderr
    assert f"interrupted: job {job_id} cancelled" in stderr and "Traceback" not in stderr
    assert api_job(stack.idle_url, job_id)["status"] == "cancelled"
    assert list((tmp_path / "out").iterdir()) == []


def test_timeout_gives_up_waiting_and_leaves_the_job(stack: Stack, archive: Path, tmp_path: Path) -> None:
    proc, job_id = start_waiting(stack.idle_url, archive, tmp_path / "out", "--timeout", "2")
    try:
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert proc.returncode == 1
    assert f"gave up waiting after 2 s (--timeout): job {job_id} is still queued" in stderr
    assert api_job(stack.idle_url, job_id)["status"] == "queued", "the job goes on on the server"


def test_the_wait_rides_out_a_gateway_restart(
    demo_model_server: str, archive: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The gateway goes away while the client waits (connection refused), comes back on the same
    address with the same JOBS_FOLDER, a worker runs the job: the client carries on and downloads."""
    serving = serving_env(demo_model_server, tmp_path)
    port = free_port()
    monkeypatch.setattr(gunicorn_gateway, "free_port", lambda: port)  # both gateways on one address
    out = tmp_path / "out"
    with running_gateway(tmp_path / "first", **serving) as url:
        proc, job_id = start_waiting(url, archive, out)
    workers = Workers(tmp_path)
    try:
        time.sleep(2)  # a few polls find nobody
        assert proc.poll() is None, proc.communicate()
        with running_gateway(tmp_path / "second", **serving) as again:
            assert again == url
            workers.start(JobSettings.from_env(serving), predictor=None, **serving)
            stdout, stderr = proc.communicate(timeout=CLIENT_TIMEOUT_S)
            job = api_job(url, job_id)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        workers.stop_all()
    assert proc.returncode == 0, stderr
    assert f"warning: cannot reach the gateway at {url}" in stderr and "Retrying for up to 600 s." in stderr
    assert "the gateway answers again" in stderr
    assert job["status"] == "succeeded" and f"job {job_id} succeeded: 3 of 3 pictures done" in stdout
    assert sorted(p.name for p in out.iterdir()) == sorted(job["results"])


def test_the_api_key_goes_with_every_request(stack: Stack, archive: Path, tmp_path: Path) -> None:
    """With API_KEYS set: no key is refused at the upload (401, exit 2); the key from $GATEWAY_API_KEY
    goes with the upload, the polls and the downloads, which the gateway refuses without it."""
    refused = run_job(MODEL, archive, "--out", tmp_path / "no_key", "--url", stack.keyed_url)
    assert refused.returncode == 2 and "error: HTTP 401: " in refused.stderr, refused.stderr
    out = tmp_path / "keyed"
    proc = run_job(MODEL, archive, "--out", out, "--url", stack.keyed_url, GATEWAY_API_KEY=API_KEY)
    assert proc.returncode == 0, proc.stderr
    (job_id, _), *_ = JOB_LINE.findall(proc.stdout)
    answer = requests.get(f"{stack.keyed_url}/api/v1/jobs/{job_id}", timeout=30)
    assert answer.status_code == 401, "the job is the key's"
    headers = {"Authorization": f"Bearer {API_KEY}"}
    job = requests.get(f"{stack.keyed_url}/api/v1/jobs/{job_id}", headers=headers, timeout=30).json()
    assert job["status"] == "succeeded" and sorted(p.name for p in out.iterdir()) == sorted(job["results"])


def test_a_failed_job_exits_1_with_its_error(stack: Stack, archive: Path, tmp_path: Path) -> None:
    """A worker whose model server is gone fails the job (after its retries); the client says why."""
    env = {
        "TF_SERVING_ADDRESS": f"127.0.0.1:{free_port()}",
        "MODEL_CONFIG_FILE": str(REPO_ROOT / "tf_server" / "models.config"),
        "JOBS_FOLDER": str(stack.idle_jobs),
        "JOB_QUEUE_POLL_S": "0.1",
        "JOB_PREDICT_RETRIES": "0",
        "GRPC_TIMEOUT_S": "2",
    }
    workers = Workers(tmp_path)
    workers.start(JobSettings.from_env(env), predictor=None, **env)
    try:
        proc = run_job(MODEL, archive, "--out", tmp_path / "out", "--url", stack.idle_url, "--no-progress")
    finally:
        workers.stop_all()
    assert proc.returncode == 1, proc.stderr
    (job_id, _), *_ = JOB_LINE.findall(proc.stdout)
    job = api_job(stack.idle_url, job_id)
    assert job["status"] == "failed" and job["error"]
    assert (
        proc.stderr.strip().splitlines()[-1]
        == f"error: job {job_id} failed after 0 of 3 pictures: {job['error']}"
    )
    assert list((tmp_path / "out").iterdir()) == []
