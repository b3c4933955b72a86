"""Videos of demo shapes that move by a known step per frame, written with PyAV (the binding the video
jobs decode with), in any container and codec, with or without a sound track: the clips the video jobs'
tests, `python -m bench.video` and the README's picture are made of (nothing is downloaded)."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from demo.synthetic import Shape, generate_image


@dataclass(frozen=True)
class ShapesVideo:
    """A written video: where each shape is in frame 0, and how far it moves per frame (pixels, x)."""

    path: Path
    frames: int
    fps: int
    width: int
    height: int
    step: int
    shapes: list[Shape]

    def box(self, shape: Shape, frame: int) -> tuple[float, float, float, float]:
        """Where `shape` is drawn in `frame` (it slides right; the picture wraps around)."""
        xmin, ymin, xmax, ymax = shape.box
        dx = self.step * frame
        return xmin + dx, ymin, xmax + dx, ymax

    def inside(self, shape: Shape) -> bool:
        """Whether the shape stays whole in the picture for the whole video (never wraps)."""
        return shape.box[2] + self.step * (self.frames - 1) <= self.width


def shapes_video(
    path: Path,
    *,
    frames: int = 30,
    fps: int = 15,
    size: tuple[int, int] = (640, 480),
    step: int = 4,
    seed: int = 5,
    shapes: int = 3,
    codec: str = "libx264",
    container: str | None = None,
    audio: str | None = None,
) -> ShapesVideo:
    """Write `frames` frames of demo shapes sliding `step` pixels right per frame; `audio` names an audio
    codec ("aac", "pcm_s16le", "libopus") for a sine tone alongside, None for no audio track."""
    width, height = size
    rng = np.random.default_rng(seed)
    pixels, found = generate_image(rng, width, height, min_shapes=shapes, max_shapes=shapes)
    with av.open(str(path), mode="w", format=container) as out:
        video = out.add_stream(codec, rate=fps)
        video.width, video.height = width, height
        video.pix_fmt = "yuv420p" if codec != "mjpeg" else "yuvj420p"
        video.bit_rate = 8_000_000  # close to the pictures: what a camera would record, not a thumbnail
        sound = None
        if audio is not None:
            sound = out.add_stream(audio, rate=48000 if audio == "libopus" else 44100)
            sound.layout = "mono"
        samples = 0
        for index in range(frames):
            frame = av.VideoFrame.from_ndarray(np.roll(pixels, step * index, axis=1), format="rgb24")
            frame.pts = index
            frame.time_base = Fraction(1, fps)
            for packet in video.encode(frame):
                out.mux(packet)
            if sound is not None:
                samples = _tone(out, sound, samples, (index + 1) * sound.rate // fps)
        for packet in video.encode():
            out.mux(packet)
        if sound is not None:
            for packet in sound.encode():
                out.mux(packet)
    return ShapesVideo(path, frames, fps, width, height, step, found)


def _tone(out: av.container.OutputContainer, sound: av.AudioStream, done: int, until: int) -> int:
    """Encode a 440 Hz tone from sample `done` up to `until`; the samples written."""
    chunk = sound.codec_context.frame_size or 1024
    while done + chunk <= until:
        t = (np.arange(done, done + chunk) / sound.rate).astype(np.float32)
        wave = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
        name = sound.format.name
        if name.startswith("s16"):
            data = (wave * 32767).astype(np.int16)[None, :]
        else:
            data = wave[None, :]
        frame = av.AudioFrame.from_ndarray(data, format=name, layout="mono")
        frame.sample_rate, frame.pts = sound.rate, done
        for packet in sound.encode(frame):
            out.mux(packet)
        done += chunk
    return done


def rotate_mp4(path: Path, matrix: tuple[int, ...]) -> None:
    """Set the display matrix of an MP4's (first) track header, as a phone does for a portrait video."""
    data = bytearray(path.read_bytes())
    at = data.find(b"tkhd")
    assert at > 0 and data[at + 4] == 0  # version 0: 32-bit times
    offset = at + 4 + 4 + 5 * 4 + 8 + 4 * 2
    data[offset : offset + 36] = struct.pack(">9i", *matrix)
    path.write_bytes(bytes(data))


PORTRAIT = (0, 0x10000, 0, -0x10000, 0, 0, 0, 0, 0x40000000)  # shown turned 90 degrees clockwise
