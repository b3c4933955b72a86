"""The video job's streamer: decode, sample, predict several frames at once, track, draw, encode.

The video is read once, as a stream. Each decoded frame joins a queue that holds at most `window`
frames; an analysed frame's JPEG goes to the model (through `Stream.predict`, the gateway's predict
API with the job's options) in a thread pool of JOB_PICTURES_IN_FLIGHT. The queue's head leaves once
its prediction is back: tracked (in frame order), logged to frames.jsonl, drawn (frames between two
analysed ones get the latest detections) and encoded. Memory is the queue's few frames, whatever the
video's length; a cancel is noticed within a frame or two.
"""

from __future__ import annotations

import json
import time
from collections import deque
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import numpy as np
import simplejpeg

from web.jobs.exporters.base import AtomicFile
from web.jobs.kinds import JobError, PictureError, Stopped, Stream
from web.jobs.video.annotate import Drawing, draw_frame
from web.jobs.video.probe import Sampler, VideoFacts
from web.jobs.video.summary import Summary
from web.jobs.video.tracking import Tracks
from web.jobs.video.writer import AnnotatedWriter, choose_output

FRAMES_FILE, SUMMARY_FILE = "frames.jsonl", "summary.json"
JPEG_QUALITY = 92  # what the model sees of each analysed frame
PROGRESS_EVERY = 8  # analysed frames between progress reports


@dataclass
class _Pending:
    """A decoded frame waiting for its turn to be drawn and encoded."""

    index: int
    time_s: float
    pts: int | None
    rgb: np.ndarray
    future: Future | None  # the prediction of an analysed frame; None for a frame only drawn


class _Costs:
    """Seconds spent decoding (with the RGB conversion), drawing and encoding, and waiting for the model."""

    def __init__(self) -> None:
        self.decode = self.draw = self.encode = self.wait = 0.0

    def to_json(self, frames: int) -> dict[str, float]:
        per = 1000 / max(frames, 1)
        return {
            "decode_ms_per_frame": round(self.decode * per, 3),
            "draw_ms_per_frame": round(self.draw * per, 3),
            "encode_ms_per_frame": round(self.encode * per, 3),
            "model_wait_ms_per_frame": round(self.wait * per, 3),
        }


def run_video(stream: Stream) -> Mapping[str, Path]:
    """The streamer of kind `video` (see `web.jobs.kinds.Stream`): frames.jsonl, annotated.<mp4|webm>
    and summary.json, written whole or not at all."""
    try:
        facts = VideoFacts.read(stream.input.parent)
    except FileNotFoundError:
        raise JobError(
            "the job has no checked video (its upload was not probed as one): start it again with "
            "kind=video and the video in the field 'video'"
        ) from None
    except (OSError, ValueError, TypeError) as error:
        raise JobError(f"the job's video facts (video.json) cannot be read: {error}") from None
    try:
        return _VideoRun(stream, facts).run()
    except av.FFmpegError as error:
        raise JobError(f"the video cannot be decoded or encoded: {error}") from None


