"""Evaluate the EXPORTED demo models (not the training checkpoint) with pycocotools' COCOeval.

Both SavedModels are loaded with `tf.saved_model.load` and called through their
`serving_default` signature, exactly what TF Serving runs: `shapes` gets decoded pixels,
`shapes_jpeg` the JPEG bytes of the same held-out pictures. Box-relative masks are pasted into
the picture the way the gateway does (bilinear, threshold 0.5) before COCO scoring.
"""

from __future__ import annotations

import contextlib
import io
import json
import time
from pathlib import Path

import numpy as np
import tensorflow as tf
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from demo.export import JPEG_MODEL, MODEL_NAMES, SIGNATURE
from demo.synthetic import CLASSES, encode_jpeg, generate_image

MASK_THRESHOLD = 0.5


def _interpolation_matrix(lo: float, hi: float, start: int, stop: int, cells: int) -> np.ndarray:
    """[stop-start, cells] weights: bilinear sampling of a `cells`-wide box-relative grid at the
    picture's pixel centres start+0.5 .. stop-0.5; zero outside the box."""
    centres = np.arange(start, stop, dtype=np.float64) + 0.5
    u = np.clip((centres - lo) / max(hi - lo, 1e-6) * cells - 0.5, 0, cells - 1)
    left = np.floor(u).astype(int)
    right = np.minimum(left + 1, cells - 1)
    frac = u - left
    weights = np.zeros((len(centres), cells))
    rows = np.arange(len(centres))
    weights[rows, left] += 1 - frac
    weights[rows, right] += frac
    weights[(centres < lo) | (centres > hi)] = 0
    return weights


def paste_mask(box_mask: np.ndarray, box: tuple[float, float, float, float], height: int,
               width: int) -> np.ndarray:
    """Box-relative probability mask -> bool [height, width] picture mask. box: pixel
    xmin, ymin, xmax, ymax."""
    xmin, ymin, xmax, ymax = box
    out = np.zeros((height, width), dtype=bool)
    x0, x1 = max(0, int(np.floor(xmin))), min(width, int(np.ceil(xmax)))
    y0, y1 = max(0, int(np.floor(ymin))), min(height, int(np.ceil(ymax)))
    if x1 <= x0 or y1 <= y0:
        return out
    wy = _interpolation_matrix(ymin, ymax, y0, y1, box_mask.shape[0])
    wx = _interpolation_matrix(xmin, xmax, x0, x1, box_mask.shape[1])
    out[y0:y1, x0:x1] = (wy @ box_mask.astype(np.float64) @ wx.T) >= MASK_THRESHOLD
    return out


def to_coco_results(outputs: dict[str, np.ndarray], index: int, image_id: int, height: int,
                    width: int) -> list[dict]:
    """One picture's signature outputs (batch row `index`) -> COCO result dicts."""
    results = []
    count = int(outputs["num_detections"][index])
    for k in range(count):
        scale = [height, width, height, width]
        ymin, xmin, ymax, xmax = (outputs["detection_boxes"][index, k] * scale).tolist()
        mask = paste_mask(outputs["detection_masks"][index, k], (xmin, ymin, xmax, ymax), height, width)
        rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
        rle["counts"] = rle["counts"].decode("ascii")
        results.append({
            "image_id": image_id,
            "category_id": int(round(float(outputs["detection_classes"][index, k]))),
            "bbox": [xmin, ymin, xmax - xmin, ymax - ymin],
            "score": float(outputs["detection_scores"][index, k]),
            "segmentation": rle,
        })
    return results


def _coco_scores(ground_truth: COCO, results: list[dict], iou_type: str) -> dict[str, float]:
    if not results:
        return {"AP": 0.0, "AP50": 0.0, "AP75": 0.0}
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools chats on stdout
        evaluator = COCOeval(ground_truth, ground_truth.loadRes(results), iou_type)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    stats = evaluator.stats
    return {"AP": float(stats[0]), "AP50": float(stats[1]), "AP75": float(stats[2])}


def load_signature(version_dir: Path):
    return tf.saved_model.load(str(version_dir)).signatures[SIGNATURE]


