"""MAFW: five-fold single-label splits, compound labels and bilingual captions.

Layout read (under `Train & Test Set/`):
  single/no_caption/set_{1..5}/{train,test}.txt      `03747.mp4 anger` (CRLF)
  single/with_caption/set_{1..5}/*.txt               `clip.mp4<TAB>label<TAB>zh<TAB>en` (GBK, CRLF)
  compound/no_caption/set_{1..5}/{train,test}.txt    `00025.mp4 anger_disgust`
  data/clips/{id}.mp4                                 raw clips (`--source clips`)
`--source frames:<dir>` reads `<dir>/{id}/` frame folders instead (e.g. `frames:data/frames`).

The index is the single-label benchmark (the 11-class protocol); the compound label of each of its
clips is attached as `compound_label`. Neutral clips carry no caption: their captions stay null.
"""

from __future__ import annotations

from pathlib import Path

from fineschema import labels

from .common import (
    DatasetLayoutError,
    IndexBuilder,
    OutsideRootError,
    canonical_label,
    check_relative,
    locate,
    log,
    natural_sorted,
    read_lines,
)

SOURCES: tuple[str, ...] = ("clips",)
FOLDS = range(1, 6)
SPLIT_ROOT = "Train & Test Set"


def _split_dir(root: Path) -> Path:
    for name in (SPLIT_ROOT, "Train_Test_Set", "split"):
        if (root / name).is_dir():
            return root / name
    return root / SPLIT_ROOT


def _clip_id(name: str) -> str:
    name = name.strip()
    stem = name[:-4] if name.lower().endswith(".mp4") else name
    if not stem:
        raise ValueError("empty clip name")
    return stem


def _parse_plain(line: str, allowed: tuple[str, ...]) -> tuple[str, str]:
    fields = line.split()
    if len(fields) != 2:
        raise ValueError(f"expected `NNNNN.mp4 label`, found {len(fields)} fields")
    return _clip_id(fields[0]), canonical_label(fields[1], "mafw", allowed)


def _source(source: str | None) -> tuple[str, str]:
    """(media, folder template) for a `--source` value."""
    source = source or SOURCES[0]
    if source == "clips":
        return "video", "data/clips/{id}.mp4"
    if source.startswith("frames:") and source[len("frames:"):].strip("/"):
        base = source[len("frames:"):].rstrip("/")
        try:
            check_relative(base, "the dataset root")
        except OutsideRootError as exc:
            raise DatasetLayoutError(f"MAFW source {source!r}: {exc}") from None
        return "frames", base + "/{id}"
    raise DatasetLayoutError(f"unknown MAFW source {source!r}; use `clips` or `frames:<relative dir>`")


def _captions(split_dir: Path, builder: IndexBuilder) -> dict[str, tuple[str | None, str | None]]:
    """clip id -> (Chinese, English) caption; the first found wins. GBK and CRLF are handled by read_lines."""
    out: dict[str, tuple[str | None, str | None]] = {}
    for kind in ("single", "compound"):
        for fold in FOLDS:
            folder = split_dir / kind / "with_caption" / f"set_{fold}"
            if not folder.is_dir():
                continue
            for path in natural_sorted(folder.glob("*.txt"), key=lambda p: p.name):
                for number, line in read_lines(path, encodings=("utf-8", "gbk")):
                    fields = [f.strip() for f in line.split("\t")]
                    if len(fields) < 3 or not fields[0].removesuffix(".mp4"):
                        log.warning("MAFW caption line %s does not parse (want clip<TAB>label<TAB>zh<TAB>en)",
                                    builder.where(path, number))
                        continue
                    clip_id = _clip_id(fields[0])
                    zh = fields[2] or None
                    en = (fields[3] if len(fields) > 3 else "") or None
                    if clip_id not in out:
                        out[clip_id] = (zh, en)
    return out


def _compound_label(entry, votes: dict[str, list[str]]) -> str | None:
    """The compound label most of the compound split files give (the first read on a tie), noted when they disagree."""
    if not votes:
        return None
    ranked = sorted(votes.items(), key=lambda kv: -len(kv[1]))  # stable: the first read wins a tie
    if len(ranked) > 1:
        detail = ", ".join(f"{label!r} {len(w)}x ({', '.join(w[:3])})" for label, w in ranked)
        entry.note(f"compound label conflict: {detail}; {ranked[0][0]!r} kept", "compound_conflict")
    return ranked[0][0]


def index(root: Path, source: str | None = None, strict: bool = False) -> list:
    media, template = _source(source)
    split_dir = _split_dir(root)
    builder = IndexBuilder("mafw", root, strict=strict)
    found = 0
    for fold in FOLDS:
        for split in ("train", "test"):
            path = split_dir / "single" / "no_caption" / f"set_{fold}" / f"{split}.txt"
            if not path.is_file():
                log.warning("MAFW: %s is missing", path)
                continue
            found += 1
            for number, line in read_lines(path):
                where = builder.where(path, number)
                try:
                    clip_id, label = _parse_plain(line, labels.MAFW11)
                except (ValueError, labels.LabelError) as exc:
                    fields = line.split()
                    stem = fields[0].removesuffix(".mp4") if len(fields) == 2 else ""
                    builder.bad(stem or None, where, str(exc))
                    continue
                builder.add(clip_id, None, media, label, fold=fold, split=split, where=where)
    if found == 0:
        raise DatasetLayoutError(
            f"no MAFW split files under {split_dir}/single/no_caption/set_{{1..5}}/{{train,test}}.txt "
            "(is --root the folder that holds `Train & Test Set` and `data`?)"
        )

    compound: dict[str, dict[str, list[str]]] = {}  # clip -> compound label -> where it was read
    for fold in FOLDS:
        for split in ("train", "test"):
            path = split_dir / "compound" / "no_caption" / f"set_{fold}" / f"{split}.txt"
            if not path.is_file():
                continue
            for number, line in read_lines(path):
                try:
                    clip_id, label = _parse_plain(line, labels.MAFW43)
                except (ValueError, labels.LabelError) as exc:
                    log.warning("MAFW compound line %s does not parse: %s", builder.where(path, number), exc)
                    continue
                compound.setdefault(clip_id, {}).setdefault(label, []).append(builder.where(path, number))

    captions = _captions(split_dir, builder)
    for clip_id, entry in builder.entries.items():
        entry.compound_label = _compound_label(entry, compound.get(clip_id, {}))
        zh, en = captions.get(clip_id, (None, None))
        entry.caption_zh, entry.caption_en = zh, en

    def check(entry):
        locate(entry, root, [template.format(id=entry.clip_id)], annotated=entry.clip_id)

    return builder.finish(check)
