"""`fineprep stats`: what a store holds, per class, fold and status, and what it costs on disk."""

from __future__ import annotations

from collections import Counter

import numpy as np

from fineschema import labels, tables

from .store import StoreView


def compute_stats(store: StoreView) -> dict:
    """Counts over the manifest, face-found ratio over stored frames, bytes per stored clip."""
    rows = store.rows
    ok = store.ok_rows()
    status = Counter(r["status"] for r in rows)
    classes: dict[str, dict[str, int]] = {}
    for r in rows:
        c = classes.setdefault(r["label"] or "(unlabelled)", {"listed": 0, "ok": 0})
        c["listed"] += 1
        c["ok"] += r["status"] == tables.STATUS_OK
    order = list(labels.LABEL_SETS.get(store.attrs.get("label_set"), ()))
    classes = dict(sorted(classes.items(), key=lambda kv: (order.index(kv[0]) if kv[0] in order else len(order),
                                                          kv[0])))
    folds: dict[int, dict[str, int]] = {}
    for r in rows:
        for split in ("train", "test"):
            for k in r[f"{split}_folds"] or []:
                f = folds.setdefault(int(k), {"train": 0, "test": 0, "train_ok": 0, "test_ok": 0})
                f[split] += 1
                f[f"{split}_ok"] += r["status"] == tables.STATUS_OK
    face_ratio, frames_stored = None, 0
    if ok:
        # Every stored clip has the same T frames, so the mean of per-clip ratios is the ratio over frames.
        # The manifest already holds them; the array (one chunk per clip) is read only where one is null.
        arr = store.group["face_found"]
        ratios = [r["face_found_ratio"] if r["face_found_ratio"] is not None
                  else float(np.mean(arr[int(r["store_index"])])) for r in ok]
        frames_stored = len(ok) * int(arr.shape[1])
        face_ratio = float(np.mean(ratios))
    size = store.arrays_bytes()
    return {
        "store": str(store.root),
        "dataset": store.attrs.get("dataset"),
        "source": store.attrs.get("source"),
        "label_set": store.attrs.get("label_set"),
        "frames": store.attrs.get("frames"),
        "size": store.attrs.get("size"),
        "clips": len(rows),
        "ok": len(ok),
        "status": dict(sorted(status.items())),
        "classes": classes,
        "folds": {str(k): folds[k] for k in sorted(folds)},
        "face_found_ratio": face_ratio,
        "frames_stored": frames_stored,
        "arrays_bytes": size,
        "bytes_per_clip": size / len(ok) if ok else None,
        "descriptions": len(store.latest_descriptions()),
    }


def _mib(n: float | None) -> str:
    return "-" if n is None else f"{n / 2**20:.2f} MiB"


def print_stats(stats: dict, console) -> None:
    from rich.table import Table

    head = Table(title=f"store {stats['store']}", show_header=False)
    for key in ("dataset", "source", "label_set", "frames", "size", "clips", "ok", "descriptions"):
        head.add_row(key, str(stats[key]))
    ratio = stats["face_found_ratio"]
    head.add_row("face found", "-" if ratio is None else f"{ratio:.1%} of {stats['frames_stored']} stored frames")
    head.add_row("arrays on disk", _mib(stats["arrays_bytes"]))
    head.add_row("per ok clip", _mib(stats["bytes_per_clip"]))
    console.print(head)

    by_status = Table(title="clips per status")
    by_status.add_column("status")
    by_status.add_column("clips", justify="right")
    for name, n in stats["status"].items():
        by_status.add_row(name, str(n), style="green" if name == tables.STATUS_OK else "yellow")
    console.print(by_status)

    by_class = Table(title="clips per class")
    by_class.add_column("class")
    by_class.add_column("listed", justify="right")
    by_class.add_column("ok", justify="right")
    for name, c in stats["classes"].items():
        by_class.add_row(name, str(c["listed"]), str(c["ok"]))
    console.print(by_class)

    if stats["folds"]:
        by_fold = Table(title="clips per fold (ok / listed)")
        for col in ("fold", "train", "test"):
            by_fold.add_column(col, justify="right")
        for k, f in stats["folds"].items():
            by_fold.add_row(k, f"{f['train_ok']} / {f['train']}", f"{f['test_ok']} / {f['test']}")
        console.print(by_fold)
