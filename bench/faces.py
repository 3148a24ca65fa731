"""Benchmark the face stage against known answers: does `fineprep extract` find and follow the right face?

    .venv/bin/python bench/faces.py [--clips-per-class 1] [--seed 0] [--real ../shared/data/real-footage]
                                    [--work DIR] [--json OUT.json] [--baseline-tree DIR]

Datasets (built once under --work, reused on later runs):
  * wild: `fineprep synth --dataset folder --scene wild` (faces of 40-150 px in 640x360 and 1080p
    frames, 2-4 people, a walker, 1-3 shots per clip, dark / flat / blurred / compressed shots), with
    the real portraits of --real among the people; its ground_truth.parquet holds the answers;
  * real: the real talking-face videos of --real as a folder dataset, plus both joined into one
    video with a cut at the first one's length.
Each set is extracted by the `fineprep extract` command (a subprocess, default workers) with the
default face choice and with `--face primary` where the command has that option. Reported per run:
  * recall: kept frames where the primary face is >= 40 px and not turned away, found by the
    landmarker with the crop window's centre inside the true box (needs the store's `boxes`; without
    them only `found`, the landmarker's hits wherever the window was, is reported);
  * switches: changes of the person under the window centre inside one true shot;
  * unmeasured: frames with face_found false but non-zero landmarks / blendshapes / parsing, and
    frames with face_found true whose landmarks are copied from another source frame (both must be 0);
  * cuts: true cuts between consecutive kept frames that the stored shot index marks (if stored);
  * seconds per clip: the extract command's wall time (Dask start included) over the clips.
Hard cases (bench/hard_faces.py, when --real is there): real faces with hand-placed points, degraded
and pasted into wide frames; found ratio, box IoU and 68-point landmark error, by size and condition.
Real videos have no true boxes: their recall is measured against a reference box, the landmarker's
mesh on the whole (512 px, one frontal speaker) frame. `--baseline-tree` runs extract
from another checkout (e.g. `git archive` of an older commit) to compare against.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
REAL_VIDEOS = ("WDA_AlexandriaOcasioCortez_000.mp4", "WDA_KatieHill_000.mp4")
SHOT_ARRAYS = ("shot", "shots", "shot_index")


def build_real(real: Path, root: Path) -> dict[str, list[int]]:
    """Copy the real videos into a folder dataset and join them into one; returns cuts per video path."""
    import cv2

    root.mkdir(parents=True, exist_ok=True)
    cuts = {}
    joined, fps = [], 25.0
    for name in REAL_VIDEOS:
        dst = root / "clips" / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        if not dst.exists():
            shutil.copyfile(real / name, dst)
        cuts[f"clips/{name}"] = []
        cap = cv2.VideoCapture(str(dst))
        fps = cap.get(cv2.CAP_PROP_FPS) or fps
        frames = []
        while True:
            ok, f = cap.read()
            if not ok:
                break
            frames.append(f)
        cap.release()
        joined.append(frames)
    path = root / "joined" / "both_speakers.mp4"
    cuts["joined/both_speakers.mp4"] = [len(joined[0])]
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        h, w = joined[0][0].shape[:2]
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
        for f in joined[0] + [cv2.resize(x, (w, h)) for x in joined[1]]:
            writer.write(f)
        writer.release()
    return cuts


def has_face_option(tree: Path | None) -> bool:
    r = subprocess.run([sys.executable, "-m", "fineprep.cli", "extract", "--help"], capture_output=True, text=True,
                       env=_env(tree))
    return "--face" in r.stdout


def _env(tree: Path | None) -> dict:
    env = dict(os.environ)
    if tree is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(tree / "pipeline"), str(tree / "schemas"), str(tree / "trainer")])
    return env


def run_extract(root: Path, store: Path, labels: Path | None, face: str | None, tree: Path | None) -> float:
    cmd = [sys.executable, "-m", "fineprep.cli", "extract", "--dataset", "folder", "--root", str(root),
           "--out", str(store), "--overwrite"]
    if labels is not None:
        cmd += ["--labels", str(labels)]
    if face is not None:
        cmd += ["--face", face]
    start = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env=_env(tree))
    wall = time.perf_counter() - start
    if r.returncode not in (0, 1):
        raise SystemExit(f"extract failed ({r.returncode}) on {root}:\n{r.stderr[-2000:]}")
    return wall


def read_store(store: Path) -> tuple[list[dict], dict, list[str]]:
    import pyarrow.parquet as pq
    import zarr

    rows = pq.read_table(store / "manifest.parquet").to_pylist()
    group = zarr.open_group(str(store / "arrays.zarr"), mode="r")
    names = sorted(group.array_keys())
    return rows, group, names


def score_store(store: Path, truths: dict, wall: float) -> dict:
    from fineprep.extract.sampling import segment_centres
    from fineprep.synth.wild_truth import ClipScore, score_clip, unmeasured_frames

    rows, group, names = read_store(store)
    frames = int(group.attrs["frames"])
    has_boxes = "boxes" in names
    shot_name = next((n for n in SHOT_ARRAYS if n in names), None)
    total = ClipScore()
    by_cond: dict[str, ClipScore] = {}
    by_size: dict[str, ClipScore] = {}
    filled = copied = kept = found_all = 0
    status: dict[str, int] = {}
    for row in rows:
        status[row["status"]] = status.get(row["status"], 0) + 1
        truth = truths.get(row["source_path"])
        if row["store_index"] is None or row["store_index"] < 0 or not row["frame_indices"]:
            if truth is not None:  # a clip that stored nothing still counts its eligible frames as misses
                idx = segment_centres(len(truth.shot), frames)
                none = np.zeros(len(idx), bool)
                total.add(score_clip(truth, idx, none))
                _breakdown(truth, idx, none, None, by_cond, by_size)
            continue
        i = row["store_index"]
        found = np.asarray(group["face_found"][i], bool)
        idx = row["frame_indices"]
        marks = group["landmarks"][i]
        um = unmeasured_frames(idx, found, marks, group["blendshapes"][i], group["parsing"][i])
        filled += um["filled"]
        copied += um["copied"]
        kept += len(found)
        found_all += int(found.sum())
        if truth is None:
            continue
        boxes = group["boxes"][i] if has_boxes else None
        shots = group[shot_name][i] if shot_name else None
        s = score_clip(truth, idx, found, boxes, shots)
        total.add(s)
        _breakdown(truth, idx, found, boxes, by_cond, by_size)
    n = len(rows)
    out = {
        "clips": n, "status": status, "seconds_per_clip": round(wall / max(n, 1), 2), "wall_s": round(wall, 1),
        "kept_frames": kept, "found_ratio": round(found_all / max(kept, 1), 4),
        "unmeasured_filled": filled, "unmeasured_copied": copied,
        "store_has_boxes": has_boxes, "store_shot_array": shot_name,
    }
    if truths:
        out.update(_summary(total, has_boxes))
        out["by_condition"] = {k: _summary(v, has_boxes) for k, v in sorted(by_cond.items())}
        out["by_face_px"] = {k: _summary(v, has_boxes) for k, v in sorted(by_size.items())}
    return out


def _breakdown(truth, idx, found, boxes, by_cond: dict, by_size: dict) -> None:
    """Per-frame scores added up by the shot's conditions and by the true face height."""
    from fineprep.synth.wild_truth import ClipScore, score_clip

    for t, f in enumerate(idx):
        one = score_clip(truth, [f], found[t:t + 1], None if boxes is None else boxes[t:t + 1])
        by_cond.setdefault(truth.conditions[f], ClipScore()).add(one)
        px = truth.face_px[f]
        bucket = "absent" if np.isnan(px) else "<40" if px < 40 else "40-60" if px < 60 else \
            "60-100" if px < 100 else ">=100"
        by_size.setdefault(bucket, ClipScore()).add(one)


