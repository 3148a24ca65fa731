"""Train / validation / test rows for one fold; validation is carved from the training fold.

The test fold is never used to pick a checkpoint: a stratified, seeded share of each class of the
training fold becomes the validation split instead. A store without fold assignments (a folder of
your own clips) trains on everything but the validation share and has no test split.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import FinetrainError


class SplitError(FinetrainError, ValueError):
    """A fold that does not exist in the store, or a split that came out empty."""


@dataclass
class Split:
    fold: int | None
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray


def stratified_holdout(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Positions (into `labels`) kept for training and held out: per class round(n * fraction), at least
    one when the class has two or more clips, never the class's last clip."""
    labels = np.asarray(labels)
    keep, held = [], []
    rng = np.random.default_rng(seed)
    for cls in np.unique(labels):
        pos = np.flatnonzero(labels == cls)
        pos = pos[rng.permutation(len(pos))]
        k = int(round(len(pos) * fraction)) if fraction > 0 else 0
        if fraction > 0 and len(pos) >= 2:
            k = max(k, 1)
        k = min(k, len(pos) - 1)
        held.extend(pos[:k].tolist())
        keep.extend(pos[k:].tolist())
    return np.sort(np.asarray(keep, dtype=np.int64)), np.sort(np.asarray(held, dtype=np.int64))


def fold_split(train_folds: list[list[int]], test_folds: list[list[int]], labels: np.ndarray,
               fold: int | None, val_fraction: float, seed: int) -> Split:
    """Rows of the clip table for `fold` (1-based, as in the manifest)."""
    labels = np.asarray(labels)
    n = len(labels)
    has_folds = any(train_folds) or any(test_folds)
    if not has_folds:
        pool = np.arange(n)
        test = np.zeros(0, dtype=np.int64)
        fold = None
    else:
        known = sorted({f for fs in train_folds + test_folds for f in fs})
        if fold not in known:
            raise SplitError(f"fold {fold} is not in this store; its folds are {', '.join(map(str, known))}")
        pool = np.asarray([i for i in range(n) if fold in train_folds[i]], dtype=np.int64)
        test = np.asarray([i for i in range(n) if fold in test_folds[i]], dtype=np.int64)
    if len(pool) == 0:
        raise SplitError(f"fold {fold}: no labelled clips with status ok to train on")
    keep, held = stratified_holdout(labels[pool], val_fraction, seed * 1000 + (fold or 0))
    return Split(fold=fold, train=pool[keep], val=pool[held], test=test)
