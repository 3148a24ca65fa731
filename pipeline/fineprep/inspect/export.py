"""`fineprep export`: annotation files the public DFER repos read, from a store.

- `--format dfer-clip`: one `path num_frames label` line per clip (space-separated, 0-based label, no
  header), one file per fold and split, named as DFER-CLIP names them (`DFEW_set_1_train.txt`,
  `MAFW_set_1_test.txt`, `FERV39K_train.txt`).
- `--format mae-dfer`: the VideoMAE lineage's (MAE-DFER, HiCMAE, S2D's finetuning scripts read the same
  shape): one `frame_dir label` line per clip, space-separated, 0-based, no header, read with
  `pd.read_csv(path, header=None, delimiter=' ')`; files laid out as MAE-DFER's preprocess scripts
  write them: `dfew/org/split0K/{train,val,test}.csv` (val is a copy of test, as there),
  `mafw/single/split0K/{train,test}.csv`, `ferv39k/all_scenes/{train,test}.csv`. Those loaders glob a
  frame folder's `*.jpg` in name order, which `--frames` writes (`00001.jpg`, ...); they open each path
  as written, so `--absolute` is what a run from another folder needs.

Labels follow the chosen repo's class order (by default the format's own), converted by name, so the
same store can be compared against DFER-CLIP, MAE-DFER, S2D or EmoCLIP without hand-editing files.

With `frames=True` the stored face crops are written as JPG folders `OUT/frames/<name>/00001.jpg..`
and the files point at them; `<name>` is the clip id percent-encoded (`folder_name`: `my clip` becomes
`my%20clip`, `%` itself `%25`), so two clip ids never share a folder and no name holds a space; otherwise the files point at each clip's source in the dataset root.
Clip ids and the dataset name come from the store, so every path built from them goes through
`fineschema.paths.safe_join`: a clip whose folder would leave `OUT` is skipped, and nothing outside
`OUT` is written or removed. Nothing is written through a link: a symlink where an annotation file,
`frames/`, a clip's folder or its temporary folder would be is refused in one line
(`fineschema.nolinks`). The format is space-separated, so `--absolute` under a folder with a space in
its path is refused (relative lines never hold one).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from collections import Counter
from pathlib import Path
from urllib.parse import quote

from fineschema import StoreError, labels, tables
from fineschema.nolinks import open_nofollow, refuse_link
from fineschema.paths import UnsafePathError, safe_join

from .store import InspectError, StoreView

log = logging.getLogger("fineprep.export")

ORDERS = tuple(labels.PUBLIC_ORDERS)
PREFIX = {"dfew": "DFEW", "ferv39k": "FERV39K", "mafw": "MAFW", "folder": "FOLDER"}
ORDER_DATASET = {"dfew": "dfew", "ferv39k": "ferv39k", "mafw": "mafw", "folder": "mafw"}
FRAMES_DIR = "frames"
SKIP_OUTSIDE = "path from the store would leave --out (refused, nothing written there)"
SKIP_SOURCE = "source path absolute or climbing with '..' (refused)"


def folder_name(clip_id: str) -> str:
    """A clip's folder name: the id percent-encoded except letters, digits, `_.-~` and `/` (one-to-one,
    so two ids never share a folder; no whitespace, which would break the space-separated format)."""
    return quote(clip_id, safe="/")


def file_names(dataset: str, folds: list[int]) -> dict[tuple[int, str], str]:
    """(fold, split) -> annotation file name; FERV39k and single-split datasets have no `set_k`."""
    prefix = PREFIX.get(dataset, dataset.upper())
    out = {}
    for k in folds:
        for split in ("train", "test"):
            if folds == [1] and dataset not in ("dfew", "mafw"):
                out[(k, split)] = f"{prefix}_{split}.txt"
            else:
                out[(k, split)] = f"{prefix}_set_{k}_{split}.txt"
    return out


def mae_dfer_names(dataset: str, folds: list[int]) -> dict[tuple[int, str], list[str]]:
    """(fold, split) -> the file(s) MAE-DFER's preprocess scripts write for it, relative to OUT."""
    out: dict[tuple[int, str], list[str]] = {}
    for k in folds:
        if dataset == "ferv39k":
            base = "ferv39k/all_scenes"
        elif dataset == "dfew":
            base = f"dfew/org/split{k:02d}"
        elif dataset == "mafw":
            base = f"mafw/single/split{k:02d}"
        else:
            base = f"{dataset}/split{k:02d}"
        out[(k, "train")] = [f"{base}/train.csv"]
        out[(k, "test")] = [f"{base}/test.csv"] + ([f"{base}/val.csv"] if dataset == "dfew" else [])
    return out


