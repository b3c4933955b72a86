"""ResultStore: ids, atomic writes with rollback, retention by count and bytes, concurrent savers."""

from __future__ import annotations

import io
import json
import os
import threading
import time
from pathlib import Path

import pytest
from PIL import Image

from web.storage import (
    RESULT_ID_RE,
    STALE_AFTER_S,
    ResultStore,
    StorageError,
    is_valid_result_id,
    new_result_id,
    normalize_extension,
)


def _jpeg(width: int = 32, height: int = 24, color: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buf, "JPEG")
    return buf.getvalue()


def _prediction(name: str = "shapes", n: int = 2) -> dict:
    return {
        "model": {"name": name, "version": 1},
        "image": {"width": 32, "height": 24},
        "detections": [
            {"label": f"thing {i}", "class_id": i + 1, "score": 0.9,
             "box": {"xmin": 1.0, "ymin": 2.0, "xmax": 10.0, "ymax": 12.0}}
            for i in range(n)
        ],
        "timings_ms": {"total": 3.0},
    }


@pytest.fixture()
def folders(tmp_path: Path) -> tuple[Path, Path]:
    return tmp_path / "upload_folder", tmp_path / "output"


@pytest.fixture()
def store(folders: tuple[Path, Path]) -> ResultStore:
    return ResultStore(*folders, max_count=50, max_bytes=50 * 1024 * 1024)


def _files(*folders: Path) -> list[str]:
    return sorted(p.name for f in folders if f.exists() for p in f.iterdir() if not p.name.startswith(".ret"))


def test_save_and_get_round_trip(store: ResultStore, folders: tuple[Path, Path]) -> None:
    original, rendered = _jpeg(), _jpeg(color=(0, 0, 255))
    result_id = store.save(original, "jpeg", rendered, ".JPG", _prediction(), source_name="../../cat.jpg",
                           options={"min_score": 0.4})

    assert is_valid_result_id(result_id)
    upload, output = folders
    assert _files(upload) == [f"{result_id}.jpg"]
    assert _files(output) == [f"{result_id}.jpg", f"{result_id}.json"]

    got = store.get(result_id)
    assert got is not None
    assert got.original_path.read_bytes() == original
    assert got.rendered_path.read_bytes() == rendered
    assert got.original_path.parent == upload and got.rendered_path.parent == output
    assert got.prediction == _prediction()
    assert got.model_name == "shapes" and got.model_version == 1 and got.detection_count == 2
    # The client's name is kept only as text to display; it never becomes part of a path.
    assert got.source_name == "../../cat.jpg"
    assert got.options == {"min_score": 0.4}
    assert got.original_mimetype == "image/jpeg"


def test_original_keeps_the_extension_it_was_given(store: ResultStore) -> None:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, "PNG")
    result_id = store.save(buf.getvalue(), "png", _jpeg(), "jpg", _prediction())
    got = store.get(result_id)
    assert got is not None
    assert got.original_path.suffix == ".png" and got.original_mimetype == "image/png"
    assert got.rendered_path.suffix == ".jpg"


def test_ids_are_sortable_by_time_and_unique() -> None:
    first = new_result_id(now=1_700_000_000.0)
    second = new_result_id(now=1_700_000_000.5)
    assert first < second
    assert len({new_result_id() for _ in range(500)}) == 500
    assert RESULT_ID_RE.fullmatch(first)


@pytest.mark.parametrize(
    "bad_id",
    ["", "..", "../../etc/passwd", "/etc/passwd", "20231114T221320000000Z-0123456789abcdef/../x",
     "20231114T221320000000Z-0123456789ABCDEF", "20231114T221320000000Z-0123456789abcde",
     "20231114T221320000000Z-0123456789abcdef.json", "x20231114T221320000000Z-0123456789abcdef",
     "20231114T221320000000Z-0123456789abcdef\n"],
)
def test_invalid_ids_are_rejected_without_touching_the_disk(store: ResultStore, bad_id: str) -> None:
    assert not is_valid_result_id(bad_id)
    assert store.get(bad_id) is None


def test_unknown_valid_id_is_none(store: ResultStore) -> None:
    assert store.get(new_result_id()) is None


@pytest.mark.parametrize("ext", ["exe", "html", "", "jp/g", "../jpg", "svg"])
def test_unknown_extensions_are_refused_before_writing(store: ResultStore, folders, ext: str) -> None:
    with pytest.raises(ValueError):
        store.save(_jpeg(), ext, _jpeg(), "jpg", _prediction())
    assert _files(*folders) == []


@pytest.mark.parametrize("ext,expected", [("JPEG", "jpg"), (".jpg", "jpg"), ("png", "png"), ("tiff", "tif")])
def test_normalize_extension(ext: str, expected: str) -> None:
    assert normalize_extension(ext) == expected


def test_failed_write_leaves_no_file(tmp_path: Path) -> None:
    """The original is written, then the output folder turns out unusable: everything is rolled back."""
    upload = tmp_path / "upload_folder"
    output = tmp_path / "output"
    output.write_text("a file where the output folder should be")
    store = ResultStore(upload, output)
    with pytest.raises(StorageError):
        store.save(_jpeg(), "jpg", _jpeg(), "jpg", _prediction())
    assert list(upload.iterdir()) == []


@pytest.mark.parametrize("failing_call", [1, 2, 3])
def test_a_write_failing_midway_rolls_back_everything(store: ResultStore, folders, monkeypatch,
                                                       failing_call: int) -> None:
    """The disk fills up while moving the original (1), the rendered picture (2) or the record (3) into
    place: the error surfaces as StorageError and neither finished nor temp files are left."""
    real_replace = os.replace
    calls = {"n": 0}

    def replace(src, dst):
        calls["n"] += 1
        if calls["n"] == failing_call:
            raise OSError(28, "No space left on device")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(StorageError, match="No space left"):
        store.save(_jpeg(), "jpg", _jpeg(), "jpg", _prediction())
    monkeypatch.setattr(os, "replace", real_replace)
    assert _files(*folders) == []
    assert store.recent() == []


