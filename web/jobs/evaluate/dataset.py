"""The labelled set of an evaluate job, read and checked when the job is created.

Two layouts are accepted, as the tools people export from write them:
- **COCO**: one `*.json` with `images`, `annotations` and `categories`, the pictures at each image's
  `file_name`, relative to the json's folder or the zip's root; the usual
  `annotations/instances_*.json` + `images/` layout is found too (a picture found nowhere else is
  looked up beside the json's parent folder's `images/`, then by its base name if that is unique).
- **ImageFolder** (classifiers): one folder per class, `<class>/<picture>` (under one optional top
  folder), as torchvision's ImageFolder and Keras' `image_dataset_from_directory` read them.

What comes out is a normalised COCO ground truth (`Dataset.to_json`, kept as the job's
`dataset.json`): image `file_name`s are the pictures' paths in the zip, every annotation has `area`,
`iscrowd` and a box; the job's picture listing is cut to the dataset's pictures. Every problem that
makes the set unusable is an `ArchiveError` whose message says what to fix.
"""

from __future__ import annotations

import json
import math
import zipfile
import zlib
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import Any

from web.jobs.archives import Archive, ArchiveError, Skipped

MAX_ANNOTATION_BYTES = 512 * 2**20  # one COCO json, uncompressed (COCO 2017 train's is 450 MB)
MAX_LISTED = 100  # missing pictures named in the report
COCO = "coco"
IMAGE_FOLDER = "imagefolder"
NOT_IN_DATASET = "not among the dataset's images: evaluate jobs only predict the pictures the dataset labels"
NOT_IN_CLASS_FOLDER = "not in a class folder: ImageFolder sets keep each picture under <class>/"


@dataclass(frozen=True)
class Category:
    id: int
    name: str

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name}


