"""DFEW: five-fold single-label splits (`EmoLabel_DataSplit`), labels 1..7 in the official order.

Layout read:
  EmoLabel_DataSplit/train(single-labeled)/set_{1..5}.csv   header `video_name,label`
  EmoLabel_DataSplit/test(single-labeled)/set_{1..5}.csv
  Clip/clip_224x224/{id}/ , Clip/clip_224x224_16f/{id}/      frame folders
  Clip/original/{id}.mp4                                       raw videos
Ids are zero-padded to five digits in `clip_id` whatever the CSV holds; on disk either form is found.
The `(single_labeled)` spelling of the split folders (as in the release's zip names) is accepted too.
"""

from __future__ import annotations

from pathlib import Path

from fineschema import labels

from .common import (
    VIDEO_EXTS,
    DatasetLayoutError,
    IndexBuilder,
    locate,
    log,
    read_lines,
)

SOURCES: tuple[str, ...] = ("clip_224x224", "clip_224x224_16f", "original")
FOLDS = range(1, 6)
SPLIT_DIR = "EmoLabel_DataSplit"


def _split_file(root: Path, split: str, fold: int) -> Path | None:
    for spelling in ("single-labeled", "single_labeled"):
        path = root / SPLIT_DIR / f"{split}({spelling})" / f"set_{fold}.csv"
        if path.is_file():
            return path
    return None


def _candidates(source: str, clip_id: str, raw_id: str) -> list[str]:
    ids = list(dict.fromkeys([clip_id, raw_id, str(int(clip_id))]))  # padded first, then as spelled, unpadded
    if source == "original":
        return [f"Clip/original/{i}{ext}" for ext in VIDEO_EXTS for i in ids]
    return [f"Clip/{source}/{i}" for i in ids]


def _parse(line: str) -> tuple[str | None, str, str]:
    """(clip_id or None, raw id, canonical label) from `00001,3`; raises ValueError/LabelError."""
    fields = [f.strip().strip('"').strip() for f in line.split(",")]
    raw_id = fields[0]
    stem = raw_id.rsplit(".", 1)[0] if raw_id.lower().endswith(VIDEO_EXTS) else raw_id
    if not stem.isdigit():
        raise ValueError(f"video name {raw_id!r} is not a number")
    clip_id = stem.zfill(5)
    if len(fields) != 2:
        raise ValueError(f"expected `video_name,label`, found {len(fields)} fields")
    try:
        number = int(fields[1])
    except ValueError:
        raise ValueError(f"label {fields[1]!r} is not a number 1..7") from None
    return clip_id, stem, labels.from_dfew_official(number)


def _is_header(line: str) -> bool:
    fields = [f.strip().strip('"') for f in line.split(",")]
    return not any(f.isdigit() for f in fields)


def index(root: Path, source: str | None = None, strict: bool = False) -> list:
    source = source or SOURCES[0]
    if source not in SOURCES:
        raise DatasetLayoutError(f"unknown DFEW source {source!r}; choose one of {', '.join(SOURCES)}")
    media = "video" if source == "original" else "frames"
    builder = IndexBuilder("dfew", root, strict=strict)
    raw_ids: dict[str, str] = {}  # the id as the CSV spells it, tried on disk after the padded one
    found = 0
    for fold in FOLDS:
        for split in ("train", "test"):
            path = _split_file(root, split, fold)
            if path is None:
                log.warning("DFEW: %s/%s(single-labeled)/set_%d.csv is missing under %s", SPLIT_DIR, split, fold, root)
                continue
            found += 1
            for i, (number, line) in enumerate(read_lines(path)):
                where = builder.where(path, number)
                if i == 0 and _is_header(line):
                    continue
                try:
                    clip_id, raw_id, label = _parse(line)
                except (ValueError, labels.LabelError) as exc:
                    stem = line.split(",")[0].strip().strip('"')
                    builder.bad(stem.zfill(5) if stem.isdigit() else None, where, str(exc))
                    continue
                builder.add(clip_id, None, media, label, fold=fold, split=split, where=where)
                raw_ids.setdefault(clip_id, raw_id)
    if found == 0:
        raise DatasetLayoutError(
            f"no DFEW split files under {root}/{SPLIT_DIR}; expected train(single-labeled)/set_1.csv .. "
            "test(single-labeled)/set_5.csv (is --root the folder that holds EmoLabel_DataSplit and Clip?)"
        )

    def check(entry):
        locate(entry, root, _candidates(source, entry.clip_id, raw_ids.get(entry.clip_id, entry.clip_id)))

    return builder.finish(check)