def test_prediction_that_is_not_json_fails_before_writing(store: ResultStore, folders) -> None:
    bad = _prediction()
    bad["detections"][0]["score"] = float("nan")
    with pytest.raises(ValueError):
        store.save(_jpeg(), "jpg", _jpeg(), "jpg", bad)
    assert _files(*folders) == []


def test_recent_lists_newest_first_from_the_folders(folders) -> None:
    writer = ResultStore(*folders)
    ids = [writer.save(_jpeg(), "jpg", _jpeg(), "jpg", _prediction(n=i)) for i in range(5)]
    # A second store (another gunicorn worker) sees the same listing: nothing is held in memory.
    reader = ResultStore(*folders)
    assert [r.result_id for r in reader.recent()] == ids[::-1]
    assert [r.result_id for r in reader.recent(limit=2)] == ids[:-3:-1]
    assert reader.recent(limit=0) == []


def test_recent_skips_half_written_and_corrupt_results(store: ResultStore, folders) -> None:
    upload, output = folders
    good = store.save(_jpeg(), "jpg", _jpeg(), "jpg", _prediction())
    # A crash between the pictures and the record: no record, so it does not exist for readers.
    orphan = new_result_id()
    (upload / f"{orphan}.jpg").write_bytes(_jpeg())
    (output / f"{orphan}.jpg").write_bytes(_jpeg())
    # A record that is not JSON, and a record claiming another id.
    broken = new_result_id()
    (output / f"{broken}.json").write_text("{not json")
    liar = new_result_id()
    (output / f"{liar}.json").write_text(json.dumps({"id": good, "original": "a.jpg", "rendered": "a.jpg",
                                                      "created_at": "2024-01-01T00:00:00+00:00",
                                                      "prediction": {}}))
    assert [r.result_id for r in store.recent()] == [good]
    assert store.get(orphan) is None and store.get(broken) is None and store.get(liar) is None


def test_retention_by_count_deletes_the_oldest(folders) -> None:
    store = ResultStore(*folders, max_count=3)
    ids = [store.save(_jpeg(), "jpg", _jpeg(), "jpg", _prediction()) for _ in range(7)]
    assert [r.result_id for r in store.recent()] == ids[:-4:-1]
    for old in ids[:4]:
        assert store.get(old) is None
    upload, output = folders
    assert len(_files(upload)) == 3
    assert len(_files(output)) == 6


def test_retention_by_bytes_deletes_the_oldest(folders) -> None:
    picture = os.urandom(10_000)  # bytes the store does not look into
    one_result = 2 * len(picture)
    store = ResultStore(*folders, max_count=100, max_bytes=int(3.5 * one_result) + 3 * 2_000)
    ids = [store.save(picture, "png", picture, "png", _prediction()) for _ in range(6)]
    kept = [r.result_id for r in store.recent()]
    assert kept == ids[:-4:-1]
    total = sum(r.size_bytes() for r in store.recent())
    assert total <= store.max_bytes


def test_the_newest_result_survives_even_when_over_the_byte_budget(folders) -> None:
    store = ResultStore(*folders, max_count=10, max_bytes=1)
    first = store.save(_jpeg(), "jpg", _jpeg(), "jpg", _prediction())
    second = store.save(_jpeg(), "jpg", _jpeg(), "jpg", _prediction())
    assert store.get(first) is None
    assert store.get(second) is not None


def test_prune_sweeps_stale_leftovers_but_not_fresh_ones(store: ResultStore, folders) -> None:
    upload, output = folders
    kept = store.save(_jpeg(), "jpg", _jpeg(), "jpg", _prediction())
    stale_orphan = upload / f"{new_result_id()}.jpg"
    stale_temp = output / ".tmp-abc123"
    fresh_orphan = output / f"{new_result_id()}.jpg"  # another worker may be mid-save right now
    unrelated = output / ".gitkeep"
    for path in (stale_orphan, stale_temp, fresh_orphan, unrelated):
        path.write_bytes(b"x")
    old = time.time() - STALE_AFTER_S - 60
    for path in (stale_orphan, stale_temp, unrelated):
        os.utime(path, (old, old))

    store.prune()

    assert not stale_orphan.exists() and not stale_temp.exists()
    assert fresh_orphan.exists() and unrelated.exists()
    assert store.get(kept) is not None


def test_concurrent_savers_stay_within_bounds(folders) -> None:
    """Threads and separate store objects (as gunicorn workers would be) saving at once."""
    max_count = 5
    errors: list[BaseException] = []
    saved: list[str] = []
    lock = threading.Lock()

    def worker() -> None:
        store = ResultStore(*folders, max_count=max_count)
        try:
            for _ in range(6):
                result_id = store.save(_jpeg(), "jpg", _jpeg(), "jpg", _prediction())
                with lock:
                    saved.append(result_id)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads)
    assert errors == []
    assert len(set(saved)) == 24
    store = ResultStore(*folders, max_count=max_count)
    remaining = [r.result_id for r in store.recent()]
    assert len(remaining) == max_count
    # The oldest went first. (A saver never deletes its own new result, so the one kept alongside the
    # newest may be a slow saver's slightly older result.)
    assert set(sorted(saved)[-(max_count - 1):]) <= set(remaining)
    upload, output = folders
    # Exactly the kept results' files: no half-written or temp file is left anywhere.
    assert len(_files(upload)) == max_count
    assert len(_files(output)) == 2 * max_count
