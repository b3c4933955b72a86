"""Turn measurements into the printed tables, `latest.json`, `latest.md` and the issues' targets.

Ratios are always against the direct gRPC floor of the same model and image size: p50 latency
gateway/direct (lower is better, 1.00 = free) and throughput gateway/direct (higher is better).
The minimal forwarder (bench/forwarder.py) is a reference row: what any Python WSGI app under the
same gunicorn and gRPC channel costs.
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import json
import os
import platform
from pathlib import Path

from bench.cpu_table import order_stages, top_phases

WORKLOAD_LABELS = {
    "direct": "direct gRPC Predict (prebuilt request)",
    "gateway_json": "gateway POST /predict (JSON)",
    "gateway_image": "gateway POST /predict_image (JPEG)",
    "forwarder": "minimal forwarder POST /predict (floor)",
    "tutorial": "tutorial pattern (TF, new channel)",
}
LEAN, ISSUE5 = "a leaner request path", "issue 5"

# Targets of "a leaner request path" (the values are the issue's).
# Gateway workers' CPU per request (all processes, all threads) at 640x480, ms; headline: multipart.
CPU_TARGETS_MS = {"shapes_jpeg": 3.0, "shapes": 5.5}
CPU_TARGET_SIZE = "640x480"
HEADLINE_FORM = "multipart"
# Gateway /predict p50 minus direct gRPC p50 at 640x480 (sequential, same run), ms.
ADDED_P50_TARGETS_MS = {"shapes_jpeg": 2.0, "shapes": 4.0}
# Throughput gateway/direct (closed loop, 640x480) at these concurrencies, per CPU mode.
THROUGHPUT_RATIO_TARGETS = {"pinned": 0.97, "shared": 0.80}
THROUGHPUT_TARGET_LEVELS = (4, 16)
# /predict_image at 4000x3000: p50 at most 70 % of the baseline's (at least 30 % faster). The baseline
# p50s were measured on 2026-12-01 (05:25 UTC) on a quiet machine with `python -m bench --no-tutorial
# --startup-repeats 1 --concurrency 4` run from a clean checkout of d499bd5 (the last commit before
# this work) on the same 2-core AMD EPYC box (23.5 GB RAM, Python 3.11.7, grpcio 1.85.1, gunicorn
# 27.0.1), 20 sequential requests each, 3 warm-up. Direct gRPC p50 in that run: shapes 375.7 ms,
# shapes_jpeg 197.8 ms at 4000x3000 (this box was about half as fast as on 2026-11-22).
PREDICT_IMAGE_BASELINE_P50_MS = {"shapes": 400.0, "shapes_jpeg": 501.6}
PREDICT_IMAGE_SIZE = "4000x3000"
PREDICT_IMAGE_LIMIT = 0.70

# Issue 5's targets still checked (its throughput target, 0.90 at concurrency 16 on the shared box, is
# superseded by the pair above). Checked here, never in unit tests.
P50_RATIO_TARGETS = {"shapes_jpeg": 1.10, "shapes": 1.25}
P50_TARGET_SIZE = "640x480"
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


def _find(rows: list[dict], **keys: object) -> dict | None:
    return next((r for r in rows if all(r.get(k) == v for k, v in keys.items())), None)


def add_ratios(result: dict) -> None:
    """p50 ratio and difference vs direct for every latency row; throughput ratios (gateway and
    forwarder vs direct) for every concurrency row."""
    for row in result["latency"]:
        direct = _find(result["latency"], workload="direct", model=row["model"], size=row["size"])
        ok = direct and direct.get("p50_ms") and row.get("p50_ms")
        row["p50_vs_direct"] = round(row["p50_ms"] / direct["p50_ms"], 3) if ok else None
        row["p50_minus_direct_ms"] = round(row["p50_ms"] - direct["p50_ms"], 2) if ok else None
    for row in result["concurrency"]:
        direct = row["direct"].get("throughput_req_s")
        for name in ("gateway", "forwarder"):
            value = (row.get(name) or {}).get("throughput_req_s")
            row[f"throughput_{name}_vs_direct"] = round(value / direct, 3) if direct and value else None


def _check(name: str, target: str, value: float | bool | str | None, passed: bool | None,
           group: str = ISSUE5) -> dict:
    status = "n/a" if passed is None else ("PASS" if passed else "MISS")
    return {"target": name, "wanted": target, "measured": value, "status": status, "group": group}


def cpu_targets(result: dict) -> list[dict]:
    """Gateway workers' CPU per request at 640x480 per model and upload form; a MISS names the
    largest phases."""
    checks = []
    columns = (result.get("cpu") or {}).get("columns", [])
    for model, limit in CPU_TARGETS_MS.items():
        for form in ("multipart", "raw"):
            column = _find(columns, target="gateway", model=model, form=form, size=CPU_TARGET_SIZE)
            name = (f"gateway worker CPU per request, {model} {CPU_TARGET_SIZE}, {form} upload"
                    + (" (headline)" if form == HEADLINE_FORM else ""))
            if column is None or not column.get("requests"):
                checks.append(_check(name, f"<= {limit:.1f} ms", None, None, LEAN))
                continue
            total = column["total_ms"]
            passed = total <= limit
            measured = f"{total:.2f} ms"
            if not passed:
                measured += (f" (largest: {top_phases(column)})" if column.get("stages_ms") is not None
                             else " (no stage counter on /metrics: no breakdown)")
            checks.append(_check(name, f"<= {limit:.1f} ms", measured, passed, LEAN))
    return checks


def throughput_targets(result: dict) -> list[dict]:
    checks = []
    modes = (result.get("cpu_modes") or {}).get("modes", {})
    for mode, limit in THROUGHPUT_RATIO_TARGETS.items():
        for model in result.get("settings", {}).get("models", []):
            for level in THROUGHPUT_TARGET_LEVELS:
                row = _find(result.get("concurrency", []), mode=mode, model=model, concurrency=level)
                name = f"throughput gateway/direct, {mode} CPUs, concurrency {level}, {model}"
                if row is None:
                    skipped = (modes.get(mode) or {}).get("skipped", "not measured")
                    checks.append(_check(name, f">= {limit:.2f}", skipped, None, LEAN))
                    continue
                ratio = row.get("throughput_gateway_vs_direct")
                passed = None if ratio is None else ratio >= limit
                checks.append(_check(name, f">= {limit:.2f}", ratio, passed, LEAN))
    return checks


def targets(result: dict) -> list[dict]:
    """The issues' targets with PASS / MISS (n/a when the run did not measure it)."""
    latency = result["latency"]
    checks = cpu_targets(result)
    for model, limit in ADDED_P50_TARGETS_MS.items():
        row = _find(latency, workload="gateway_json", model=model, size=P50_TARGET_SIZE)
        added = row.get("p50_minus_direct_ms") if row else None
        checks.append(_check(f"p50 added over direct gRPC, /predict, {model} {P50_TARGET_SIZE}",
                             f"<= {limit:.1f} ms", None if added is None else f"{added:.2f} ms",
                             None if added is None else added <= limit, LEAN))
    checks += throughput_targets(result)
    for model, baseline in PREDICT_IMAGE_BASELINE_P50_MS.items():
        row = _find(latency, workload="gateway_image", model=model, size=PREDICT_IMAGE_SIZE)
        p50 = row.get("p50_ms") if row else None
        limit = PREDICT_IMAGE_LIMIT * baseline
        checks.append(_check(
            f"/predict_image p50, {model} {PREDICT_IMAGE_SIZE}, vs baseline {baseline:.0f} ms",
            f"<= {limit:.0f} ms ({PREDICT_IMAGE_LIMIT:.0%})",
            None if p50 is None else f"{p50:.1f} ms = {p50 / baseline:.0%}",
            None if p50 is None else p50 <= limit, LEAN))
    workers = result.get("memory", {}).get("workers", [])
    rss = max((w["rss_mb"] for w in workers), default=None)
    checks.append(_check("gateway worker RSS after all the load, 4000x3000 included (largest worker)",
                         f"<= {WORKER_RSS_TARGET_MB:.0f} MB", None if rss is None else f"{rss:.1f} MB",
                         None if rss is None else rss <= WORKER_RSS_TARGET_MB, LEAN))

    for model, limit in P50_RATIO_TARGETS.items():
        row = _find(latency, workload="gateway_json", model=model, size=P50_TARGET_SIZE)
        ratio = row.get("p50_vs_direct") if row else None
        checks.append(_check(f"p50 gateway/direct, {model} {P50_TARGET_SIZE}", f"<= {limit:.2f}", ratio,
                             None if ratio is None else ratio <= limit))
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
    header = ["workload", "model", "image", "n", "p50 ms", "p95 ms", "req/s", "p50 vs direct",
              "p50 - direct ms", "errors", "gateway stages (median ms)"]
    rows = [header]
    for row in result["latency"]:
        rows.append([WORKLOAD_LABELS[row["workload"]], row["model"], row["size"], _fmt(row["n"]),
                     _fmt(row["p50_ms"]), _fmt(row["p95_ms"]), _fmt(row["req_s"]),
                     _fmt(row["p50_vs_direct"], 2), _fmt(row.get("p50_minus_direct_ms"), 2),
                     _fmt(row["errors"]), _stages(row)])
    return rows


