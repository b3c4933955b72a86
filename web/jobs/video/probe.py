"""What a video upload is, checked before it becomes a job: the container, the video stream, the size,
the duration and how many frames a job will analyse (`Sampler` picks them, here and in the job alike).

Only the packets are read (no decoding but the first frame), so probing an hour of video takes seconds;
a file FFmpeg cannot read, a damaged or truncated stream, or one over a limit is refused with what to fix.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

from web.jobs.archives import ArchiveError, ArchiveTooLarge

FACTS_FILE = "video.json"  # the probe's findings, in the job's folder, for the job and its page
# FFmpeg's demuxer names of the containers we take: MP4/MOV, WebM/MKV, AVI.
CONTAINERS = {"mov,mp4,m4a,3gp,3g2,mj2": "MP4/MOV", "matroska,webm": "WebM/MKV", "avi": "AVI"}
ACCEPTED = "MP4, MOV, WebM, MKV or AVI"
DEFAULT_RATE = Fraction(25)  # a stream that states no frame rate at all


@dataclass(frozen=True)
class VideoFacts:
    """The video stream of an upload, as the job needs it (JSON in the job's video.json)."""

    container: str
    codec: str
    width: int
    height: int
    rate: str  # the average frame rate as a fraction, e.g. "30000/1001"
    duration_s: float
    frames: int  # frames in the video
    analysed: int  # frames the job analyses (every frame, or `fps` of them per second, at most the cap)
    sample_fps: float | None  # None: every frame
    audio: str | None  # the audio codec, None without audio
    rotation: int = 0  # degrees counter-clockwise to show it upright (a phone's portrait video: -90)

    @property
    def fps(self) -> float:
        return float(Fraction(self.rate))

    @property
    def turns(self) -> int:
        """Quarter turns counter-clockwise (np.rot90's k) that make a decoded frame upright."""
        return round(self.rotation / 90) % 4

    @property
    def shown_size(self) -> tuple[int, int]:
        """Width and height of the upright frames (what players show, and what the job works on)."""
        return (self.height, self.width) if self.turns % 2 else (self.width, self.height)

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "fps": round(self.fps, 3)}

    @classmethod
    def read(cls, folder: Path) -> VideoFacts:
        with open(folder / FACTS_FILE, encoding="utf-8") as stream:
            data = json.load(stream)
        data.pop("fps", None)
        return cls(**data)


class Sampler:
    """Which frames to analyse: at most `fps` per second of video time (None: every frame).

    A frame is taken when it opens a new 1/fps slot of the timeline, so the choice depends on the
    frames' times alone: the probe, counting packets, and the job, decoding frames, pick the same ones.
    """

    def __init__(self, fps: float | None) -> None:
        self.fps = fps
        self._slot = -1

    def take(self, time_s: float) -> bool:
        if self.fps is None:
            return True
        slot = math.floor(time_s * self.fps + 1e-6)
        if slot <= self._slot:
            return False
        self._slot = slot
        return True


def sample_rate(requested: float | None, frames: int, duration_s: float, cap: int) -> float | None:
    """The analysis rate a job uses: the requested `fps` (None: every frame), lowered so that at most
    `cap` frames are analysed (a long video is then sampled evenly, not refused)."""
    if frames <= cap:
        return requested
    most = cap / max(duration_s, 1e-3)
    return most if requested is None else min(requested, most)


