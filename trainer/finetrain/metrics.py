"""UAR and WAR, the two numbers every DFER paper reports, from one place.

UAR: unweighted average recall, the mean over classes of per-class recall (classes absent from
y_true are left out, as scikit-learn's balanced accuracy does). WAR: weighted average recall,
which is plain accuracy.
"""

from __future__ import annotations

import numpy as np


def confusion_matrix(y_true, y_pred, num_classes: int) -> np.ndarray:
    """Rows are true classes, columns predicted classes."""
    t = np.asarray(y_true, dtype=np.int64)
    p = np.asarray(y_pred, dtype=np.int64)
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (t, p), 1)
    return cm


def per_class_recall(cm: np.ndarray) -> np.ndarray:
    """Recall per class; NaN for classes with no true samples."""
    support = cm.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(support > 0, np.diag(cm) / np.maximum(support, 1), np.nan)


def uar_war(y_true, y_pred, num_classes: int) -> tuple[float, float]:
    cm = confusion_matrix(y_true, y_pred, num_classes)
    recall = per_class_recall(cm)
    uar = float(np.nanmean(recall)) if np.any(~np.isnan(recall)) else float("nan")
    total = cm.sum()
    war = float(np.trace(cm) / total) if total else float("nan")
    return uar, war
