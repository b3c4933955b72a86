"""bench.cpus: CPU time from /proc/<pid>/stat, and moving whole process trees between CPUs."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from bench import cpus

# A child that names itself like a gunicorn worker with a space and parentheses (the name is field 2 of
# /proc/<pid>/stat, the fields after it are counted from the last ')'), burns CPU and reports its own
# os.times(), then waits to be read.
NAMED_BURNER = textwrap.dedent("""
    import os, sys, time
    with open("/proc/self/comm", "w") as comm:
        comm.write("gun: (w 1) x")
    end = time.process_time() + 0.3
    while time.process_time() < end:
        sum(range(1000))
    t = os.times()
    print(t.user + t.system, flush=True)
    sys.stdin.read()
""")


def test_cpu_time_of_a_process_with_parentheses_in_its_name() -> None:
    proc = subprocess.Popen([sys.executable, "-c", NAMED_BURNER], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        own = float(proc.stdout.readline())
        assert ") x)" in Path(f"/proc/{proc.pid}/stat").read_text()
        reading = cpus.process_cpu_s(proc.pid)
        assert reading is not None and own >= 0.3
        assert reading == pytest.approx(own, abs=3 / cpus.CLOCK_TICKS)
    finally:
        proc.kill()
        proc.wait()


def test_own_cpu_time_matches_os_times() -> None:
    deadline = time.process_time() + 0.3
    while time.process_time() < deadline:  # burn some CPU in this process
        sum(range(1000))
    reading = cpus.process_cpu_s(os.getpid())
    times = os.times()
    assert reading is not None
    assert reading == pytest.approx(times.user + times.system, abs=3 / cpus.CLOCK_TICKS)


def test_a_gone_process_reads_none() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    assert cpus.process_cpu_s(proc.pid) is None
    assert cpus.workers_cpu_s([proc.pid]) == {}


@pytest.mark.parametrize(("values", "text"), [([0, 1], "0-1"), ([3], "3"), ([0, 1, 2, 5, 7, 8], "0-2,5,7-8"),
                                              ([], "")])
def test_format_cpus(values: list[int], text: str) -> None:
    assert cpus.format_cpus(values) == text


def test_placement() -> None:
    assert cpus.placement("pinned", [0]) is None  # one usable CPU: pinned mode is skipped
    pinned = cpus.placement("pinned", [2, 3, 5])
    assert pinned is not None
    assert pinned.model_server == {2} and pinned.clients == {3}
    shared = cpus.placement("shared", [0, 1])
    assert shared is not None and shared.model_server == shared.clients == {0, 1}
    with pytest.raises(ValueError):
        cpus.placement("half", [0, 1])


# A process with three threads that starts a child with two threads (like a gunicorn master and worker).
TREE = textwrap.dedent("""
    import subprocess, sys, threading, time
    child = subprocess.Popen([sys.executable, "-c",
        "import threading, time; threading.Thread(target=time.sleep, args=(60,), daemon=True).start(); "
        "print('child', flush=True); time.sleep(60)"], stdout=sys.stdout)
    for _ in range(2):
        threading.Thread(target=time.sleep, args=(60,), daemon=True).start()
    time.sleep(60)
""")


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs 2 usable CPUs")
def test_move_process_moves_every_thread_of_the_tree(tmp_path: Path) -> None:
    usable = cpus.usable_cpus()
    target = frozenset({usable[1]})
    proc = subprocess.Popen([sys.executable, "-c", TREE], stdout=subprocess.PIPE, text=True)
    child = None
    try:
        assert proc.stdout.readline().strip() == "child"
        deadline = time.monotonic() + 10
        while len(cpus.thread_ids(proc.pid)) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        (child,) = cpus.descendants(proc.pid)
        tids = cpus.thread_ids(proc.pid) + cpus.thread_ids(child)
        assert len(tids) >= 5
        assert all(os.sched_getaffinity(tid) == set(usable) for tid in tids)

        moved = cpus.move_process(proc.pid, target)
        assert moved["processes"] == 2 and moved["threads"] == len(tids) and moved["all_moved"]
        assert all(os.sched_getaffinity(tid) == set(target) for tid in tids)
        assert cpus.allowed_list(child) == cpus.format_cpus(target)

        cpus.move_process(proc.pid, frozenset(usable), children=False)  # the parent alone
        assert all(os.sched_getaffinity(tid) == set(usable) for tid in cpus.thread_ids(proc.pid))
        assert all(os.sched_getaffinity(tid) == set(target) for tid in cpus.thread_ids(child))
    finally:
        if child is not None:
            os.kill(child, 9)
        proc.kill()
        proc.wait()