@dataclass
class Dataset:
    """The ground truth, keyed by the pictures' paths in the zip."""

    format: str  # COCO | IMAGE_FOLDER
    file: str | None  # the COCO json's path in the zip
    categories: list[Category]
    images: list[dict[str, Any]]  # COCO images; file_name = the picture's path in the zip
    annotations: list[dict[str, Any]] = field(default_factory=list)  # COCO annotations (ImageFolder: none)
    labels: dict[str, int] = field(default_factory=dict)  # ImageFolder: picture path -> category id
    missing: list[str] = field(default_factory=list)  # pictures the json names that the zip lacks

    @property
    def kind(self) -> str:
        return "classification" if self.format == IMAGE_FOLDER else "detection"

    def summary(self) -> dict[str, Any]:
        """The report's `dataset` entry."""
        return {
            "format": self.format,
            "file": self.file,
            "categories": [c.to_json() for c in self.categories],
            "annotations": len(self.annotations) if self.format == COCO else len(self.labels),
            "missing_pictures": self.missing[:MAX_LISTED],
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "file": self.file,
            "categories": [c.to_json() for c in self.categories],
            "images": self.images,
            "annotations": self.annotations,
            "labels": self.labels,
            "missing": self.missing,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Dataset:
        return cls(
            format=data["format"],
            file=data["file"],
            categories=[Category(int(c["id"]), str(c["name"])) for c in data["categories"]],
            images=list(data["images"]),
            annotations=list(data["annotations"]),
            labels={str(k): int(v) for k, v in data["labels"].items()},
            missing=list(data["missing"]),
        )

    def coco_ground_truth(self, sizes: Mapping[str, tuple[int, int]] | None = None) -> dict[str, Any]:
        """The COCO ground-truth object for pycocotools; `sizes` (path -> width, height, from the
        predictions) fills in images the json gave no size (polygons need it to become masks)."""
        images = []
        for image in self.images:
            entry = dict(image)
            if sizes and (not entry.get("width") or not entry.get("height")) and image["file_name"] in sizes:
                entry["width"], entry["height"] = sizes[image["file_name"]]
            images.append(entry)
        return {
            "images": images,
            "annotations": self.annotations,
            "categories": [c.to_json() for c in self.categories],
        }


def read_dataset(zip_path: Path, listing: Archive) -> tuple[Dataset, Archive]:
    """The dataset in the zip and the listing cut to its pictures (others move to `skipped`)."""
    documents = _coco_documents(zip_path)
    if documents:
        return _read_coco(documents, listing)
    return _read_image_folder(listing)


# -- COCO ----------------------------------------------------------------------------------------


def _coco_documents(zip_path: Path) -> list[tuple[str, dict[str, Any]]]:
    """The COCO datasets among the zip's .json entries (path, parsed object); others are ignored."""
    found: list[tuple[str, dict[str, Any]]] = []
    try:
        with zipfile.ZipFile(zip_path) as zf:
            names = [
                info
                for info in zf.infolist()
                if info.filename.lower().endswith(".json")
                and not info.is_dir()
                and not info.filename.startswith("__MACOSX/")
                and not PurePosixPath(info.filename).name.startswith("._")
            ]
            for info in names:
                if info.file_size > MAX_ANNOTATION_BYTES:
                    raise ArchiveError(
                        f"{info.filename} is {info.file_size / 2**20:.0f} MiB, more than the "
                        f"{MAX_ANNOTATION_BYTES // 2**20} MiB an annotation file may have: split the set"
                    )
                with zf.open(info) as stream:
                    raw = stream.read(MAX_ANNOTATION_BYTES + 1)
                if len(raw) > MAX_ANNOTATION_BYTES:
                    raise ArchiveError(
                        f"{info.filename} is larger than its zip entry says: re-create the zip"
                    )
                try:
                    data = json.loads(raw)
                except (UnicodeDecodeError, ValueError) as error:
                    if _looks_like_coco(raw[:4096]):
                        raise ArchiveError(
                            f"{info.filename} is not valid JSON ({_short(error)}): fix the annotation file"
                        ) from None
                    continue
                if isinstance(data, dict) and {"images", "annotations", "categories"} <= data.keys():
                    found.append((info.filename.strip("/"), data))
    except (zipfile.BadZipFile, zlib.error, OSError, EOFError, NotImplementedError, RuntimeError) as error:
        raise ArchiveError(
            f"the annotation file cannot be read from the zip ({error}): re-create the zip"
        ) from None
    if len(found) > 1:
        preferred = [item for item in found if PurePosixPath(item[0]).name.lower().startswith("instances_")]
        if len(preferred) == 1:
            return preferred
        names = ", ".join(sorted(path for path, _ in found))
        raise ArchiveError(f"the zip holds several COCO annotation files ({names}): zip one set per job")
    return found


def _looks_like_coco(head: bytes) -> bool:
    return b'"images"' in head or b'"annotations"' in head or b'"categories"' in head


def _short(error: Exception) -> str:
    return str(error)[:120]


def _read_coco(documents: list[tuple[str, dict[str, Any]]], listing: Archive) -> tuple[Dataset, Archive]:
    file, data = documents[0]
    categories = _categories(file, data["categories"])
    category_ids = {c.id for c in categories}
    paths = {picture.path for picture in listing.pictures}
    by_name: dict[str, list[str]] = {}
    for path in paths:
        by_name.setdefault(PurePosixPath(path).name, []).append(path)
    folder = PurePosixPath(file).parent

    if not isinstance(data["images"], list) or not isinstance(data["annotations"], list):
        raise ArchiveError(f"{file}: `images` and `annotations` must be lists")
    images: list[dict[str, Any]] = []
    image_of: dict[Any, dict[str, Any]] = {}
    missing: list[str] = []
    taken: set[str] = set()
    for index, image in enumerate(data["images"]):
        if not isinstance(image, dict) or "id" not in image or not isinstance(image.get("file_name"), str):
            raise ArchiveError(f"{file}: images[{index}] needs an `id` and a `file_name`")
        if image["id"] in image_of:
            raise ArchiveError(f"{file}: image id {image['id']!r} appears twice in `images`")
        path = _locate(image["file_name"], folder, paths, by_name)
        if path is None:
            missing.append(image["file_name"])
            image_of[image["id"]] = {}
            continue
        if path in taken:
            raise ArchiveError(f"{file}: two images name the same picture {path}")
        taken.add(path)
        entry = {"id": image["id"], "file_name": path}
        for key in ("width", "height"):
            value = image.get(key)
            if isinstance(value, int | float) and value > 0:
                entry[key] = int(value)
        images.append(entry)
        image_of[image["id"]] = entry
    if not images:
        sample = ", ".join(missing[:3])
        raise ArchiveError(
            f"none of the {len(data['images'])} pictures {file} lists is in the zip (e.g. {sample}): put "
            "them at their file_name, relative to the json or the zip's root (or under images/)"
        )

    annotations: list[dict[str, Any]] = []
    for index, annotation in enumerate(data["annotations"]):
        checked = _annotation(file, index, annotation, category_ids)
        image = image_of.get(checked["image_id"])
        if image is None:
            raise ArchiveError(
                f"{file}: annotations[{index}] names image {checked['image_id']!r}, not in `images`"
            )
        if image:  # the picture is in the zip
            annotations.append(checked)
    for number, annotation in enumerate(annotations, 1):
        annotation["id"] = number  # pycocotools wants ids >= 1, unique

    selected = [picture for picture in listing.pictures if picture.path in taken]
    dropped = [
        Skipped(picture.path, NOT_IN_DATASET) for picture in listing.pictures if picture.path not in taken
    ]
    skipped = [s for s in listing.skipped if s.file != file and not s.file.lower().endswith(".json")]
    cut = replace(
        listing,
        pictures=tuple(selected),
        skipped=tuple(sorted([*skipped, *dropped], key=lambda s: s.file)),
    )
    return Dataset(COCO, file, categories, images, annotations, missing=missing), cut


def _categories(file: str, raw: Any) -> list[Category]:
    if not isinstance(raw, list) or not raw:
        raise ArchiveError(f'{file}: `categories` is empty: list the classes as {{"id": 1, "name": ...}}')
    categories: list[Category] = []
    for index, item in enumerate(raw):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str) or not _is_int(item.get("id")):
            raise ArchiveError(f"{file}: categories[{index}] needs an integer `id` and a `name`")
        categories.append(Category(int(item["id"]), item["name"].strip()))
    ids = Counter(c.id for c in categories)
    twice = [str(i) for i, n in ids.items() if n > 1]
    if twice:
        raise ArchiveError(f"{file}: category id {', '.join(twice)} appears twice in `categories`")
    _check_unique_names(file, categories)
    return categories