def frames_folder(out_dir: Path, clip_id: str) -> Path:
    """`OUT/frames/<clip_id>`, or UnsafePathError when the clip id would lead outside `OUT/frames`."""
    frames_root = safe_join(out_dir, FRAMES_DIR)
    return safe_join(frames_root, folder_name(clip_id))


def write_frames(store: StoreView, row: dict, out_dir: Path) -> int:
    """Write one clip's stored crops as 00001.jpg.. ; a finished folder is left as it is.

    Raises UnsafePathError, before touching anything, when the clip id would lead outside `out_dir`.
    """
    from PIL import Image

    target = frames_folder(out_dir, row["clip_id"])
    tmp = target.parent / f".tmp-{target.name}"
    for path in (out_dir / FRAMES_DIR, target, tmp):
        refuse_link(path)
    total = int(store.group["frames"].shape[1])
    if target.is_dir() and len(list(target.glob("*.jpg"))) == total:
        return total
    frames = store.group["frames"][int(row["store_index"])]
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for t, frame in enumerate(frames, start=1):
        Image.fromarray(frame).save(tmp / f"{t:05d}.jpg", quality=95)
    if target.exists():
        shutil.rmtree(target)
    os.replace(tmp, target)
    return total


def _inside(out: Path, dataset_root: Path | None, row: dict, frames: bool) -> bool:
    """Whether the path this row would be written under (frames) or point at (sources) stays inside."""
    try:
        if frames:
            frames_folder(out, row["clip_id"])
        else:
            safe_join(dataset_root or ".", row["source_path"], follow_links=False)
    except UnsafePathError as exc:
        log.warning("export: clip %r skipped: %s", row["clip_id"], exc)
        return False
    return True


def _write_text(path: Path, text: str) -> None:
    """An annotation file, never written through a link planted at its name."""
    fd = open_nofollow(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)


def _refuse_spaces(out: Path, dataset_root: Path | None, frames: bool) -> None:
    """`--absolute` lines start with a path; one with a space would split into extra fields."""
    base = (out if frames else Path(dataset_root or ".")).resolve()
    if re.search(r"\s", str(base)):
        raise InspectError(f"--absolute: {base} holds a space, and the annotation format is space-separated; "
                           "export without --absolute (paths relative to --out), or to a folder without spaces")


FORMATS = ("dfer-clip", "mae-dfer")


def _rows_to_write(store: StoreView, out: Path, dataset_root: Path | None, frames: bool) -> tuple[list, Counter]:
    """The stored, labelled clips whose paths stay inside, and the others counted by reason."""
    skipped: Counter = Counter()
    usable = []
    for row in store.rows:
        if row["status"] not in tables.STORED_STATUSES:
            skipped[f"status {row['status']}"] += 1
        elif not row["label"]:
            skipped["unlabelled"] += 1
        elif not frames and (not row["source_path"] or re.search(r"\s", row["source_path"])):
            skipped["source path empty or with spaces (use --frames)"] += 1
        elif not _inside(out, dataset_root, row, frames):
            skipped[SKIP_OUTSIDE if frames else SKIP_SOURCE] += 1
        else:
            usable.append(row)
    return usable, skipped


def _dataset_name(store: StoreView) -> str:
    dataset = store.attrs.get("dataset") or (store.rows[0]["dataset"] if store.rows else "folder")
    if not re.fullmatch(r"[A-Za-z0-9_-]+", str(dataset)):  # it names the annotation files
        raise StoreError(f"the store's dataset name {dataset!r} is not a plain name (letters, digits, _ and -); "
                         "it would name files outside --out; nothing written")
    return str(dataset)