def concurrency_table(result: dict) -> list[list[str]]:
    forwarder = any(row.get("forwarder") for row in result["concurrency"])
    header = ["CPUs", "model", "image", "concurrency", "direct req/s", "gateway req/s", "gateway/direct"]
    if forwarder:
        header += ["forwarder req/s", "forwarder/direct"]
    header += ["p50/p95 ms direct", "gateway"] + (["forwarder"] if forwarder else []) + ["errors"]
    rows = [header]
    for row in result["concurrency"]:
        d, g, f = row["direct"], row["gateway"], row.get("forwarder")
        cells = [row.get("mode", "shared"), row["model"], row["size"], str(row["concurrency"]),
                 _fmt(d["throughput_req_s"]), _fmt(g["throughput_req_s"]),
                 _fmt(row["throughput_gateway_vs_direct"], 2)]
        if forwarder:
            cells += [_fmt((f or {}).get("throughput_req_s")),
                      _fmt(row.get("throughput_forwarder_vs_direct"), 2)]
        cells += [f"{_fmt(d['p50_ms'])} / {_fmt(d['p95_ms'])}", f"{_fmt(g['p50_ms'])} / {_fmt(g['p95_ms'])}"]
        if forwarder:
            cells.append(f"{_fmt((f or {}).get('p50_ms'))} / {_fmt((f or {}).get('p95_ms'))}")
        cells.append("/".join(str(x["errors"]) for x in (d, g, f) if x is not None))
        rows.append(cells)
    return rows


