"""The report's plots as PNG files, drawn with matplotlib from report.json's own numbers.

One set per model (the compared model's files end in `_compare`): precision-recall curves at IoU 0.5
(every class and the all-class mean), precision/recall/F1 against the score threshold with the
operating point, score histograms of true and false positives, and the confusion matrix (classes plus
background; a classifier's has "other label"). A comparison adds the per-class deltas. matplotlib's
object API (`Figure`, no pyplot state) draws with the Agg backend, so workers need no display and
threads do not share a figure.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from web.jobs.store import write_atomic

DPI = 110
CURVES_NAMED = 10  # per-class curves with a legend entry; more classes are drawn thin and unnamed
ANNOTATED_CELLS = 20  # confusion matrices up to this many classes print their counts
SUFFIXES = ("", "_compare")


def _text(name: object) -> str:
    """A name as matplotlib shows it literally: `$` would start mathtext (and fail the job on a bad
    formula), a leading `_` would hide a legend entry."""
    text = str(name).replace("$", r"\$")
    return f" {text}" if text.startswith("_") else text


def plot_name(plot: str, model: int) -> str:
    """The result file name of one model's plot: `pr_curves.png`, `pr_curves_compare.png`, ..."""
    return f"{plot}{SUFFIXES[model]}.png"


def _png(figure: Figure) -> bytes:
    out = io.BytesIO()
    figure.savefig(out, format="png", dpi=DPI, bbox_inches="tight")
    return out.getvalue()


def _pr_curves(entry: Mapping[str, Any], title: str) -> Figure:
    curve = entry["pr_curve"]
    recall = curve["recall"]
    figure = Figure(figsize=(6.4, 4.8))
    axes = figure.add_subplot()
    by_size = {row["name"]: row.get("ground_truth", 0) for row in entry["per_class"]}
    ranked = sorted(curve["per_class"], key=lambda name: (-by_size.get(name, 0), name))
    for rank, name in enumerate(ranked):
        points = [(r, p) for r, p in zip(recall, curve["per_class"][name], strict=True) if p is not None]
        if not points:
            continue
        named = rank < CURVES_NAMED
        axes.plot(
            [r for r, _ in points],
            [p for _, p in points],
            linewidth=1.2 if named else 0.6,
            alpha=0.9 if named else 0.4,
            label=_text(name) if named else None,
        )
    mean = [(r, p) for r, p in zip(recall, curve["all"], strict=True) if p is not None]
    if mean:
        axes.plot(
            [r for r, _ in mean], [p for _, p in mean], color="black", linewidth=2.6, label="all classes"
        )
    axes.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="recall", ylabel="precision")
    axes.set_title(f"{_text(title)}: precision-recall at IoU 0.5")
    axes.grid(alpha=0.3)
    axes.legend(loc="lower left", fontsize="small")
    return figure


def _thresholds(entry: Mapping[str, Any], title: str, operating: float) -> Figure:
    rows = entry["thresholds"]
    figure = Figure(figsize=(6.4, 4.0))
    axes = figure.add_subplot()
    scores = [row["score"] for row in rows]
    for key, colour in (("precision", "#1f6feb"), ("recall", "#2ea043"), ("f1", "#8250df")):
        values = [row[key] for row in rows]
        axes.plot(
            [s for s, v in zip(scores, values, strict=True) if v is not None],
            [v for v in values if v is not None],
            label=key if key != "f1" else "F1",
            color=colour,
        )
    axes.axvline(
        operating, color="#666666", linestyle="--", linewidth=1, label=f"operating score {operating:g}"
    )
    axes.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="score threshold (min_score)", ylabel="value")
    axes.set_title(f"{_text(title)}: precision, recall and F1 by threshold")
    axes.grid(alpha=0.3)
    axes.legend(loc="lower left", fontsize="small")
    return figure


