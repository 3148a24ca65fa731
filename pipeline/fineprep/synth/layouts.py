"""Writers of the official on-disk layouts of DFEW, FERV39k and MAFW (and of a plain folder of videos
with a `labels.csv`, for `fineprep extract --dataset folder`), filled with synthetic clips.

The plan (which clip has which class, fold, identity, id) is drawn first from the seed; each clip is
then rendered from its own child generator, so a clip's pixels do not depend on the others.
Identities are tied to the held-out part: in DFEW and MAFW a clip's identity is drawn from the
identities of its test fold, in FERV39k train and test use disjoint identities, so no test face
was ever seen in training.
"""

from __future__ import annotations

import datetime as _dt
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from fineschema import labels

from . import captions
from .clips import Clip
from .errors import SynthError
from .faces import Identity, identities

DATASETS = ("dfew", "ferv39k", "mafw", "folder")
FOLDS = 5
IDS_PER_FOLD = 2
FERV_TRAIN_IDS, FERV_TEST_IDS = 6, 3
FERV_SCENES = (
    "Action", "Argue", "Business", "Conflict", "Contest", "Crime", "Crisis", "DailyLife", "ElegantArt",
    "Experiment", "History", "Interview", "Liveshow", "Medicine", "OfficialEvent", "ScholarReport", "School",
    "Social", "Speech", "Talkshow", "Terror", "War",
)
DFEW_TRAIN_DIR = "train(single-labeled)"
DFEW_TEST_DIR = "test(single-labeled)"
MAFW_SPLITS = "Train & Test Set"
PROVENANCE = ".synth.json"
FOLDER_LABELS = "labels.csv"
FIXED_TIME = _dt.datetime(2024, 1, 1)  # xlsx metadata time, so rebuilding gives the same file content


@dataclass
class PlannedClip:
    index: int
    label: str
    identity: Identity
    clip_id: str  # the dataset's own id: "00012" (DFEW/MAFW) or "Action/Sad/0003" (FERV39k)
    test_fold: int | None = None  # DFEW/MAFW
    split: str | None = None  # FERV39k: train / test
    compound: str | None = None  # MAFW compound-split label
    caption: tuple[str, str] | None = None  # MAFW (zh, en)
    extra: dict = field(default_factory=dict)


def classes_of(dataset: str) -> tuple[str, ...]:
    return labels.MAFW11 if dataset == "mafw" else labels.BASIC7


def plan(dataset: str, clips_per_class: int, seed: int, size: int) -> list[PlannedClip]:
    """Who shows which class where; fully determined by the arguments."""
    if dataset not in DATASETS:
        raise SynthError(f"unknown dataset {dataset!r}; choose one of {', '.join(DATASETS)}")
    if clips_per_class < 1:
        raise SynthError("--clips-per-class must be at least 1")
    rng = np.random.default_rng([seed, 7])
    classes = classes_of(dataset)
    order = [(c, j) for j in range(clips_per_class) for c in classes]  # interleave classes over folds
    n = len(order)
    out: list[PlannedClip] = []
    if dataset == "ferv39k":
        pool = identities(FERV_TRAIN_IDS + FERV_TEST_IDS, size)
        train_ids, test_ids = pool[:FERV_TRAIN_IDS], pool[FERV_TRAIN_IDS:]
        n_test = max(1, clips_per_class // 4)
        counters: dict[tuple[str, str], int] = {}
        for i, (c, j) in enumerate(order):
            split = "test" if j >= clips_per_class - n_test else "train"
            ident = (test_ids if split == "test" else train_ids)[int(rng.integers(len(test_ids if split == "test"
                                                                                    else train_ids)))]
            scene = FERV_SCENES[int(rng.integers(len(FERV_SCENES)))]
            cls = labels.official_name(c, "dfew")
            counters[(scene, cls)] = counters.get((scene, cls), 0) + 1
            out.append(PlannedClip(i, c, ident, f"{scene}/{cls}/{counters[(scene, cls)]:04d}", split=split))
        return out

    pool = identities(FOLDS * IDS_PER_FOLD, size)
    ids = rng.permutation(n) + 1
    for i, (c, _j) in enumerate(order):
        fold = i % FOLDS + 1
        fold_ids = pool[(fold - 1) * IDS_PER_FOLD: fold * IDS_PER_FOLD]
        ident = fold_ids[int(rng.integers(len(fold_ids)))]
        pc = PlannedClip(i, c, ident, f"{int(ids[i]):05d}", test_fold=fold)
        if dataset == "mafw":
            combos = [m for m in labels.MAFW_COMBOS if c in m.split("_")]
            pc.compound = str(rng.choice(combos)) if combos and rng.random() < 0.4 else c
            pc.caption = captions.caption(c, ident.name == "astronaut", rng)
        out.append(pc)
    return sorted(out, key=lambda p: p.clip_id)


# ---------------------------------------------------------------------------- small file writers
def _write_lines(path: Path, lines: list[str], newline: str, encoding: str = "utf-8") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes("".join(line + newline for line in lines).encode(encoding))


def write_video(path: Path, frames: list[np.ndarray], fps: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), float(fps), (w, h))
    if not writer.isOpened():
        raise SynthError(f"cannot open a video writer for {path} (OpenCV without the mp4v encoder?)")
    try:
        for f in frames:
            writer.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    finally:
        writer.release()


