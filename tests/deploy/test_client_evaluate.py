"""`python -m web.client evaluate MODEL dataset.zip [--compare-with M]` end to end: gunicorn serving the
gateway, a real worker predicting with the demo models over gRPC, the client as a user runs it. The
tables it prints are report.json's numbers; the files it saves are the ones the jobs API serves."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.support.datasets import demo_coco_zip
from tests.support.gunicorn_gateway import running_gateway
from tests.support.model_server import REPO_ROOT
from tests.web.helpers import solid
from tests.web.jobs.queue_helpers import Workers
from web.jobs.config import JobSettings

CLIENT_TIMEOUT_S = 300
PICTURES = 10


@pytest.fixture(scope="module")
def gateway(demo_model_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("client_evaluate")
    serving = {
        "TF_SERVING_ADDRESS": demo_model_server,
        "MODEL_CONFIG_FILE": str(REPO_ROOT / "tf_server" / "models.config"),
        "JOBS_FOLDER": str(root / "jobs"),
        "JOB_QUEUE_POLL_S": "0.1",
        "JOB_CHUNK_SIZE": "4",
    }
    workers = Workers(root)
    with running_gateway(root / "gateway", **serving) as url:
        workers.start(JobSettings.from_env(serving), predictor=None, **serving)
        try:
            yield url
        finally:
            workers.stop_all()
            assert "Traceback" not in workers.logs(), workers.logs()[-4000:]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("labelled")
    return demo_coco_zip(folder, PICTURES, 4242, "annotations/instances_val.json")  # the usual COCO layout


def evaluate(*args: str | Path, cwd: Path = REPO_ROOT) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    env.pop("GATEWAY_URL", None)
    env.pop("GATEWAY_API_KEY", None)
    return subprocess.run(
        [sys.executable, "-m", "web.client", "evaluate", *map(str, args)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=CLIENT_TIMEOUT_S,
    )


def row(stdout: str, name: str) -> list[str]:
    """The cells of the printed table row that starts with `name`."""
    found = re.search(rf"^{re.escape(name)}  +(.+)$", stdout, re.MULTILINE)
    assert found, f"no row {name!r} in:\n{stdout}"
    return found.group(1).split()


def test_evaluate_prints_the_metrics_and_saves_the_report(
    gateway: str, dataset: Path, tmp_path: Path
) -> None:
    done = evaluate(
        "shapes", dataset, "--url", gateway, "--compare-with", "shapes_jpeg:1", "--no-progress", cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr + done.stdout
    job_id = re.search(r"^job (\S+) succeeded", done.stdout, re.MULTILINE).group(1)
    folder = tmp_path / job_id  # no --out: a folder named after the job, in the current directory
    for name in (
        "report.json",
        "report.html",
        "coco_results.json",
        "coco_results_compare.json",
        "pr_curves.png",
    ):
        assert (folder / name).is_file(), sorted(p.name for p in folder.iterdir())
    served = requests.get(f"{gateway}/api/v1/jobs/{job_id}/results/report.json", timeout=30)
    assert served.status_code == 200 and json.loads(served.content) == json.loads(
        (folder / "report.json").read_bytes()
    )
    report = json.loads(served.content)
    first, second = report["models"]
    assert (first["name"], second["name"], second["version"]) == ("shapes", "shapes_jpeg", 1)

    header = row(done.stdout, "metric")
    assert header == [first["label"], second["label"], "change"]
    for iou, word in (("bbox", "box"), ("segm", "mask")):
        for metric in ("AP", "AP50", "AR100"):
            cells = row(done.stdout, f"{word} {metric}")
            assert cells[:2] == [
                f"{first['metrics'][iou][metric]:.3f}",
                f"{second['metrics'][iou][metric]:.3f}",
            ]
            delta = report["comparison"]["deltas"][iou][metric]
            assert abs(float(cells[2]) - delta) <= 0.0005 + 1e-9
    assert row(done.stdout, "box APs") == ["-", "-", "-"]  # no small objects: COCOeval's -1
    for category in first["per_class"]:
        cells = row(done.stdout, category["name"])
        assert cells[0] == str(category["ground_truth"]) and cells[1] == f"{category['AP50']:.3f}"
    assert first["metrics"]["bbox"]["AP50"] > 0.85  # the trained demo detector, as the README says
    assert f"the report with plots and pictures: {folder / 'report.html'}" in done.stdout


@pytest.mark.parametrize(
    "args, words",
    [
        (["--compare-with", ":3"], "--compare-with must be a model name or name:version"),
        (["--compare-with", "shapes_jpeg:0"], "the version after ':' must be"),
        (["--operating-score", "1.5"], "--operating-score must be"),
        (["--min-score", "-1"], "--min-score must be"),
    ],
)
def test_bad_arguments_are_refused_before_any_upload(
    gateway: str, dataset: Path, tmp_path: Path, args: list[str], words: str
) -> None:
    before = requests.get(f"{gateway}/api/v1/jobs", timeout=30).json()
    done = evaluate("shapes", dataset, "--url", gateway, "--out", tmp_path / "out", *args)
    assert done.returncode == 2 and words in done.stderr, done.stderr
    assert requests.get(f"{gateway}/api/v1/jobs", timeout=30).json() == before  # no job was started
    assert not any((tmp_path / "out").glob("*"))


def test_a_dataset_the_model_cannot_be_scored_on_is_refused_with_the_reason(
    gateway: str, tmp_path: Path
) -> None:
    folders = tmp_path / "classes.zip"
    with zipfile.ZipFile(folders, "w") as zf:
        zf.writestr("cats/1.jpg", solid(64, 64))
        zf.writestr("dogs/2.jpg", solid(64, 64))
    done = evaluate("shapes", folders, "--url", gateway, "--out", tmp_path / "out", "--no-progress")
    assert done.returncode == 2, done.stdout + done.stderr
    assert "is a detector" in done.stderr and "Traceback" not in done.stderr
    unknown = evaluate(
        "shapes", folders, "--url", gateway, "--compare-with", "nope", "--out", tmp_path / "o2"
    )
    assert unknown.returncode == 2 and "nope" in unknown.stderr, unknown.stderr
