"""The process: tensorflow_model_server's flags, refusals, failed starts and a clean SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.model_server import (
    REPO_ROOT,
    ModelServerStartError,
    free_port,
    model_server_process,
    running_model_server,
)
from tests.tf_server.conftest import install_version
from tests.tf_server.grpc_client import image_input, serving_client, to_ndarray

PROCESS_TIMEOUT_S = 120


def run_server(*flags: str) -> subprocess.CompletedProcess[str]:
    """Run `python -m tf_server` to completion (for flags and starts that must fail)."""
    return subprocess.run(
        [sys.executable, "-m", "tf_server", *flags],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=PROCESS_TIMEOUT_S,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )


def test_help_lists_the_flags() -> None:
    result = run_server("--help")
    assert result.returncode == 0
    for flag in ("--port", "--model_config_file", "--model_name", "--model_base_path",
                 "--model_config_file_poll_wait_seconds", "--file_system_poll_wait_seconds",
                 "--enable_model_warmup", "--rest_api_port"):  # fmt: skip
        assert flag in result.stdout


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--foo=1"], "unknown command line flag 'foo'"),
        (["--model_base_path=/m", "--port=eighty"], "invalid value for --port"),
        (["--model_base_path=/m", "--enable_model_warmup=maybe"], "invalid value for --enable_model_warmup"),
        (["--port=8500"], "Both --model_base_path and --model_config_file are empty"),
    ],
)
def test_bad_command_lines_are_refused_with_exit_code_2(flags: list[str], message: str) -> None:
    result = run_server(*flags)
    assert result.returncode == 2
    assert message in result.stderr
    if "unknown" in message:
        assert "--model_config_file" in result.stderr  # the supported flags are listed


def test_flags_of_the_real_binary_are_accepted_and_sigterm_stops_cleanly(
    model_bank: Path, tmp_path: Path
) -> None:
    install_version(model_bank, tmp_path / "tiny", 2)  # version 2 has warmup records
    flags = (
        "--model_name=tiny",
        f"--model_base_path={tmp_path / 'tiny'}",
        "--enable_model_warmup=false",
        "--enable_batching",
        f"--batching_parameters_file={REPO_ROOT / 'tf_server' / 'batching_parameters.txt'}",
        f"--monitoring_config_file={REPO_ROOT / 'tf_server' / 'monitoring.config'}",
        "--grpc_max_threads=8",
        "--tensorflow_intra_op_parallelism=1",
        "--tensorflow_inter_op_parallelism",
        "1",
        "--per_process_gpu_memory_fraction=0.5",
        "--file_system_poll_wait_seconds",
        "1",
    )
    with model_server_process(*flags) as server, serving_client(server.address) as client:
        response = client.predict("tiny", image_input())
        assert int(to_ndarray(response.outputs["call_count"])[0]) == 1  # warmup was switched off
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=PROCESS_TIMEOUT_S) == 0
        log = server.log()
    assert f"Running gRPC ModelServer at {server.address} ..." in log
    assert "Flag --per_process_gpu_memory_fraction is accepted for compatibility" in log
    assert "Received SIGTERM, shutting down" in log and "Server stopped" in log


def test_a_broken_config_fails_the_start_like_tf_serving(tmp_path: Path) -> None:
    config = tmp_path / "models.config"
    config.write_text('model_config_list { config { name: "x" base_path: "/m" model_platform: "tensorflow" ')
    result = run_server(f"--port={free_port()}", f"--model_config_file={config}")
    assert result.returncode == 255
    assert "Failed to start server. Error: Invalid protobuf file" in result.stderr
    assert "Error parsing text-format tensorflow.serving.ModelServerConfig: " in result.stderr  # as upstream


def test_a_config_without_model_platform_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "models.config"
    config.write_text('model_config_list { config { name: "x" base_path: "/m" } }')
    result = run_server(f"--port={free_port()}", f"--model_config_file={config}")
    assert result.returncode == 255
    assert "model_platform" in result.stderr


def test_labels_need_available_versions_unless_allowed(model_bank: Path, tmp_path: Path) -> None:
    install_version(model_bank, tmp_path / "models" / "tiny", 1)
    config = tmp_path / "models.config"
    config.write_text(
        'model_config_list { config { name: "tiny" base_path: "models/tiny" model_platform: "tensorflow" '
        'version_labels { key: "stable" value: 1 } } }'
    )
    refused = run_server(f"--port={free_port()}", f"--model_config_file={config}")
    assert refused.returncode == 255
    assert "FAILED_PRECONDITION: Request to assign label to version 1 of model tiny" in refused.stderr

    allowed = ("--allow_version_labels_for_unavailable_models=true", f"--model_config_file={config}")
    with running_model_server(*allowed) as address, serving_client(address) as client:
        assert client.predict("tiny", image_input(), label="stable").model_spec.version.value == 1


def test_the_helper_reports_a_failed_start_with_the_servers_output(tmp_path: Path) -> None:
    with pytest.raises(ModelServerStartError, match="Failed to start server"):
        with running_model_server(f"--model_config_file={tmp_path / 'missing.config'}"):
            pass