def cpu_columns_of(result: dict, target: str) -> list[dict]:
    return [c for c in (result.get("cpu") or {}).get("columns", []) if c.get("target") == target]


def cpu_breakdown_table(result: dict) -> list[list[str]]:
    """Rows: the gateway's stages, other, total, the forwarder's total (the floor), the target and
    its status; columns: model x upload form (ms of worker CPU per request)."""
    gateway = cpu_columns_of(result, "gateway")
    forwarder = cpu_columns_of(result, "forwarder")
    if not gateway:
        return []
    # stages of other routes (render, for /predict_image) stay at zero here: left out
    stages = order_stages({s for c in gateway for s, ms in (c.get("stages_ms") or {}).items()
                           if abs(ms) >= 0.005})
    rows = [["ms CPU / request"] + [f"{c['model']} {c['form']}" for c in gateway]]
    for stage in stages:
        rows.append([f"  {stage}"] + [_fmt((c.get("stages_ms") or {}).get(stage), 2) for c in gateway])
    rows.append(["  other (no stage)"] + [_fmt(c["other_ms"], 2) for c in gateway])
    rows.append(["total (all worker CPU)"] + [_fmt(c["total_ms"], 2) for c in gateway])
    if forwarder:
        row = ["floor: minimal forwarder total"]
        for c in gateway:
            match = _find(forwarder, model=c["model"], form=c["form"], size=c["size"])
            row.append(_fmt(match["total_ms"], 2) if match else "–")
        rows.append(row)
    targets_row, status_row = ["target (total)"], ["status"]
    for c in gateway:
        limit = CPU_TARGETS_MS.get(c["model"]) if c["size"] == CPU_TARGET_SIZE else None
        targets_row.append("–" if limit is None else f"<= {limit:.1f}")
        measured = c.get("total_ms") is not None
        status_row.append("–" if limit is None else "n/a" if not measured
                          else "PASS" if c["total_ms"] <= limit else "MISS")
    rows += [targets_row, status_row]
    rows.append(["resolution (± ms)"] + [_fmt(c.get("resolution_ms"), 2) for c in gateway])
    rows.append(["requests / errors"] + [f"{c['requests']} / {c['errors']}" for c in gateway])
    return rows