def _check_unique_names(where: str, categories: list[Category]) -> None:
    """Categories meet labels by name (case-insensitive), so two with one name cannot both be scored."""
    names = Counter(c.name.casefold() for c in categories)
    twice = sorted(c.name for c in categories if names[c.name.casefold()] > 1)
    if twice:
        raise ArchiveError(
            f"{where}: the category names {', '.join(repr(n) for n in twice[:6])} differ only in case or "
            "not at all; give every category its own name"
        )


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _annotation(file: str, index: int, raw: Any, category_ids: set[int]) -> dict[str, Any]:
    where = f"{file}: annotations[{index}]"
    if not isinstance(raw, dict) or "image_id" not in raw or not _is_int(raw.get("category_id")):
        raise ArchiveError(f"{where} needs an `image_id` and an integer `category_id`")
    if raw["category_id"] not in category_ids:
        raise ArchiveError(f"{where} has category_id {raw['category_id']}, which `categories` does not list")
    box = raw.get("bbox")
    if (
        not isinstance(box, list)
        or len(box) != 4
        or not all(isinstance(v, int | float) and math.isfinite(v) for v in box)
        or box[2] < 0
        or box[3] < 0
    ):
        raise ArchiveError(f"{where}: `bbox` must be [x, y, width, height] in pixels, width and height >= 0")
    out: dict[str, Any] = {
        "image_id": raw["image_id"],
        "category_id": int(raw["category_id"]),
        "bbox": [float(v) for v in box],
        "iscrowd": 1 if raw.get("iscrowd") else 0,
    }
    segmentation = raw.get("segmentation")
    if segmentation:
        if isinstance(segmentation, list):
            polygons = [p for p in segmentation if isinstance(p, list)]
            if len(polygons) != len(segmentation) or any(
                len(p) < 6 or len(p) % 2 or not all(isinstance(v, int | float) for v in p) for p in polygons
            ):
                raise ArchiveError(
                    f"{where}: a polygon `segmentation` is lists of x, y pairs (3 points or more)"
                )
        elif not (
            isinstance(segmentation, dict)
            and isinstance(segmentation.get("size"), list)
            and isinstance(segmentation.get("counts"), str | list)
        ):
            raise ArchiveError(f"{where}: `segmentation` must be polygons or an RLE with `size` and `counts`")
        out["segmentation"] = segmentation
    area = raw.get("area")
    out["area"] = float(area) if isinstance(area, int | float) and area > 0 else float(box[2] * box[3])
    return out


