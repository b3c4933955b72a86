"""Ultralytics' metadata.yaml: read when it is theirs, ignored when it is not; its task narrows the
families and sets the classify preprocessing, and gateway.toml still has the last word."""

from __future__ import annotations

from pathlib import Path

from tests.support.family_models import ULTRALYTICS_METADATA
from tests.support.signatures import signature
from web.reading.adapters import read_model
from web.reading.export_metadata import read_export_metadata
from web.reading.model_settings import ModelSettings

F = "float32"
CLASSIFY = signature({"output_0": (F, (1, 1000))}, {"images": (F, (1, 224, 224, 3))})
POSE = signature({"output_0": (F, (1, 56, 8400))}, {"images": (F, (1, 640, 640, 3))})


def write(folder: Path, task: str, names: str = "  0: cat\n  1: dog") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "metadata.yaml").write_text(
        ULTRALYTICS_METADATA.format(task=task, size=224, names=names, nms="false")
    )
    return folder


def test_task_and_names_are_read(tmp_path: Path) -> None:
    metadata = read_export_metadata(write(tmp_path / "1", "classify"), "m/1/metadata.yaml")
    assert (metadata.exporter, metadata.task, metadata.names) == (
        "Ultralytics",
        "classify",
        {0: "cat", 1: "dog"},
    )
    assert metadata.to_dict() == {
        "file": "m/1/metadata.yaml",
        "exporter": "Ultralytics",
        "task": "classify",
        "classes": 2,
    }


def test_other_files_are_ignored(tmp_path: Path) -> None:
    assert read_export_metadata(tmp_path) is None
    (tmp_path / "metadata.yaml").write_text("author: someone else\ntask: detect\n")
    assert read_export_metadata(tmp_path) is None
    (tmp_path / "metadata.yaml").write_text("author: Ultralytics\ntask: [unclosed\n")
    assert read_export_metadata(tmp_path) is None
    (tmp_path / "metadata.yaml").write_bytes(b"\xff\xfe\x00")
    assert read_export_metadata(tmp_path) is None


def test_classify_sets_crop_and_0_1_unless_gateway_toml_says_otherwise(tmp_path: Path) -> None:
    metadata = read_export_metadata(write(tmp_path / "1", "classify"))
    reading = read_model(CLASSIFY, ModelSettings(), "g.toml", metadata)
    assert reading.family == "classifier"
    assert (reading.preprocessing.resize, reading.preprocessing.pixel_range) == ("crop", "0-1")
    overridden = read_model(CLASSIFY, ModelSettings(resize="stretch", source="g.toml"), "g.toml", metadata)
    assert (overridden.preprocessing.resize, overridden.preprocessing.pixel_range) == ("stretch", "0-1")
    assert overridden.file_settings.given() == {"resize": "stretch"}


def test_a_pose_model_is_refused_only_because_its_metadata_says_so(tmp_path: Path) -> None:
    assert read_model(POSE, ModelSettings(), "g.toml").family == "yolo"  # the signature alone cannot tell
    metadata = read_export_metadata(write(tmp_path / "1", "pose", "  0: person"))
    reading = read_model(POSE, ModelSettings(), "g.toml", metadata)
    assert reading.adapter is None and "'pose' model, which the gateway does not read" in reading.problem
    forced = read_model(POSE, ModelSettings(family="yolo"), "g.toml", metadata)
    assert forced.family == "yolo"


def test_a_detect_model_is_only_read_by_the_yolo_families(tmp_path: Path) -> None:
    metadata = read_export_metadata(write(tmp_path / "1", "detect"))
    classifier_like = signature({"output_0": (F, (1, 1000))}, {"images": (F, (1, 640, 640, 3))})
    reading = read_model(classifier_like, ModelSettings(), "g.toml", metadata)
    assert reading.adapter is None and "no model family recognizes" in reading.problem
    assert "classifier:" not in reading.problem  # only yolo and yolo_nms were asked
