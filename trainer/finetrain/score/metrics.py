"""UAR and WAR, the two numbers every DFER paper reports, from one place.

UAR: unweighted average recall, the mean over classes of per-class recall (classes absent from
y_true are left out, as scikit-learn's balanced accuracy does). WAR: weighted average recall,
which is plain accuracy. Everything a report shows (confusion matrix, per-class recall)
is computed here too, so a number in a fold table and the same number in a plot cannot disagree.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np


def _as_indices(values, num_classes: int, what: str) -> np.ndarray:
    arr = np.asarray(values, dtype=np.int64).reshape(-1)
    if arr.size and (arr.min() < 0 or arr.max() >= num_classes):
        bad = int(arr[(arr < 0) | (arr >= num_classes)][0])
        raise ValueError(f"{what} holds class index {bad}, outside 0..{num_classes - 1}")
    return arr


def confusion_matrix(y_true, y_pred, num_classes: int) -> np.ndarray:
    """Rows are true classes, columns predicted classes."""
    t = _as_indices(y_true, num_classes, "y_true")
    p = _as_indices(y_pred, num_classes, "y_pred")
    if t.shape != p.shape:
        raise ValueError(f"y_true has {t.size} entries but y_pred has {p.size}")
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (t, p), 1)
    return cm


def per_class_recall(cm: np.ndarray) -> np.ndarray:
    """Recall per class; NaN for classes with no true samples."""
    support = cm.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(support > 0, np.diag(cm) / np.maximum(support, 1), np.nan)


def uar_from_cm(cm: np.ndarray) -> float:
    recall = per_class_recall(cm)
    return float(np.nanmean(recall)) if np.any(~np.isnan(recall)) else float("nan")


def war_from_cm(cm: np.ndarray) -> float:
    total = cm.sum()
    return float(np.trace(cm) / total) if total else float("nan")


def uar_war(y_true, y_pred, num_classes: int) -> tuple[float, float]:
    cm = confusion_matrix(y_true, y_pred, num_classes)
    return uar_from_cm(cm), war_from_cm(cm)


def _clean(x: float) -> float | None:
    """JSON has no NaN: absent values become null."""
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


@dataclass
class Scores:
    """Everything a fold reports, keyed by class name so files stay readable without the label order."""

    labels: tuple[str, ...]
    confusion: np.ndarray
    uar: float
    war: float
    recall: dict[str, float] = field(default_factory=dict)
    support: dict[str, int] = field(default_factory=dict)

    @property
    def count(self) -> int:
        return int(self.confusion.sum())

    def to_dict(self) -> dict:
        return {
            "labels": list(self.labels),
            "count": self.count,
            "uar": _clean(self.uar),
            "war": _clean(self.war),
            "per_class_recall": {k: _clean(v) for k, v in self.recall.items()},
            "support": dict(self.support),
            "confusion": self.confusion.tolist(),
        }

    @classmethod
    def from_dict(cls, data: dict) -> Scores:
        labels = tuple(data["labels"])
        cm = np.asarray(data["confusion"], dtype=np.int64).reshape(len(labels), len(labels))
        return scores_from_confusion(cm, labels)


def scores_from_confusion(cm: np.ndarray, labels: Sequence[str]) -> Scores:
    labels = tuple(labels)
    if cm.shape != (len(labels), len(labels)):
        raise ValueError(f"confusion matrix is {cm.shape}, expected {len(labels)}x{len(labels)} for {labels}")
    recall = per_class_recall(cm)
    support = cm.sum(axis=1)
    return Scores(
        labels=labels,
        confusion=cm,
        uar=uar_from_cm(cm),
        war=war_from_cm(cm),
        recall={name: float(r) for name, r in zip(labels, recall, strict=True)},
        support={name: int(s) for name, s in zip(labels, support, strict=True)},
    )


def score(y_true, y_pred, labels: Sequence[str]) -> Scores:
    """Scores of integer predictions against integer targets, both indexing `labels`."""
    return scores_from_confusion(confusion_matrix(y_true, y_pred, len(labels)), labels)


def score_names(true_names: Sequence[str], pred_names: Sequence[str], labels: Sequence[str]) -> Scores:
    """Scores of label names; a name outside `labels` is an error that names it."""
    index = {name: i for i, name in enumerate(labels)}
    try:
        t = [index[n] for n in true_names]
    except KeyError as exc:
        raise ValueError(f"true label {exc.args[0]!r} is not one of {', '.join(labels)}") from None
    try:
        p = [index[n] for n in pred_names]
    except KeyError as exc:
        raise ValueError(f"predicted label {exc.args[0]!r} is not one of {', '.join(labels)}") from None
    return score(t, p, labels)


def mean_std(values: Sequence[float | None]) -> tuple[float, float]:
    """Mean and population std over folds, skipping missing values (NaN when none remain)."""
    arr = np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=np.float64)
    if arr.size == 0:
        return float("nan"), float("nan")
    return float(arr.mean()), float(arr.std())


def choose_negative_weight(labels, sim_pos, sim_neg, weights: Sequence[float], metric: str = "uar",
                           ) -> tuple[float, dict[float, tuple[float, float]]]:
    """The weight w of the negative descriptors at prediction, argmax over `weights` of the validation
    `metric` (uar | war) of argmax_c s(v, p_c) - w * s(v, n_c); ties go to the smallest w.

    Returns (w, {w: (uar, war)}). The logit scale does not change an argmax, so it is left out."""
    sp = np.asarray(sim_pos, dtype=np.float64)
    sn = np.asarray(sim_neg, dtype=np.float64)
    table: dict[float, tuple[float, float]] = {}
    for w in sorted(set(float(x) for x in weights)):
        table[w] = uar_war(labels, (sp - w * sn).argmax(1), sp.shape[1])
    pick = 0 if metric == "uar" else 1
    best = max(table, key=lambda w: (np.nan_to_num(table[w][pick], nan=-1.0), -w))
    return best, table
