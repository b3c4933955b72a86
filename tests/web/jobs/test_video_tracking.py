"""The tracking layer over ByteTrack: ids stay with an object that moves, survive a frame where it is
missed, differ between objects, and every track is summarised; frames without detections are fine."""

from __future__ import annotations

from web.jobs.video.tracking import Tracks


def det(label: str, x: float, y: float, score: float = 0.9, class_id: int = 1) -> dict:
    return {"label": label, "class_id": class_id, "score": score,
            "box": {"xmin": x, "ymin": y, "xmax": x + 40, "ymax": y + 40}}  # fmt: skip


def test_moving_objects_keep_their_ids_through_a_missed_frame() -> None:
    tracks = Tracks(frame_rate=10)
    seen: dict[str, set[int]] = {"left": set(), "right": set()}
    for frame in range(12):
        found = [det("circle", 10 + 5 * frame, 50), det("square", 400 - 5 * frame, 200, class_id=2)]
        if frame == 6:
            found = found[1:]  # the circle is missed once
        out = tracks.update(found, frame, frame / 10)
        assert [d["label"] for d in out] == [d["label"] for d in found]  # order and fields kept
        for d in out:
            seen["left" if d["label"] == "circle" else "right"].add(d["track_id"])
    assert len(seen["left"]) == 1 and len(seen["right"]) == 1 and seen["left"] != seen["right"]
    summaries = {s["label"]: s for s in tracks.to_json()}
    assert summaries["circle"]["frames"] == 11 and summaries["square"]["frames"] == 12
    assert (summaries["circle"]["first_frame"], summaries["circle"]["last_frame"]) == (0, 11)
    assert summaries["square"]["class_id"] == 2 and summaries["square"]["last_time_s"] == 1.1
    trails = tracks.active_trails()
    assert len(trails) == 2 and all(len(points) > 5 for _, points in trails.values())
    assert sorted(class_id for class_id, _ in trails.values()) == [1, 2]


def test_frames_without_detections_and_a_late_object() -> None:
    tracks = Tracks(frame_rate=10)
    assert tracks.update([], 0, 0.0) == []
    first = tracks.update([det("circle", 10, 10)], 1, 0.1)
    later = [tracks.update([det("circle", 12 + 2 * n, 10)], 2 + n, 0.2 + n / 10) for n in range(3)]
    assert "track_id" not in first[0]  # ByteTrack confirms an object on its second sighting
    assert len({frame[0]["track_id"] for frame in later}) == 1
    assert tracks.to_json()[0]["first_frame"] == 2
