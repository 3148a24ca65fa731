"""Per-clip predictions as Parquet (`fineschema.tables.PREDICTIONS`), so anyone can recompute the metrics.

One row per evaluated clip: clip id, fold, true label (null for unlabelled clips), predicted label and
the class probabilities. The probabilities are in the order of the run's label set, which is written
into the file's schema metadata (`labels`), so the file can be read without the run beside it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from fineschema import tables, write_parquet_atomic

from ..errors import FinetrainError
from ..rundir import PREDICTIONS_FILE
from .metrics import Scores, score_names

__all__ = ["PREDICTIONS_FILE", "Predictions", "PredictionsError", "concat", "read_predictions", "write_predictions"]

_LABELS_KEY = b"labels"


class PredictionsError(FinetrainError, ValueError):
    """A predictions file (or a set of them) that cannot be read or joined; the message names it."""


@dataclass
class Predictions:
    """Predictions in memory; `probs` is (N, len(labels))."""

    labels: tuple[str, ...]
    clip_ids: list[str]
    folds: list[int | None]
    true_labels: list[str | None]
    pred_labels: list[str]
    probs: np.ndarray

    def __len__(self) -> int:
        return len(self.clip_ids)

    @classmethod
    def from_probs(
        cls,
        labels: Sequence[str],
        clip_ids: Sequence[str],
        probs,
        true_labels: Sequence[str | None] | None = None,
        fold: int | Sequence[int | None] | None = None,
    ) -> Predictions:
        """Predicted label = the most probable class (first on ties)."""
        labels = tuple(labels)
        p = np.asarray(probs, dtype=np.float32).reshape(len(clip_ids), len(labels))
        n = len(clip_ids)
        if fold is None or np.ndim(fold) == 0:
            folds = [None if fold is None else int(fold)] * n
        else:
            folds = [None if f is None else int(f) for f in fold]
        truth = list(true_labels) if true_labels is not None else [None] * n
        if len(folds) != n or len(truth) != n:
            raise PredictionsError(f"{n} clips but {len(folds)} folds and {len(truth)} true labels")
        pred = [labels[i] for i in np.argmax(p, axis=1)] if n else []
        return cls(labels, list(clip_ids), folds, truth, pred, p)

    def select(self, mask) -> Predictions:
        m = np.asarray(mask, dtype=bool)
        pick = np.flatnonzero(m)
        return Predictions(
            self.labels,
            [self.clip_ids[i] for i in pick],
            [self.folds[i] for i in pick],
            [self.true_labels[i] for i in pick],
            [self.pred_labels[i] for i in pick],
            self.probs[m],
        )

    def fold_ids(self) -> list[int | None]:
        return sorted(set(self.folds), key=lambda f: (f is None, f or 0))

    def scores(self) -> Scores:
        """UAR/WAR/per-class recall/confusion over the rows that have a true label."""
        rows = [i for i, t in enumerate(self.true_labels) if t is not None]
        return score_names([self.true_labels[i] for i in rows], [self.pred_labels[i] for i in rows], self.labels)

    def top_k(self, k: int) -> list[list[tuple[str, float]]]:
        """For each clip, the k most probable classes with their probabilities."""
        order = np.argsort(-self.probs, axis=1, kind="stable")[:, :k]
        return [[(self.labels[j], float(self.probs[i, j])) for j in row] for i, row in enumerate(order)]

    def to_table(self) -> pa.Table:
        table = pa.table(
            {
                "clip_id": self.clip_ids,
                "fold": self.folds,
                "true_label": self.true_labels,
                "pred_label": self.pred_labels,
                "probs": [row.tolist() for row in self.probs],
            }
        )
        table = tables.conform(table, tables.PREDICTIONS)
        meta = dict(tables.PREDICTIONS.metadata)
        meta[_LABELS_KEY] = json.dumps(list(self.labels)).encode()
        return table.replace_schema_metadata(meta)


def write_predictions(path: str | Path, preds: Predictions) -> Path:
    """Write atomically (temp file + rename), so a half-written file never looks finished."""
    return write_parquet_atomic(preds.to_table(), path, compression="snappy")


def read_predictions(path: str | Path, labels: Sequence[str] | None = None) -> Predictions:
    """Read a predictions file; `labels` is needed only for files written without the label metadata."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no predictions file here (run `finetrain eval` first)")
    table = pq.read_table(path)
    missing = [f.name for f in tables.PREDICTIONS if f.name not in table.column_names]
    if missing:
        raise PredictionsError(f"{path}: not a predictions file (missing columns {', '.join(missing)})")
    meta = table.schema.metadata or {}
    if _LABELS_KEY in meta:
        stored = tuple(json.loads(meta[_LABELS_KEY]))
        if labels is not None and tuple(labels) != stored:
            raise PredictionsError(f"{path}: written for classes {stored}, not {tuple(labels)}")
        labels = stored
    if labels is None:
        raise PredictionsError(f"{path}: the file does not record its class order; pass the run's label set")
    labels = tuple(labels)
    cols = table.to_pydict()
    n = table.num_rows
    probs = np.asarray(cols["probs"], dtype=np.float32).reshape(n, len(labels)) if n else np.zeros((0, len(labels)))
    return Predictions(
        labels, cols["clip_id"], cols["fold"], cols["true_label"], cols["pred_label"], probs.astype(np.float32)
    )


def concat(parts: Sequence[Predictions]) -> Predictions:
    """Join predictions of several folds or jobs; they must share one class order."""
    if not parts:
        raise PredictionsError("no predictions to join")
    labels = parts[0].labels
    for p in parts[1:]:
        if p.labels != labels:
            raise PredictionsError(f"cannot join predictions over different classes: {labels} vs {p.labels}")
    return Predictions(
        labels,
        [c for p in parts for c in p.clip_ids],
        [f for p in parts for f in p.folds],
        [t for p in parts for t in p.true_labels],
        [c for p in parts for c in p.pred_labels],
        np.concatenate([p.probs for p in parts], axis=0),
    )
