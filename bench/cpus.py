"""CPU placement and CPU time of the benchmarked processes, from /proc (Linux only).

Two CPU modes:

* ``shared``: model server, gateway, forwarder and load generator may all run on every usable CPU
  (how the stack runs on one small machine, and how the processes start).
* ``pinned``: the model server on the first usable CPU, everything else (gateway and forwarder
  workers, the benchmark's own threads, wrk) on the second, as when TF Serving has a host of its
  own (a GPU host) and the gateway's CPU does not compete with inference.

``os.sched_setaffinity`` changes one thread (a Linux tid), so a running process is moved by
setting every tid in ``/proc/<pid>/task`` (and those of its children: gunicorn's workers). Threads
created later inherit the mask of the thread that creates them, so a process moved completely stays
moved; the walk repeats until a pass finds every thread already on the wanted CPUs (a thread
started during a pass by a thread not yet moved would otherwise keep the old mask).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from bench import stack

SHARED, PINNED = "shared", "pinned"
MODES = (SHARED, PINNED)
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def usable_cpus() -> list[int]:
    """The CPUs this process may run on (a container's cpuset, taskset), sorted."""
    return sorted(os.sched_getaffinity(0))


@dataclass(frozen=True)
class Placement:
    """Which CPUs each side of the stack gets in one mode."""

    mode: str
    model_server: frozenset[int]
    clients: frozenset[int]  # gateway and forwarder workers, the load generators

    def describe(self) -> str:
        if self.mode == SHARED:
            return f"shared: everything on CPUs {format_cpus(self.clients)}"
        return (f"pinned: model server on CPU {format_cpus(self.model_server)}, gateway/forwarder workers "
                f"and load generators on CPU {format_cpus(self.clients)}")


def placement(mode: str, cpus: list[int]) -> Placement | None:
    """The placement of `mode` on `cpus`; None when pinned mode needs 2 CPUs and fewer are usable."""
    if mode == SHARED:
        return Placement(SHARED, frozenset(cpus), frozenset(cpus))
    if mode == PINNED:
        if len(cpus) < 2:
            return None
        return Placement(PINNED, frozenset({cpus[0]}), frozenset({cpus[1]}))
    raise ValueError(f"unknown CPU mode {mode!r}: expected one of {', '.join(MODES)}")


def format_cpus(cpus: frozenset[int] | set[int] | list[int]) -> str:
    """{0, 1, 2, 5} -> "0-2,5" (the kernel's list format)."""
    values = sorted(cpus)
    parts: list[str] = []
    start = prev = None
    for cpu in values:
        if prev is not None and cpu == prev + 1:
            prev = cpu
            continue
        if start is not None:
            parts.append(str(start) if start == prev else f"{start}-{prev}")
        start = prev = cpu
    if start is not None:
        parts.append(str(start) if start == prev else f"{start}-{prev}")
    return ",".join(parts)


def thread_ids(pid: int) -> list[int]:
    """Every live thread (tid) of process `pid`; empty when it is gone."""
    try:
        return sorted(int(entry.name) for entry in Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return []


def descendants(pid: int) -> list[int]:
    """`pid`'s children, grandchildren, ... (gunicorn master -> workers)."""
    by_parent = stack.children_by_parent()
    found, todo = [], [pid]
    while todo:
        for child in by_parent.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return sorted(found)


def move_process(pid: int, cpus: frozenset[int], passes: int = 10, children: bool = True) -> dict:
    """Set the affinity of every thread of `pid` (and of its descendants, unless `children` is
    False) to `cpus`. Returns how many processes and threads it found and whether all of them
    ended on `cpus`.
    """
    wanted = set(cpus)
    processes: list[int] = []
    tids: list[int] = []
    for _ in range(passes):
        processes = [pid, *(descendants(pid) if children else [])]
        tids = [tid for p in processes for tid in thread_ids(p)]
        moved = 0
        for tid in tids:
            try:
                if os.sched_getaffinity(tid) != wanted:
                    os.sched_setaffinity(tid, wanted)
                    moved += 1
            except (ProcessLookupError, PermissionError):  # a thread that just ended
                continue
        if moved == 0:
            break
    return {"processes": len(processes), "threads": len(tids), "cpus": format_cpus(wanted),
            "all_moved": all(_affinity(tid) in (None, wanted) for tid in tids)}


def move_self(cpus: frozenset[int]) -> dict:
    """Move the benchmark process itself: the main thread first (threads it starts inherit the
    mask), then every other thread it already has (gRPC's own threads among them). Not its
    children: the model server and the gunicorn masters are moved on their own."""
    os.sched_setaffinity(0, set(cpus))
    return move_process(os.getpid(), cpus, children=False)


def _affinity(tid: int) -> set[int] | None:
    try:
        return os.sched_getaffinity(tid)
    except (ProcessLookupError, PermissionError):
        return None


def allowed_list(pid: int) -> str | None:
    """`Cpus_allowed_list` of a process (its main thread) from /proc/<pid>/status."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("Cpus_allowed_list:"):
                return line.split(":", 1)[1].strip()
    except OSError:
        return None
    return None


# ---------------------------------------------------------------------------------------------
# CPU time


def parse_stat_cpu_ticks(stat: str) -> int:
    """utime + stime (fields 14 and 15 of /proc/<pid>/stat, in clock ticks): every thread of the
    process, live and ended. The command name (field 2) may hold spaces and parentheses, so the
    fields are counted from the last ')'."""
    fields = stat[stat.rindex(")") + 2:].split()
    # fields[0] is field 3 (state): field n is fields[n - 3]
    return int(fields[14 - 3]) + int(fields[15 - 3])


def process_cpu_s(pid: int) -> float | None:
    """CPU seconds (user + system) `pid` has used so far, or None when it is gone."""
    try:
        return parse_stat_cpu_ticks(Path(f"/proc/{pid}/stat").read_text()) / CLOCK_TICKS
    except (OSError, ValueError, IndexError):
        return None


def workers_cpu_s(pids: list[int]) -> dict[int, float]:
    """CPU seconds of each process in `pids` that still exists."""
    readings = {pid: process_cpu_s(pid) for pid in pids}
    return {pid: value for pid, value in readings.items() if value is not None}