def _summary(s, has_boxes: bool) -> dict:
    d = {"eligible": s.eligible, "found": s.found,
         "found_ratio_eligible": round(s.found / s.eligible, 4) if s.eligible else None}
    if has_boxes:
        d.update({"hits": s.hits, "recall": round(s.hits / s.eligible, 4) if s.eligible else None,
                  "switches": s.switches, "off_face": s.off_face})
    if s.cuts_true or s.cuts_false:
        d.update({"cuts_true": s.cuts_true, "cuts_found": s.cuts_found, "cuts_false": s.cuts_false})
    return d


def real_truths(cuts: dict[str, list[int]], root: Path) -> dict:
    """Truth objects for the real videos: the shot index from the known cuts, and as the face box a
    *reference* (not ground truth): the extent of the landmarker's mesh on the whole frame, which
    these one-speaker, frontal, 512 px videos make reliable (NaN where it finds nothing)."""
    import cv2

    from fineprep.synth.faces import detect, open_landmarker
    from fineprep.synth.wild_truth import ClipTruth

    out = {}
    for path, cs in cuts.items():
        cache = root / "reference" / (path.replace("/", "__") + ".npy")
        if cache.exists():
            boxes = np.load(cache)
        else:
            cap = cv2.VideoCapture(str(root / path))
            rows = []
            with open_landmarker() as lm:
                while True:
                    ok, f = cap.read()
                    if not ok:
                        break
                    found = detect(lm, cv2.cvtColor(f, cv2.COLOR_BGR2RGB))
                    mesh = None if found is None else found[0][:468]
                    rows.append([np.nan] * 4 if mesh is None else [*mesh.min(0), *mesh.max(0)])
            cap.release()
            boxes = np.asarray(rows, np.float32)
            cache.parent.mkdir(parents=True, exist_ok=True)
            np.save(cache, boxes)
        n = len(boxes)
        shot = np.zeros(n, int)
        for c in cs:
            shot[c:] += 1
        out[path] = ClipTruth(clip_id=path, path=path, width=0, height=0, primary="speaker", boxes=boxes,
                              turned_away=np.zeros(n, bool), shot=shot, others=[[] for _ in range(n)],
                              conditions=["real"] * n)
    return out


