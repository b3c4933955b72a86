"""The annotated video, encoded as the frames come: H.264 in MP4 (WebM with VP9 where the FFmpeg build
has no H.264 encoder), at the source's frame timing and size, with the source's audio track copied.

Audio a browser plays inside the chosen container (AAC, MP3 or Opus in MP4; Opus or Vorbis in WebM) is
copied packet for packet; any other (PCM in AVI, AC-3, ...) is re-encoded to AAC (Opus in WebM). H.264's
4:2:0 needs an even width and height: an odd-sized video loses its last column or row of pixels.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np


@dataclass(frozen=True)
class Output:
    """One way to write a video a browser plays: container, file suffix, video codec and its options."""

    format: str
    suffix: str
    codec: str
    options: dict[str, str]
    audio_copy: frozenset[str]
    audio_codec: str
    mime: str


# x264's ultrafast preset: about 1 ms of one core per 640x480 frame, so encoding never holds a job back
# (veryfast costs 3x that for files about half the size on camera footage; the video is for looking at).
H264 = Output(
    "mp4", "mp4", "libx264", {"preset": "ultrafast", "crf": "23"},
    frozenset({"aac", "mp3", "opus"}), "aac", "video/mp4",
)  # fmt: skip
VP9 = Output(
    "webm", "webm", "libvpx-vp9", {"deadline": "realtime", "cpu-used": "8", "crf": "32", "b": "0"},
    frozenset({"opus", "vorbis"}), "libopus", "video/webm",
)  # fmt: skip


STANDARD_LAYOUTS = {1: "mono", 2: "stereo", 3: "2.1", 4: "quad", 5: "5.0", 6: "5.1", 7: "6.1", 8: "7.1"}


def choose_output() -> Output:
    """H.264 when this FFmpeg can encode it (PyAV's wheels can), else VP9."""
    return H264 if H264.codec in av.codecs_available else VP9


class AnnotatedWriter:
    """Writes RGB frames (and the source's audio packets) to `final` under a temporary name; `commit`
    renames it into place, `abort` removes it."""

    def __init__(
        self,
        final: Path,
        source_video: Any,
        source_audio: Any | None,
        output: Output,
        size: tuple[int, int] | None = None,
    ) -> None:
        """`size`: the frames' width and height (default: the source's; an upright phone video's are
        swapped); the output carries no rotation, its frames are upright."""
        self.final, self.output = final, output
        self.temp = final.with_name(f".{final.name}.{uuid.uuid4().hex}.tmp")
        options = {"movflags": "+faststart"} if output.format == "mp4" else {}
        self.container = av.open(str(self.temp), mode="w", format=output.format, options=options)
        codec = source_video.codec_context
        width, height = size or (int(codec.width), int(codec.height))
        self.width, self.height = width // 2 * 2, height // 2 * 2
        rate = source_video.average_rate or source_video.guessed_rate or Fraction(25)
        self.time_base = source_video.time_base or Fraction(1, int(round(float(rate) * 1000)) or 1)
        self.video = self.container.add_stream(output.codec, rate=rate, options=dict(output.options))
        self.video.width, self.video.height = self.width, self.height
        self.video.pix_fmt = "yuv420p"
        self.video.codec_context.time_base = self.time_base
        self.audio, self._resampler, self._copy = None, None, False
        if source_audio is not None:
            self._open_audio(source_audio)
        self._last_pts: int | None = None

    def _open_audio(self, source: Any) -> None:
        name = source.codec_context.name
        if name in self.output.audio_copy:
            self.audio = self.container.add_stream_from_template(source)
            self._copy = True
            return
        rate = int(source.codec_context.sample_rate or 48000)
        if self.output.audio_codec == "libopus" and rate not in (8000, 12000, 16000, 24000, 48000):
            rate = 48000
        self.audio = self.container.add_stream(self.output.audio_codec, rate=rate)
        channels = source.codec_context.layout.nb_channels if source.codec_context.layout else 2
        layout = STANDARD_LAYOUTS.get(channels, "stereo")  # "1 channels" (no order) is not an encoder's
        self.audio.layout = layout
        self._copy = False
        self._resampler = av.AudioResampler(format=self.audio.format.name, layout=layout, rate=rate)

    @property
    def suffix(self) -> str:
        return self.output.suffix

    def write(self, rgb: np.ndarray, pts: int | None) -> None:
        """One frame (uint8 [H, W, 3]) at `pts` in the source's time base (timestamps stay increasing)."""
        if pts is None or (self._last_pts is not None and pts <= self._last_pts):
            pts = 0 if self._last_pts is None else self._last_pts + 1
        self._last_pts = pts
        if rgb.shape[0] != self.height or rgb.shape[1] != self.width:
            rgb = rgb[: self.height, : self.width]
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        frame.pts, frame.time_base = pts, self.time_base
        for packet in self.video.encode(frame):
            self.container.mux(packet)

    def write_audio(self, packet: Any) -> None:
        """One packet of the source's audio: copied, or decoded and encoded again."""
        if self.audio is None:
            return
        if self._copy:
            if packet.dts is None or packet.size == 0:
                return
            packet.stream = self.audio
            self.container.mux(packet)
            return
        for frame in packet.decode():
            frame.pts = None
            for resampled in self._resampler.resample(frame):
                for out in self.audio.encode(resampled):
                    self.container.mux(out)

    def commit(self) -> Path:
        """Flush the encoders, close the file and rename it into place."""
        for packet in self.video.encode():
            self.container.mux(packet)
        if self.audio is not None and not self._copy:
            for resampled in self._resampler.resample(None):
                for out in self.audio.encode(resampled):
                    self.container.mux(out)
            for out in self.audio.encode():
                self.container.mux(out)
        self.container.close()
        os.replace(self.temp, self.final)
        return self.final

    def abort(self) -> None:
        try:
            self.container.close()
        except Exception:  # noqa: BLE001 - a half-written file is removed whatever its state
            pass
        self.temp.unlink(missing_ok=True)