def cpu_notes(result: dict) -> list[str]:
    cpu = result.get("cpu") or {}
    gateway = cpu_columns_of(result, "gateway")
    if not gateway:
        return []
    size = gateway[0]["size"]
    lines = [f"Gateway workers' CPU (utime + stime of every worker process, all threads) per request at "
             f"{size}, {cpu.get('requests')} sequential POST /predict per column after warm-up, shared CPUs; "
             f"stage rows from {cpu.get('metric')} on /metrics (the request thread's own CPU in each stage), "
             "other = total - stages (gunicorn, Flask, gRPC's threads, the allocator)."]
    if not any(c.get("stage_counter_found") for c in gateway):
        lines.append(f"The gateway does not export {cpu.get('metric')}: no stage breakdown, other = total.")
    changed = [f"{c['model']} {c['form']}" for c in result["cpu"]["columns"] if c.get("workers_changed")]
    if changed:
        lines.append("A worker restarted during " + ", ".join(changed) + ": those columns count the "
                     "workers that lived through the run only.")
    return lines


def wrk_table(result: dict) -> list[list[str]]:
    rows = [["CPUs", "model", "connections", "wrk req/s", "wrk p50 / p90 / p99 ms", "non-2xx",
             "socket errors", "wrk on CPUs", "Python gateway req/s", "wrk / Python"]]
    for row in (result.get("wrk") or {}).get("rows", []):
        w = row["wrk"]
        if "error" in w:
            rows.append([row["mode"], row["model"], _fmt(row["concurrency"]), "error: " + w["error"][:80],
                         "", "", "", "", "", ""])
            continue
        python = _find(result.get("concurrency", []), mode=row["mode"], model=row["model"],
                       concurrency=row["concurrency"])
        py_rps = python["gateway"].get("throughput_req_s") if python else None
        lat = w.get("latency_ms", {})
        socket = sum(w.get("socket_errors", {}).values())
        rows.append([row["mode"], row["model"], str(row["concurrency"]), _fmt(w["requests_per_s"]),
                     " / ".join(_fmt(lat.get(p)) for p in ("p50", "p90", "p99")), str(w["non_2xx"]),
                     str(socket), w.get("cpus_allowed") or "?", _fmt(py_rps),
                     _fmt(w["requests_per_s"] / py_rps, 2) if py_rps else "–"])
    return rows


def modes_lines(result: dict) -> list[str]:
    info = result.get("cpu_modes") or {}
    lines = []
    for mode, entry in info.get("modes", {}).items():
        if "skipped" in entry:
            lines.append(f"CPU mode {mode}: {entry['skipped']}.")
            continue
        moved = "; ".join(f"{name}: {m['processes']} process(es), {m['threads']} threads on CPU {m['cpus']}"
                          + ("" if m["all_moved"] else " (not all moved)")
                          for name, m in entry["moved"].items())
        lines.append(f"CPU mode {entry['placement']} ({moved}).")
    return lines


