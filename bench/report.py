"""Turn measurements into the printed table, `latest.json`, `latest.md` and the issue's targets.

Ratios are always against the direct gRPC floor of the same model and image size: p50 latency
gateway/direct (lower is better, 1.00 = free) and throughput gateway/direct (higher is better).
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import json
import os
import platform
from pathlib import Path

WORKLOAD_LABELS = {
    "direct": "direct gRPC Predict (prebuilt request)",
    "gateway_json": "gateway POST /predict (JSON)",
    "gateway_image": "gateway POST /predict_image (JPEG)",
    "tutorial": "tutorial pattern (TF, new channel)",
}
# The issue's targets (issue 5); checked here, never in unit tests.
P50_RATIO_TARGETS = {"shapes_jpeg": 1.10, "shapes": 1.25}
P50_TARGET_SIZE = "640x480"
THROUGHPUT_RATIO_TARGET = 0.90
THROUGHPUT_TARGET_CONCURRENCY = 16
WORKER_RSS_TARGET_MB = 120.0
STARTUP_TARGET_S = 1.5
# "A small fraction of the model's time": masks for 20 instances within 10 % of a direct Predict.
MASK_COST_TARGET_FRACTION = 0.10
STAGES = ("decode", "predict", "postprocess", "render")
JSON_STAGES = ("decode", "predict", "postprocess")


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def machine() -> dict:
    """What the numbers were measured on (CPU, cores, RAM, versions, load), without importing TensorFlow."""
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram_gb = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram_gb = round(int(line.split()[1]) * 1024 / 2**30, 1)
    except OSError:
        pass
    tensorflow = _version("tensorflow")
    if tensorflow == "not installed":
        tensorflow = f"{_version('tensorflow-cpu')} (tensorflow-cpu)"
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)),
        "ram_gb": ram_gb,
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "tensorflow": tensorflow,
        "tensorflow_serving_api": _version("tensorflow-serving-api"),
        "grpcio": _version("grpcio"),
        "protobuf": _version("protobuf"),
        "gunicorn": _version("gunicorn"),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "date": dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat(),
    }


def _find(rows: list[dict], **keys: str) -> dict | None:
    return next((r for r in rows if all(r.get(k) == v for k, v in keys.items())), None)


def add_ratios(result: dict) -> None:
    """p50 ratio vs direct for every latency row; throughput ratio for every concurrency level."""
    for row in result["latency"]:
        direct = _find(result["latency"], workload="direct", model=row["model"], size=row["size"])
        ok = direct and direct.get("p50_ms") and row.get("p50_ms")
        row["p50_vs_direct"] = round(row["p50_ms"] / direct["p50_ms"], 3) if ok else None
    for row in result["concurrency"]:
        direct, gateway = row["direct"].get("throughput_req_s"), row["gateway"].get("throughput_req_s")
        row["throughput_gateway_vs_direct"] = round(gateway / direct, 3) if direct and gateway else None


def _check(name: str, target: str, value: float | bool | None, passed: bool | None) -> dict:
    status = "n/a" if passed is None else ("PASS" if passed else "MISS")
    return {"target": name, "wanted": target, "measured": value, "status": status}


def targets(result: dict) -> list[dict]:
    """The issue's targets with PASS / MISS (n/a when the run did not measure it)."""
    checks = []
    latency = result["latency"]
    for model, limit in P50_RATIO_TARGETS.items():
        row = _find(latency, workload="gateway_json", model=model, size=P50_TARGET_SIZE)
        ratio = row.get("p50_vs_direct") if row else None
        checks.append(_check(f"p50 gateway/direct, {model} {P50_TARGET_SIZE}", f"<= {limit:.2f}", ratio,
                             None if ratio is None else ratio <= limit))
    for row in result["concurrency"]:
        if row["concurrency"] == THROUGHPUT_TARGET_CONCURRENCY:
            ratio = row.get("throughput_gateway_vs_direct")
            checks.append(_check(
                f"throughput gateway/direct at concurrency {THROUGHPUT_TARGET_CONCURRENCY}, "
                f"{row['model']} {row['size']}", f">= {THROUGHPUT_RATIO_TARGET:.2f}", ratio,
                None if ratio is None else ratio >= THROUGHPUT_RATIO_TARGET))
    for row in latency:
        if row["workload"] != "tutorial":
            continue
        gateway = _find(latency, workload="gateway_json", model=row["model"], size=row["size"])
        if gateway is None:
            continue
        g, t = gateway.get("p50_ms"), row.get("p50_ms")
        checks.append(_check(f"gateway /predict faster than tutorial, {row['model']} {row['size']}",
                             "p50 gateway < tutorial", f"{g:.1f} vs {t:.1f} ms" if g and t else None,
                             None if not (g and t) else g < t))
    workers = result.get("memory", {}).get("workers", [])
    rss = max((w["rss_mb"] for w in workers), default=None)
    checks.append(_check("gateway worker RSS after the workload (largest worker)",
                         f"<= {WORKER_RSS_TARGET_MB:.0f} MB", None if rss is None else f"{rss:.1f} MB",
                         None if rss is None else rss <= WORKER_RSS_TARGET_MB))
    startup_tf = result.get("startup", {}).get("tensorflow_loaded", False)
    tf = any(w["tensorflow_loaded"] for w in workers) or startup_tf
    checks.append(_check("no TensorFlow runtime in gateway workers", "not mapped",
                         ("LOADED" if tf else "not mapped") if workers else None,
                         (not tf) if workers else None))
    startup = result.get("startup", {}).get("median_s")
    checks.append(_check("gateway start-up: Popen to first /healthz 200 (median)", f"<= {STARTUP_TARGET_S} s",
                         None if startup is None else f"{startup:.2f} s",
                         None if startup is None else startup <= STARTUP_TARGET_S))
    masks = result.get("masks")
    direct = _find(latency, workload="direct", model="shapes", size=P50_TARGET_SIZE)
    if masks and direct and direct.get("p50_ms"):
        fraction = masks["p50_ms"] / direct["p50_ms"]
        checks.append(_check(
            f"masks: reframe + RLE + JSON of {masks['instances']} instances at {masks['image']}",
            f"<= {MASK_COST_TARGET_FRACTION:.0%} of the model's p50",
            f"{masks['p50_ms']:.2f} ms = {fraction:.1%} of {direct['p50_ms']:.1f} ms",
            fraction <= MASK_COST_TARGET_FRACTION))
    stages = result.get("stages", {})
    in_json = stages.get("json_keys")
    if in_json is not None:  # /predict draws nothing, so `render` belongs to /predict_image only
        missing = [s for s in JSON_STAGES if s not in in_json]
        checks.append(_check("per-stage timings_ms in /predict JSON", ", ".join(JSON_STAGES),
                             ", ".join(in_json) or "none", not missing))
    histograms = stages.get("histograms")
    if histograms is not None:
        missing = [s for s, seen in histograms.items() if not seen]
        checks.append(_check("per-stage Prometheus histograms on /metrics", ", ".join(STAGES),
                             "missing: " + ", ".join(missing) if missing else "all", not missing))
    return checks