def _locate(
    file_name: str, folder: PurePosixPath, paths: set[str], by_name: Mapping[str, list[str]]
) -> str | None:
    """The zip path of a COCO image's file_name (see the module docstring for where it is looked for)."""
    name = file_name.replace("\\", "/").lstrip("./")
    candidates = [
        folder / name,
        PurePosixPath(name),
        folder.parent / "images" / name,
        folder / "images" / name,
        PurePosixPath("images") / name,
    ]
    for candidate in candidates:
        text = str(candidate).lstrip("./") if str(candidate) != "." else ""
        if text in paths:
            return text
    same = by_name.get(PurePosixPath(name).name, [])
    return same[0] if len(same) == 1 else None


# -- ImageFolder ---------------------------------------------------------------------------------


def _read_image_folder(listing: Archive) -> tuple[Dataset, Archive]:
    paths = [picture.path for picture in listing.pictures]
    prefix = _common_top_folder(paths)
    classes: dict[str, str] = {}  # picture path -> class folder name
    loose: list[str] = []
    for path in paths:
        parts = PurePosixPath(path).parts[len(prefix) :]
        if len(parts) < 2:
            loose.append(path)
        else:
            classes[path] = parts[0]
    names = sorted(set(classes.values()))
    if not names:
        raise ArchiveError(
            "no annotations found: zip a COCO dataset (a .json with images, annotations and categories, "
            "and its pictures) or, for a classifier, one folder of pictures per class"
        )
    categories = [Category(int(name) if name.isdigit() else index, name) for index, name in enumerate(names)]
    if len({c.id for c in categories}) != len(categories):  # numeric folder names clash with indexes
        categories = [Category(index, name) for index, name in enumerate(names)]
    _check_unique_names("the class folders", categories)
    id_of = {c.name: c.id for c in categories}
    labels = {path: id_of[name] for path, name in classes.items()}
    images = [{"id": number, "file_name": path} for number, path in enumerate(sorted(labels), 1)]
    cut = replace(
        listing,
        pictures=tuple(p for p in listing.pictures if p.path in labels),
        skipped=tuple(
            sorted(
                [*listing.skipped, *(Skipped(path, NOT_IN_CLASS_FOLDER) for path in loose)],
                key=lambda s: s.file,
            )
        ),
    )
    return Dataset(IMAGE_FOLDER, None, categories, images, labels=labels), cut


def _common_top_folder(paths: Iterable[str]) -> tuple[str, ...]:
    """The one folder every picture is under, when the class folders sit below it ("set/red/1.jpg")."""
    tops = {PurePosixPath(p).parts[0] for p in paths if len(PurePosixPath(p).parts) > 2}
    flat = any(len(PurePosixPath(p).parts) <= 2 for p in paths)
    return (next(iter(tops)),) if len(tops) == 1 and not flat else ()
