"""A checkpoint's state.json checked by schema before `--resume` uses it: types and ranges.

state.json is a file on disk like any other input: an epoch of "abc", a negative position or a step of
2**70 must be refused in one line, not fed to the loop (which would traceback, or skip to the test with
weights that never trained). The ranges come from the run being resumed: its epochs, its batches per
epoch and its optimiser steps in all.
"""

from __future__ import annotations

import math
from pathlib import Path

from ..errors import FinetrainError


class StateError(FinetrainError, ValueError):
    """A checkpoint state.json whose values are of the wrong type or out of range for the run."""


def _int(saved: dict, key: str, low: int, high: int, where: str, optional: bool = False) -> int | None:
    value = saved.get(key, None if optional else 0)  # absent: the loop's default (older checkpoints)
    if value is None and optional:
        return None
    if type(value) is not int:  # bool is an int subclass and is refused too
        raise StateError(f"{where}: {key} must be a whole number, got {value!r}; the checkpoint is damaged")
    if not low <= value <= high:
        raise StateError(f"{where}: {key} {value} is outside {low}..{high} for this run; the checkpoint is damaged")
    return value


def _finite(value, key: str, where: str) -> float | None:
    if value is None:
        return None
    if type(value) not in (int, float) or not math.isfinite(value) or abs(value) > 1e6:
        raise StateError(f"{where}: {key} must be a finite number, got {value!r}; the checkpoint is damaged")
    return float(value)


def _check_schedule(saved: dict, step: int, where: str) -> None:
    sched = saved.get("scheduler")
    if sched is None:
        return
    if not isinstance(sched, dict):
        raise StateError(f"{where}: scheduler must be an object, got {type(sched).__name__}; the checkpoint is damaged")
    if sched.get("last_epoch") != step or type(sched.get("last_epoch")) is not int:
        raise StateError(f"{where}: scheduler.last_epoch {sched.get('last_epoch')!r} is not the step {step}; "
                         "the checkpoint is damaged")
    for key in ("base_lrs", "_last_lr"):
        for value in sched.get(key) or []:
            _finite(value, f"scheduler.{key}", where)


def _check_groups(saved: dict, where: str) -> None:
    groups = saved.get("param_groups")
    if groups is None:
        return  # checkpoint.load says a checkpoint without optimiser state cannot be resumed
    if not isinstance(groups, list) or not all(isinstance(g, dict) for g in groups):
        raise StateError(f"{where}: param_groups must be a list of objects; the checkpoint is damaged")
    for group in groups:
        for key in ("lr", "weight_decay", "eps", "initial_lr"):
            if key in group:
                _finite(group[key], f"param_groups.{key}", where)


def checked_state(saved: dict, path: str | Path, epochs: int, batches: int, total_steps: int) -> dict:
    """`saved` (a state.json's content) when every value fits the run; else a one-line `StateError`.

    `epochs` is optim.epochs, `batches` the training batches per epoch, `total_steps` the optimiser
    steps of the whole run."""
    where = str(path)
    epoch = _int(saved, "epoch", 0, epochs, where)
    step = _int(saved, "step", 0, total_steps, where)
    _int(saved, "batch_in_epoch", 0, batches, where)
    _int(saved, "best_epoch", 0, epochs, where, optional=True)
    _finite(saved.get("best"), "best", where)
    done = saved.get("done", False)
    if type(done) is not bool:
        raise StateError(f"{where}: done must be true or false, got {done!r}; the checkpoint is damaged")
    if done and epoch != epochs:
        raise StateError(f"{where}: marked done at epoch {epoch} of {epochs}; the checkpoint is damaged")
    _check_schedule(saved, step, where)
    _check_groups(saved, where)
    return saved
