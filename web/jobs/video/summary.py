"""What the job page shows of a video job without reading frames.jsonl: a timeline of detections per
class, the frames with most detections, and the tracks; written as summary.json at the end."""

from __future__ import annotations

import heapq
import math
from collections import Counter
from typing import Any

from web.jobs.video.probe import VideoFacts

TIMELINE_BINS = 120  # columns of the timeline, whatever the video's length
TOP_FRAMES = 10


class Summary:
    """Fed each analysed frame's detections in order; `to_json` is summary.json."""

    def __init__(self, facts: VideoFacts) -> None:
        self.facts = facts
        self.bin_s = max(facts.duration_s / TIMELINE_BINS, 1 / max(facts.fps, 1e-3))
        self.bins = max(1, min(TIMELINE_BINS, math.ceil(facts.duration_s / self.bin_s - 1e-6)))
        self.timeline: dict[str, list[int]] = {}  # label -> most of that label in one frame, per bin
        self.class_ids: dict[str, int] = {}
        self.totals: Counter = Counter()
        self._top: list[tuple[int, int, float, dict[str, int]]] = []  # (count, -frame, time, labels)
        self.analysed = 0

    def add(self, frame: int, time_s: float, detections: list[dict[str, Any]]) -> None:
        self.analysed += 1
        labels = Counter(str(d.get("label", "")) for d in detections)
        column = min(self.bins - 1, max(0, int(time_s / self.bin_s + 1e-6)))
        for label, count in labels.items():
            row = self.timeline.setdefault(label, [0] * self.bins)
            row[column] = max(row[column], count)
            self.totals[label] += count
        for det in detections:
            self.class_ids.setdefault(str(det.get("label", "")), int(det.get("class_id") or 0))
        entry = (len(detections), -frame, time_s, dict(labels))
        if len(self._top) < TOP_FRAMES:
            heapq.heappush(self._top, entry)
        elif entry > self._top[0]:
            heapq.heapreplace(self._top, entry)

    def to_json(self, tracks: list[dict[str, Any]] | None, output: dict[str, Any]) -> dict[str, Any]:
        top = sorted(self._top, reverse=True)
        return {
            "video": self.facts.to_json(),
            "output": output,
            "analysed": self.analysed,
            "timeline": {
                "bin_s": round(self.bin_s, 4),
                "classes": [
                    {"label": label, "class_id": self.class_ids.get(label), "total": self.totals[label],
                     "counts": counts}
                    for label, counts in sorted(self.timeline.items(), key=lambda item: -self.totals[item[0]])
                ],
            },  # fmt: skip
            "top_frames": [
                {"frame": -negative, "time_s": round(time_s, 3), "detections": count, "labels": labels}
                for count, negative, time_s, labels in top
                if count > 0
            ],
            "tracks": tracks,
        }