def targets_table(result: dict, group: str | None = None) -> list[list[str]]:
    rows = [["target", "wanted", "measured", "status"]]
    rows += [[t["target"], t["wanted"], _fmt(t["measured"], 2), t["status"]] for t in result["targets"]
             if group is None or t.get("group", ISSUE5) == group]
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
    lines = [f"Gateway: {s['gateway']}. Model server: {s['model_server']}."
             + (f" Floor: {s['forwarder']}." if s.get("forwarder") else ""),
             "Images: " + ", ".join(f"{i['name']} JPEG ({i['bytes'] / 1e3:.0f} kB)" for i in s["images"])
             + f"; {s['iterations']} rounds at 640x480, {s['large_iterations']} at 4000x3000, "
             f"{s['warmup']} warm-up requests per workload; concurrency runs: "
             + ", ".join(f"{n} requests at {c}" for c, n in s["concurrency_requests"].items()) + "."]
    lines.append("At 4000x3000 the gateway shrinks the picture to MAX_INPUT_SIDE before sending it to the "
                 "pixel-input model `shapes`; the direct and tutorial rows send all 36 MB of pixels.")
    lines += modes_lines(result)
    forwarder = result.get("forwarder") or {}
    if forwarder.get("running"):
        flask = ("imported (by the web package, never called)" if forwarder.get("flask_loaded")
                 else "not imported")
        lines.append(f"Minimal forwarder ({forwarder['app']}): Flask {flask}"
                     f", TensorFlow {'IMPORTED' if forwarder.get('tensorflow_loaded') else 'not imported'}.")
    elif forwarder.get("error"):
        lines.append(f"Minimal forwarder did not start: {forwarder['error'][:300]}")
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


def _wrk_lines(result: dict) -> list[str]:
    info = result.get("wrk") or {}
    lines = []
    if info.get("skipped"):
        lines.append(f"wrk cross-check skipped: {info['skipped']}.")
    bad = [r for r in info.get("rows", []) if "error" not in r["wrk"] and not r["wrk"].get("ok", True)]
    if bad:
        lines.append("wrk saw failed requests (non-2xx answers or socket errors) in: " + ", ".join(
            f"{r['mode']} {r['model']} c{r['concurrency']}" for r in bad) + ".")
    return lines


def _sections(result: dict) -> list[tuple[str, list[list[str]], list[str]]]:
    """(title, table, notes) of every table, in print order; empty tables are left out."""
    sections = [
        ("Sequential latency (one request at a time; ratio = p50 / p50 of direct gRPC for the same model "
         "and image)", latency_table(result), []),
        ("Gateway CPU per request by phase (shared CPUs)", cpu_breakdown_table(result), cpu_notes(result)),
        ("Throughput (closed loop, Python load generator, fixed request count per level; CPUs: shared = "
         "everything on every CPU, pinned = model server on one CPU, the rest on another)",
         concurrency_table(result), []),
        ("Cross-check: wrk (C, 1 thread) against gateway POST /predict, the same multipart upload",
         wrk_table(result) if (result.get("wrk") or {}).get("rows") else [], _wrk_lines(result)),
        (f"Targets: {LEAN}", targets_table(result, LEAN), []),
        (f"Targets kept from {ISSUE5}", targets_table(result, ISSUE5), []),
    ]
    return [(title, table, notes) for title, table, notes in sections if len(table) > 1 or notes]


def render_text(result: dict) -> str:
    quick = ["QUICK SMOKE RUN: too few requests for the numbers to mean much."] \
        if result["settings"].get("quick") else []
    parts = [*quick, f"Machine: {machine_line(result)}", *_extra_lines(result)]
    for title, table, notes in _sections(result):
        parts += ["", title]
        if len(table) > 1:
            parts.append(text_table(table))
        parts += notes
    return "\n".join(parts)


def render_markdown(result: dict) -> str:
    quick = " — QUICK SMOKE RUN (too few requests to quote)" if result["settings"].get("quick") else ""
    parts = [f"### Benchmark (`make bench`){quick}", "",
             f"Measured on: {machine_line(result)}.", "",
             *[f"{line}  " for line in _extra_lines(result)]]
    for title, table, notes in _sections(result):
        parts += ["", f"{title}:", ""]
        if len(table) > 1:
            parts += [markdown_table(table), ""]
        parts += [f"{line}  " for line in notes]
    parts.append("")
    return "\n".join(parts)


def write(result: dict, out_dir: Path) -> tuple[Path, Path]:
    """latest.json and latest.md in `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out_dir / "latest.json", out_dir / "latest.md"
    json_path.write_text(json.dumps(result, indent=2) + "\n")
    md_path.write_text(render_markdown(result))
    return json_path, md_path
