"""Files the gateway re-reads when they change (models.config, gateway.toml, label maps) are looked at
once per CONFIG_RECHECK_S, not with several stat() calls on every request."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tests.support.model_server import free_port
from web.reading.registry import FileStates
from web.settings import Settings, SettingsError

LABELS = 'item { id: 1 name: "circle" }\n'
RENAMED = 'item { id: 1 name: "disc" }\n'


def _touch(path: Path, text: str) -> None:
    previous = path.stat().st_mtime_ns if path.exists() else 0
    path.write_text(text)
    os.utime(path, ns=(previous + 10**9, previous + 10**9))  # a new mtime even on coarse clocks


def test_a_change_is_seen_after_the_interval_not_before(tmp_path: Path) -> None:
    path = tmp_path / "label_map.pbtxt"
    _touch(path, LABELS)
    states = FileStates(recheck_s=0.4)
    first = states.mtime(path)
    _touch(path, RENAMED)
    assert states.mtime(path) == first  # within the interval: the remembered answer, no stat()
    time.sleep(0.45)
    assert states.mtime(path) == path.stat().st_mtime_ns != first
    path.unlink()
    assert FileStates(0).mtime(path) is None
    assert FileStates(0).mtime(tmp_path) is None  # a folder is not a file


def test_the_setting_reaches_the_label_maps_of_a_running_app(make_app, tmp_path: Path) -> None:
    config = tmp_path / "models.config"
    config.write_text('model_config_list { config { name: "shapes" base_path: "shapes" } }\n')
    (tmp_path / "shapes").mkdir()
    label_map = tmp_path / "shapes" / "label_map.pbtxt"
    _touch(label_map, LABELS)
    app = make_app(TF_SERVING_ADDRESS=f"127.0.0.1:{free_port()}", MODEL_CONFIG_FILE=config,
                   CONFIG_RECHECK_S=0.5)
    client = app.test_client()
    assert client.get("/api/v1/models/shapes/labels").get_json() == {"1": "circle"}
    _touch(label_map, RENAMED)
    assert client.get("/api/v1/models/shapes/labels").get_json() == {"1": "circle"}
    time.sleep(0.55)
    assert client.get("/api/v1/models/shapes/labels").get_json() == {"1": "disc"}
    instant = make_app(TF_SERVING_ADDRESS=f"127.0.0.1:{free_port()}", MODEL_CONFIG_FILE=config,
                       CONFIG_RECHECK_S=0).test_client()
    _touch(label_map, LABELS)
    assert instant.get("/api/v1/models/shapes/labels").get_json() == {"1": "circle"}


@pytest.mark.parametrize("value", ["-1", "soon", "inf"])
def test_bad_recheck_values_are_refused_naming_the_variable(value: str) -> None:
    with pytest.raises(SettingsError, match="CONFIG_RECHECK_S"):
        Settings.load(environ={}, overrides={"CONFIG_RECHECK_S": value})
    assert Settings.load(environ={}).config_recheck_s == 1.0
