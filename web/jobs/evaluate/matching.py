"""Meet a dataset's categories with a model's labels: by name (case-insensitive), then by id.

A dataset's ids rarely follow the model's label map (COCO's 91 ids against a model's 80, a team's own
export tool numbering from 0), so names come first; an id is used only for a category whose name no
label has, and only with a label that no other category took by name (nor names). Whatever stays
unmatched is named in the report and left out of the metrics: a category the model was never taught
would only drag the mean AP towards zero, and a label the dataset lacks has nothing to be scored on.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from web.jobs.evaluate.dataset import Category

BY_NAME, BY_ID = "name", "id"


@dataclass(frozen=True)
class Match:
    category: Category
    class_id: int
    label: str
    by: str  # BY_NAME | BY_ID


@dataclass(frozen=True)
class Matching:
    """Which model class stands for which category, and what was left on each side."""

    matched: tuple[Match, ...]
    unmatched_categories: tuple[Category, ...]
    unmatched_labels: tuple[tuple[int, str], ...]  # (class id, label)

    def category_of(self, class_id: int) -> int | None:
        """The dataset category id of a model class (None: the class meets no category)."""
        return self._by_class.get(class_id)

    def category_of_label(self, label: str) -> int | None:
        """The dataset category id a label names (a classifier's classes, or detections off the label map)."""
        return self._by_label.get(label.strip().casefold())

    @property
    def _by_class(self) -> dict[int, int]:
        return {m.class_id: m.category.id for m in self.matched}

    @property
    def _by_label(self) -> dict[str, int]:
        return {m.label.strip().casefold(): m.category.id for m in self.matched}

    @property
    def category_ids(self) -> list[int]:
        return sorted(m.category.id for m in self.matched)

    def to_json(self) -> dict[str, Any]:
        return {
            "matched": [
                {
                    "category_id": m.category.id,
                    "category": m.category.name,
                    "class_id": m.class_id,
                    "label": m.label,
                    "by": m.by,
                }
                for m in self.matched
            ],
            "unmatched_categories": [c.to_json() for c in self.unmatched_categories],
            "unmatched_labels": [{"class_id": i, "label": label} for i, label in self.unmatched_labels],
        }


def match_categories(categories: Sequence[Category], labels: Mapping[int, str]) -> Matching:
    """Match `categories` with the model's `labels` (class id -> name); see the module docstring."""
    by_name: dict[str, int] = {}
    for class_id, label in sorted(labels.items()):
        by_name.setdefault(label.strip().casefold(), class_id)
    matched: dict[int, Match] = {}  # category id -> match
    used: set[int] = set()
    for category in categories:
        class_id = by_name.get(category.name.casefold())
        if class_id is not None and class_id not in used:
            matched[category.id] = Match(category, class_id, labels[class_id], BY_NAME)
            used.add(class_id)
    for category in categories:
        if category.id in matched:
            continue
        if (
            category.id in labels
            and category.id not in used
            and not _names_another(labels[category.id], categories)
        ):
            matched[category.id] = Match(category, category.id, labels[category.id], BY_ID)
            used.add(category.id)
    return Matching(
        matched=tuple(matched[c.id] for c in categories if c.id in matched),
        unmatched_categories=tuple(c for c in categories if c.id not in matched),
        unmatched_labels=tuple((i, name) for i, name in sorted(labels.items()) if i not in used),
    )


def _names_another(label: str, categories: Sequence[Category]) -> bool:
    """Whether the label is the name of some category (then it is that one's, not this id's)."""
    wanted = label.strip().casefold()
    return any(c.name.casefold() == wanted for c in categories)


def nothing_matches(categories: Sequence[Category], labels: Mapping[int, str], model: str) -> str:
    """The message of a dataset that meets none of a model's labels."""
    names = ", ".join(c.name for c in categories[:8]) + (" ..." if len(categories) > 8 else "")
    known = ", ".join(labels[i] for i in sorted(labels)[:8]) + (" ..." if len(labels) > 8 else "")
    return (
        f"none of the dataset's categories ({names}) meets a label of {model} ({known}) by name or id: "
        "name the categories as the model's label map does"
    )