class _VideoRun:
    def __init__(self, stream: Stream, facts: VideoFacts) -> None:
        self.stream, self.facts = stream, facts
        options = stream.job.options
        self.tracks = Tracks(facts.sample_fps or facts.fps) if options.get("track") else None
        self.summary = Summary(facts)
        self.costs = _Costs()
        self.in_flight = max(1, stream.settings.in_flight)
        self.window = 2 * self.in_flight + 2  # frames held at most: decoded, in flight or waiting
        self.drawing: Drawing | None = None  # the latest prediction, drawn on the frames after it too
        self.analysed = self.frames = 0
        self.skipped: list[str] = []

    def run(self) -> dict[str, Path]:
        stream = self.stream
        output = choose_output()
        names = {"frames": FRAMES_FILE, "video": f"annotated.{output.suffix}", "summary": SUMMARY_FILE}
        log = AtomicFile(stream.folder / names["frames"])
        pool = ThreadPoolExecutor(self.in_flight, thread_name_prefix=f"video-{stream.job.id[:8]}")
        writer = None
        try:
            with av.open(str(stream.input), mode="r", metadata_errors="ignore") as source:
                video = source.streams.video[0]
                video.thread_type = "AUTO"
                audio = source.streams.audio[0] if source.streams.audio else None
                writer = AnnotatedWriter(
                    stream.folder / names["video"], video, audio, output, self.facts.shown_size
                )
                self._stream_frames(source, video, audio, writer, log, pool)
            written = {names["frames"]: log.commit(), names["video"]: writer.commit()}
            summary = self.summary.to_json(
                self.tracks.to_json() if self.tracks is not None else None,
                {"file": names["video"], "mime": output.mime, "frames": self.frames,
                 "width": writer.width, "height": writer.height, "skipped_frames": self.skipped[:100],
                 **self.costs.to_json(self.frames)},
            )  # fmt: skip
            target = AtomicFile(stream.folder / names["summary"])
            target.stream.write(json.dumps(summary, ensure_ascii=False))
            written[names["summary"]] = target.commit()
            return written
        except BaseException:
            log.abort()
            if writer is not None:
                writer.abort()
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def _stream_frames(self, source, video, audio, writer, log, pool) -> None:
        sampler = Sampler(self.facts.sample_fps)
        turns = self.facts.turns
        base = float(video.time_base)
        first: int | None = None
        pending: deque[_Pending] = deque()
        streams = [video] if audio is None else [video, audio]
        index = 0
        started = time.perf_counter()
        for packet in source.demux(*streams):
            if packet.stream.type == "audio":
                writer.write_audio(packet)
                continue
            for frame in packet.decode():
                if self.stream.stopped():
                    raise Stopped
                pts = frame.pts
                if first is None:
                    first = pts or 0
                time_s = ((pts - first) * base) if pts is not None else index / self.facts.fps
                rgb = frame.to_ndarray(format="rgb24")
                if turns:  # stored sideways (a phone's portrait video): made upright, as players show it
                    rgb = np.ascontiguousarray(np.rot90(rgb, turns))
                self.costs.decode += time.perf_counter() - started
                future = None
                if sampler.take(time_s):
                    future = pool.submit(self._predict, rgb, index)
                pending.append(_Pending(index, time_s, pts, rgb, future))
                index += 1
                while pending and (len(pending) >= self.window or _ready(pending[0])):
                    self._emit(pending.popleft(), writer, log)
                started = time.perf_counter()
        while pending:
            self._emit(pending.popleft(), writer, log)
        if self.frames == 0:
            raise JobError("the video decoded to no frames")

    def _predict(self, rgb: np.ndarray, index: int) -> dict[str, Any]:
        data = simplejpeg.encode_jpeg(rgb, quality=JPEG_QUALITY, colorspace="RGB")
        return self.stream.predict(data, f"frame-{index:06d}.jpg")

    def _emit(self, item: _Pending, writer: AnnotatedWriter, log: AtomicFile) -> None:
        """The queue's head: its prediction logged and tracked (an analysed frame), then drawn and encoded."""
        if item.future is not None:
            waited = time.perf_counter()
            try:
                prediction = item.future.result()
            except PictureError as error:  # the gateway refused this frame: logged, the video goes on
                self.skipped.append(f"frame {item.index}: {error.reason}")
                prediction = None
            self.costs.wait += time.perf_counter() - waited
            if prediction is not None:
                self._record(item, prediction, log)
        started = time.perf_counter()
        tracking = self.tracks is not None and self.drawing is not None
        trails = self.tracks.active_trails() if tracking else None
        drawn = draw_frame(item.rgb, self.drawing, trails)
        drawn_at = time.perf_counter()
        self.costs.draw += drawn_at - started
        writer.write(drawn, item.pts)
        self.costs.encode += time.perf_counter() - drawn_at
        self.frames += 1

    def _record(self, item: _Pending, prediction: dict[str, Any], log: AtomicFile) -> None:
        if self.stream.model_version is None:
            self.stream.model_version = (prediction.get("model") or {}).get("version")
        detections = list(prediction.get("detections") or [])
        if self.tracks is not None:
            detections = self.tracks.update(detections, item.index, item.time_s)
        prediction = {**prediction, "detections": detections}
        self.drawing = Drawing.of(prediction, (item.rgb.shape[1], item.rgb.shape[0]))
        line: dict[str, Any] = {
            "frame": item.index,
            "time_s": round(item.time_s, 4),
            "detections": detections,
        }
        if prediction.get("classes") is not None:
            line["classes"] = prediction["classes"]
        if "image" in prediction:
            line["image"] = prediction["image"]
        log.stream.write(json.dumps(line, ensure_ascii=False) + "\n")
        self.summary.add(item.index, item.time_s, detections)
        self.analysed += 1
        if self.analysed % PROGRESS_EVERY == 0:
            self.stream.progress(self.analysed)


def _ready(item: _Pending) -> bool:
    return item.future is None or item.future.done()
