"""`fineprep synth --scene wild`: small faces in wide, cut, degraded footage, and its ground truth.

One folder-layout set (7 classes x 1 clip, 24-36 frames, seed 5) is built per module with the real
FaceLandmarker; where the workplace's real portraits are absent it is built from synthetic faces
only. The scoring used by bench/faces.py is checked on constructed inputs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest
from extract_data import read_video_rgb

from fineprep.synth import make_dataset, wild_truth
from fineprep.synth.wild_truth import ClipTruth, score_clip, unmeasured_frames

pytestmark = pytest.mark.timeout(300)

PORTRAITS = Path(__file__).resolve().parents[2] / "shared" / "data" / "real-footage"
SEED = 5


@pytest.fixture(scope="module")
def wild(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("wild")
    portraits = PORTRAITS if PORTRAITS.is_dir() else None
    return make_dataset("folder", base / "wild", clips_per_class=1, seed=SEED, frames_range=(24, 36), scene="wild",
                        portraits=portraits)


@pytest.fixture(scope="module")
def truth(wild) -> dict[str, ClipTruth]:
    return wild_truth.read(wild)


@pytest.fixture(scope="module")
def videos(wild, truth) -> dict[str, list[np.ndarray]]:
    return {path: read_video_rgb(wild / path) for path in truth}


def test_layout_truth_and_videos_agree(wild, truth, videos):
    labels = (wild / "labels.csv").read_text().splitlines()
    assert labels[0] == "path,label,split" and len(labels) == 8
    listed = {line.split(",")[0] for line in labels[1:]}
    assert listed == set(truth) == {f"clips/{p.name}" for p in (wild / "clips").glob("*.mp4")}
    table = pq.read_table(wild / wild_truth.GROUND_TRUTH)
    assert table.schema.equals(wild_truth.SCHEMA)
    prov = json.loads((wild / ".synth.json").read_text())
    assert prov["scene"] == "wild"
    by_path = {f"clips/{c['clip']}.mp4": c for c in prov["clips"]}
    for path, t in truth.items():
        frames = videos[path]
        assert len(frames) == len(t.shot) == by_path[path]["frames"]
        assert frames[0].shape == (t.height, t.width, 3)
        assert (t.width, t.height) in ((640, 360), (1920, 1080))
        assert t.cuts == by_path[path]["cuts"]
        assert 1 <= len(t.cuts) + 1 <= 3
    sizes = {(t.width, t.height) for t in truth.values()}
    assert sizes == {(640, 360), (1920, 1080)}, "the set should hold both frame sizes"
    if PORTRAITS.is_dir():
        assert any(p.startswith("portrait:") for c in prov["clips"] for p in c["people"])


def test_primary_box_inside_frame_largest_and_sized(truth):
    heights = []
    for t in truth.values():
        b = t.boxes
        assert np.isfinite(b).all(), "the primary is present in every frame"
        assert (b[:, 0] >= 0).all() and (b[:, 1] >= 0).all()
        assert (b[:, 2] <= t.width).all() and (b[:, 3] <= t.height).all()
        heights += list(t.face_px)
        for f, others in enumerate(t.others):
            assert 1 <= len(others) + 1 <= 4
            for _, ob in others:
                assert ob[3] - ob[1] < t.face_px[f], "the primary is the largest face in every frame"
        for s in np.unique(t.shot):
            people = {name for f in np.flatnonzero(t.shot == s) for name, _ in t.others[f]}
            assert people, "every shot has someone besides the primary"
    heights = np.array(heights)
    assert heights.min() >= 38 and heights.max() <= 151
    assert heights.min() < 60 and heights.max() > 110, "face sizes should span the 40-150 px range"


def test_primary_box_is_on_the_face(wild, truth, videos):
    """The landmarker, run on a window around the true box, finds a face centred inside that box."""
    from fineprep.synth.faces import detect, open_landmarker

    checked = hit = 0
    with open_landmarker() as lm:
        for path, t in truth.items():
            for f in range(0, len(t.shot), 3):
                if t.turned_away[f] or t.face_px[f] < 50 or "dark" in t.conditions[f]:
                    continue
                x0, y0, x1, y1 = t.boxes[f]
                side = 2.0 * max(x1 - x0, y1 - y0)
                cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
                s = 256 / side
                m = np.array([[s, 0, 128 - s * cx], [0, s, 128 - s * cy]], np.float32)
                crop = cv2.warpAffine(videos[path][f], m, (256, 256), flags=cv2.INTER_LINEAR)
                found = detect(lm, crop)
                checked += 1
                if found is not None:
                    px, py = (found[0][:468].mean(0) - m[:, 2]) / s
                    hit += int(x0 <= px <= x1 and y0 <= py <= y1)
    assert checked >= 20
    assert hit / checked >= 0.9, f"{hit} of {checked} frames had a face inside the true box"


def test_turned_away_frames_hide_the_face(truth, videos):
    """Where the primary is turned away, the landmarker finds no face in a window around the true box."""
    from fineprep.synth.faces import detect, open_landmarker

    away = [(p, int(f)) for p, t in truth.items() for f in np.flatnonzero(t.turned_away)]
    assert away, f"seed {SEED} should turn someone away"
    faces = 0
    with open_landmarker() as lm:
        for path, f in away[::2]:
            x0, y0, x1, y1 = truth[path].boxes[f]
            s = 256 / (2.0 * max(x1 - x0, y1 - y0))
            m = np.array([[s, 0, 128 - s * (x0 + x1) / 2], [0, s, 128 - s * (y0 + y1) / 2]], np.float32)
            found = detect(lm, cv2.warpAffine(videos[path][f], m, (256, 256), flags=cv2.INTER_LINEAR))
            if found is not None:
                px, py = (found[0][:468].mean(0) - m[:, 2]) / s
                faces += int(x0 <= px <= x1 and y0 <= py <= y1)
    assert faces <= 0.1 * len(away[::2]), f"{faces} of {len(away[::2])} turned-away frames show a face"


def test_cuts_are_measurable_colour_changes(truth, videos):
    for path, t in truth.items():
        hists = []
        for f in videos[path]:
            hsv = cv2.cvtColor(cv2.resize(f, (160, 90), interpolation=cv2.INTER_AREA), cv2.COLOR_RGB2HSV)
            h = cv2.calcHist([hsv], [0, 1], None, [30, 16], [0, 180, 0, 256]).ravel()
            hists.append(h / h.sum())
        dist = np.array([0.5 * np.abs(hists[i] - hists[i - 1]).sum() for i in range(1, len(hists))])
        cut_mask = np.zeros(len(dist), bool)
        for c in t.cuts:
            cut_mask[c - 1] = True
        if t.cuts:
            assert dist[cut_mask].min() > dist[~cut_mask].max(), (path, dist[cut_mask], dist[~cut_mask].max())


def test_conditions_cover_the_hard_cases(truth):
    seen = {c for t in truth.values() for cond in t.conditions for c in cond.split("+")}
    assert {"dark", "blur", "compressed"} <= seen, seen


@pytest.mark.slow
def test_same_seed_same_clip_other_seed_other_clip():
    from fineprep.synth import wild
    from fineprep.synth.faces import identities

    pool = identities(4, 128)

    def once(seed: int):
        return wild.render_wild(pool[0], "happiness", np.random.default_rng(seed), (16, 16), pool)

    (a, ra), (b, rb), (c, _) = once(1), once(1), once(2)
    assert ra == rb and all(np.array_equal(x, y) for x, y in zip(a.frames, b.frames, strict=True))
    assert not np.array_equal(a.frames[0], c.frames[0])


def test_same_settings_return_the_same_root(wild):
    portraits = PORTRAITS if PORTRAITS.is_dir() else None
    stamp = (wild / wild_truth.GROUND_TRUTH).stat().st_mtime_ns
    again = make_dataset("folder", wild, clips_per_class=1, seed=SEED, frames_range=(24, 36), scene="wild",
                         portraits=portraits)
    assert again == wild and (wild / wild_truth.GROUND_TRUTH).stat().st_mtime_ns == stamp


# ------------------------------------------------------------------------------------------ scoring
def _truth() -> ClipTruth:
    """Ten frames, a cut at 5; the primary P at x 100-140, the other person O at x 300-330."""
    n = 10
    boxes = np.tile(np.array([100, 50, 140, 100], np.float32), (n, 1))
    boxes[7] = np.nan  # absent
    away = np.zeros(n, bool)
    away[8] = True
    others = [[("O", np.array([300, 60, 330, 95], np.float32))] for _ in range(n)]
    return ClipTruth("c", "c.mp4", 640, 360, "P", boxes, away, np.array([0] * 5 + [1] * 5), others, ["clean"] * n)


def _window(cx: float, cy: float = 75) -> list[float]:
    return [cx - 30, cy - 30, cx + 30, cy + 30]


def test_score_counts_hits_switches_and_cuts():
    t = _truth()
    idx = list(range(10))
    found = np.ones(10, bool)
    found[3] = False
    centres = [120, 120, 315, 120, 120, 315, 315, 500, 120, 120]
    boxes = np.array([_window(c) for c in centres])
    shots = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1, 1])  # one cut found one frame early
    s = score_clip(t, idx, found, boxes, shots)
    # eligible: all but 7 (absent) and 8 (turned away); hits: P under the centre and found
    assert s.eligible == 8
    assert s.found == 7 and s.hits == 4  # frames 0, 1, 4, 9
    # shot 0: P, P, O, (3 not found), P -> 2 switches; shot 1: O, O, P, P, P -> 1 switch
    assert s.switches == 3
    assert (s.cuts_true, s.cuts_found, s.cuts_false) == (1, 0, 1)
    assert s.off_face == 0  # frame 7's window is on nobody, but the primary is absent there: not counted
    centres[9] = 500
    assert score_clip(t, idx, found, np.array([_window(c) for c in centres])).off_face == 1
    bare = score_clip(t, idx, found)
    assert (bare.eligible, bare.found, bare.hits, bare.switches) == (8, 7, 0, 0)
    small = score_clip(t, idx, found, boxes, min_face=60)
    assert small.eligible == 0


def test_unmeasured_frames_catch_filled_and_copied_values():
    marks = np.random.default_rng(0).random((4, 478, 3)).astype(np.float32)
    found = np.array([True, True, False, True])
    marks[2] = 0
    assert unmeasured_frames([0, 1, 2, 3], found, marks) == {"filled": 0, "copied": 0}
    marks[3] = marks[1]  # frame 3 carries frame 1's landmarks
    assert unmeasured_frames([0, 1, 2, 3], found, marks)["copied"] == 1
    assert unmeasured_frames([0, 1, 2, 1], found, marks)["copied"] == 0  # the same source frame, kept twice
    shapes = np.zeros((4, 52), np.float32)
    shapes[2, 5] = 0.3
    assert unmeasured_frames([0, 1, 2, 3], found, marks, shapes)["filled"] == 1


@pytest.mark.slow
def test_extract_reads_the_wild_set(wild, tmp_path):
    out = tmp_path / "store"
    proc = subprocess.run([str(Path(sys.executable).parent / "fineprep"), "extract", "--dataset", "folder",
                           "--root", str(wild), "--out", str(out), "--labels", str(wild / "labels.csv"),
                           "--frames", "8", "--size", "112", "--workers", "1", "--limit", "2"],
                          capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=300)
    assert proc.returncode in (0, 1), proc.stderr[-2000:]
    rows = pq.read_table(out / "manifest.parquet").to_pylist()
    assert len(rows) == 2, rows
    # Read and decoded: whatever the face stage makes of them, no clip is missing, corrupt or an error.
    assert not [r for r in rows if r["status"] in ("error", "corrupt", "missing", "outside_root")], rows
    assert all(r["label"] and r["source_path"].startswith("clips/") for r in rows), rows