def write_frames(folder: Path, frames: list[np.ndarray], name: Callable[[int], str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for k, f in enumerate(frames, start=1):
        cv2.imwrite(str(folder / name(k)), cv2.cvtColor(f, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 92])


def time_normalise(frames: list[np.ndarray], count: int = 16) -> list[np.ndarray]:
    """Resample a clip to `count` frames by linear interpolation between neighbours (DFEW's 16f set)."""
    pos = np.linspace(0, len(frames) - 1, count)
    out = []
    for p in pos:
        lo = int(np.floor(p))
        hi = min(lo + 1, len(frames) - 1)
        a = float(p - lo)
        out.append(frames[lo] if a < 1e-6 else cv2.addWeighted(frames[lo], 1 - a, frames[hi], a, 0.0))
    return out


def _votes(label_index: int, n_classes: int, annotators: int, rng: np.random.Generator) -> list[int]:
    votes = [0] * n_classes
    main = int(rng.integers(annotators // 2 + 2, annotators + 1))
    votes[label_index] = main
    for _ in range(annotators - main):
        other = int(rng.integers(n_classes - 1))
        votes[other if other < label_index else other + 1] += 1
    return votes


def _xlsx(path: Path, header: list[str] | None, rows: list[list]) -> None:
    from openpyxl import Workbook

    path.parent.mkdir(parents=True, exist_ok=True)
    wb = Workbook()
    ws = wb.active
    if header:
        ws.append(header)
    for row in rows:
        ws.append(row)
    wb.properties.created = FIXED_TIME
    wb.properties.modified = FIXED_TIME
    wb.save(path)


# ---------------------------------------------------------------------------- per dataset
def video_path(dataset: str, clip_id: str) -> str:
    """Where a clip's raw video lives, relative to the dataset root."""
    return {"dfew": f"Clip/original/{clip_id}.mp4", "ferv39k": f"0_7_LabelClips/{clip_id}.mp4",
            "mafw": f"data/clips/{clip_id}.mp4", "folder": f"clips/{clip_id}.mp4"}[dataset]


def media_dfew(root: Path, p: PlannedClip, clip: Clip) -> None:
    cid = p.clip_id
    write_video(root / video_path("dfew", cid), clip.frames, clip.fps)
    write_frames(root / "Clip" / "clip_224x224" / cid, clip.crops, lambda k, c=cid: f"{c}_{k:05d}.jpg")
    write_frames(root / "Clip" / "clip_224x224_16f" / cid, time_normalise(clip.crops),
                 lambda k, c=cid: f"{c}_{k:05d}.jpg")


def tables_dfew(root: Path, planned: list[PlannedClip], rng: np.random.Generator) -> None:
    for fold in range(1, FOLDS + 1):
        for folder, keep in ((DFEW_TRAIN_DIR, False), (DFEW_TEST_DIR, True)):
            rows = ["video_name,label"] + [f"{int(p.clip_id)},{labels.to_dfew_official(p.label)}"
                                           for p in planned if (p.test_fold == fold) == keep]
            _write_lines(root / "EmoLabel_DataSplit" / folder / f"set_{fold}.csv", rows, "\r\n")
    header = [f"vote_{s}" for s in ("happy", "sad", "neutral", "angry", "surprise", "disgust", "fear")]
    rows = [_votes(labels.to_dfew_official(p.label) - 1, 7, 10, rng) + [int(p.clip_id), labels.to_dfew_official(p.label)]
            for p in planned]
    _xlsx(root / "Annotation" / "annotation.xlsx", header + ["clip_name", "annotation"], rows)


def media_ferv39k(root: Path, p: PlannedClip, clip: Clip) -> None:
    write_video(root / video_path("ferv39k", p.clip_id), clip.frames, clip.fps)
    write_frames(root / "2_ClipsforFaceCrop" / p.clip_id, clip.crops, lambda k: f"{k:05d}.jpg")


def tables_ferv39k(root: Path, planned: list[PlannedClip], rng: np.random.Generator) -> None:
    for split in ("train", "test"):
        lines = [f"{p.clip_id} {p.clip_id.split('/')[1]}" for p in planned if p.split == split]
        _write_lines(root / "4_setups" / "All_scenes" / f"{split}_All.csv", lines, "\n")


def media_mafw(root: Path, p: PlannedClip, clip: Clip) -> None:
    write_video(root / video_path("mafw", p.clip_id), clip.frames, clip.fps)


def tables_mafw(root: Path, planned: list[PlannedClip], rng: np.random.Generator) -> None:
    header = ["clip", "invalid", *labels.MAFW_OFFICIAL, "single_label"]
    rows = [[f"{p.clip_id}.mp4", 0, *_votes(labels.to_mafw_official(p.label) - 1, 11, 11, rng), labels.to_mafw_official(p.label)]
            for p in planned]
    _xlsx(root / "Labels" / "single-set.xlsx", header, rows)
    _xlsx(root / "Labels" / "descriptive_text.xlsx", None,
          [[f"{p.clip_id}.mp4", p.caption[0], p.caption[1]] for p in planned if p.caption])
    base = root / MAFW_SPLITS
    for kind in ("single", "compound"):
        for fold in range(1, FOLDS + 1):
            for part, is_test in (("train", False), ("test", True)):
                chosen = [p for p in planned if (p.test_fold == fold) == is_test]
                label = (lambda p: p.label) if kind == "single" else (lambda p: p.compound)
                plain = [f"{p.clip_id}.mp4 {label(p)}" for p in chosen]
                captioned = [f"{p.clip_id}.mp4\t{label(p)}\t{p.caption[0]}\t{p.caption[1]}" for p in chosen
                             if p.caption]
                _write_lines(base / kind / "no_caption" / f"set_{fold}" / f"{part}.txt", plain, "\r\n", "gbk")
                _write_lines(base / kind / "with_caption" / f"set_{fold}" / f"{part}.txt", captioned, "\r\n", "gbk")


def media_folder(root: Path, p: PlannedClip, clip: Clip) -> None:
    write_video(root / video_path("folder", p.clip_id), clip.frames, clip.fps)


def tables_folder(root: Path, planned: list[PlannedClip], rng: np.random.Generator) -> None:
    """`labels.csv` for `fineprep extract --dataset folder --labels`: fold 1's test clips are `test`."""
    rows = ["path,label,split"] + [f"{video_path('folder', p.clip_id)},{p.label},{'test' if p.test_fold == 1 else 'train'}"
                                   for p in planned]
    _write_lines(root / FOLDER_LABELS, rows, "\n")


# Per dataset: (write one clip's media, write the split and label files once all clips are planned).
WRITERS = {"dfew": (media_dfew, tables_dfew), "ferv39k": (media_ferv39k, tables_ferv39k),
           "mafw": (media_mafw, tables_mafw), "folder": (media_folder, tables_folder)}


def provenance(dataset: str, seed: int, size: int, clips_per_class: int, frames_range: tuple[int, int],
               planned: list[PlannedClip], clips: dict[int, Clip]) -> dict:
    rows = []
    for p in planned:
        c = clips[p.index]
        row = {"clip": p.clip_id, "identity": p.identity.name, "label": p.label, "intensity": c.intensity,
               "fps": c.fps, "frames": c.meta.get("frames", len(c.frames)), "onset": c.onset, "apex": c.apex}
        if p.test_fold is not None:
            row["test_fold"] = p.test_fold
        if p.split is not None:
            row["split"] = p.split
        if p.compound is not None:
            row["compound_label"] = p.compound
        row.update(c.meta.get("scene", {}))
        rows.append(row)
    return {"generator": "fineprep synth", "dataset": dataset, "seed": seed, "size": size,
            "clips_per_class": clips_per_class, "frames_range": list(frames_range), "clips": rows}


def settings_of(dataset: str, seed: int, size: int, clips_per_class: int, frames_range: tuple[int, int]) -> dict:
    return {"dataset": dataset, "seed": seed, "size": size, "clips_per_class": clips_per_class,
            "frames_range": list(frames_range)}


def write_provenance(root: Path, doc: dict) -> None:
    (root / PROVENANCE).write_text(json.dumps(doc, indent=1, sort_keys=True, ensure_ascii=False) + "\n",
                                   encoding="utf-8")
