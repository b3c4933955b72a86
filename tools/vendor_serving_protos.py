"""Copy TF Serving's generated protobuf modules into ``web/serving/protos`` (no TensorFlow import).

The official ``tensorflow-serving-api`` modules import ``tensorflow.core.framework.*_pb2``, and
importing anything under ``tensorflow`` runs ``tensorflow/__init__.py``, which loads the whole
runtime (~0.5 GB, seconds per process). The generated modules themselves are plain protobuf
code, so this script copies the closure the gateway needs (Predict, GetModelMetadata,
GetModelStatus and their gRPC stubs) from the installed wheels into ``web/serving/protos`` and rewrites
their imports to point there. The descriptors are byte-for-byte the official ones, so the wire
format, message names and gRPC method paths are exactly TF Serving's.

Run it (``make protos``) after changing the pinned ``tensorflow-serving-api`` version. It only
reads files; it does not import TensorFlow.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

ROOTS = [
    "tensorflow_serving.apis.predict_pb2",
    "tensorflow_serving.apis.prediction_service_pb2_grpc",
    "tensorflow_serving.apis.model_service_pb2_grpc",
    "tensorflow_serving.apis.get_model_metadata_pb2",
    "tensorflow_serving.apis.get_model_status_pb2",
]
TARGET_PACKAGE = "web.serving.protos"
# `from tensorflow.x import y_pb2 as z` and, for public-import re-exports, `from tensorflow.x.y_pb2 import *`
IMPORT_RE = re.compile(r"^from (tensorflow(?:_serving)?(?:\.\w+)*) import (\w+|\*)", re.MULTILINE)


def site_root() -> Path:
    """Directory holding the installed ``tensorflow_serving`` package (found without importing it)."""
    spec = importlib.util.find_spec("tensorflow_serving")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("tensorflow-serving-api is not installed: run `make venv` first")
    return Path(next(iter(spec.submodule_search_locations))).parent


def module_path(root: Path, module: str) -> Path:
    return root.joinpath(*module.split(".")).with_suffix(".py")


def dependencies(source: str) -> list[str]:
    return [pkg if name == "*" else f"{pkg}.{name}" for pkg, name in IMPORT_RE.findall(source)]


def rewrite(source: str) -> str:
    return IMPORT_RE.sub(lambda m: f"from {TARGET_PACKAGE}.{m.group(1)} import {m.group(2)}", source)


def main() -> None:
    root = site_root()
    out = Path(__file__).resolve().parent.parent / "web" / "serving" / "protos"
    seen: set[str] = set()
    todo = list(ROOTS)
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        source = module_path(root, module).read_text()
        todo.extend(dependencies(source))
        target = out.joinpath(*module.split(".")).with_suffix(".py")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(rewrite(source))
        # every folder on the way down is a package
        for folder in target.relative_to(out).parents:
            init = out / folder / "__init__.py"
            if folder != Path(".") and not init.exists():
                init.write_text("")
    print(f"vendored {len(seen)} modules from {root} into {out}")


if __name__ == "__main__":
    main()