def table(results: dict) -> str:
    lines = ["| set | face | clips (ok) | recall | found | switches | unmeasured (filled/copied) | cuts found/true "
             "(false) | s/clip |", "|---|---|---|---|---|---|---|---|---|"]
    for key, r in results.items():
        dataset, face = key.split("/")
        rec = r.get("recall")
        fnd = r.get("found_ratio_eligible")
        fnd = r["found_ratio"] if fnd is None else fnd
        cuts = f"{r['cuts_found']}/{r['cuts_true']} ({r['cuts_false']})" if "cuts_true" in r else "-"
        lines.append(f"| {dataset} | {face} | {r['clips']} ({r['status'].get('ok', 0)}) | "
                     f"{'-' if rec is None else f'{rec:.3f}'} | {fnd:.3f} | {r.get('switches', '-') if r.get('eligible') else '-'} | "
                     f"{r['unmeasured_filled']}/{r['unmeasured_copied']} | {cuts} | {r['seconds_per_clip']} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips-per-class", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--real", type=Path, default=REPO.parent / "shared" / "data" / "real-footage")
    ap.add_argument("--work", type=Path, default=Path("/tmp/fineclip-bench/faces"))
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--baseline-tree", type=Path, default=None,
                    help="run extract from this source tree (pipeline/, schemas/) instead of the installed one")
    args = ap.parse_args()

    from fineprep.synth import make_dataset
    from fineprep.synth.layouts import FOLDER_LABELS
    from fineprep.synth.wild_truth import read as read_truth

    real = args.real if args.real.is_dir() else None
    wild_root = args.work / f"wild-s{args.seed}-c{args.clips_per_class}{'-portraits' if real else ''}"
    t0 = time.perf_counter()
    make_dataset("folder", wild_root, clips_per_class=args.clips_per_class, seed=args.seed, frames_range=(24, 48),
                 scene="wild", portraits=real)
    print(f"wild set at {wild_root} ({time.perf_counter() - t0:.1f} s)", file=sys.stderr)
    sets = {"wild": (wild_root, wild_root / FOLDER_LABELS, read_truth(wild_root))}
    if real:
        real_root = args.work / "real"
        cuts = build_real(real, real_root)
        sets["real"] = (real_root, None, real_truths(cuts, real_root))
    else:
        print(f"no real footage at {args.real}: real clips skipped", file=sys.stderr)

    faces = [None]
    if has_face_option(args.baseline_tree):
        faces.append("primary")
    else:
        print("this fineprep extract has no --face option: default face choice only", file=sys.stderr)
    results = {}
    for name, (root, labels, truths) in sets.items():
        for face in faces:
            store = args.work / "stores" / f"{name}-{face or 'default'}"
            wall = run_extract(root, store, labels, face, args.baseline_tree)
            results[f"{name}/{face or 'default'}"] = score_store(store, truths, wall)
            r = results[f"{name}/{face or 'default'}"]
            if not r["store_has_boxes"]:
                print(f"{name}/{face or 'default'}: the store has no `boxes` array: recall and switches cannot "
                      "be measured, `found` counts the landmarker's hits wherever the crop was", file=sys.stderr)
    hard = None
    if real and args.baseline_tree is None:  # the hard cases run in this process, on the installed fineprep
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        import hard_faces

        hard = hard_faces.run(real)
    doc = {
        "command": " ".join(["bench/faces.py", *sys.argv[1:]]),
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "commit": subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                                 text=True).stdout.strip(),
        "baseline_tree": str(args.baseline_tree) if args.baseline_tree else None,
        "results": results,
        "hard": hard,
    }
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(doc, indent=1) + "\n")
    print(table(results))
    if hard:
        print(hard_faces.table(hard))
    print(json.dumps({k: {"by_condition": v.get("by_condition"), "by_face_px": v.get("by_face_px")}
                      for k, v in results.items() if "by_condition" in v}, indent=1))


if __name__ == "__main__":
    main()
