"""The job queue over the real path: the job store on disk, Huey on SQLite and on a real redis-server, and
real `python -m web.worker` subprocesses (their model is tests/web/jobs/fake_model.py, a pure function of
the picture's bytes: the queue, the claims and the recovery are what is under test).
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections import Counter

import pytest

from tests.web.jobs import fake_model
from tests.web.jobs.queue_helpers import (
    job_settings,
    jpeg,
    make_zip,
    new_job,
    result_lines,
    wait_for,
    wait_until_ended,
)
from web.jobs.config import JobSettings
from web.jobs.exporters import RESULT_FILES
from web.jobs.queue import make_huey
from web.jobs.runner import CLAIM_QUEUED, CLAIM_RUNNING
from web.jobs.store import FINISH, Claim, JobNotFound, JobStore

# -- the tests ---------------------------------------------------------------------------------------


def test_a_hundred_picture_job_completes_with_each_picture_once(backend, make_queue, workers, tmp_path):
    queue = make_queue(backend)
    job, files = new_job(queue, tmp_path, 100)
    assert (job.status, job.progress, job.chunks) == ("queued", {"done": 0, "total": 100}, 13)
    queue.submit(job)
    assert queue.pending() == 13
    workers.start(queue.settings)
    workers.start(queue.settings)
    seen = wait_until_ended(queue, job.id, 90, workers)

    done = queue.store.get(job.id)
    assert done.status == "succeeded", done.error
    assert done.progress == {"done": 100, "total": 100}
    assert seen == sorted(seen), "progress went backwards"
    body = done.to_json()
    assert set(body["results"]) == set(RESULT_FILES)
    assert body["results"]["coco.json"] == f"/api/v1/jobs/{job.id}/results/coco.json"
    assert body["finished"] and body["created"] < body["finished"] and body["skipped"] == []
    lines = result_lines(queue, job.id)
    assert [line["file"] for line in lines] == sorted(files)  # each picture once, in picture order
    for line in lines:
        expected = {**fake_model.prediction("shapes", files[line["file"]]), "file": line["file"]}
        assert line == expected
    coco = json.loads(queue.store.result_path(job.id, "coco.json").read_text())
    assert len(coco["images"]) == 100 and len(coco["annotations"]) == 100
    # No chunk task is left over (the scheduler's once-a-minute reclaim task may pass through the queue).
    wait_for(lambda: queue.pending() == 0, 10, "the queue to be empty")


def test_a_worker_killed_mid_job_loses_nothing(backend, make_queue, workers, tmp_path):
    queue = make_queue(backend)
    job, files = new_job(queue, tmp_path, 100)
    queue.submit(job)
    # The victim hangs in its first pictures, holding two chunks, until it is SIGKILLed.
    victim = workers.start(queue.settings, FAKE_MODEL_DELAY_S="60")

    def victim_claims() -> list[int]:
        found = []
        for index in range(job.chunks):
            claim = queue.store.read_claim(job.id, index)
            if claim and claim.state == CLAIM_RUNNING and f":{victim.pid}:" in claim.worker:
                found.append(index)
        return found

    held = wait_for(victim_claims, 30, "the victim to claim a chunk")
    wait_for(lambda: any(pid == victim.pid for pid, _ in workers.calls_by()), 10, "the victim to predict")
    workers.start(queue.settings)
    victim.send_signal(signal.SIGKILL)
    victim.wait(10)
    wait_until_ended(queue, job.id, 90, workers)

    done = queue.store.get(job.id)
    assert done.status == "succeeded", done.error
    lines = result_lines(queue, job.id)
    assert [line["file"] for line in lines] == sorted(files)
    assert all(
        line["detections"] == fake_model.prediction("shapes", files[line["file"]])["detections"]
        for line in lines
    )
    # The victim's pictures were predicted again by the survivor: twice predicted, once in the results.
    calls = workers.calls_by()
    by_victim = {name for pid, name in calls if pid == victim.pid}
    assert by_victim and all(not line.get("skipped") for line in lines)
    counts = Counter(name for _, name in calls)
    assert all(counts[name] == 2 for name in by_victim)
    assert held and set(held) <= set(range(job.chunks))


def test_cancel_stops_the_workers_within_seconds(make_queue, workers, tmp_path):
    queue = make_queue(None)
    job, _files = new_job(queue, tmp_path, 100)
    queue.submit(job)
    workers.start(queue.settings, FAKE_MODEL_DELAY_S="0.2")
    wait_for(lambda: len(workers.calls_by()) >= 4, 30, "the first predictions")
    cancelled = queue.store.cancel(job.id)
    assert cancelled.status == "cancelled" and cancelled.finished
    time.sleep(1.5)  # pictures already in flight finish (0.2 s each); no new one starts
    after_stop = len(workers.calls_by())
    time.sleep(2.0)
    assert len(workers.calls_by()) == after_stop < 100
    final = queue.store.get(job.id)
    assert final.status == "cancelled" and final.results == []
    assert not any(queue.store.results_folder(job.id).iterdir())
    assert queue.store.cancel(job.id).finished == cancelled.finished  # an ended job stays as it was


def test_delete_removes_every_file_even_while_workers_run(make_queue, workers, tmp_path):
    queue = make_queue(None)
    job, _files = new_job(queue, tmp_path, 60)
    other, _ = new_job(queue, tmp_path, 3)
    queue.submit(job)
    workers.start(queue.settings, FAKE_MODEL_DELAY_S="0.1")
    wait_for(lambda: len(workers.calls_by()) >= 2, 30, "the first predictions")
    queue.store.delete(job.id)
    folder = queue.settings.jobs_folder / job.id
    assert not folder.exists()
    time.sleep(2.0)  # the worker notices; nothing of the job comes back
    assert not folder.exists()
    leftovers = [p for p in queue.settings.jobs_folder.rglob("*") if job.id in str(p)]
    assert leftovers == []
    assert [j.id for j in queue.store.list()] == [other.id]
    with pytest.raises(JobNotFound):
        queue.store.get(job.id)


def test_an_unavailable_model_server_fails_the_job_after_the_retries(make_queue, workers, tmp_path):
    queue = make_queue(None)
    job, _files = new_job(queue, tmp_path, 20)
    queue.submit(job)
    workers.start(queue.settings, FAKE_MODEL_UNAVAILABLE="1")
    wait_until_ended(queue, job.id, 60, workers)
    failed = queue.store.get(job.id)
    assert failed.status == "failed"
    assert "stayed unavailable (fake model server: connection refused)" in failed.error
    assert "was tried 3 times" in failed.error  # JOB_PREDICT_RETRIES=2: the first try and two more
    assert failed.finished and failed.results == []
    calls = Counter(name for _, name in workers.calls_by())
    assert max(calls.values()) == 3


def test_a_bad_picture_is_skipped_and_the_job_goes_on(make_queue, workers, tmp_path):
    queue = make_queue(None)
    broken = jpeg(99)[:60]  # a JPEG header, then nothing: the archive lists it, the model cannot decode it
    job, files = new_job(queue, tmp_path, 5, {"broken.jpg": broken, "notes.txt": b"not a picture"})
    assert job.progress["total"] == 6
    queue.submit(job)
    workers.start(queue.settings)
    wait_until_ended(queue, job.id, 60, workers)
    done = queue.store.get(job.id)
    assert done.status == "succeeded", done.error
    reasons = {item["file"]: item["reason"] for item in done.to_json()["skipped"]}
    assert set(reasons) == {"broken.jpg", "notes.txt"}
    assert reasons["broken.jpg"].startswith("not a decodable picture")
    assert "not a picture" in reasons["notes.txt"]
    assert done.progress == {"done": 6, "total": 6}
    assert [line["file"] for line in result_lines(queue, job.id)] == sorted(files)


def test_reclaim_queues_again_exactly_the_lost_chunks(make_queue, tmp_path):
    queue = make_queue(None, chunk_size=4)
    job, _ = new_job(queue, tmp_path, 16)  # four chunks
    queue.submit(job)
    assert queue.pending() == 4
    assert queue.reclaim() == []  # everything is queued and waiting: nothing is lost
    queue.huey.flush()  # the queue is lost (a Redis without persistence restarted)
    now = time.time()
    store = queue.store
    store.write_claim(job.id, 0, Claim("elsewhere:1:abc/1", CLAIM_RUNNING, now - 10))  # silent worker
    store.write_claim(job.id, 1, Claim("elsewhere:2:abc/1", CLAIM_RUNNING, now))  # a live one
    store.write_claim(job.id, 2, Claim("submit", CLAIM_QUEUED, now - 10))  # queued, no longer in the queue
    (store.chunk_path(job.id, 3)).write_text("")  # done
    assert sorted(queue.reclaim()) == [(job.id, 0), (job.id, 2)]
    assert queue.pending() == 2
    assert queue.reclaim() == []  # just queued again: not lost twice
    assert store.read_claim(job.id, 0).state == CLAIM_QUEUED


def test_reclaim_finishes_a_job_whose_finish_step_was_lost(make_queue, workers, tmp_path):
    queue = make_queue(None, chunk_size=4)
    job, files = new_job(queue, tmp_path, 8)
    store = queue.store
    # Both chunks were written by a worker that died before it assembled the results.
    for index in range(job.chunks):
        lines = [
            {"file": name, "prediction": fake_model.prediction("shapes", files[name])}
            for name in sorted(files)[index * 4 : index * 4 + 4]
        ]
        store.chunk_path(job.id, index).write_text("".join(json.dumps(line) + "\n" for line in lines))
        old = time.time() - 10
        os.utime(store.chunk_path(job.id, index), (old, old))
    store.update(job.id, lambda j: setattr(j, "status", "running"))
    assert store.read_claim(job.id, FINISH) is None
    workers.start(queue.settings)  # reclaims at start
    wait_until_ended(queue, job.id, 60, workers)
    assert store.get(job.id).status == "succeeded"
    assert [line["file"] for line in result_lines(queue, job.id)] == sorted(files)
    assert workers.calls_by() == []  # nothing was predicted again


# -- the store on its own ----------------------------------------------------------------------------


def test_concurrent_updates_are_serialised_and_progress_only_grows(tmp_path):
    store = JobStore(tmp_path / "jobs")
    upload = store.incoming()
    make_zip(upload, 20)
    job = store.create(model="shapes", archive=upload, chunk_size=4)
    assert not upload.exists() and (store.folder(job.id) / "input.zip").exists()

    def add_many(worker: int) -> None:
        for i in range(25):
            store.update(job.id, lambda j, i=i: j.omitted.append({"file": f"{worker}-{i}", "reason": ""}))

    threads = [threading.Thread(target=add_many, args=(w,)) for w in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(store.get(job.id).omitted) == 150  # no update lost

    store.update(job.id, lambda j: j.advance(0, 3))
    store.update(job.id, lambda j: j.advance(0, 1))  # a chunk redone after a crash counts from 0 again
    store.update(job.id, lambda j: j.advance(1, 99))  # never past the chunk's size
    assert store.get(job.id).progress == {"done": 7, "total": 20}


def test_a_bad_archive_leaves_nothing_behind(tmp_path):
    from web.jobs.archives import ArchiveError

    store = JobStore(tmp_path / "jobs")
    upload = store.incoming()
    upload.write_bytes(b"this is not a zip")
    with pytest.raises(ArchiveError) as error:
        store.create(model="shapes", archive=upload)
    assert error.value.status == 400 and "not a readable zip" in error.value.message
    assert store.list() == [] and not upload.exists()
    assert not any(p.is_file() for p in store.root.rglob("*"))


def test_list_is_newest_first_and_by_owner_and_ids_are_checked(tmp_path):
    store = JobStore(tmp_path / "jobs")
    made = []
    for owner in ("alice", "bob", "alice"):
        upload = store.incoming()
        make_zip(upload, 1)
        made.append(store.create(model="shapes", archive=upload, owner=owner))
        time.sleep(0.01)
    assert [j.id for j in store.list()] == [j.id for j in reversed(made)]
    assert [j.id for j in store.list(owner="alice")] == [made[2].id, made[0].id]
    for bad in ("../etc", made[0].id.upper(), "", made[0].id + "/job.json"):
        with pytest.raises(JobNotFound):
            store.get(bad)
    with pytest.raises(JobNotFound):
        store.result_path(made[0].id, "predictions.jsonl")  # not succeeded: no results yet


def test_expire_and_the_disk_budget(tmp_path):
    store = JobStore(tmp_path / "jobs")
    upload = store.incoming()
    make_zip(upload, 4)
    old = store.create(model="shapes", archive=upload)
    upload = store.incoming()
    make_zip(upload, 4)
    live = store.create(model="shapes", archive=upload)
    store.cancel(old.id)
    used = store.usage_bytes()
    assert used >= (store.folder(old.id) / "input.zip").stat().st_size * 2
    assert not store.would_exceed(used + 100, 100) and store.would_exceed(used + 100, 101)
    assert store.expire(3600) == []  # ended just now
    assert store.expire(3600, now=time.time() + 7200) == [old.id]
    assert [j.id for j in store.list()] == [live.id]  # a job that has not ended is kept
    assert store.usage_bytes() < used


def test_queue_url_picks_the_storage(tmp_path, redis_url):
    from huey import RedisHuey, SqliteHuey

    assert isinstance(make_huey(None, tmp_path / "jobs"), SqliteHuey)
    assert (tmp_path / "jobs" / "queue.db").exists()
    assert isinstance(make_huey(redis_url, tmp_path / "jobs"), RedisHuey)
    with pytest.raises(ValueError, match="JOB_QUEUE_URL must be redis://"):
        make_huey("amqp://localhost", tmp_path)
    settings = JobSettings.from_env({"JOBS_FOLDER": str(tmp_path), "JOB_STALE_S": "5", "JOB_CHUNK_SIZE": "3"})
    assert (settings.jobs_folder, settings.stale_s, settings.chunk_size, settings.queue_url) == (
        tmp_path,
        5.0,
        3,
        None,
    )
    with pytest.raises(ValueError, match="JOB_CHUNK_SIZE"):
        JobSettings.from_env({"JOB_CHUNK_SIZE": "many"})
    with pytest.raises(ValueError, match="JOB_PICTURES_IN_FLIGHT"):
        JobSettings.from_env({"JOB_PICTURES_IN_FLIGHT": "0"})


def test_sigterm_lets_running_chunks_end_and_another_worker_takes_over(make_queue, workers, tmp_path):
    queue = make_queue(None)
    job, files = new_job(queue, tmp_path, 40)
    queue.submit(job)
    first = workers.start(queue.settings, FAKE_MODEL_DELAY_S="0.1")
    wait_for(lambda: len(workers.calls_by()) >= 3, 30, "the first predictions")
    first.terminate()
    assert first.wait(15) == 0, workers.logs()[-3000:]
    store = queue.store
    # What it had begun, it finished: no chunk is left claimed by a worker that is gone.
    for index in range(job.chunks):
        claim = store.read_claim(job.id, index)
        if claim and f":{first.pid}:" in claim.worker:
            assert store.chunk_finished(job.id, index), f"chunk {index} cut short"
    assert store.get(job.id).status == "running"
    workers.start(queue.settings)
    wait_until_ended(queue, job.id, 60, workers)
    assert store.get(job.id).status == "succeeded"
    assert [line["file"] for line in result_lines(queue, job.id)] == sorted(files)
    calls = Counter(name for _, name in workers.calls_by())
    assert set(calls) == set(files) and set(calls.values()) == {1}  # nothing predicted twice


def test_other_job_kinds_get_their_own_finisher_and_unknown_ones_fail(tmp_path, monkeypatch):
    from web.jobs import runner as runners
    from web.jobs.runner import Assembly, Runner

    settings = job_settings(tmp_path, None, chunk_size=2)
    store = JobStore(settings.jobs_folder)
    seen: list[str] = []

    def report(assembly: Assembly) -> dict:
        seen.extend(line["file"] for line in assembly.lines())
        path = assembly.folder / "report.json"
        path.write_text(json.dumps({"images": len(seen)}))
        return {"report.json": path}

    runner = Runner(store, settings, fake_model.Predictor(), finishers={"evaluate": report})
    jobs = {}
    for kind in ("evaluate", "video"):
        upload = store.incoming()
        files = make_zip(upload, 5)
        jobs[kind] = store.create(model="shapes", archive=upload, kind=kind, chunk_size=2)
        for index in reversed(range(jobs[kind].chunks)):  # in any order: the last one to end finishes
            runner.run_chunk(jobs[kind].id, index)
    evaluated = store.get(jobs["evaluate"].id)
    assert evaluated.status == "succeeded" and evaluated.results == ["report.json"]
    assert seen == sorted(files)  # the records in picture order
    assert json.loads(store.result_path(evaluated.id, "report.json").read_text()) == {"images": 5}
    video = store.get(jobs["video"].id)  # a streamed kind, handed a zip instead of a probed video
    assert video.status == "failed" and "start it again with kind=video" in video.error
    assert str(tmp_path) not in video.error

    monkeypatch.delitem(runners.FINISHERS, "predict")  # a worker that does not know a kind
    upload = store.incoming()
    make_zip(upload, 2)
    job = store.create(model="shapes", archive=upload, chunk_size=2)
    Runner(store, settings, fake_model.Predictor()).run_chunk(job.id, 0)
    failed = store.get(job.id)
    assert failed.status == "failed" and failed.error == "this worker cannot finish 'predict' jobs"


def test_progress_grows_within_a_chunk(make_queue, workers, tmp_path):
    queue = make_queue(None, chunk_size=40)
    job, _files = new_job(queue, tmp_path, 40)  # one chunk: about 2 s at 2 in flight, 0.1 s each
    queue.submit(job)
    workers.start(queue.settings, FAKE_MODEL_DELAY_S="0.1")
    seen = wait_until_ended(queue, job.id, 60, workers)
    assert queue.store.get(job.id).status == "succeeded"
    assert any(0 < done < 40 for done in seen), "progress moved only when the chunk ended"
    assert seen == sorted(seen) and seen[-1] == 40