def _fmt(value: object, digits: int = 1) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _stages(row: dict) -> str:
    stages = row.get("server_stages_ms") or {}
    return " ".join(f"{k} {v:.1f}" for k, v in stages.items())


def latency_table(result: dict) -> list[list[str]]:
    header = ["workload", "model", "image", "n", "p50 ms", "p95 ms", "req/s", "p50 vs direct", "errors",
              "gateway stages (median ms)"]
    rows = [header]
    for row in result["latency"]:
        rows.append([WORKLOAD_LABELS[row["workload"]], row["model"], row["size"], _fmt(row["n"]),
                     _fmt(row["p50_ms"]), _fmt(row["p95_ms"]), _fmt(row["req_s"]),
                     _fmt(row["p50_vs_direct"], 2), _fmt(row["errors"]), _stages(row)])
    return rows


def concurrency_table(result: dict) -> list[list[str]]:
    header = ["model", "image", "concurrency", "direct req/s", "gateway req/s", "gateway/direct",
              "direct p50/p95 ms", "gateway p50/p95 ms", "errors d/g"]
    rows = [header]
    for row in result["concurrency"]:
        d, g = row["direct"], row["gateway"]
        rows.append([row["model"], row["size"], str(row["concurrency"]), _fmt(d["throughput_req_s"]),
                     _fmt(g["throughput_req_s"]), _fmt(row["throughput_gateway_vs_direct"], 2),
                     f"{_fmt(d['p50_ms'])} / {_fmt(d['p95_ms'])}",
                     f"{_fmt(g['p50_ms'])} / {_fmt(g['p95_ms'])}",
                     f"{d['errors']}/{g['errors']}"])
    return rows


def targets_table(result: dict) -> list[list[str]]:
    rows = [["target", "wanted", "measured", "status"]]
    rows += [[t["target"], t["wanted"], _fmt(t["measured"], 2), t["status"]] for t in result["targets"]]
    return rows