def _line(fmt: str, path: str, count: int, index: int) -> str:
    return f"{path} {count} {index}" if fmt == "dfer-clip" else f"{path} {index}"


def _file_names(fmt: str, dataset: str, lines: dict) -> dict[tuple[int, str], list[str]]:
    folds = sorted({k for (k, split) in lines if split != "all"})
    if fmt == "mae-dfer":
        names = mae_dfer_names(dataset, folds)
        return {**names, (0, "all"): [f"{dataset}/all.csv"]}
    names = {key: [name] for key, name in file_names(dataset, folds).items()}
    return {**names, (0, "all"): [f"{PREFIX.get(dataset, dataset.upper())}_all.txt"]}


def export_annotations(store: StoreView, out: Path, *, fmt: str = "dfer-clip", order: str | None = None,
                       frames: bool = False, absolute: bool = False, dataset_root: Path | None = None,
                       progress=None) -> dict:
    """Write the annotation files of `fmt` (and optionally frame folders); returns what was written and
    skipped. `order` defaults to the format's own repo's label order."""
    if fmt not in FORMATS:
        raise InspectError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    order = order or fmt
    if order not in ORDERS:
        raise InspectError(f"unknown label order {order!r}; choose one of {', '.join(ORDERS)}")
    out = Path(out)
    if absolute:
        _refuse_spaces(out, dataset_root, frames)
    out.mkdir(parents=True, exist_ok=True)
    if frames:
        refuse_link(out / FRAMES_DIR)
    dataset = _dataset_name(store)
    order_ds = ORDER_DATASET.get(dataset, "mafw")
    usable, skipped = _rows_to_write(store, out, dataset_root, frames)
    stored_t = int(store.group["frames"].shape[1]) if usable else 0
    iterator = progress(usable, description="writing frame folders") if (frames and progress) else usable
    lines: dict[tuple[int, str], list[str]] = {}
    for row in iterator:
        if frames:
            write_frames(store, row, out)
            path = frames_folder(out, row["clip_id"])
            text = str(path.resolve()) if absolute else f"{FRAMES_DIR}/{folder_name(row['clip_id'])}"
            count = stored_t
        else:
            base = Path(dataset_root) / row["source_path"] if dataset_root else Path(row["source_path"])
            text = str(base.resolve()) if absolute else base.as_posix()
            count = row["num_source_frames"] or stored_t
        index = labels.to_public_index(row["label"], order, order_ds)
        folds = {("train", k) for k in row["train_folds"] or []} | {("test", k) for k in row["test_folds"] or []}
        for split, k in folds or {("all", 0)}:
            lines.setdefault((k, split), []).append(_line(fmt, text, count, index))
    written = _write_files(out, _file_names(fmt, dataset, lines), lines)
    videos = sum(1 for r in usable if not frames and str(r["source_path"]).lower().endswith(
        (".mp4", ".avi", ".mov", ".mkv", ".webm")))
    return {"out": str(out), "format": fmt, "order": order, "dataset": dataset, "files": written,
            "skipped": dict(skipped), "frames_written": len(usable) if frames else 0, "paths_to_videos": videos}


def _write_files(out: Path, names: dict, lines: dict) -> dict[str, int]:
    written = {}
    for key, rows in sorted(lines.items()):
        for name in names[key]:
            target = safe_join(out, name)
            parent = out
            for part in Path(name).parent.parts:  # folders of the format's layout, none through a link
                parent = parent / part
                refuse_link(parent)
                parent.mkdir(exist_ok=True)
            _write_text(target, "\n".join(rows) + ("\n" if name.endswith(".csv") else ""))
            written[name] = len(rows)
    return written


def export_dfer_clip(store: StoreView, out: Path, **options) -> dict:
    """`export_annotations` in DFER-CLIP's format."""
    return export_annotations(store, out, fmt="dfer-clip", **options)
