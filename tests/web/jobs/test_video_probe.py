"""The video upload check, on real files written with PyAV: what it takes (containers, codecs, sound),
how many frames a job will analyse (every frame, `fps` of them a second, or evenly under the cap), and
what it refuses, each with a message that says what to fix."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from demo.videos import PORTRAIT, rotate_mp4, shapes_video
from web.jobs.archives import ArchiveError, ArchiveTooLarge
from web.jobs.video.probe import FACTS_FILE, Sampler, VideoFacts, VideoProbe, sample_rate

PROBE = VideoProbe(max_bytes=1 << 30, max_duration_s=3600, max_frames=100_000, max_pixels=4096 * 2160)
SMALL = {"frames": 30, "fps": 15, "size": (320, 240), "step": 2}


@pytest.mark.parametrize(
    ("name", "codec", "audio", "container", "expected"),
    [
        ("clip.mp4", "libx264", "aac", None, ("MP4/MOV", "h264", "aac")),
        ("clip.mov", "libx264", None, None, ("MP4/MOV", "h264", None)),
        ("clip.webm", "libvpx-vp9", "libopus", None, ("WebM/MKV", "vp9", "opus")),
        ("clip.mkv", "libx264", "libopus", None, ("WebM/MKV", "h264", "opus")),
        ("clip.avi", "mpeg4", "pcm_s16le", None, ("AVI", "mpeg4", "pcm_s16le")),
    ],
)
def test_each_container_is_taken_with_its_facts(tmp_path, name, codec, audio, container, expected) -> None:
    video = shapes_video(tmp_path / name, codec=codec, audio=audio, container=container, **SMALL)
    facts = PROBE.inspect(video.path)
    assert (facts.container, facts.codec, facts.audio) == expected
    assert (facts.width, facts.height, facts.frames, facts.analysed) == (320, 240, 30, 30)
    assert facts.fps == 15 and facts.duration_s == pytest.approx(2.0, abs=0.07)
    assert facts.sample_fps is None


def test_the_probe_writes_its_facts_beside_the_video(tmp_path: Path) -> None:
    video = shapes_video(tmp_path / "clip.mp4", **SMALL)
    assert PROBE(tmp_path, video.path) == 30
    assert VideoFacts.read(tmp_path) == PROBE.inspect(video.path)
    assert (tmp_path / FACTS_FILE).is_file()


def test_fps_analyses_at_most_that_many_frames_a_second(tmp_path: Path) -> None:
    video = shapes_video(tmp_path / "clip.mp4", **SMALL)
    facts = VideoProbe(1 << 30, 3600, 100_000, 10**7, fps=5).inspect(video.path)
    assert (facts.frames, facts.analysed, facts.sample_fps) == (30, 10, 5)
    sampler = Sampler(5)  # the job takes the same frames: every third one of 15 per second
    assert [i for i in range(30) if sampler.take(i / 15)] == list(range(0, 30, 3))


def test_a_video_over_the_frame_cap_is_sampled_evenly_not_refused(tmp_path: Path) -> None:
    video = shapes_video(tmp_path / "clip.mp4", **SMALL)
    facts = VideoProbe(1 << 30, 3600, 12, 10**7).inspect(video.path)
    assert facts.analysed <= 12 and facts.analysed >= 10
    assert facts.sample_fps == pytest.approx(12 / facts.duration_s, rel=1e-3)
    assert sample_rate(2.0, 100, 10.0, 50) == 2.0  # under the cap: as asked
    assert sample_rate(None, 100, 10.0, 200) is None


def _refusal(path: Path, probe: VideoProbe = PROBE) -> ArchiveError:
    with pytest.raises(ArchiveError) as caught:
        probe.inspect(path)
    return caught.value


def test_files_that_are_not_videos_are_refused_with_what_to_send(tmp_path: Path) -> None:
    text = tmp_path / "notes.mp4"
    text.write_text("not a video at all\n" * 100)
    png = tmp_path / "picture.mp4"
    from PIL import Image

    Image.fromarray(np.zeros((40, 60, 3), np.uint8)).save(png, format="PNG")
    for path in (text, png):
        error = _refusal(path)
        assert error.status == 400 and "MP4, MOV, WebM, MKV or AVI" in error.message
        assert str(tmp_path) not in error.message  # our paths are not the user's business


def test_a_truncated_video_is_refused(tmp_path: Path) -> None:
    whole = shapes_video(tmp_path / "whole.mp4", **SMALL).path
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    error = _refusal(cut)
    assert error.status == 400 and "damaged or truncated" in error.message


def test_a_file_with_sound_only_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "sound.mp4"
    with av.open(str(path), mode="w") as out:
        stream = out.add_stream("aac", rate=44100)
        stream.layout = "mono"
        for n in range(20):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 44100, n * 1024
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    assert "no video stream" in _refusal(path).message


def test_limits_answer_413_naming_the_setting(tmp_path: Path) -> None:
    video = shapes_video(tmp_path / "clip.mp4", **SMALL).path
    cases = {
        "MAX_VIDEO_BYTES": VideoProbe(1000, 3600, 100_000, 10**7),
        "MAX_VIDEO_DURATION_S": VideoProbe(1 << 30, 1.5, 100_000, 10**7),
        "MAX_VIDEO_PIXELS": VideoProbe(1 << 30, 3600, 100_000, 320 * 200),
    }
    for setting, probe in cases.items():
        error = _refusal(video, probe)
        assert isinstance(error, ArchiveTooLarge) and error.status == 413 and setting in error.message


def test_a_cut_video_whose_index_is_in_front_is_refused_as_truncated(tmp_path: Path) -> None:
    """MP4 with its index first (`faststart`) still opens when cut: the missing frames give it away."""
    path = tmp_path / "front.mp4"
    with av.open(str(path), mode="w", options={"movflags": "+faststart"}) as out:
        stream = out.add_stream("libx264", rate=15)
        stream.width, stream.height, stream.pix_fmt = 320, 240, "yuv420p"
        noise = np.random.default_rng(0)
        for index in range(30):
            frame = av.VideoFrame.from_ndarray(noise.integers(0, 255, (240, 320, 3), dtype=np.uint8))
            frame.pts = index
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    assert PROBE.inspect(path).frames == 30
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    error = _refusal(cut)
    assert "truncated" in error.message and "lists 30 frames" in error.message


def test_a_phone_video_stored_sideways_is_known_upright(tmp_path: Path) -> None:
    video = shapes_video(tmp_path / "phone.mp4", **SMALL)
    rotate_mp4(video.path, PORTRAIT)
    facts = PROBE.inspect(video.path)
    assert (facts.rotation, facts.turns, facts.shown_size) == (-90, 3, (240, 320))