@dataclass(frozen=True)
class VideoProbe:
    """Checks a video upload and counts the frames to analyse; `probe(folder, video)` is what
    `JobStore.create` calls, and writes `video.json` beside the video."""

    max_bytes: int
    max_duration_s: float
    max_frames: int
    max_pixels: int
    fps: float | None = None

    @classmethod
    def from_settings(cls, settings: Any, fps: float | None = None) -> VideoProbe:
        return cls(
            settings.max_video_bytes,
            settings.max_video_duration_s,
            settings.max_video_frames,
            settings.max_video_pixels,
            fps,
        )

    def __call__(self, folder: Path, video: Path) -> int:
        facts = self.inspect(video)
        (folder / FACTS_FILE).write_text(json.dumps(facts.to_json()), encoding="utf-8")
        return facts.analysed

    def inspect(self, video: Path) -> VideoFacts:
        """The facts of the video at `video`; ArchiveError (400) or ArchiveTooLarge (413) saying why not."""
        import av  # PyAV, loaded by video uploads only

        size = video.stat().st_size
        if size > self.max_bytes:
            raise ArchiveTooLarge(
                f"the video is {size / 2**20:.0f} MiB, over MAX_VIDEO_BYTES "
                f"({self.max_bytes / 2**20:.0f} MiB): cut it into parts or lower its bit rate"
            )
        try:
            container = av.open(str(video), mode="r", metadata_errors="ignore")
        except (av.FFmpegError, UnicodeDecodeError, ValueError) as error:
            raise ArchiveError(
                f"not a video FFmpeg can read ({_reason(error)}): the file is damaged or truncated, or not a "
                f"video; send {ACCEPTED} (H.264, H.265, VP8, VP9, AV1, MPEG-4 and other common codecs)"
            ) from None
        with container:
            kind = CONTAINERS.get(container.format.name)
            if kind is None:
                raise ArchiveError(
                    f"a {container.format.long_name or container.format.name} file is not a video "
                    f"container the jobs take: send {ACCEPTED}"
                )
            if not container.streams.video:
                raise ArchiveError(f"the {kind} file has no video stream: send a file with a video track")
            stream = container.streams.video[0]
            codec = stream.codec_context
            width, height = int(codec.width or 0), int(codec.height or 0)
            if width < 2 or height < 2:
                raise ArchiveError("the video stream has no frame size: the file is damaged")
            if width * height > self.max_pixels:
                raise ArchiveTooLarge(
                    f"the video's frames are {width}x{height}, over MAX_VIDEO_PIXELS ({self.max_pixels:,} "
                    "pixels per frame): scale it down first"
                )
            rate = stream.average_rate or stream.guessed_rate or DEFAULT_RATE
            audio = container.streams.audio[0].codec_context.name if container.streams.audio else None
            times = self._frame_times(container, stream, kind)
            if not times:
                raise ArchiveError(f"the {kind} file's video stream holds no frames")
            listed = int(stream.frames or 0)  # the container's index, where it has one (MP4, AVI)
            if listed and len(times) < listed:
                raise ArchiveError(
                    f"the {kind} file is truncated: its index lists {listed} frames, {len(times)} are there; "
                    "send the whole file again"
                )
            rotation = self._check_first_frame(container, stream, kind)
            duration = max(times) - min(times) + 1 / float(rate)
            if duration > self.max_duration_s:
                raise ArchiveTooLarge(
                    f"the video lasts {duration:.0f} s, over MAX_VIDEO_DURATION_S "
                    f"({self.max_duration_s:g} s): cut it into parts"
                )
            start = min(times)
            chosen_fps = sample_rate(self.fps, len(times), duration, self.max_frames)
            sampler = Sampler(chosen_fps)
            analysed = sum(sampler.take(t - start) for t in sorted(times))
        return VideoFacts(
            container=kind,
            codec=codec.name,
            width=width,
            height=height,
            rate=str(Fraction(rate)),
            duration_s=round(duration, 3),
            frames=len(times),
            analysed=analysed,
            sample_fps=None if chosen_fps is None else round(chosen_fps, 6),
            audio=audio,
            rotation=rotation,
        )

    def _frame_times(self, container: Any, stream: Any, kind: str) -> list[float]:
        """Each video packet's presentation time in seconds (packets without one get the previous + one
        frame), read without decoding; a damaged stream raises ArchiveError saying where it breaks."""
        import av

        base = float(stream.time_base or Fraction(1, 1000))
        step = 1 / float(stream.average_rate or stream.guessed_rate or DEFAULT_RATE)
        times: list[float] = []
        cap = int(self.max_duration_s * 1000) + 1000  # frames: bounded even for a lying container
        try:
            for packet in container.demux(stream):
                if packet.size == 0:
                    continue  # the demuxer's end-of-stream marker
                when = packet.pts if packet.pts is not None else packet.dts
                times.append(when * base if when is not None else (times[-1] + step if times else 0.0))
                if len(times) > cap:
                    raise ArchiveTooLarge(
                        f"the video has more than {cap:,} frames, too many for MAX_VIDEO_DURATION_S "
                        f"({self.max_duration_s:g} s): cut it into parts"
                    )
        except av.FFmpegError as error:
            at = f" after {len(times)} frames ({times[-1]:.1f} s)" if times else ""
            raise ArchiveError(
                f"the {kind} file is damaged or truncated{at} ({_reason(error)}): send the whole file again"
            ) from None
        return times

    @staticmethod
    def _check_first_frame(container: Any, stream: Any, kind: str) -> int:
        """Decode until the first frame comes out: a stream whose codec FFmpeg lacks, or whose data is
        garbage, is refused here rather than failing the job later. Its display rotation (a phone's
        portrait video is stored sideways, with a display matrix saying so) is the answer."""
        import av

        try:
            container.seek(0, stream=stream)
            for packet in container.demux(stream):
                for frame in packet.decode():
                    return int(round(frame.rotation or 0))
        except av.FFmpegError as error:
            raise ArchiveError(
                f"the {kind} file's {stream.codec_context.name} video cannot be decoded ({_reason(error)})"
            ) from None
        raise ArchiveError(f"the {kind} file's video stream decodes to no frame: the file is damaged")


def _reason(error: BaseException) -> str:
    """FFmpeg's message without the file path (which is ours, not the user's)."""
    text = getattr(error, "strerror", None) or str(error)
    return str(text).split(": '/")[0].strip() or type(error).__name__
