"""A C load generator as a cross-check of the Python one: `wrk` POSTing the same multipart upload.

The Python closed loop pays for its own HTTP client and the GIL on the same cores as the gateway;
wrk (one thread, epoll, C) costs far less per request, so if both report about the same gateway
throughput, the Python figure is not limited by its client. A Lua script (written to the
benchmark's temp dir) reads the body from a file and sets the method and Content-Type. wrk counts
every answer it reads, so the number of non-2xx answers and socket errors is checked too.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from pathlib import Path

from bench import cpus as cpu_modes

_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}
_TIME = r"([\d.]+)(us|ms|s|m|h)"
NOT_INSTALLED = "wrk is not installed (Debian package `wrk`; `make bench` installs it)"


def executable() -> str | None:
    return shutil.which("wrk")


def lua_script(body_path: Path, content_type: str) -> str:
    """wrk's request: POST, the body read in binary from `body_path`, the given Content-Type."""
    for text in (str(body_path), content_type):
        if "]==]" in text or "\n" in text:
            raise ValueError(f"cannot quote {text!r} in a Lua long string")
    return (f'local f = assert(io.open([==[{body_path}]==], "rb"))\n'
            "local body = f:read(\"*a\")\n"
            "f:close()\n"
            'wrk.method = "POST"\n'
            "wrk.body = body\n"
            f'wrk.headers["Content-Type"] = [==[{content_type}]==]\n')


def write_script(work_dir: Path, name: str, body: bytes, content_type: str) -> Path:
    body_path = work_dir / f"wrk_{name}.body"
    body_path.write_bytes(body)
    script = work_dir / f"wrk_{name}.lua"
    script.write_text(lua_script(body_path, content_type))
    return script


def _ms(value: str, unit: str) -> float:
    return float(value) * _UNITS_MS[unit]


def parse_output(text: str) -> dict:
    """Requests/sec, latency (avg, max, percentiles in ms), request count, non-2xx answers and
    socket errors from `wrk --latency` output. Raises ValueError when there is no Requests/sec line."""
    rps = re.search(r"^Requests/sec:\s+([\d.]+)\s*$", text, re.M)
    if rps is None:
        raise ValueError("no 'Requests/sec:' line in wrk's output")
    result: dict = {"requests_per_s": float(rps.group(1)), "latency_ms": {}}
    stats = re.search(rf"^\s*Latency\s+{_TIME}\s+{_TIME}\s+{_TIME}", text, re.M)
    if stats:
        result["latency_ms"]["avg"] = round(_ms(stats.group(1), stats.group(2)), 3)
        result["latency_ms"]["stdev"] = round(_ms(stats.group(3), stats.group(4)), 3)
        result["latency_ms"]["max"] = round(_ms(stats.group(5), stats.group(6)), 3)
    for pct, value, unit in re.findall(rf"^\s+(\d+(?:\.\d+)?)%\s+{_TIME}\s*$", text, re.M):
        result["latency_ms"][f"p{pct}"] = round(_ms(value, unit), 3)
    done = re.search(rf"^\s*(\d+) requests in {_TIME}", text, re.M)
    if done:
        result["requests"] = int(done.group(1))
        result["duration_s"] = round(_ms(done.group(2), done.group(3)) / 1000.0, 3)
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    result["non_2xx"] = int(non2xx.group(1)) if non2xx else 0
    socket = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    result["socket_errors"] = (dict(zip(("connect", "read", "write", "timeout"),
                                        (int(x) for x in socket.groups()), strict=True))
                               if socket else {"connect": 0, "read": 0, "write": 0, "timeout": 0})
    result["ok"] = result["non_2xx"] == 0 and not any(result["socket_errors"].values())
    return result


def run(url: str, script: Path, connections: int, duration_s: int,
        cpus: frozenset[int] | None = None) -> dict:
    """`wrk -t1 -c<connections> -d<duration>s --latency -s script url`, on `cpus` when given
    (taskset when installed; otherwise wrk inherits the benchmark's main-thread mask, which the
    pinned mode has already set). Never raises: a failure is returned as {"error": ...}."""
    binary = executable()
    if binary is None:
        return {"error": NOT_INSTALLED}
    command = [binary, "-t1", f"-c{connections}", f"-d{duration_s}s", "--latency", "-s", str(script), url]
    taskset = shutil.which("taskset")
    if cpus and taskset:
        command = [taskset, "-c", cpu_modes.format_cpus(cpus), *command]
    try:
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    except OSError as exc:
        return {"error": f"wrk did not start: {exc}", "command": " ".join(command)}
    time.sleep(0.3)  # after taskset's exec: the mask wrk actually runs with
    allowed = cpu_modes.allowed_list(proc.pid)
    try:
        out, _ = proc.communicate(timeout=duration_s + 60)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        return {"error": f"wrk did not finish within {duration_s + 60}s", "command": " ".join(command)}
    text = out.decode(errors="replace")
    base = {"command": " ".join(command[command.index(binary):]), "cpus_allowed": allowed,
            "connections": connections, "output": text[-3000:]}
    if proc.returncode != 0:
        return {**base, "error": f"wrk exited with code {proc.returncode}: {text.strip()[-500:]}"}
    try:
        return {**base, **parse_output(text)}
    except ValueError as exc:
        return {**base, "error": str(exc)}
