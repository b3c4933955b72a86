"""A retired version's graph is freed even when it was loaded at start-up, which the server
freezes out of the garbage collector's sight (``gc.freeze()``): unloading thaws, collects and
freezes again. Checked in a TensorFlow subprocess (the pytest process never imports TensorFlow)."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.support.model_server import REPO_ROOT

SCRIPT = r"""
import gc, weakref
from pathlib import Path
from tf_server.model_manager import release_cycles
from tf_server.servable import load_servable

def retired_graph(release):
    servable = load_servable("digits", 1, Path("tf_server/models/digits/1"), ["serve"])
    graph = weakref.ref(servable.loaded.graph)
    gc.freeze()  # what the server does once the start-up models are loaded
    del servable
    release()
    alive = graph() is not None
    gc.unfreeze()
    gc.collect()
    return alive

print("plain collect leaves it:", retired_graph(gc.collect))
print("release_cycles leaves it:", retired_graph(release_cycles))
"""


def test_unloading_frees_a_graph_that_was_frozen_at_start_up() -> None:
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(REPO_ROOT)},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    # The first line shows why release_cycles exists: a plain collection cannot free frozen cycles.
    assert "plain collect leaves it: True" in result.stdout, result.stdout
    assert "release_cycles leaves it: False" in result.stdout, result.stdout
