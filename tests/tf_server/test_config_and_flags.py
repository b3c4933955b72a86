"""The TensorFlow-free parts of the model server: command line, models.config, version folders."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.model_server import REPO_ROOT
from tf_server.flags import FlagError, ServerOptions, parse_flags, validate
from tf_server.model_config import (
    ConfigError,
    VersionPolicy,
    folder_fingerprint,
    parse_config_text,
    single_model,
    versions_on_disk,
)


def test_flags_take_both_spellings_and_tf_servings_defaults() -> None:
    options = parse_flags(
        ["--port", "9000", "--model_config_file=/m/models.config", "--enable_model_warmup=false"]
    )
    assert options.port == 9000
    assert options.model_config_file == "/m/models.config"
    assert options.enable_model_warmup is False
    defaults = ServerOptions()
    assert (defaults.port, defaults.model_name, defaults.file_system_poll_wait_seconds) == (
        8500,
        "default",
        1,
    )
    assert defaults.enable_model_warmup is True and defaults.model_config_file_poll_wait_seconds == 0


def test_bare_boolean_flags_mean_true_and_do_not_swallow_the_next_flag() -> None:
    options = parse_flags(["--enable_batching", "--model_base_path", "/m"])
    assert options.enable_batching is True and options.model_base_path == "/m"


def test_flags_of_the_real_binary_are_ignored_not_refused() -> None:
    options = parse_flags(["--per_process_gpu_memory_fraction=0.5", "--num_load_threads", "4", "--port=1"])
    assert options.ignored == ("per_process_gpu_memory_fraction", "num_load_threads") and options.port == 1


def test_rest_socket_and_monitoring_flags_are_served() -> None:
    options = parse_flags(
        ["--rest_api_port=8501", "--monitoring_config_file", "/m.config", "--grpc_socket_path=/tmp/s.sock"]
    )
    assert (options.rest_api_port, options.monitoring_config_file, options.grpc_socket_path) == (
        8501,
        "/m.config",
        "/tmp/s.sock",
    )
    assert options.ignored == ()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--bogus=1"], "unknown command line flag 'bogus'"),
        (["--port=x"], "invalid value for --port"),
        (["--model_name"], "flag --model_name needs a value"),
        (["positional"], "unexpected argument 'positional'"),
    ],
)
def test_bad_flags_name_the_problem(argv: list[str], message: str) -> None:
    with pytest.raises(FlagError, match=message):
        parse_flags(argv)


def test_validation_mirrors_tf_serving() -> None:
    with pytest.raises(FlagError, match="Both --model_base_path and --model_config_file are empty"):
        validate(parse_flags([]))
    with pytest.raises(
        FlagError, match="--batching_parameters_file is set without setting --enable_batching"
    ):
        validate(parse_flags(["--model_base_path=/m", "--batching_parameters_file=/b.txt"]))
    validate(parse_flags(["--model_base_path=/m", "--enable_batching", "--batching_parameters_file=/b.txt"]))


CONFIG = """
model_config_list {
  config { name: "a" base_path: "models/a" model_platform: "tensorflow" }
  config {
    name: "b" base_path: "/abs/b" model_platform: "tensorflow"
    model_version_policy { specific { versions: 1 versions: 3 } }
    version_labels { key: "stable" value: 1 }
  }
  config {
    name: "c" base_path: "../c" model_platform: "tensorflow"
    model_version_policy { latest { num_versions: 2 } }
  }
  config { name: "d" base_path: "d" model_platform: "tensorflow" model_version_policy { all {} } }
}
"""


def test_models_config_is_read_with_policies_labels_and_paths_relative_to_the_file() -> None:
    models = {m.name: m for m in parse_config_text(CONFIG, Path("/srv/tf_server"))}
    assert models["a"].base_path == Path("/srv/tf_server/models/a")
    assert models["b"].base_path == Path("/abs/b")
    assert models["c"].base_path == Path("/srv/c")
    assert models["a"].policy == VersionPolicy()
    assert models["b"].policy == VersionPolicy(kind="specific", versions=frozenset({1, 3}))
    assert models["b"].version_labels == {"stable": 1}
    assert models["c"].policy == VersionPolicy(kind="latest", num_versions=2)
    assert models["d"].policy.kind == "all"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "model_config_list { config { name: 'a' base_path: 'x' model_platform: 'tensorflow' }",
            "Invalid protobuf",
        ),
        ("model_config_list { config { nme: 'a' } }", "Invalid protobuf"),
        ("model_config_list { config { name: 'a' base_path: 'x' } }", "model_platform"),
        (
            "model_config_list { config { name: 'a' base_path: 'x' model_platform: 'onnx' } }",
            "unsupported platform",
        ),
        (
            "model_config_list { config { name: 'a' base_path: 'x' model_platform: 'tensorflow' } "
            "config { name: 'a' base_path: 'y' model_platform: 'tensorflow' } }",
            "Illegal to list model a multiple times",
        ),
    ],
)
def test_bad_configs_are_refused_with_a_reason(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config_text(text, Path("/srv"))


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        (VersionPolicy(), {7}),
        (VersionPolicy(kind="latest", num_versions=2), {3, 7}),
        (VersionPolicy(kind="all"), {1, 3, 7}),
        (VersionPolicy(kind="specific", versions=frozenset({1, 5})), {1}),
    ],
)
def test_version_policies_pick_from_the_versions_on_disk(policy: VersionPolicy, expected: set[int]) -> None:
    assert policy.select([1, 3, 7]) == expected
    assert policy.select([]) == set()


def test_only_all_digit_folders_with_a_saved_model_are_versions(tmp_path: Path) -> None:
    for name in ("1", "20", "003", "v4", "5.tmp", "6"):
        (tmp_path / name).mkdir()
    for name in ("1", "20", "003", "v4", "5.tmp"):
        (tmp_path / name / "saved_model.pb").write_bytes(b"")
    (tmp_path / "7").write_text("a file, not a folder")
    assert sorted(versions_on_disk(tmp_path)) == [1, 3, 20]
    with pytest.raises(OSError):
        versions_on_disk(tmp_path / "missing")


def test_a_folder_fingerprint_changes_while_files_are_written(tmp_path: Path) -> None:
    (tmp_path / "saved_model.pb").write_bytes(b"x")
    before = folder_fingerprint(tmp_path)
    assert folder_fingerprint(tmp_path) == before
    (tmp_path / "variables").mkdir()
    (tmp_path / "variables" / "variables.index").write_bytes(b"yy")
    assert folder_fingerprint(tmp_path) != before


def test_single_model_form_resolves_against_the_working_directory() -> None:
    [model] = single_model("m", "relative/m")
    assert model.base_path == Path.cwd() / "relative" / "m"


def test_flag_and_config_parsing_do_not_load_tensorflow() -> None:
    code = "import sys, tf_server.flags, tf_server.model_config, tf_server.model_manager\n"
    code += "print('tensorflow' in sys.modules)"
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "False"


def test_the_server_imports_neither_the_gateway_nor_a_web_framework() -> None:
    # The REST API runs on tf_server's own HTTP server (http_server.py), not on werkzeug or flask.
    code = "import sys, tf_server.server\n"
    code += "print(sorted({m.split('.')[0] for m in sys.modules} & {'web', 'werkzeug', 'flask'}))"
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout.strip() == "[]"
