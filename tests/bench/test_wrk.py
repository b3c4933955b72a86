"""bench.wrk: reading `wrk --latency` output (real captures) and the Lua script it runs."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from bench import wrk
from tools.processes import free_port

DATA = Path(__file__).parent / "data"


def capture(name: str) -> str:
    return (DATA / name).read_text()


def test_a_run_against_the_gateway() -> None:
    result = wrk.parse_output(capture("wrk_gateway.txt"))
    assert result["requests_per_s"] == 43.78
    assert result["latency_ms"] == {"avg": 89.96, "stdev": 19.86, "max": 226.97,
                                    "p50": 86.79, "p75": 96.41, "p90": 110.61, "p99": 135.6}
    assert result["requests"] == 132 and result["duration_s"] == 3.02
    assert result["non_2xx"] == 0
    assert result["socket_errors"] == {"connect": 0, "read": 0, "write": 0, "timeout": 0}
    assert result["ok"] is True


def test_non_2xx_answers_are_counted_and_fail_the_run() -> None:
    result = wrk.parse_output(capture("wrk_non2xx.txt"))  # POST to a server that answers 501
    assert result["non_2xx"] == 615 and result["requests"] == 615
    assert result["requests_per_s"] == 612.49
    assert result["latency_ms"]["p50"] == 6.22 and result["latency_ms"]["max"] == 17.89
    assert result["ok"] is False


def test_socket_errors_fail_the_run() -> None:
    result = wrk.parse_output(capture("wrk_socket_errors.txt"))  # a server that closes or never answers
    assert result["socket_errors"] == {"connect": 0, "read": 4, "write": 0, "timeout": 0}
    assert result["requests"] == 0 and result["requests_per_s"] == 0.0
    assert result["ok"] is False


def test_output_without_a_rate_is_an_error() -> None:
    with pytest.raises(ValueError, match="Requests/sec"):
        wrk.parse_output(capture("wrk_refused.txt"))  # "unable to connect ... Connection refused"


@pytest.mark.parametrize(("text", "ms"), [("500.00us", 0.5), ("1.50ms", 1.5), ("2.00s", 2000.0),
                                          ("1.00m", 60000.0)])
def test_time_units(text: str, ms: float) -> None:
    output = capture("wrk_gateway.txt").replace("  86.79ms", "  " + text)
    assert wrk.parse_output(output)["latency_ms"]["p50"] == pytest.approx(ms)


def test_lua_script_posts_the_body_file(tmp_path: Path) -> None:
    body = b"--b\r\n\x00\xff binary\r\n--b--\r\n"
    script = wrk.write_script(tmp_path, "m", body, "multipart/form-data; boundary=b")
    text = script.read_text()
    assert 'wrk.method = "POST"' in text
    assert f'io.open([==[{tmp_path / "wrk_m.body"}]==], "rb")' in text
    assert 'wrk.headers["Content-Type"] = [==[multipart/form-data; boundary=b]==]' in text
    assert (tmp_path / "wrk_m.body").read_bytes() == body


def test_lua_script_refuses_what_it_cannot_quote(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        wrk.lua_script(tmp_path / "a]==]b", "image/jpeg")


@pytest.mark.skipif(shutil.which("wrk") is None, reason="needs wrk (Debian package wrk)")
def test_wrk_runs_the_script(tmp_path: Path) -> None:
    """wrk loads the script and reads the body file: it reports a Lua error (and carries on to
    connect) when it cannot, so the body file is removed for the second run to show the check works."""
    script = wrk.write_script(tmp_path, "m", b"x", "image/jpeg")

    def output() -> str:
        proc = subprocess.run(["wrk", "-t1", "-c1", "-d1s", "-s", str(script), f"http://127.0.0.1:{free_port()}/"],
                              capture_output=True, text=True, timeout=30)
        return proc.stdout + proc.stderr

    first = output()
    assert "unable to connect" in first and str(script) not in first
    (tmp_path / "wrk_m.body").unlink()
    assert "No such file or directory" in output()