def call_model(signature, model_name: str, image: np.ndarray | None = None,
               jpegs: list[bytes] | None = None) -> dict[str, np.ndarray]:
    """Run one exported signature on a picture (shapes) or a batch of encoded pictures."""
    if model_name == JPEG_MODEL:
        outputs = signature(input_tensor=tf.constant(jpegs, dtype=tf.string))
    else:
        outputs = signature(input_tensor=tf.constant(image[None], dtype=tf.uint8))
    return {key: value.numpy() for key, value in outputs.items()}


def evaluate_models(models_dir: Path, annotations: Path, log=print, jpeg_batch: int = 4) -> dict:
    """COCO bbox + segm AP of both exported models on the data set at `annotations`."""
    with contextlib.redirect_stdout(io.StringIO()):
        ground_truth = COCO(str(annotations))
    root = annotations.parent
    image_infos = [ground_truth.imgs[i] for i in sorted(ground_truth.imgs)]
    report: dict = {"images": len(image_infos), "annotations": len(ground_truth.anns), "models": {}}
    for name in MODEL_NAMES:
        signature = load_signature(models_dir / name / "1")
        results: list[dict] = []
        start = time.monotonic()
        step = jpeg_batch if name == JPEG_MODEL else 1
        for first in range(0, len(image_infos), step):
            chunk = image_infos[first:first + step]
            if name == JPEG_MODEL:
                outputs = call_model(signature, name, jpegs=[(root / info["file_name"]).read_bytes()
                                                             for info in chunk])
            else:
                pixels = np.asarray(Image.open(root / chunk[0]["file_name"]).convert("RGB"))
                outputs = call_model(signature, name, image=pixels)
            for row, info in enumerate(chunk):
                results.extend(to_coco_results(outputs, row, info["id"], info["height"], info["width"]))
        seconds = time.monotonic() - start
        log(f"evaluate: {name}: {len(results)} detections on {len(image_infos)} pictures in {seconds:.1f}s")
        report["models"][name] = {
            "bbox": _coco_scores(ground_truth, results, "bbox"),
            "segm": _coco_scores(ground_truth, results, "segm"),
            "ms_per_image": 1000 * seconds / len(image_infos),
        }
        log(f"evaluate: {name}: box AP@0.5 {report['models'][name]['bbox']['AP50']:.3f}, "
            f"mask AP@0.5 {report['models'][name]['segm']['AP50']:.3f}")
    return report


def size_check(models_dir: Path, log=print) -> list[dict]:
    """Call both models on a 640x480 and a 4000x3000 generated picture; report what they found
    against the truth and how long each call took (after a first warm-up call)."""
    checks = []
    signatures = {name: load_signature(models_dir / name / "1") for name in MODEL_NAMES}
    for width, height in ((640, 480), (4000, 3000)):
        image, shapes = generate_image(np.random.default_rng(77), width, height, min_shapes=4, max_shapes=4)
        jpeg = encode_jpeg(image)
        for name, signature in signatures.items():
            kwargs = {"jpegs": [jpeg]} if name == JPEG_MODEL else {"image": image}
            call_model(signature, name, **kwargs)  # warm-up (tracing, allocations)
            start = time.monotonic()
            outputs = call_model(signature, name, **kwargs)
            millis = 1000 * (time.monotonic() - start)
            found = to_coco_results(outputs, 0, 1, height, width)
            confident = [r for r in found if r["score"] >= 0.5]
            labels = sorted(CLASSES[r["category_id"] - 1] for r in confident)
            per_shape = []
            for shape in shapes:
                gt = mask_utils.encode(np.asfortranarray(shape.mask.astype(np.uint8)))
                best = 0.0
                for r in confident:
                    if r["category_id"] == shape.class_id:
                        best = max(best, float(mask_utils.iou([r["segmentation"]], [gt], [0])[0][0]))
                per_shape.append({"label": shape.label, "best_mask_iou": round(best, 3)})
            check = {"model": name, "size": f"{width}x{height}", "ms": round(millis, 1),
                     "input": "jpeg" if name == JPEG_MODEL else "uint8 tensor",
                     "found_score_over_0.5": labels, "truth": per_shape}
            log(f"check: {check}")
            checks.append(check)
    return checks


def save_report(report: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2))
