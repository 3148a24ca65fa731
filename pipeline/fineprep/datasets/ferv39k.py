"""FERV39k: one fixed train/test split (fold 1), labels as class-name strings.

Layout read:
  4_setups/All_scenes/train_All.csv, test_All.csv   no header, `Scene/Class/NNNN Class`
  2_ClipsforFaceCrop/Scene/Class/NNNN/               face-cropped frames (also `2_ClipforFaceCrop`)
  0_7_LabelClips/Scene/Class/NNNN.mp4                 raw clips
`clip_id` is the `Scene/Class/NNNN` path from the split file.
"""

from __future__ import annotations

from pathlib import Path

from fineschema import labels

from .common import VIDEO_EXTS, DatasetLayoutError, IndexBuilder, locate, log, read_lines

SOURCES: tuple[str, ...] = ("2_ClipsforFaceCrop", "0_7_LabelClips")
SPLITS = {"train": "train_All.csv", "test": "test_All.csv"}
SETUP_DIR = "4_setups/All_scenes"


def _parse(line: str) -> tuple[str, str]:
    fields = line.replace(",", " ").split()
    if len(fields) != 2:
        raise ValueError(f"expected `Scene/Class/NNNN Class`, found {len(fields)} fields")
    path = fields[0].replace("\\", "/").rstrip("/")
    return path, labels.canonical_name(fields[1], "ferv39k")


def _frames_dir(root: Path) -> str:
    for name in ("2_ClipsforFaceCrop", "2_ClipforFaceCrop"):
        if (root / name).is_dir():
            return name
    return "2_ClipsforFaceCrop"


def index(root: Path, source: str | None = None, strict: bool = False) -> list:
    source = source or SOURCES[0]
    if source not in SOURCES:
        raise DatasetLayoutError(f"unknown FERV39k source {source!r}; choose one of {', '.join(SOURCES)}")
    media = "frames" if source == SOURCES[0] else "video"
    builder = IndexBuilder("ferv39k", root, strict=strict)
    found = 0
    for split, name in SPLITS.items():
        path = root / SETUP_DIR / name
        if not path.is_file():
            log.warning("FERV39k: %s/%s is missing under %s", SETUP_DIR, name, root)
            continue
        found += 1
        for number, line in read_lines(path):
            where = builder.where(path, number)
            try:
                clip_id, label = _parse(line)
            except (ValueError, labels.LabelError) as exc:
                first = line.split()[0] if line.split() else None
                builder.bad(first if first and len(line.split()) == 2 else None, where, str(exc))
                continue
            builder.add(clip_id, None, media, label, fold=1, split=split, where=where)
    if found == 0:
        raise DatasetLayoutError(
            f"no FERV39k split files under {root}/{SETUP_DIR}; expected train_All.csv and test_All.csv "
            "(is --root the folder that holds 4_setups?)"
        )
    frames_dir = _frames_dir(root)

    def check(entry):
        if media == "frames":
            candidates = [f"{frames_dir}/{entry.clip_id}"]
        else:
            candidates = [f"0_7_LabelClips/{entry.clip_id}{ext}" for ext in VIDEO_EXTS]
        locate(entry, root, candidates, annotated=entry.clip_id)

    return builder.finish(check)
