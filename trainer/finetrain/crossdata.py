"""Evaluating a model on another dataset's store: classes are matched by canonical name.

A model trained on MAFW (11 classes) scores DFEW or FERV39k clips over the 7 classes they share;
a DFEW model scores only the MAFW clips whose label is one of its 7 classes. In both directions the
evaluated class set is the intersection, in the canonical order of `fineschema.labels`, and the
model's probabilities are renormalised over those classes (the same as a softmax over the logits of
the shared classes alone), so a prediction is never a class the target dataset cannot contain.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fineschema import labels as L

from .predictions import Predictions


class ClassMappingError(ValueError):
    """Two label sets with nothing in common, or a label that is not canonical."""


def _canonical_order(names: set[str]) -> tuple[str, ...]:
    order = {name: i for i, name in enumerate(L.MAFW11 + L.MAFW_COMBOS)}
    unknown = sorted(n for n in names if n not in order)
    if unknown:
        raise ClassMappingError(f"labels {unknown} are not canonical names (see fineschema.labels)")
    return tuple(sorted(names, key=order.__getitem__))


@dataclass(frozen=True)
class ClassMap:
    """How the model's classes (`source`) meet the store's classes (`target`)."""

    source: tuple[str, ...]
    target: tuple[str, ...]
    shared: tuple[str, ...]

    @property
    def source_columns(self) -> list[int]:
        """Columns of the model's output that belong to the shared classes, in `shared` order."""
        return [self.source.index(n) for n in self.shared]

    @property
    def dropped_source(self) -> tuple[str, ...]:
        return tuple(n for n in self.source if n not in self.shared)

    @property
    def dropped_target(self) -> tuple[str, ...]:
        return tuple(n for n in self.target if n not in self.shared)

    @property
    def identity(self) -> bool:
        return self.source == self.target

    def describe(self) -> str:
        if self.identity:
            return f"same {len(self.shared)} classes"
        text = f"{len(self.shared)} shared classes ({', '.join(self.shared)})"
        if self.dropped_source:
            text += f"; model classes not scored: {', '.join(self.dropped_source)}"
        if self.dropped_target:
            text += f"; store clips of {', '.join(self.dropped_target)} left out"
        return text

    def restrict_probs(self, probs) -> np.ndarray:
        """Model probabilities (N, len(source)) -> renormalised probabilities over `shared`."""
        p = np.asarray(probs, dtype=np.float64)[:, self.source_columns]
        total = p.sum(axis=1, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            out = np.where(total > 0, p / np.where(total > 0, total, 1.0), 1.0 / len(self.shared))
        return out.astype(np.float32)

    def keep_clip(self, true_label: str | None) -> bool:
        """A clip is scored when its label is shared (unlabelled clips are kept for prediction only)."""
        return true_label is None or true_label in self.shared

    def apply(self, preds: Predictions) -> Predictions:
        """Model-space predictions on target clips -> shared-space predictions on the clips it can score."""
        if preds.labels != self.source:
            raise ClassMappingError(f"predictions are over {preds.labels}, the map expects {self.source}")
        kept = preds.select([self.keep_clip(t) for t in preds.true_labels])
        return Predictions.from_probs(
            self.shared, kept.clip_ids, self.restrict_probs(kept.probs), kept.true_labels, kept.folds
        )


def class_map(source: Sequence[str], target: Sequence[str]) -> ClassMap:
    """Match two label sets by canonical name; refuse when they share nothing."""
    source, target = tuple(source), tuple(target)
    if source == target:
        return ClassMap(source, target, source)
    _canonical_order(set(source) | set(target))  # both sides must be canonical names
    shared = _canonical_order(set(source) & set(target))
    if not shared:
        raise ClassMappingError(
            f"the model's classes ({', '.join(source)}) and the store's ({', '.join(target)}) share no class"
        )
    return ClassMap(source, target, shared)


def dataset_map(source_set: str, target_set: str) -> ClassMap:
    """`class_map` between two named label sets, e.g. `dataset_map("mafw", "dfew")`."""
    return class_map(L.label_set(source_set), L.label_set(target_set))
