"""`fineprep synth`: each official layout parsed the way a real loader reads it, plus the renderer.

The datasets are built once per module (7 or 11 classes x 2 clips, 256 px) with the real
FaceLandmarker and real photographs; the whole module runs in well under a minute on one core.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
from openpyxl import load_workbook

from fineschema import labels

pytestmark = pytest.mark.timeout(300)

synth = pytest.importorskip("fineprep.synth")


def _decode(path: Path) -> tuple[list[np.ndarray], float]:
    cap = cv2.VideoCapture(str(path))
    assert cap.isOpened(), f"cannot open {path}"
    fps = cap.get(cv2.CAP_PROP_FPS)
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    return frames, fps


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("synth")
    return {ds: synth.make_dataset(ds, base / ds, clips_per_class=2, seed=3) for ds in ("dfew", "ferv39k", "mafw")}


def _prov(root: Path) -> dict:
    return json.loads((root / ".synth.json").read_text(encoding="utf-8"))


# --------------------------------------------------------------------------------------------- DFEW
def _dfew_csv(path: Path) -> list[tuple[int, int]]:
    raw = path.read_bytes()
    assert raw.endswith(b"\r\n") and raw.count(b"\n") == raw.count(b"\r\n"), f"{path} must use CRLF"
    lines = raw.decode("utf-8").split("\r\n")[:-1]
    assert lines[0] == "video_name,label"
    rows = []
    for line in lines[1:]:
        vid, lab = line.split(",")
        assert re.fullmatch(r"[1-9]\d*", vid), f"id {vid!r} must be an unpadded integer"
        rows.append((int(vid), int(lab)))
    return rows


def test_dfew_layout(built):
    root = built["dfew"]
    prov = {int(c["clip"]): c for c in _prov(root)["clips"]}
    assert len(prov) == 14
    test_of: dict[int, list[int]] = {}
    train_of: dict[int, list[int]] = {}
    for fold in range(1, 6):
        for folder, into in (("test(single-labeled)", test_of), ("train(single-labeled)", train_of)):
            for vid, lab in _dfew_csv(root / "EmoLabel_DataSplit" / folder / f"set_{fold}.csv"):
                assert labels.from_dfew_official(lab) == prov[vid]["label"]  # 1-based, official order
                into.setdefault(vid, []).append(fold)
    for vid in prov:
        assert len(test_of[vid]) == 1, "each clip is tested in exactly one fold"
        assert sorted(train_of[vid] + test_of[vid]) == [1, 2, 3, 4, 5]
        assert prov[vid]["test_fold"] == test_of[vid][0]

    for vid, c in prov.items():
        frames, fps = _decode(root / "Clip" / "original" / f"{vid:05d}.mp4")
        assert len(frames) == c["frames"] and round(fps) == c["fps"]
        assert frames[0].shape == (256, 256, 3)
        crops = sorted((root / "Clip" / "clip_224x224" / f"{vid:05d}").glob("*.jpg"))
        assert [p.name for p in crops] == [f"{vid:05d}_{k:05d}.jpg" for k in range(1, c["frames"] + 1)]
        assert cv2.imread(str(crops[0])).shape == (224, 224, 3)
        tim = sorted((root / "Clip" / "clip_224x224_16f" / f"{vid:05d}").glob("*.jpg"))
        assert [p.name for p in tim] == [f"{vid:05d}_{k:05d}.jpg" for k in range(1, 17)]

    ws = load_workbook(root / "Annotation" / "annotation.xlsx", read_only=True).active
    rows = list(ws.iter_rows(values_only=True))
    assert rows[0] == ("vote_happy", "vote_sad", "vote_neutral", "vote_angry", "vote_surprise", "vote_disgust",
                       "vote_fear", "clip_name", "annotation")
    for row in rows[1:]:
        votes, clip, ann = row[:7], row[7], row[8]
        assert labels.from_dfew_official(ann) == prov[int(clip)]["label"]
        assert int(np.argmax(votes)) + 1 == ann


def test_dfew_identities_are_held_out_by_fold(built):
    folds: dict[str, set[int]] = {}
    for c in _prov(built["dfew"])["clips"]:
        folds.setdefault(c["identity"], set()).add(c["test_fold"])
    assert all(len(f) == 1 for f in folds.values()), folds
    assert len(folds) >= 5


# ------------------------------------------------------------------------------------------ FERV39k
def test_ferv39k_layout(built):
    root = built["ferv39k"]
    prov = {c["clip"]: c for c in _prov(root)["clips"]}
    seen = {}
    for split in ("train", "test"):
        raw = (root / "4_setups" / "All_scenes" / f"{split}_All.csv").read_bytes()
        assert b"\r" not in raw and raw.endswith(b"\n")
        for line in raw.decode().splitlines():
            m = re.fullmatch(r"([A-Za-z]+)/([A-Za-z]+)/(\d{4}) ([A-Za-z]+)", line)
            assert m, f"bad FERV39k split line {line!r}"
            scene, cls, _num, lab = m.groups()
            assert scene in synth.layouts.FERV_SCENES and cls == lab and lab in labels.DFEW_OFFICIAL_NAMES
            key = line.split(" ")[0]
            assert key not in seen
            seen[key] = split
            c = prov[key]
            assert c["split"] == split and labels.official_name(c["label"], "ferv39k") == lab
            frames, fps = _decode(root / "0_7_LabelClips" / f"{key}.mp4")
            assert len(frames) == c["frames"] and round(fps) == c["fps"]
            crops = sorted((root / "2_ClipsforFaceCrop" / key).glob("*.jpg"))
            assert [p.name for p in crops] == [f"{k:05d}.jpg" for k in range(1, c["frames"] + 1)]
    assert set(seen) == set(prov) and set(seen.values()) == {"train", "test"}
    ids = {s: {c["identity"] for c in prov.values() if c["split"] == s} for s in ("train", "test")}
    assert not ids["train"] & ids["test"], "train and test faces must differ"


# --------------------------------------------------------------------------------------------- MAFW
def _mafw_lines(path: Path) -> list[str]:
    raw = path.read_bytes()
    assert raw.count(b"\n") == raw.count(b"\r\n"), f"{path} must use CRLF"
    return raw.decode("gbk").split("\r\n")[:-1] if raw else []


def test_mafw_layout(built):
    root = built["mafw"]
    prov = {c["clip"]: c for c in _prov(root)["clips"]}
    assert len(prov) == 22 and {c["label"] for c in prov.values()} == set(labels.MAFW11)
    base = root / "Train & Test Set"
    compound_seen = False
    for kind in ("single", "compound"):
        for fold in range(1, 6):
            tested = []
            for part in ("train", "test"):
                plain = _mafw_lines(base / kind / "no_caption" / f"set_{fold}" / f"{part}.txt")
                for line in plain:
                    m = re.fullmatch(r"(\d{5})\.mp4 ([a-z_]+)", line)
                    assert m, f"bad no_caption line {line!r}"
                    clip, lab = m.groups()
                    c = prov[clip]
                    if kind == "single":
                        assert lab == c["label"]
                    else:
                        assert lab in labels.MAFW43 and c["label"] in lab.split("_")
                        compound_seen |= "_" in lab
                    if part == "test":
                        tested.append(clip)
                    assert (c["test_fold"] == fold) == (part == "test")
                captioned = _mafw_lines(base / kind / "with_caption" / f"set_{fold}" / f"{part}.txt")
                plain_non_neutral = [ln for ln in plain if prov[ln[:5]]["label"] != "neutral"]
                assert len(captioned) == len(plain_non_neutral), "every non-neutral clip has a caption"
                for line in captioned:
                    clip_file, lab, zh, en = line.split("\t")
                    assert prov[clip_file[:5]]["label"] != "neutral"
                    assert re.search(r"[\u4e00-\u9fff]", zh) and re.fullmatch(r"[ -~]+", en)
                    assert f"{clip_file} {lab}" in plain
            assert len(tested) == sum(c["test_fold"] == fold for c in prov.values())
    assert compound_seen, "some clips carry a multi-emotion label in the compound split"

    rows = list(load_workbook(root / "Labels" / "single-set.xlsx", read_only=True).active.iter_rows(values_only=True))
    assert rows[0] == ("clip", "invalid", *labels.MAFW_OFFICIAL, "single_label")
    for row in rows[1:]:
        assert labels.from_mafw_official(row[-1]) == prov[row[0][:5]]["label"]
        assert int(np.argmax(row[2:13])) + 1 == row[-1]
    texts = list(load_workbook(root / "Labels" / "descriptive_text.xlsx", read_only=True).active.iter_rows(values_only=True))
    assert len(texts) == sum(c["label"] != "neutral" for c in prov.values())  # no header row
    for clip in prov:
        frames, fps = _decode(root / "data" / "clips" / f"{clip}.mp4")
        assert len(frames) == prov[clip]["frames"] and round(fps) == prov[clip]["fps"]
    folds: dict[str, set[int]] = {}
    for c in prov.values():
        folds.setdefault(c["identity"], set()).add(c["test_fold"])
    assert all(len(f) == 1 for f in folds.values())


def test_only_the_official_layout_is_written(built):
    top = {p.name for p in built["dfew"].iterdir()}
    assert top == {"Clip", "EmoLabel_DataSplit", "Annotation", ".synth.json"}
    assert {p.name for p in built["ferv39k"].iterdir()} == {"0_7_LabelClips", "2_ClipsforFaceCrop", "4_setups",
                                                          ".synth.json"}
    assert {p.name for p in built["mafw"].iterdir()} == {"data", "Labels", "Train & Test Set", ".synth.json"}


# ------------------------------------------------------------------------------- determinism, reruns
def test_same_seed_same_dataset(tmp_path):
    kw = dict(clips_per_class=1, seed=5, size=128, frames_range=(4, 6))
    a = synth.make_dataset("mafw", tmp_path / "a", **kw)
    b = synth.make_dataset("mafw", tmp_path / "b", **kw)
    c = synth.make_dataset("mafw", tmp_path / "c", **{**kw, "seed": 6})
    splits = sorted(p.relative_to(a) for p in (a / "Train & Test Set").rglob("*.txt"))
    assert len(splits) == 40
    for rel in splits:
        assert (a / rel).read_bytes() == (b / rel).read_bytes()
    assert (a / ".synth.json").read_bytes() == (b / ".synth.json").read_bytes()
    assert (a / ".synth.json").read_bytes() != (c / ".synth.json").read_bytes()
    for clip in sorted((a / "data" / "clips").glob("*.mp4")):
        fa, _ = _decode(clip)
        fb, _ = _decode(b / "data" / "clips" / clip.name)
        assert np.array_equal(fa[0], fb[0]) and np.array_equal(fa[-1], fb[-1])


def test_rerun_does_nothing_and_refuses_other_settings(tmp_path):
    kw = dict(clips_per_class=1, seed=1, size=128, frames_range=(4, 5))
    root = synth.make_dataset("ferv39k", tmp_path / "d", **kw)
    stamp = (root / ".synth.json").stat().st_mtime_ns
    assert synth.make_dataset("ferv39k", root, **kw) == root
    assert (root / ".synth.json").stat().st_mtime_ns == stamp
    with pytest.raises(synth.SynthError, match="other settings"):
        synth.make_dataset("ferv39k", root, **{**kw, "seed": 2})
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "x.txt").write_text("mine")
    with pytest.raises(synth.SynthError, match="not empty"):
        synth.make_dataset("dfew", busy, **kw)
    with pytest.raises(synth.SynthError, match="unknown dataset"):
        synth.make_dataset("afew", tmp_path / "e", **kw)
    with pytest.raises(synth.SynthError, match="is a file"):
        synth.make_dataset("dfew", busy / "x.txt", **kw)
    with pytest.raises(synth.SynthError, match="at least 1"):
        synth.make_dataset("dfew", tmp_path / "f", **{**kw, "clips_per_class": 0})
    assert not [p for p in tmp_path.iterdir() if ".partial-" in p.name], "no half-built folder is left"


def test_cli_writes_and_rejects_bad_range(tmp_path):
    from typer.testing import CliRunner

    from fineprep.cli import app

    runner = CliRunner()
    bad = runner.invoke(app, ["synth", "--dataset", "dfew", "--out", str(tmp_path / "x"), "--frames-range", "9"])
    assert bad.exit_code != 0 and not (tmp_path / "x").exists()
    ok = runner.invoke(app, ["synth", "--dataset", "dfew", "--out", str(tmp_path / "y"), "--clips-per-class", "1",
                             "--size", "128", "--frames-range", "4,6", "--seed", "9"])
    assert ok.exit_code == 0, ok.output
    assert len(_dfew_csv(tmp_path / "y" / "EmoLabel_DataSplit" / "test(single-labeled)" / "set_1.csv")) >= 1


# ----------------------------------------------------------------------------------- the renderer
def test_warp_matches_scikit_image_piecewise_affine():
    from skimage.transform import PiecewiseAffineTransform

    from fineprep.synth.warp import PiecewiseAffineWarp, border_points

    rng = np.random.default_rng(0)
    src = np.concatenate([rng.uniform(20, 100, (60, 2)), border_points(120, 120)])
    dst = src.copy()
    dst[:60] += rng.normal(0, 1.5, (60, 2))
    mx, my = PiecewiseAffineWarp(120, 120).maps(src, dst)
    ref = PiecewiseAffineTransform.from_estimate(dst, src)
    yy, xx = np.mgrid[0:120, 0:120]
    want = ref(np.stack([xx.ravel(), yy.ravel()], 1))
    assert np.nanmax(np.abs(want[:, 0] - mx.ravel())) < 0.05
    assert np.nanmax(np.abs(want[:, 1] - my.ravel())) < 0.05
    ix, iy = PiecewiseAffineWarp(120, 120).maps(src, src)
    assert np.allclose(ix, xx, atol=1e-3) and np.allclose(iy, yy, atol=1e-3)


def test_time_normalise_keeps_ends_and_gives_16():
    frames = [np.full((4, 4, 3), v, np.uint8) for v in range(0, 250, 10)]  # 25 frames
    out = synth.layouts.time_normalise(frames)
    assert len(out) == 16 and out[0][0, 0, 0] == 0 and out[-1][0, 0, 0] == 240
    assert all(int(a[0, 0, 0]) < int(b[0, 0, 0]) for a, b in zip(out, out[1:], strict=False))


def _blend(lm, rgb, name):
    from fineprep.synth.faces import detect

    found = detect(lm, rgb)
    assert found is not None, "the landmarker lost the face"
    return found[1][name]


def test_surprise_opens_the_jaw_and_neutral_does_not():
    """Real model: the FaceLandmarker's jawOpen rises along a surprise clip, not along a neutral one."""
    from fineprep.synth.clips import render_clip
    from fineprep.synth.faces import identities, open_landmarker

    ident = identities(1, 256)[0]
    surprise = render_clip(ident, "surprise", np.random.default_rng(0), (12, 12))
    neutral = render_clip(ident, "neutral", np.random.default_rng(0), (12, 12))
    with open_landmarker(blendshapes=True) as lm:
        d_surprise = _blend(lm, surprise.frames[-1], "jawOpen") - _blend(lm, surprise.frames[0], "jawOpen")
        d_neutral = _blend(lm, neutral.frames[-1], "jawOpen") - _blend(lm, neutral.frames[0], "jawOpen")
        # The aligned face crops carry the same motion (checked at the apex, the peak frame).
        d_crop = _blend(lm, surprise.crops[surprise.apex], "jawOpen") - _blend(lm, surprise.crops[0], "jawOpen")
    assert d_surprise > 0.3, d_surprise
    assert abs(d_neutral) < 0.1, d_neutral
    assert d_crop > 0.3, d_crop


def test_surprise_clips_in_a_dataset_open_wider_than_neutral_ones(built):
    """Every surprise clip's jawOpen change (decoded video, real model) beats every neutral clip's."""
    from fineprep.synth.faces import open_landmarker

    root = built["dfew"]
    deltas: dict[str, list[float]] = {"surprise": [], "neutral": []}
    with open_landmarker(blendshapes=True) as lm:
        for c in _prov(root)["clips"]:
            if c["label"] in deltas:
                frames, _ = _decode(root / "Clip" / "original" / f"{c['clip']}.mp4")
                first, last = (cv2.cvtColor(f, cv2.COLOR_BGR2RGB) for f in (frames[0], frames[-1]))
                deltas[c["label"]].append(_blend(lm, last, "jawOpen") - _blend(lm, first, "jawOpen"))
    assert min(deltas["surprise"]) > 0.1 and min(deltas["surprise"]) > max(abs(d) for d in deltas["neutral"]), deltas
