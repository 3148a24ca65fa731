"""RUN/run.json: how a run was made (mode, text, store, dataset, crop settings), read back by the commands
that use the run later (`eval`, `predict`, `crossdata`).

Its own module, apart from the fold driver, so that both the supervised and the zero-shot trainers can
write it without importing the driver that calls them.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from .rundir import RUN_INFO_FILE, RunDir

RUN_INFO = RUN_INFO_FILE
FINGERPRINT_KEY = "store_fingerprint"


def write_run_info(out: str | Path, **info) -> None:
    """Merge keys into RUN/run.json: how the run was made (mode, text, store, dataset, crop settings)."""
    path = RunDir(out).run_info
    old = json.loads(path.read_text()) if path.is_file() else {}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")  # whole or not at all: a killed run is read again on resume
    tmp.write_text(json.dumps({**old, **info}, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def read_run_info(run: str | Path) -> dict:
    """RUN/run.json, or the parent's for a `fold<K>` sub-run; {} when neither exists."""
    run = RunDir(run)
    for path in (run.run_info, RunDir(run.root.parent).run_info):
        if path.is_file():
            return json.loads(path.read_text())
    return {}


def store_run_info(info) -> dict:
    """What a run should remember about its store (a `finetrain.data.store.StoreInfo`)."""
    settings = info.attrs.get("settings") or {}
    return {"store": str(Path(info.root).resolve()), "dataset": info.attrs.get("dataset"),
            "label_set": info.attrs.get("label_set"), "size": info.size, "store_frames": info.frames,
            "margin": settings.get("margin"), FINGERPRINT_KEY: store_fingerprint(info)}


def store_fingerprint(info) -> str:
    """sha256 (hex, 16 digits) of what makes the data a run trains on: the store's settings and its
    usable clips (ids, store rows, labels, folds). The store's path is not part of it (a moved store is
    the same store)."""
    attrs = info.attrs
    head = {k: attrs.get(k) for k in ("dataset", "label_set", "frames", "size", "settings", "schema_version")}
    h = hashlib.sha256(json.dumps(head, sort_keys=True, default=str).encode())
    h.update(json.dumps([list(info.clip_ids), list(info.labels), info.train_folds, info.test_folds],
                        default=int).encode())
    for arr in (info.store_index, info.label_index):
        h.update(np.ascontiguousarray(np.asarray(arr, dtype=np.int64)).tobytes())
    return h.hexdigest()[:16]


def run_dataset(run: str | Path) -> str | None:
    """The dataset a run was trained on (from run.json), None when unknown."""
    return read_run_info(run).get("dataset")


def is_main_process() -> bool:
    """False on the non-zero ranks of a torchrun job, which must not write shared files."""
    return int(os.environ.get("RANK", "0")) == 0
