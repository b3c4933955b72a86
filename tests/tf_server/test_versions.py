"""Model versions over time: roll-out while serving, warmup, broken versions, config reloads."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import grpc
import numpy as np

from tests.support.model_server import model_server_process
from tests.tf_server.conftest import WARMUP_RECORDS, install_version
from tests.tf_server.grpc_client import image_input, rpc_error, serving_client, to_ndarray, wait_for
from web.serving.protos.tensorflow_serving.apis import model_management_pb2


def _single_model_flags(base_path: Path, *extra: str) -> tuple[str, ...]:
    return (
        "--model_name=tiny",
        f"--model_base_path={base_path}",
        "--file_system_poll_wait_seconds=1",
        *extra,
    )


class _Traffic(threading.Thread):
    """Predicts in a loop; records (version, call_count) of every answer and every error."""

    def __init__(self, address: str) -> None:
        super().__init__(daemon=True)
        self.address = address
        self.answers: list[tuple[int, int]] = []
        self.errors: list[str] = []
        self.stop = threading.Event()

    def run(self) -> None:
        with serving_client(self.address) as client:
            while not self.stop.is_set():
                try:
                    response = client.predict("tiny", image_input())
                except grpc.RpcError as error:
                    self.errors.append(f"{error.code()}: {error.details()}")
                    continue
                count = int(to_ndarray(response.outputs["call_count"])[0])
                self.answers.append((response.model_spec.version.value, count))


def test_new_version_is_warmed_up_then_serves_and_the_old_one_retires(
    model_bank: Path, tmp_path: Path
) -> None:
    base = tmp_path / "tiny"
    install_version(model_bank, base, 1)
    with model_server_process(*_single_model_flags(base)) as server, serving_client(server.address) as client:
        assert client.status("tiny") == {1: "AVAILABLE"}
        traffic = _Traffic(server.address)
        traffic.start()
        try:
            wait_for(lambda: len(traffic.answers) >= 5)
            install_version(model_bank, base, 2)  # version 2 carries warmup records
            wait_for(lambda: client.status("tiny") == {2: "AVAILABLE", 1: "END"})
            wait_for(lambda: traffic.answers[-1][0] == 2)
        finally:
            traffic.stop.set()
            traffic.join(timeout=30)

        assert traffic.errors == []  # requests in flight during the switch all succeeded
        versions = [version for version, _count in traffic.answers]
        assert versions[0] == 1 and versions[-1] == 2
        assert versions == sorted(versions)  # once version 2 answered, version 1 never did again
        # The first request version 2 answered was call number WARMUP_RECORDS + 1: the warmup
        # requests ran through the model before it became AVAILABLE.
        assert min(count for version, count in traffic.answers if version == 2) == WARMUP_RECORDS + 1
        assert client.predict("tiny", image_input(), version=2).model_spec.version.value == 2
        error = rpc_error(lambda: client.predict("tiny", image_input(), version=1))
        assert error.code() == grpc.StatusCode.NOT_FOUND
        log = server.log()
        assert "Successfully loaded servable version {name: tiny version: 2}" in log
        assert "Done unloading servable version {name: tiny version: 1}" in log
        assert f"Number of warmup records read: {WARMUP_RECORDS}" in log


def test_warmup_replays_each_record_num_request_iterations_times(model_bank: Path, tmp_path: Path) -> None:
    base = tmp_path / "tiny"
    install_version(model_bank, base, 2)
    flags = _single_model_flags(base, "--num_request_iterations_for_warmup=2")
    with model_server_process(*flags) as server, serving_client(server.address) as client:
        response = client.predict("tiny", image_input())
        assert int(to_ndarray(response.outputs["call_count"])[0]) == 2 * WARMUP_RECORDS + 1
        assert "Starting to read warmup data for model at" in server.log()


def test_incomplete_and_broken_versions_never_serve_and_the_current_one_keeps_serving(
    model_bank: Path, tmp_path: Path
) -> None:
    base = tmp_path / "tiny"
    install_version(model_bank, base, 1)
    flags = _single_model_flags(base, "--max_num_load_retries=1", "--load_retry_interval_micros=200000")
    with model_server_process(*flags) as server, serving_client(server.address) as client:
        # A half-copied version: saved_model.pb is there, its variables are not yet.
        partial = base / "2"
        partial.mkdir()
        shutil.copy2(model_bank / "tiny" / "2" / "saved_model.pb", partial / "saved_model.pb")
        wait_for(lambda: client.status("tiny").get(2) == "END")  # tried, retried, gave up
        assert client.status_entries("tiny")[2].status.error_message
        assert client.status("tiny")[1] == "AVAILABLE"
        assert client.predict("tiny", image_input()).model_spec.version.value == 1

        # The copy completes: the version is tried again and serves.
        shutil.rmtree(partial)
        install_version(model_bank, base, 2)
        wait_for(lambda: client.status("tiny") == {2: "AVAILABLE", 1: "END"})
        assert client.predict("tiny", image_input()).model_spec.version.value == 2

        # A version whose warmup fails never becomes AVAILABLE; version 2 keeps serving.
        install_version(model_bank, base, 3)
        wait_for(lambda: client.status("tiny").get(3) == "END")
        entry = client.status_entries("tiny")[3]
        assert entry.status.error_code == grpc.StatusCode.UNKNOWN.value[0]
        assert "warmup" in entry.status.error_message and "not_an_input" in entry.status.error_message
        assert client.status("tiny")[2] == "AVAILABLE"
        assert client.predict("tiny", image_input()).model_spec.version.value == 2
        assert "Loading servable: {name: tiny version: 3} failed" in server.log()


CONFIG_ENTRY = 'config {{ name: "{name}" base_path: "models/{name}" model_platform: "tensorflow" }}'


def _write_config(path: Path, names: list[str]) -> None:
    entries = "\n  ".join(CONFIG_ENTRY.format(name=name) for name in names)
    staging = path.with_suffix(".tmp")
    staging.write_text(f"model_config_list {{\n  {entries}\n}}\n")
    staging.replace(path)  # the poller never reads half a file


def test_config_file_changes_add_and_remove_models(model_bank: Path, tmp_path: Path) -> None:
    for name in ("first", "second"):
        install_version(model_bank, tmp_path / "models" / name, 1)
    config = tmp_path / "models.config"
    _write_config(config, ["first"])
    flags = (f"--model_config_file={config}", "--model_config_file_poll_wait_seconds=1")
    with model_server_process(*flags) as server, serving_client(server.address) as client:
        assert client.status("first") == {1: "AVAILABLE"}
        assert rpc_error(lambda: client.predict("second", image_input())).code() == grpc.StatusCode.NOT_FOUND

        _write_config(config, ["first", "second"])
        wait_for(lambda: client.status("second") == {1: "AVAILABLE"})
        assert client.predict("second", image_input()).model_spec.name == "second"

        _write_config(config, ["second"])
        wait_for(lambda: client.status("first") == {1: "END"})
        error = rpc_error(lambda: client.predict("first", image_input()))
        assert error.code() == grpc.StatusCode.NOT_FOUND
        assert client.predict("second", image_input()).model_spec.version.value == 1
        assert "Removing model: first" in server.log()


def test_with_the_all_policy_a_new_version_serves_beside_the_old(model_bank: Path, tmp_path: Path) -> None:
    base = tmp_path / "models" / "tiny"
    install_version(model_bank, base, 1)
    config = tmp_path / "models.config"
    config.write_text(
        "model_config_list { config { name: 'tiny' base_path: 'models/tiny' model_platform: 'tensorflow' "
        "model_version_policy { all {} } } }"
    )
    flags = (f"--model_config_file={config}", "--file_system_poll_wait_seconds=1")
    with model_server_process(*flags) as server, serving_client(server.address) as client:
        install_version(model_bank, base, 2)
        wait_for(lambda: client.status("tiny") == {2: "AVAILABLE", 1: "AVAILABLE"})
        classes = [
            float(
                to_ndarray(client.predict("tiny", image_input(), version=v).outputs["detection_classes"])[
                    0, 0
                ]
            )
            for v in (1, 2)
        ]
        assert classes == [1.0, 2.0]
        assert np.isclose(
            float(to_ndarray(client.predict("tiny", image_input()).outputs["detection_classes"])[0, 0]), 2.0
        )
        assert server.process.poll() is None


def test_reload_config_rpc_adds_models_and_refuses_bad_labels(model_bank: Path, tmp_path: Path) -> None:
    for name in ("first", "second"):
        install_version(model_bank, tmp_path / "models" / name, 1)
    config = tmp_path / "models.config"
    _write_config(config, ["first"])

    def reload(names: list[str], labels: dict[str, int] | None = None) -> None:
        request = model_management_pb2.ReloadConfigRequest()
        for name in names:
            entry = request.config.model_config_list.config.add(
                name=name, base_path=str(tmp_path / "models" / name), model_platform="tensorflow"
            )
            entry.version_labels.update(labels or {})
        client.models.HandleReloadConfigRequest(request, timeout=120)

    with (
        model_server_process(f"--model_config_file={config}") as server,
        serving_client(server.address) as client,
    ):
        reload(["first", "second"])
        # like TF Serving, the call returns once the added models are AVAILABLE
        assert client.status("second") == {1: "AVAILABLE"}
        assert client.predict("second", image_input()).model_spec.name == "second"

        error = rpc_error(lambda: reload(["first", "second"], labels={"stable": 4}))
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "Request to assign label to version 4 of model first" in error.details()
        assert client.status("second") == {1: "AVAILABLE"}  # a refused config changes nothing

        reload(["first", "second"], labels={"stable": 1})
        assert client.predict("first", image_input(), label="stable").model_spec.version.value == 1