def text_table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown_table(rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + "|".join("---" for _ in rows[0]) + "|"]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in r) + " |" for r in rows[1:]]
    return "\n".join(lines)


def machine_line(result: dict) -> str:
    m = result["machine"]
    return (f"{m['cpu']}, {m['usable_cores']} cores usable ({m['cores']} online), {m['ram_gb']} GB RAM, "
            f"{m['os']}; Python {m['python']}, TensorFlow {m['tensorflow']}, grpcio {m['grpcio']}, "
            f"protobuf {m['protobuf']}, gunicorn {m['gunicorn']}; {m['date']}; "
            f"load average at start {', '.join(str(x) for x in m['load_average_at_start'])}"
            + (f", at end {', '.join(str(x) for x in m['load_average_at_end'])}" if "load_average_at_end" in m
               else ""))


def _extra_lines(result: dict) -> list[str]:
    s = result["settings"]
    lines = [f"Gateway: {s['gateway']}. Model server: {s['model_server']}.",
             "Images: " + ", ".join(f"{i['name']} JPEG ({i['bytes'] / 1e3:.0f} kB)" for i in s["images"])
             + f"; {s['iterations']} rounds at 640x480, {s['large_iterations']} at 4000x3000, "
             f"{s['warmup']} warm-up requests per workload; concurrency runs: "
             + ", ".join(f"{n} requests at {c}" for c, n in s["concurrency_requests"].items()) + "."]
    lines.append("At 4000x3000 the gateway shrinks the picture to MAX_INPUT_SIDE before sending it to the "
                 "pixel-input model `shapes`; the direct and tutorial rows send all 36 MB of pixels.")
    workers = result.get("memory", {}).get("workers", [])
    if workers:
        lines.append("Gateway workers after the workload: " + "; ".join(
            f"pid {w['pid']} RSS {w['rss_mb']:.0f} MB (peak {w['peak_rss_mb']:.0f} MB), TensorFlow "
            f"{'LOADED' if w['tensorflow_loaded'] else 'not loaded'}" for w in workers))
    masks = result.get("masks")
    if masks:
        lines.append(f"Masks ({masks['instances']} instances, {masks['image']}, gateway's own functions, "
                     f"median of {masks['iterations']}): reframe + RLE + JSON {masks['p50_ms']:.2f} ms "
                     f"(p95 {masks['p95_ms']:.2f} ms), {masks['json_bytes'] / 1e3:.1f} kB of JSON.")
    startup = result.get("startup", {})
    if startup.get("seconds"):
        runs = ", ".join(f"{x:.2f}" for x in startup["seconds"])
        lines.append(f"Gateway start-up (Popen to first /healthz 200, 1 worker): median "
                     f"{startup['median_s']:.2f} s over {len(startup['seconds'])} runs ({runs}); a fresh "
                     f"worker's RSS right then: {_fmt(startup.get('fresh_worker_rss_mb'), 0)} MB.")
    return lines


def render_text(result: dict) -> str:
    quick = ["QUICK SMOKE RUN: too few requests for the numbers to mean much."] \
        if result["settings"].get("quick") else []
    parts = [*quick, f"Machine: {machine_line(result)}", *_extra_lines(result), "",
             "Sequential latency (one request at a time)", text_table(latency_table(result)), "",
             "Throughput (closed loop)", text_table(concurrency_table(result)), "",
             "Targets (issue 5)", text_table(targets_table(result))]
    return "\n".join(parts)


def render_markdown(result: dict) -> str:
    quick = " — QUICK SMOKE RUN (too few requests to quote)" if result["settings"].get("quick") else ""
    parts = [f"### Benchmark (`make bench`){quick}", "",
             f"Measured on: {machine_line(result)}.", "",
             *[f"{line}  " for line in _extra_lines(result)], "",
             "Sequential latency (one request at a time; ratio = p50 / p50 of direct gRPC for the same model "
             "and image):", "", markdown_table(latency_table(result)), "",
             "Throughput (closed loop, fixed request count per level):", "",
             markdown_table(concurrency_table(result)),
             "", "Targets (issue 5):", "", markdown_table(targets_table(result)), ""]
    return "\n".join(parts)


def write(result: dict, out_dir: Path) -> tuple[Path, Path]:
    """latest.json and latest.md in `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out_dir / "latest.json", out_dir / "latest.md"
    json_path.write_text(json.dumps(result, indent=2) + "\n")
    md_path.write_text(render_markdown(result))
    return json_path, md_path
