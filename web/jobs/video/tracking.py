"""Stable track ids across a video's analysed frames: supervision's ByteTrack over each frame's boxes.

supervision 0.30 is pinned on purpose: its ByteTrack needs numpy and scipy only, while 0.31 moved the
trackers to the `trackers` package, which requires opencv-python (a GUI build needing libGL in slim
images, ~100 MB) for the gateway image's workers. Detections keep their order and fields; the tracked
ones gain `track_id`, and `Tracks` keeps one summary per track and the short trail each one draws.
ByteTrack confirms an object that appears after the first frame on its second sighting: its first
detection goes without an id.
"""

from __future__ import annotations

import warnings
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

TRAIL_POINTS = 24  # analysed frames a trail reaches back
FORGET_AFTER = 90  # analysed frames without a sighting after which a trail is dropped (its summary stays)


@dataclass
class TrackSummary:
    """One track over the whole video: when it was first and last seen, its class, how often."""

    track_id: int
    first_frame: int
    last_frame: int
    first_time_s: float
    last_time_s: float
    frames: int = 0
    best_score: float = 0.0
    labels: Counter = field(default_factory=Counter)
    class_ids: dict[str, int] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """The label the track had most often."""
        return self.labels.most_common(1)[0][0] if self.labels else ""

    def to_json(self) -> dict[str, Any]:
        label = self.label
        return {
            "track_id": self.track_id,
            "label": label,
            "class_id": self.class_ids.get(label),
            "first_frame": self.first_frame,
            "last_frame": self.last_frame,
            "first_time_s": round(self.first_time_s, 3),
            "last_time_s": round(self.last_time_s, 3),
            "frames": self.frames,
            "best_score": round(self.best_score, 4),
        }


class Tracks:
    """ByteTrack fed one analysed frame at a time, in order; `update` adds `track_id` to detections."""

    def __init__(self, frame_rate: float) -> None:
        with warnings.catch_warnings():  # supervision warns that OpenCV is absent and ByteTrack moves
            warnings.simplefilter("ignore")
            import supervision as sv

            self._sv = sv
            self._tracker = sv.ByteTrack(frame_rate=max(1, round(frame_rate)), minimum_consecutive_frames=1)
        self.summaries: dict[int, TrackSummary] = {}
        self.trails: dict[int, deque[tuple[float, float]]] = {}
        self._seen: dict[int, int] = {}
        self._count = 0

    def update(self, detections: list[dict[str, Any]], frame: int, time_s: float) -> list[dict[str, Any]]:
        """The frame's detections, each tracked one with its `track_id` (the others unchanged)."""
        self._count += 1
        sv = self._sv
        boxes = np.array(
            [[d["box"]["xmin"], d["box"]["ymin"], d["box"]["xmax"], d["box"]["ymax"]] for d in detections],
            dtype=np.float32,
        ).reshape(-1, 4)
        found = sv.Detections(
            xyxy=boxes,
            confidence=np.array([float(d.get("score", 0.0)) for d in detections], dtype=np.float32),
            class_id=np.array([int(d.get("class_id") or 0) for d in detections], dtype=int),
            data={"index": np.arange(len(detections))},
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tracked = self._tracker.update_with_detections(found)
        indices = tracked.data.get("index", ()) if len(tracked) else ()  # none found: only the tracks age
        track_ids = tracked.tracker_id if len(indices) else ()
        ids = {int(i): int(t) for i, t in zip(indices, track_ids, strict=True)}
        out = []
        for index, det in enumerate(detections):
            track_id = ids.get(index)
            if track_id is None:
                out.append(det)
                continue
            out.append({**det, "track_id": track_id})
            self._record(track_id, det, frame, time_s)
        self._forget()
        return out

    def _record(self, track_id: int, det: dict[str, Any], frame: int, time_s: float) -> None:
        summary = self.summaries.get(track_id)
        if summary is None:
            summary = self.summaries[track_id] = TrackSummary(track_id, frame, frame, time_s, time_s)
        summary.last_frame, summary.last_time_s = frame, time_s
        summary.frames += 1
        summary.best_score = max(summary.best_score, float(det.get("score", 0.0)))
        label = str(det.get("label", ""))
        summary.labels[label] += 1
        summary.class_ids.setdefault(label, int(det.get("class_id") or 0))
        box = det["box"]
        trail = self.trails.setdefault(track_id, deque(maxlen=TRAIL_POINTS))
        trail.append(((box["xmin"] + box["xmax"]) / 2, (box["ymin"] + box["ymax"]) / 2))
        self._seen[track_id] = self._count

    def _forget(self) -> None:
        for track_id in [t for t, seen in self._seen.items() if self._count - seen > FORGET_AFTER]:
            self._seen.pop(track_id)
            self.trails.pop(track_id, None)

    def active_trails(self, within: int = 1) -> dict[int, tuple[int, list[tuple[float, float]]]]:
        """(class id, trail in the picture's pixels) of each track seen in the last `within` analysed
        frames: what `draw_frame` draws."""
        out = {}
        for track, seen in self._seen.items():
            if self._count - seen < within:
                summary = self.summaries[track]
                out[track] = (summary.class_ids.get(summary.label, 0), list(self.trails[track]))
        return out

    def to_json(self) -> list[dict[str, Any]]:
        return [summary.to_json() for summary in sorted(self.summaries.values(), key=lambda s: s.track_id)]