def _scores(entry: Mapping[str, Any], title: str) -> Figure:
    histogram = entry["score_histogram"]
    edges = histogram["edges"]
    lefts, widths = edges[:-1], [b - a for a, b in zip(edges, edges[1:], strict=False)]
    figure = Figure(figsize=(6.4, 4.0))
    axes = figure.add_subplot()
    axes.bar(
        lefts,
        histogram["true_positives"],
        widths,
        align="edge",
        color="#2ea043",
        alpha=0.7,
        label="true positives",
    )
    axes.bar(
        lefts,
        histogram["false_positives"],
        widths,
        align="edge",
        color="#da3633",
        alpha=0.5,
        label="false positives",
    )
    axes.set(xlim=(0, 1), xlabel="score", ylabel="predictions")
    axes.set_title(f"{_text(title)}: scores of true and false positives (IoU 0.5)")
    axes.legend(fontsize="small")
    return figure


def _confusion(
    confusion: Mapping[str, Any], title: str, rows: Sequence[str], columns: Sequence[str]
) -> Figure:
    matrix = confusion["matrix"]
    side = max(4.0, min(16.0, 0.45 * len(columns) + 2.5))
    figure = Figure(figsize=(side + 1.2, side))
    axes = figure.add_subplot()
    image = axes.imshow(matrix, cmap="Blues")
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04)
    axes.set_xticks(
        range(len(columns)), labels=[_text(c) for c in columns], rotation=60, ha="right", fontsize="small"
    )
    axes.set_yticks(range(len(rows)), labels=[_text(r) for r in rows], fontsize="small")
    axes.set(xlabel="predicted", ylabel="ground truth")
    axes.set_title(f"{_text(title)}: confusion matrix")
    if len(columns) <= ANNOTATED_CELLS:
        peak = max((max(row) for row in matrix if row), default=0)
        for i, row in enumerate(matrix):
            for j, value in enumerate(row):
                if value:
                    colour = "white" if value > peak / 2 else "black"
                    axes.text(j, i, str(value), ha="center", va="center", color=colour, fontsize="small")
    return figure


def _deltas(comparison: Mapping[str, Any]) -> Figure:
    rows = [row for row in comparison["per_class"] if row["delta"] is not None]
    rows.sort(key=lambda row: row["delta"])
    figure = Figure(figsize=(6.4, max(2.5, 0.28 * len(rows) + 1.2)))
    axes = figure.add_subplot()
    colours = ["#2ea043" if row["delta"] >= 0 else "#da3633" for row in rows]
    axes.barh(range(len(rows)), [row["delta"] for row in rows], color=colours)
    axes.set_yticks(range(len(rows)), labels=[_text(row["name"]) for row in rows])
    axes.axvline(0, color="black", linewidth=0.8)
    first, second = comparison["models"]
    axes.set(xlabel=f"{_text(second)} minus {_text(first)}")
    axes.set_title("per-class change")
    axes.grid(axis="x", alpha=0.3)
    return figure


def write_plots(report: Mapping[str, Any], folder: Path) -> dict[str, Path]:
    """Every plot of the report as `<folder>/<name>.png`; the names and paths written."""
    written: dict[str, Path] = {}

    def save(name: str, figure: Figure) -> None:
        write_atomic(folder / name, _png(figure), fsync=False)
        written[name] = folder / name

    operating = float(report["protocol"]["operating_score"])
    for model, entry in enumerate(report["models"][: len(SUFFIXES)]):
        title = entry["label"]
        confusion = entry["confusion"]
        labels = confusion["labels"]
        if report["kind"] == "detection":
            save(plot_name("pr_curves", model), _pr_curves(entry, title))
            save(plot_name("thresholds", model), _thresholds(entry, title, operating))
            save(plot_name("scores", model), _scores(entry, title))
            save(plot_name("confusion", model), _confusion(confusion, title, labels, labels))
        else:  # rows: the classes; columns: the classes and "other label"
            save(plot_name("confusion", model), _confusion(confusion, title, labels[:-1], labels))
    comparison = report.get("comparison")
    if comparison and any(row["delta"] is not None for row in comparison["per_class"]):
        save("per_class_deltas.png", _deltas(comparison))
    return written
