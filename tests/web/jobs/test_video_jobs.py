"""Video jobs through the real stack: the gateway over HTTP, a `python -m web.worker` subprocess, the
demo model server over gRPC. Videos of demo shapes that slide by a known step are uploaded; the tests
check frames.jsonl against where the shapes were drawn, decode the annotated video back (frames, size,
codec, sound), follow track ids, sample with `fps`, and refuse bad uploads with a 4xx that says why."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
import pytest
import requests

from demo.videos import PORTRAIT, ShapesVideo, rotate_mp4, shapes_video
from tests.browser.conftest import serving_app
from tests.support.model_server import REPO_ROOT
from tests.web.jobs.queue_helpers import Workers, wait_for
from web.jobs.config import JobSettings

MODEL = "shapes_jpeg"


@pytest.fixture(scope="module")
def stack(demo_model_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """A gateway (real HTTP) and one worker, sharing a jobs folder, in front of the demo model server."""
    from web import create_app

    root = tmp_path_factory.mktemp("video_jobs")
    settings = {
        "TF_SERVING_ADDRESS": demo_model_server,
        "MODEL_CONFIG_FILE": str(REPO_ROOT / "tf_server" / "models.config"),
        "UPLOAD_FOLDER": str(root / "upload_folder"),
        "OUTPUT_FOLDER": str(root / "output"),
        "JOBS_FOLDER": str(root / "jobs"),
        "JOB_QUEUE_POLL_S": "0.1",
    }
    workers = Workers(root)
    with serving_app(create_app(settings)) as url:
        workers.start(JobSettings.from_env(settings), predictor=None, **settings)
        try:
            yield {"url": url, "root": root, "jobs": root / "jobs", "workers": workers}
        finally:
            workers.stop_all()


def submit(stack: dict, video: Path, **fields: str) -> requests.Response:
    with video.open("rb") as stream:
        return requests.post(
            f"{stack['url']}/api/v1/jobs",
            data={"model": MODEL, "kind": "video", **fields},
            files={"video": (video.name, stream, "video/mp4")},
            timeout=60,
        )


def run(stack: dict, video: Path, timeout: float = 180, **fields: str) -> dict:
    answer = submit(stack, video, **fields)
    assert answer.status_code == 202, answer.text
    job_id = answer.json()["id"]

    def ended() -> dict | None:
        job = requests.get(f"{stack['url']}/api/v1/jobs/{job_id}", timeout=10).json()
        return job if job["status"] in ("succeeded", "failed", "cancelled") else None

    try:
        job = wait_for(ended, timeout, f"video job {job_id}")
    except AssertionError:
        raise AssertionError(stack["workers"].logs()[-4000:]) from None
    assert job["status"] == "succeeded", (job, stack["workers"].logs()[-4000:])
    return job


def download(stack: dict, job: dict, name: str, folder: Path) -> Path:
    answer = requests.get(stack["url"] + job["results"][name], timeout=60)
    assert answer.status_code == 200
    path = folder / name
    path.write_bytes(answer.content)
    return path


def iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def matching(video: ShapesVideo, line: dict, shape) -> dict:
    """The detection of `shape` in a frames.jsonl line: same class, and where the shape was drawn."""
    expected = video.box(shape, line["frame"])
    found = [
        d for d in line["detections"]
        if d["label"].casefold() == shape.label.casefold()
        and iou(expected, [d["box"][k] for k in ("xmin", "ymin", "xmax", "ymax")]) > 0.6
    ]  # fmt: skip
    assert found, f"frame {line['frame']}: no {shape.label} near {expected} in {line['detections']}"
    return found[0]


def test_an_mp4_with_sound_is_annotated_tracked_and_plays_back_whole(stack: dict, tmp_path: Path) -> None:
    video = shapes_video(tmp_path / "clip.mp4", frames=30, fps=15, step=4, audio="aac")
    job = run(stack, video.path, track="true")
    assert job["kind"] == "video" and job["progress"] == {"done": 30, "total": 30}
    assert set(job["results"]) == {"frames.jsonl", "annotated.mp4", "summary.json"}

    lines = [json.loads(x) for x in download(stack, job, "frames.jsonl", tmp_path).read_text().splitlines()]
    assert [line["frame"] for line in lines] == list(range(30))
    assert lines[15]["time_s"] == pytest.approx(1.0, abs=1e-3)
    inside = [shape for shape in video.shapes if video.inside(shape)]
    assert len(inside) >= 2
    ids = {}
    for shape_number, shape in enumerate(inside):
        track_ids = {matching(video, line, shape)["track_id"] for line in lines}
        assert len(track_ids) == 1, f"{shape.label} changed track: {track_ids}"  # one id for the whole clip
        ids[shape_number] = track_ids.pop()
    assert len(set(ids.values())) == len(inside)  # and a different one per shape

    summary = json.loads(download(stack, job, "summary.json", tmp_path).read_text())
    tracks = {track["track_id"]: track for track in summary["tracks"]}
    for number, shape in enumerate(inside):
        track = tracks[ids[number]]
        assert track["label"].casefold() == shape.label.casefold()
        assert (track["first_frame"], track["last_frame"], track["frames"]) == (0, 29, 30)
    assert summary["video"]["frames"] == 30 and summary["analysed"] == 30
    labels = {entry["label"].casefold() for entry in summary["timeline"]["classes"]}
    assert {shape.label.casefold() for shape in inside} <= labels
    assert summary["top_frames"][0]["detections"] >= len(inside)

    annotated = download(stack, job, "annotated.mp4", tmp_path)
    with av.open(str(annotated)) as played:
        stream = played.streams.video[0]
        assert stream.codec_context.name == "h264" and stream.average_rate == 15
        assert [s.codec_context.name for s in played.streams.audio] == ["aac"]  # the sound, copied
        frames = [frame.to_ndarray(format="rgb24") for frame in played.decode(video=0)]
    assert len(frames) == 30 and frames[0].shape == (480, 640, 3)
    # The boxes are drawn: the outline of a tracked shape's box differs from the source there, far more
    # than the picture as a whole does (which only carries the encoder's noise).
    with av.open(str(video.path)) as source:
        original = [frame.to_ndarray(format="rgb24") for frame in source.decode(video=0)]
    xmin, ymin, xmax, ymax = (round(v) for v in video.box(inside[0], 10))
    outline = (slice(ymin, ymax), slice(xmin, xmin + 2))
    edge = np.abs(frames[10][outline].astype(int) - original[10][outline])
    overall = np.abs(frames[10].astype(int) - original[10]).mean()
    assert edge.mean() > 4 * overall


def test_fps_analyses_some_frames_and_draws_them_all_with_sound_transcoded(stack: dict, tmp_path) -> None:
    video = shapes_video(tmp_path / "clip.avi", codec="mpeg4", audio="pcm_s16le", frames=30, fps=15)
    job = run(stack, video.path, fps="5")
    assert job["progress"]["total"] == 10
    lines = [json.loads(x) for x in download(stack, job, "frames.jsonl", tmp_path).read_text().splitlines()]
    assert [line["frame"] for line in lines] == list(range(0, 30, 3))
    for line in lines:
        for shape in video.shapes:
            if video.inside(shape):
                assert "track_id" not in matching(video, line, shape)  # tracking is off by default
    with av.open(str(download(stack, job, "annotated.mp4", tmp_path))) as played:
        assert [s.codec_context.name for s in played.streams.audio] == ["aac"]  # PCM cannot go in MP4
        assert sum(1 for _ in played.decode(video=0)) == 30


def test_a_webm_keeps_its_opus_sound(stack: dict, tmp_path: Path) -> None:
    video = shapes_video(tmp_path / "clip.webm", codec="libvpx-vp9", audio="libopus", frames=12, fps=12)
    job = run(stack, video.path)
    with av.open(str(download(stack, job, "annotated.mp4", tmp_path))) as played:
        assert [s.codec_context.name for s in played.streams.audio] == ["opus"]
        assert sum(1 for _ in played.decode(video=0)) == 12


def test_bad_video_uploads_are_refused_with_the_reason_and_leave_nothing(stack: dict, tmp_path) -> None:
    clip = shapes_video(tmp_path / "clip.mp4", frames=6, fps=6, size=(160, 120)).path
    text = tmp_path / "notes.mp4"
    text.write_text("hello\n" * 500)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(clip.read_bytes()[: clip.stat().st_size // 2])
    before = sorted(p.name for p in stack["jobs"].glob("*") if p.is_dir())
    cases = [
        (submit(stack, text), 400, "not a video"),
        (submit(stack, cut), 400, "damaged or truncated"),
        (submit(stack, clip, fps="0"), 400, "fps"),
        (submit(stack, clip, fps="1000"), 400, "fps"),
        (submit(stack, clip, track="maybe"), 400, "track"),
        (submit(stack, clip, kind="predict"), 400, "kind=video jobs take a video"),
    ]
    with clip.open("rb") as stream:  # the video options belong to video jobs
        cases.append((requests.post(
            f"{stack['url']}/api/v1/jobs", data={"model": MODEL, "fps": "2"},
            files={"archive": ("clip.zip", stream, "application/zip")}, timeout=30,
        ), 400, "fps is for kind=video"))  # fmt: skip
    with clip.open("rb") as stream:
        cases.append((requests.post(
            f"{stack['url']}/api/v1/jobs", data={"model": "no_such_model", "kind": "video"},
            files={"video": ("clip.mp4", stream, "video/mp4")}, timeout=30,
        ), 404, "no_such_model"))  # fmt: skip
    for answer, status, words in cases:
        assert answer.status_code == status, answer.text
        assert words in answer.json()["error"]["message"], answer.text
    assert sorted(p.name for p in stack["jobs"].glob("*") if p.is_dir()) == before


def test_a_cancelled_video_job_stops_and_keeps_no_files(stack: dict, tmp_path: Path) -> None:
    video = shapes_video(tmp_path / "long.mp4", frames=400, fps=25, size=(320, 240), step=1)
    answer = submit(stack, video.path)
    assert answer.status_code == 202
    job_id = answer.json()["id"]
    url = f"{stack['url']}/api/v1/jobs/{job_id}"
    wait_for(lambda: requests.get(url, timeout=10).json()["progress"]["done"] > 0, 60, "frames to be done")
    assert requests.post(f"{url}/cancel", timeout=10).status_code == 200
    time.sleep(1.5)  # the worker notices within a frame; give it time to clean up
    job = requests.get(url, timeout=10).json()
    assert job["status"] == "cancelled" and job["results"] == {}
    assert job["progress"]["done"] < 400
    results = stack["jobs"] / job_id / "results"
    wait_for(lambda: not any(results.iterdir()), 20, "the temporaries to be removed")


def test_the_command_line_client_runs_a_video_job(stack: dict, tmp_path: Path) -> None:
    video = shapes_video(tmp_path / "clip.mov", frames=10, fps=10, size=(320, 240))
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-m", "web.client", "video", MODEL, str(video.path), "--out", str(out), "--track",
         "--url", stack["url"], "--no-progress"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "10 of 10 frames done" in done.stdout
    assert sorted(p.name for p in out.iterdir()) == ["annotated.mp4", "frames.jsonl", "summary.json"]
    lines = [json.loads(x) for x in (out / "frames.jsonl").read_text().splitlines()]
    assert len(lines) == 10 and any("track_id" in d for line in lines for d in line["detections"])
    bad = subprocess.run(
        [sys.executable, "-m", "web.client", "video", MODEL, str(video.path), "--out", str(out), "--fps", "0",
         "--url", stack["url"]],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert bad.returncode == 2 and "--fps must be" in bad.stderr


def test_a_phone_video_stored_sideways_is_analysed_and_drawn_upright(stack: dict, tmp_path: Path) -> None:
    video = shapes_video(tmp_path / "phone.mp4", frames=4, fps=4, step=0)
    rotate_mp4(video.path, PORTRAIT)  # players show it turned a quarter clockwise: 480 wide, 640 high
    job = run(stack, video.path)
    line = json.loads(download(stack, job, "frames.jsonl", tmp_path).read_text().splitlines()[0])
    assert (line["image"]["width"], line["image"]["height"]) == (480, 640)
    for shape in video.shapes:  # each shape where the upright picture shows it
        xmin, ymin, xmax, ymax = shape.box
        upright = (480 - ymax, xmin, 480 - ymin, xmax)
        boxes = [[d["box"][k] for k in ("xmin", "ymin", "xmax", "ymax")] for d in line["detections"]]
        assert max(iou(upright, box) for box in boxes) > 0.6, (shape.label, upright, boxes)
    with av.open(str(download(stack, job, "annotated.mp4", tmp_path))) as played:
        frame = next(played.decode(video=0))
        assert (frame.width, frame.height, frame.rotation) == (480, 640, 0)
